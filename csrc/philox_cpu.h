// Philox dropout factors on the CPU, 64 elements per call: the SIMD side of philox_dropout.h,
// shared by the CPU kernels of causal_attention and dropout_add.
//
// keep_factors64(z, keep_scale, c0_first, c1, c2, c3, seed, threshold) writes z[8 g + e] for
// g, e in [0, 8): keep_scale if bit e of philox_keep8(c0_first + g, c1, c2, c3, seed, threshold)
// is set, else 0. Eight Philox calls run side by side in AVX2 lanes and, for float, the factors
// never leave registers until stored; elsewhere a portable loop computes the same bits.
// tests/test_causal_attention.py and tests/test_dropout_add.py check them against the scalar definition.
#pragma once
#include <cstdint>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "philox_dropout.h"

namespace gpt_kernels {

#if defined(__AVX2__)
// Philox4x32-10 on 8 counters at once (AVX2; the arrays are the counters' 4 words in, the
// random words out). _mm256_mul_epu32 multiplies the even 32-bit lanes into 64-bit products;
// the odd lanes go through a second multiply after a 32-bit shift. gcc's own vectorisation of
// the scalar loop ran about 3x slower (23 ns per 8-element group on one Zen core).
inline void philox8_avx2(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3, uint32_t k0,
                         uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0));
  __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1));
  __m256i x2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c2));
  __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c3));
  for (int round = 0; round < 10; ++round) {
    const __m256i p0_even = _mm256_mul_epu32(x0, m0);
    const __m256i p0_odd = _mm256_mul_epu32(_mm256_srli_epi64(x0, 32), m0);
    const __m256i p1_even = _mm256_mul_epu32(x2, m1);
    const __m256i p1_odd = _mm256_mul_epu32(_mm256_srli_epi64(x2, 32), m1);
    const __m256i lo0 = _mm256_blend_epi32(p0_even, _mm256_slli_epi64(p0_odd, 32), 0xAA);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(p0_even, 32), p0_odd, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(p1_even, _mm256_slli_epi64(p1_odd, 32), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(p1_even, 32), p1_odd, 0xAA);
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1));
    x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), key0);
    x1 = lo1;
    x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), key1);
    x3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c0), x0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c1), x1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c2), x2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c3), x3);
}
#endif  // __AVX2__

#if defined(__AVX2__)
// keep_factors64 for float, all in registers: the 16-bit compares of the 8 calls' words (lanes =
// the 8 groups, one vector per element e of a group) and an 8x8 transpose to element order.
// About 4x faster than the portable version.
inline void keep_factors64_avx2(float* z, float keep_scale, const uint32_t* c0, const uint32_t* c1,
                                const uint32_t* c2, const uint32_t* c3, uint32_t threshold) {
  const __m256i words[4] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c2)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c3))};
  // u >= threshold as a signed compare u > threshold - 1 (u < 2^16, threshold - 1 >= -1)
  const __m256i below = _mm256_set1_epi32(static_cast<int>(threshold) - 1);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  const __m256 scale = _mm256_set1_ps(keep_scale);
  __m256 r[8];  // r[e], lane g: factor of column 8 g + e
  for (int w = 0; w < 4; ++w) {
    const __m256i lo = _mm256_and_si256(words[w], low16), hi = _mm256_srli_epi32(words[w], 16);
    r[2 * w] = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(lo, below)), scale);
    r[2 * w + 1] = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(hi, below)), scale);
  }
  // 8x8 transpose: out[g], lane e = r[e], lane g
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(z + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(z + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(z + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(z + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(z + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(z + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(z + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(z + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif  // __AVX2__

// The random words of the 8 Philox calls on counters (c0_first + g, c1_word, c2_word, c3_word),
// g = 0..7: call g's words in c0[g] .. c3[g].
inline void philox8(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3, uint32_t c0_first,
                    uint32_t c1_word, uint32_t c2_word, uint32_t c3_word, uint64_t seed) {
  for (int g = 0; g < 8; ++g) {
    c0[g] = c0_first + static_cast<uint32_t>(g);
    c1[g] = c1_word;
    c2[g] = c2_word;
    c3[g] = c3_word;
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__AVX2__)
  philox8_avx2(c0, c1, c2, c3, k0, k1);
#else
  for (int round = 0; round < 10; ++round) {
#pragma omp simd
    for (int g = 0; g < 8; ++g) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0[g];
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2[g];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[g] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[g] ^ k1;
      c0[g] = n0;
      c1[g] = static_cast<uint32_t>(p1);
      c2[g] = n2;
      c3[g] = static_cast<uint32_t>(p0);
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
#endif
}

template <typename T>
inline void keep_factors64(T* z, T keep_scale, uint32_t c0_first, uint32_t c1_word,
                           uint32_t c2_word, uint32_t c3_word, uint64_t seed, uint32_t threshold) {
  alignas(32) uint32_t c0[8], c1[8], c2[8], c3[8];
  philox8(c0, c1, c2, c3, c0_first, c1_word, c2_word, c3_word, seed);
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    return keep_factors64_avx2(z, keep_scale, c0, c1, c2, c3, threshold);
  }
#endif
  for (int c = 0; c < 64; ++c) {
    const int g = c >> 3, e = c & 7;
    const uint32_t word = (e >> 1) == 0 ? c0[g] : (e >> 1) == 1 ? c1[g] : (e >> 1) == 2 ? c2[g] : c3[g];
    const uint32_t u = (word >> ((e & 1) * 16)) & 0xFFFFu;
    z[c] = u >= threshold ? keep_scale : T(0);
  }
}

}  // namespace gpt_kernels
