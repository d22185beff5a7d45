// The exact (erf) GELU, GPT-2's tanh approximation of it, and their derivatives, in the form
// the CPU and CUDA kernels of bias_gelu share (torch-free header; csrc/bias_gelu.cpp has an AVX2
// copy of the float formulas). The tanh form is described above gelu_tanh below.
//
//   gelu(u)  = u * Phi(u),                  Phi(u) = erfc(-u / sqrt 2) / 2
//   gelu'(u) = Phi(u) + u * phi(u),         phi(u) = exp(-u^2 / 2) / sqrt(2 pi)
//
// float: erfc(a) for a = |u| / sqrt 2 >= 0 in the form of Numerical Recipes' erfcc and
// Abramowitz & Stegun 7.1.26, with a polynomial fitted for this file:
//     t = 1 / (1 + a/2),   erfc(a) = t * Q(t) * exp(-a^2),   Q of degree 9
// Q approximates erfc(a) exp(a^2) / t, smooth on t in (0, 1], to 1.6e-7 relative (least
// squares on the relative error, reweighted towards minimax, on 4000 Chebyshev nodes, against
// 30-digit mpmath). exp(-a^2) = exp(-u^2 / 2) is also phi(u) * sqrt(2 pi), so the backward
// gets gelu' with the one exp the forward needs. 2 Phi(u) = erfc(a) for u < 0, 2 - erfc(a)
// otherwise: computing the negative side from erfc directly keeps its relative accuracy where
// 1 + erf(z) cancels. Measured against float64
// (tests/test_bias_gelu.py): relative error below 1.8e-6 where |gelu(u)| > 1e-6 (u > -4.89) and
// below 1.4e-5 down to u = -12 (the rounding of u^2 / 2 inside the exp); torch's float GELU is
// off by 3% at u = -4.89 and by up to 100% below u ~ -5.5.
// double: the C library's erfc and exp (the reference the tests hold the float path to).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common_hd.h"

namespace gpt_kernels {

// The backward sums grad_x over blocks of this many rows into one partial row each (fp32; fp64
// for fp64), a CPU task or a CUDA thread block row, then adds the partial rows in a fixed
// order: the bias gradient does not depend on the number of threads. The launcher sizes the
// CUDA kernels' workspace with it (one definition for both backends).
constexpr int kBiasGeluRowBlock = 32;

namespace gelu_math {

constexpr float kSqrtHalf = 0.70710678118654752f;     // 1 / sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;   // 1 / sqrt(2 pi)
// Q(t) = kQ0 + kQ1 t + ... + kQ9 t^9 (kQ0 = 1 / sqrt(pi) to 1e-7: the a -> infinity limit).
// Scalars, not an array: device code can read constexpr scalars but not a host array.
constexpr float kQ0 = 0.282094748f, kQ1 = 0.282104122f, kQ2 = 0.246514808f, kQ3 = 0.180388883f,
                kQ4 = 0.0583887445f, kQ5 = 0.0791275212f, kQ6 = -0.198020805f, kQ7 = 0.0302877234f,
                kQ8 = 0.0646775943f, kQ9 = -0.0255634941f;

// exp(x) for float, |error| ~1 ulp: x = n ln2 + r (Cody-Waite split of ln2, |r| <= ln2 / 2),
// exp(r) by a degree-7 polynomial (Cephes expf's coefficients), 2^n put into the exponent bits.
// x is clamped to [-87, 88], where 2^n stays a normal float, and below -87 the result is 0
// (exp(-87) ~ 1.6e-38 times a huge u would otherwise reach 1 in gelu'(u)); every caller here has
// x <= ~0 (exp_f(NaN) is not NaN: fmaxf drops it; the callers' NaN reaches the result through
// t). The CPU and the GPU run these operations in this order; which multiply-adds the
// compilers fuse into FMAs may differ, so the two agree to an ulp or two, not bit for bit.
GK_HD float exp_f(float x) {
  const bool underflow = x < -87.0f;
  x = fminf(fmaxf(x, -87.0f), 88.0f);
  const float n = rintf(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;  // ln2 = 0.693359375 - 2.12194440e-4 (the first part exact)
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + (r + 1.0f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  float scale;
#if defined(__CUDA_ARCH__)
  scale = __int_as_float(bits);
#else
  std::memcpy(&scale, &bits, sizeof(scale));
#endif
  return underflow ? 0.0f : p * scale;
}

// 2 Phi(u) = 1 + erf(u / sqrt 2), and (if e_out) exp(-u^2 / 2).
GK_HD float two_phi(float u, float* e_out = nullptr) {
  const float a = fabsf(u) * kSqrtHalf;
  const float t = 1.0f / (1.0f + 0.5f * a);
  float q = kQ9;
  q = q * t + kQ8;
  q = q * t + kQ7;
  q = q * t + kQ6;
  q = q * t + kQ5;
  q = q * t + kQ4;
  q = q * t + kQ3;
  q = q * t + kQ2;
  q = q * t + kQ1;
  q = q * t + kQ0;
  const float e = exp_f(-a * a);
  const float erfc_a = t * q * e;
  if (e_out != nullptr) *e_out = e;
  return u < 0.0f ? erfc_a : 2.0f - erfc_a;
}

// Where Phi(u) or exp(-u^2 / 2) is 0 (u below ~-13, or u = +-inf) the product with u is 0, not
// u * 0: that is NaN at u = +-inf, and the limits are gelu(-inf) = 0, gelu'(+-inf) = 1 or 0.
GK_HD float gelu(float u) {
  const float phi2 = two_phi(u);
  return phi2 == 0.0f ? 0.0f : 0.5f * u * phi2;
}

GK_HD float gelu_grad(float u) {
  float e;
  const float phi2 = two_phi(u, &e);
  return 0.5f * phi2 + (e == 0.0f ? 0.0f : u * e * kInvSqrt2Pi);
}

GK_HD double gelu(double u) {
  const double phi2 = erfc(-u * 0.70710678118654752440);
  return phi2 == 0.0 ? 0.0 : 0.5 * u * phi2;
}

GK_HD double gelu_grad(double u) {
  const double e = exp(-0.5 * u * u);
  return 0.5 * erfc(-u * 0.70710678118654752440) + (e == 0.0 ? 0.0 : u * e * 0.39894228040143267794);
}

// The tanh approximation (F.gelu(approximate="tanh"), GPT-2's "gelu_new"):
//   gelu_tanh(u)  = u (1 + tanh z) / 2 = u s,    z = sqrt(2 / pi) (u + 0.044715 u^3),
//                                                s = (1 + tanh z) / 2 = sigmoid(2z)
//   gelu_tanh'(u) = s + u s (1 - s) 2 dz/du,     dz/du = sqrt(2 / pi) (1 + 3 0.044715 u^2)
// s from e = exp(-2|z|) <= 1, which cannot overflow: s = 1 / (1 + e) for z >= 0, e / (1 + e)
// for z < 0, and s (1 - s) = e / (1 + e)^2 on both sides. Written this way the negative tail
// keeps its relative accuracy, where 1 + tanh z cancels (torch's float formula is off by 7% at
// |gelu_tanh| = 1e-6, u = -4.77). Measured against float64 (tests/test_bias_gelu.py): relative
// error below 2e-6 where |gelu_tanh| > 1e-6, below 1.2e-5 where it is > 1e-36 (u > -9.9; the
// rounding of 2z, |2z| up to 87, inside the exp dominates); below that exp_f returns 0 and the
// result is flushed to 0 (absolute error < 2e-37). The limits as for gelu: gelu_tanh(-inf) = 0,
// gelu_tanh(+inf) = +inf, gelu_tanh'(-inf) = 0, gelu_tanh'(+inf) = 1 (where e or s is 0, the
// product with u is 0, not u * 0).
constexpr float kTwoSqrt2OverPi = 1.5957691216057308f;  // 2 sqrt(2 / pi)
constexpr float kTanhCubic = 0.044715f;
constexpr float kTanhCubic3 = 0.134145f;                  // 3 x 0.044715

// s = sigmoid(2z), with e = exp(-2|z|) and r = 1 / (1 + e) for the derivative.
GK_HD float tanh_sigmoid(float u, float* e_out, float* r_out) {
  const float z2 = kTwoSqrt2OverPi * u * (1.0f + kTanhCubic * (u * u));  // 2z
  const float e = exp_f(-fabsf(z2));
  const float r = 1.0f / (1.0f + e);
  *e_out = e;
  *r_out = r;
  return z2 < 0.0f ? e * r : r;
}

GK_HD float gelu_tanh(float u) {
  float e, r;
  const float s = tanh_sigmoid(u, &e, &r);
  return s == 0.0f ? 0.0f : u * s;
}

GK_HD float gelu_tanh_grad(float u) {
  float e, r;
  const float s = tanh_sigmoid(u, &e, &r);
  return s + (e == 0.0f ? 0.0f : u * ((kTwoSqrt2OverPi * e) * (r * r)) * (1.0f + kTanhCubic3 * (u * u)));
}

GK_HD double tanh_sigmoid(double u, double* e_out, double* r_out) {
  const double z2 = 1.5957691216057307117 * u * (1.0 + 0.044715 * (u * u));
  const double e = exp(-fabs(z2));
  const double r = 1.0 / (1.0 + e);
  *e_out = e;
  *r_out = r;
  return z2 < 0.0 ? e * r : r;
}

GK_HD double gelu_tanh(double u) {
  double e, r;
  const double s = tanh_sigmoid(u, &e, &r);
  return s == 0.0 ? 0.0 : u * s;
}

GK_HD double gelu_tanh_grad(double u) {
  double e, r;
  const double s = tanh_sigmoid(u, &e, &r);
  return s + (e == 0.0 ? 0.0 : u * (1.5957691216057307117 * e * r * r) * (1.0 + 0.134145 * (u * u)));
}

// The form a kernel runs: tanh = false for the exact GELU, true for the tanh approximation.
template <typename A>
GK_HD A gelu_any(A u, bool tanh) { return tanh ? gelu_tanh(u) : gelu(u); }

template <typename A>
GK_HD A gelu_any_grad(A u, bool tanh) { return tanh ? gelu_tanh_grad(u) : gelu_grad(u); }

}  // namespace gelu_math
}  // namespace gpt_kernels
