// Counter-based dropout masks shared by the CPU and CUDA kernels of causal_attention and
// dropout_add (torch-free header).
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) maps a
// 128-bit counter and a 64-bit key to 128 random bits with no state, so any element's mask bit
// can be recomputed anywhere: the backward pass regenerates the forward's mask instead of
// storing a (B, H, T, T) tensor, and the CPU and the GPU draw the same mask for the same seed.
//
// The keep/drop bit of attention probability (b, h, i, j) is a pure function of
// (seed, offset, b*H + h, i, j):
//     counter = (j / 8, i, b*H + h, offset mod 2^32),  key = (seed mod 2^32, seed >> 32)
//     r[0..3] = Philox4x32-10(counter, key)             one call serves 8 neighbours in a row
//     u       = 16-bit half (j % 2) of word r[(j % 8) / 2]   (low half for even j)
//     keep    = u >= threshold,  threshold = round(p * 65536)
// so P(keep) = 1 - threshold / 65536, p resolved to 1/65536. Kept values are scaled by 1/(1-p)
// (as torch's dropout does), dropped ones become 0.
#pragma once
#include <cstdint>

#include "common_hd.h"

namespace gpt_kernels {

GK_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t product = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(product);
  hi = static_cast<uint32_t>(product >> 32);
#endif
}

// Philox4x32 with 10 rounds; c is the counter in, the random words out.
GK_HD void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c[0], hi0, lo0);
    philox_mulhilo(kM1, c[2], hi1, lo1);
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n1 = lo1, n2 = hi0 ^ c[3] ^ k1, n3 = lo0;
    c[0] = n0; c[1] = n1; c[2] = n2; c[3] = n3;
    k0 += kW0;
    k1 += kW1;
  }
}

// The 16-bit threshold for drop probability p in [0, 1): u16 < threshold means "drop".
GK_HD uint32_t dropout_threshold(float p) {
  const float t = p * 65536.0f + 0.5f;
  return t >= 65535.0f ? 65535u : static_cast<uint32_t>(t);
}

// Keep bits of one Philox call on counter (c0, c1, c2, c3): bit e set means element e of the
// group of 8 is kept (u16 number e >= threshold). Every mask below is this on its own counter.
GK_HD uint32_t philox_keep8(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed,
                            uint32_t threshold) {
  uint32_t c[4] = {c0, c1, c2, c3};
  philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  uint32_t bits = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int e = 0; e < 8; ++e) {
    const uint32_t u = (c[e >> 1] >> ((e & 1) * 16)) & 0xFFFFu;
    bits |= static_cast<uint32_t>(u >= threshold) << e;
  }
  return bits;
}

// Attention: keep bits of the 8 elements (i, 8*jgroup + e), e = 0..7, of head bh.
GK_HD uint32_t dropout_keep8(uint64_t seed, uint64_t offset, uint32_t bh, uint32_t i,
                             uint32_t jgroup, uint32_t threshold) {
  return philox_keep8(jgroup, i, bh, static_cast<uint32_t>(offset), seed, threshold);
}

// dropout_add (csrc/dropout_add.cpp): element n of the flattened tensor is bit n % 8 of group
// g = n / 8, counter = (g mod 2^32, g >> 32, kDropoutAddStream, offset mod 2^32). The constant
// third word keeps these counters apart from attention's (whose third word is a head index).
constexpr uint32_t kDropoutAddStream = 0x44524F50u;  // "DROP"

GK_HD uint32_t dropout_add_keep8(uint64_t seed, uint64_t offset, uint64_t group, uint32_t threshold) {
  return philox_keep8(static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
                      kDropoutAddStream, static_cast<uint32_t>(offset), seed, threshold);
}

}  // namespace gpt_kernels
