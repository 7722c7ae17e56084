// Surrogate derivatives g'(x), shared by every op family on both devices; free of torch headers.
//
// The names and their order (the ids) come from fastspike/_contract.py's SURROGATES, which the tests check
// against kSurrogateNames (exported as fastspike._C.SURROGATES); the constants alpha, a, b arrive from
// Python already computed (each surrogate class's kernel_spec), so no formula for them lives here. Each
// derivative only needs to agree with its Python formula to rounding (gradients: 1e-5 relative), but
// where that formula gives exactly 0, or Inf/NaN, so does this one.
#pragma once

#include "common.h"

#include <cmath>
#include <cstring>

namespace fastspike {

enum SurrogateKind : int {
  kSigmoid = 0, kATan, kPiecewiseQuadratic, kPiecewiseExp, kSoftSign, kSuperSpike, kErf, kFastSigmoid,
  kSigmoidExp, kStraightThrough, kTriangular, kHeaviside, kSpikeRateEscape, kSparseFastSigmoid, kNoSurrogate,
  kNumSurrogates
};

constexpr const char* kSurrogateNames[kNumSurrogates] = {
    "sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign", "super_spike", "erf", "fast_sigmoid",
    "sigmoid_exp", "straight_through", "triangular", "heaviside", "spike_rate_escape", "sparse_fast_sigmoid",
    "none"};

template <typename T>
struct SurrogateConsts {
  T alpha, a, b;
};

template <typename T>
SurrogateConsts<T> make_surrogate_consts(double alpha, double a, double b) {
  return {static_cast<T>(alpha), static_cast<T>(a), static_cast<T>(b)};
}

// exp for the surrogate derivatives. On the CPU, libm's expf is a call, which stops the backward loops
// from vectorising; this branch-free version is within 2 ulp of expf over the whole float range: it
// overflows to Inf and underflows through the subnormals to 0 where expf does (a surrogate that torch
// evaluates to exactly 0 must be 0 here too, or a 0 * huge product turns into a wrong gradient), and
// keeps NaN.
FS_HD float fs_exp(float a) {
#if defined(__CUDA_ARCH__)
  return expf(a);
#else
  // Beyond these exp is Inf or rounds to 0; the clamped values still get there through the scaling below.
  const float x = a > 89.0f ? 89.0f : (a < -104.0f ? -104.0f : a);
  // exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2)/2; ln 2 split in two so x - n ln 2 is exact.
  // n from a NaN would be undefined behaviour; 0 stands in, and the NaN goes on through r and e.
  const float xn = x == x ? x : 0.0f;
  const int n = static_cast<int>(xn * 1.44269504088896341f + (xn >= 0.0f ? 0.5f : -0.5f));
  const float nf = static_cast<float>(n);
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  // Taylor-like minimax coefficients of (exp(r) - 1 - r) / r^2 on that interval (Cephes expf).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * (r * r) + r + 1.0f;
  // 2^n in two normal factors (n ranges over [-150, 128]): the first product is exact, the second
  // rounds once, into the subnormals or to Inf where the true value lies there.
  const int n1 = n / 2, n2 = n - n1;
  const uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof(s1));
  std::memcpy(&s2, &b2, sizeof(s2));
  return (e * s1) * s2;  // a NaN a stays NaN through x, r and e
#endif
}
FS_HD double fs_exp(double a) { return exp(a); }

template <typename T>
FS_HD T heaviside_strict(T x) { return x > T(0) ? T(1) : T(0); }

// g'(x); the table of formulas is in fastspike/_contract.py.
template <typename T>
FS_HD T surrogate_grad(int kind, const SurrogateConsts<T>& c, T x) {
  const T ax = x < T(0) ? -x : x;
  switch (kind) {
    case kSigmoid: {
      const T s = T(1) / (T(1) + fs_exp(-(x * c.alpha)));
      return (T(1) - s) * s * c.alpha;
    }
    case kATan: {
      const T u = c.a * x;
      return c.b / (T(1) + u * u);
    }
    case kPiecewiseQuadratic: {
      const T q = c.alpha - c.a * ax;  // computed unconditionally: a select, not a branch, vectorises
      return ax > c.b ? T(0) : q;
    }
    case kPiecewiseExp: return c.b * fs_exp(c.a * ax);
    case kSoftSign: {
      const T u = c.a + ax;
      return T(1) / (c.b * (u * u));
    }
    case kSuperSpike: {
      const T u = ax + T(1);
      return c.alpha / (u * u);
    }
    case kErf: {
      const T u = x * c.alpha;
      return fs_exp(-(u * u)) * c.b;
    }
    case kFastSigmoid: {
      const T u = c.alpha * ax + T(1);
      return T(1) / (u * u);
    }
    case kSigmoidExp: {
      const T e = fs_exp(c.a * x);
      const T u = e + T(1);
      return c.alpha * e / (u * u);
    }
    case kStraightThrough: return T(1);
    case kTriangular: return x >= T(0) ? -c.alpha : c.alpha;
    case kHeaviside: return heaviside_strict(x);
    case kSpikeRateEscape: {
      const T d = x - T(1);
      return c.b * fs_exp(c.a * (d < T(0) ? -d : d));
    }
    case kSparseFastSigmoid: {
      const T u = c.alpha * ax + T(1);
      const T g = T(1) / (u * u);
      return x > c.b ? g : T(0);
    }
    default: return T(0);
  }
}

// Whether g'(x) is a mask rather than a product: SpikingJelly's piecewise quadratic backward fills
// grad_out * g'(x) with 0 where |x| > 1/alpha, so an Inf or NaN incoming gradient gives 0 there, not NaN.
template <typename T>
FS_HD bool surrogate_masked(int kind, const SurrogateConsts<T>& c, T x) {
  return kind == kPiecewiseQuadratic && (x < T(0) ? -x : x) > c.b;
}

}  // namespace fastspike
