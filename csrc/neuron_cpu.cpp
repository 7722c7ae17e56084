// CPU kernels: neurons are split into chunks of kCpuChunk run in parallel (at::parallel_for, so
// torch.set_num_threads applies); each chunk keeps its state in a stack array and walks the T steps, with
// a branch-free inner loop over the chunk's neurons that the compiler vectorises. Unless every step's state
// is needed (forward: v_seq; backward: grad_v_seq, PLIF's v_prev), one loop runs kCpuSteps steps with the
// state in a register. The charge mode and the reset (and, backward, the surrogate) are template parameters
// so these loops have no switch in them.
#include "neuron.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <utility>

// The chunk loops are compiled for AVX-512, AVX2 and baseline x86-64, picked at load time (ifunc), so one
// build runs everywhere and uses wide vectors where they exist. Spikes, potentials and per-element
// gradients do not depend on the clone (IEEE add/sub/mul/div/compare only, no FMA contraction); PLIF's
// grad_w sums in an order set by the vector width, so it is reproducible bit for bit on one machine.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FS_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FS_CPU_CLONES
#endif

namespace fastspike {
namespace {

constexpr int kCpuSteps = 4;

// Calls f(std::integral_constant<int, value>) for the one value in Vs equal to `value`.
template <int... Vs, typename F>
void dispatch_int(int value, std::integer_sequence<int, Vs...>, F&& f) {
  ((value == Vs ? (f(std::integral_constant<int, Vs>{}), 0) : 0), ...);
}

template <typename F>
void dispatch_bool(bool value, F&& f) {
  if (value) f(std::true_type{}); else f(std::false_type{});
}

// Splitting is by chunk index, never by thread count, so PLIF's partial sums (and their order) are
// the same whatever torch.get_num_threads() is: grad_w is reproducible bit for bit.
template <typename F>
void for_each_chunk(int64_t T, int64_t N, F&& f) {
  const int64_t chunks = cpu_num_chunks(N);
  // Keep at least ~64k element-steps per task so small layers are not dominated by thread wake-ups.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kCpuChunk * T));
  at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t j0 = ch * kCpuChunk;
      f(ch, j0, std::min(kCpuChunk, N - j0));
    }
  });
}

template <typename T>
T load_scalar(const void* p) { return p ? *static_cast<const T*>(p) : T(0); }

// fp16/bf16 conversions written with integer ops and selects, which the vectoriser can see through (c10's
// are calls or scalar intrinsics, which keep the loops scalar). They give c10's scalar conversions' values
// (IEEE round to nearest even; stores turn NaN into a quiet NaN, loads keep its payload, which arithmetic
// quiets anyway).
inline float float_from_bits(uint32_t b) { float f; std::memcpy(&f, &b, sizeof(f)); return f; }
inline uint32_t bits_of(float f) { uint32_t b; std::memcpy(&b, &f, sizeof(b)); return b; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  // Normal halves: rebias the exponent (15 -> 127); Inf/NaN: exponent all ones, payload kept.
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23) + (em >= 0x7C00u ? (128u - 16u) << 23 : 0u);
  // Subnormal halves are em * 2^-24, exact in fp32.
  const uint32_t subnormal = bits_of(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  return float_from_bits(sign | (em >= 0x0400u ? normal : subnormal));
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = bits_of(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  // Normal range: drop 13 mantissa bits with round-to-nearest-even; a carry moves into the exponent.
  const uint32_t r = a - ((127u - 15u) << 23);
  const uint32_t normal = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
  // Below 2^-14: 0.5 + |f| has an ulp of 2^-24, so the addition rounds |f| to a multiple of the half
  // subnormal step (to even), and the bits above 0.5's are that multiple (0x400 is the smallest normal).
  const uint32_t subnormal = bits_of(float_from_bits(a) + 0.5f) - bits_of(0.5f);
  // 65520 = 0x477FF000 and above round to Inf.
  const uint32_t mag = a > 0x7F800000u ? 0x7E00u : a >= 0x477FF000u ? 0x7C00u : a >= 0x38800000u ? normal : subnormal;
  return static_cast<uint16_t>(sign | mag);
}

inline uint16_t float_to_bfloat16(float f) {
  const uint32_t x = bits_of(f);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// Loads of x / grad_spike and stores of spikes / grad_x in the input dtype S, the arithmetic in T.
template <typename S, typename T>
T load_input(const S* p, int64_t i) { return static_cast<T>(p[i]); }
template <>
float load_input<c10::Half, float>(const c10::Half* p, int64_t i) {
  return half_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
}
template <>
float load_input<c10::BFloat16, float>(const c10::BFloat16* p, int64_t i) {
  return float_from_bits(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16);
}

template <typename S, typename T>
void store_spike(S* p, int64_t i, T s) { p[i] = static_cast<S>(s); }
template <>
void store_spike<c10::Half, float>(c10::Half* p, int64_t i, float s) {
  reinterpret_cast<uint16_t*>(p)[i] = s != 0.0f ? 0x3C00 : 0;  // fp16 1.0
}
template <>
void store_spike<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float s) {
  reinterpret_cast<uint16_t*>(p)[i] = s != 0.0f ? 0x3F80 : 0;  // bf16 1.0
}

template <typename S, typename T>
void store_rounded(S* p, int64_t i, T value) { p[i] = static_cast<S>(value); }
template <>
void store_rounded<c10::Half, float>(c10::Half* p, int64_t i, float value) {
  reinterpret_cast<uint16_t*>(p)[i] = float_to_half(value);
}
template <>
void store_rounded<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float value) {
  reinterpret_cast<uint16_t*>(p)[i] = float_to_bfloat16(value);
}

template <typename S, typename T, int MODE, bool HARD, bool SAVE_H>
FS_CPU_CLONES void forward_chunk(const ForwardArgs& a, const NeuronConsts<T>& c, T k, T km, int64_t j0, int64_t n) {
  T v[kCpuChunk], h[kCpuChunk];
  const T* __restrict__ v_init = static_cast<const T*>(a.v_init);
  for (int64_t i = 0; i < n; ++i) v[i] = v_init ? v_init[j0 + i] : static_cast<T>(a.v_init_value);
  const S* __restrict__ x = static_cast<const S*>(a.x) + j0;
  S* __restrict__ spike = static_cast<S*>(a.spike) + j0;
  T* __restrict__ h_seq = SAVE_H ? static_cast<T*>(a.h_seq) + j0 : nullptr;
  T* __restrict__ v_seq = a.v_seq ? static_cast<T*>(a.v_seq) + j0 : nullptr;
  const int64_t N = a.N;
  int64_t t0 = 0;
  if (!v_seq) {
    // Four steps per pass over the chunk, v in a register between them: a step then costs one load and one
    // store (two with h) per neuron, where the one-step loop below also loads and stores v and h in L1.
    for (; t0 + kCpuSteps <= a.T; t0 += kCpuSteps) {
      const S* __restrict__ xt = x + t0 * N;
      S* __restrict__ st = spike + t0 * N;
      T* __restrict__ ht = SAVE_H ? h_seq + t0 * N : nullptr;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T vi = v[i];
#pragma GCC unroll 4
        for (int u = 0; u < kCpuSteps; ++u) {
          const T hi = charge<T>(MODE, c, vi, load_input<S, T>(xt, u * N + i), k, km);
          const T s = fire(c, hi);
          vi = reset(HARD, c, hi, s);
          store_spike<S, T>(st, u * N + i, s);
          if (SAVE_H) ht[u * N + i] = hi;
        }
        v[i] = vi;
      }
    }
  }
  for (int64_t t = t0; t < a.T; ++t) {
    const int64_t o = t * a.N;
    // No branches in here, or it does not vectorise; the optional outputs are copied from L1 after.
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      h[i] = charge<T>(MODE, c, v[i], load_input<S, T>(x, o + i), k, km);
      const T s = fire(c, h[i]);
      v[i] = reset(HARD, c, h[i], s);
      store_spike<S, T>(spike, o + i, s);
    }
    if (h_seq) std::memcpy(h_seq + o, h, n * sizeof(T));
    if (v_seq) std::memcpy(v_seq + o, v, n * sizeof(T));
  }
  T* __restrict__ v_last = static_cast<T*>(a.v_last) + j0;
  for (int64_t i = 0; i < n; ++i) v_last[i] = v[i];
}

template <typename S, typename T>
void forward_typed(const ForwardArgs& a) {
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau, 0, 1.0);
  const T k = load_scalar<T>(a.k), km = load_scalar<T>(a.km);
  dispatch_int(a.mode, std::make_integer_sequence<int, kNumChargeModes>{}, [&](auto mode) {
    dispatch_bool(a.hard, [&](auto hard) {
      dispatch_bool(a.h_seq != nullptr, [&](auto save_h) {
        for_each_chunk(a.T, a.N, [&](int64_t, int64_t j0, int64_t n) {
          forward_chunk<S, T, decltype(mode)::value, decltype(hard)::value, decltype(save_h)::value>(
              a, c, k, km, j0, n);
        });
      });
    });
  });
}

// PLIF: 0 for IF/LIF, 1 for PLIF with decay_input, 2 without (dh/dk has a different form).
template <typename S, typename T, int PLIF, bool HARD, bool DETACH, int SG>
FS_CPU_CLONES double backward_chunk(const BackwardArgs& a, const NeuronConsts<T>& c, T k, T km, int64_t j0, int64_t n) {
  T grad_v[kCpuChunk], v_prev[kCpuChunk];
  const T* __restrict__ grad_v_last = static_cast<const T*>(a.grad_v_last) + j0;
  for (int64_t i = 0; i < n; ++i) grad_v[i] = grad_v_last[i];
  const S* __restrict__ grad_spike = static_cast<const S*>(a.grad_spike) + j0;
  const T* __restrict__ grad_v_seq = a.grad_v_seq ? static_cast<const T*>(a.grad_v_seq) + j0 : nullptr;
  const T* __restrict__ h_seq = static_cast<const T*>(a.h_seq) + j0;
  const T* __restrict__ v_init = a.v_init ? static_cast<const T*>(a.v_init) + j0 : nullptr;
  S* __restrict__ grad_x = static_cast<S*>(a.grad_x) + j0;
  const T dh_dx = PLIF ? (PLIF == 1 ? k : T(1)) : c.dh_dx;
  const T dh_dv = PLIF ? km : c.dh_dv;
  double grad_k = 0.0;
  const int64_t N = a.N;
  int64_t t_end = a.T;  // the steps from t_end on are done
  if (!PLIF && !grad_v_seq) {
    // As in the forward: four steps per pass, dL/dv in a register between them.
    for (; t_end >= kCpuSteps; t_end -= kCpuSteps) {
      const int64_t o = (t_end - kCpuSteps) * N;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T gv = grad_v[i];
#pragma GCC unroll 4
        for (int u = kCpuSteps - 1; u >= 0; --u) {
          const T gh = grad_h_step<T>(SG, HARD, DETACH, c, load_input<S, T>(grad_spike, o + u * N + i), gv,
                                      h_seq[o + u * N + i]);
          store_rounded<S, T>(grad_x, o + u * N + i, gh * dh_dx);
          gv = gh * dh_dv;
        }
        grad_v[i] = gv;
      }
    }
  }
  for (int64_t t = t_end - 1; t >= 0; --t) {
    const int64_t o = t * a.N;
    // The optional and PLIF-only inputs are gathered in separate loops so the main one has no branches.
    if (grad_v_seq) {
      for (int64_t i = 0; i < n; ++i) grad_v[i] += grad_v_seq[o + i];
    }
    if (PLIF) {
      for (int64_t i = 0; i < n; ++i) {
        if (t > 0) {
          const T hp = h_seq[o - a.N + i];
          v_prev[i] = reset(HARD, c, hp, fire(c, hp));
        } else {
          v_prev[i] = v_init ? v_init[i] : static_cast<T>(a.v_init_value);
        }
      }
    }
#pragma omp simd reduction(+ : grad_k)
    for (int64_t i = 0; i < n; ++i) {
      const T h = h_seq[o + i];
      const T gh = grad_h_step<T>(SG, HARD, DETACH, c, load_input<S, T>(grad_spike, o + i), grad_v[i], h);
      store_rounded<S, T>(grad_x, o + i, gh * dh_dx);
      if (PLIF) {
        // -(v - v_reset) equals -v exactly when v_reset is 0, so the two no-decay forms share one.
        grad_k += static_cast<double>(gh * plif_dh_dk<T>(PLIF == 1 ? kPlifDecay : kPlifNoDecay, c, h, v_prev[i], k));
      }
      grad_v[i] = gh * dh_dv;
    }
  }
  T* __restrict__ grad_v_init = static_cast<T*>(a.grad_v_init) + j0;
  for (int64_t i = 0; i < n; ++i) grad_v_init[i] = grad_v[i];
  return grad_k;
}

template <typename S, typename T>
void backward_typed(const BackwardArgs& a) {
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau, a.surrogate, a.alpha);
  const T k = load_scalar<T>(a.k), km = load_scalar<T>(a.km);
  dispatch_int(a.surrogate, std::make_integer_sequence<int, kNumSurrogates>{}, [&](auto sg) {
    const int plif = !is_plif(a.mode) ? 0 : (a.mode == kPlifDecayZero || a.mode == kPlifDecay) ? 1 : 2;
    dispatch_int(plif, std::integer_sequence<int, 0, 1, 2>{}, [&](auto plif) {
      dispatch_bool(a.hard, [&](auto hard) {
        dispatch_bool(a.detach_reset, [&](auto detach) {
          for_each_chunk(a.T, a.N, [&](int64_t ch, int64_t j0, int64_t n) {
            const double gk = backward_chunk<S, T, decltype(plif)::value, decltype(hard)::value,
                                             decltype(detach)::value, decltype(sg)::value>(a, c, k, km, j0, n);
            if (a.grad_k_partial) a.grad_k_partial[ch] = gk;
          });
        });
      });
    });
  });
}

}  // namespace

int64_t cpu_num_chunks(int64_t N) { return (N + kCpuChunk - 1) / kCpuChunk; }

void forward_cpu(const ForwardArgs& a, int dtype) {
  switch (dtype) {
    case kFloat: return forward_typed<float, float>(a);
    case kHalf: return forward_typed<c10::Half, float>(a);
    case kBFloat16: return forward_typed<c10::BFloat16, float>(a);
    default: return forward_typed<double, double>(a);
  }
}

void backward_cpu(const BackwardArgs& a, int dtype) {
  switch (dtype) {
    case kFloat: return backward_typed<float, float>(a);
    case kHalf: return backward_typed<c10::Half, float>(a);
    case kBFloat16: return backward_typed<c10::BFloat16, float>(a);
    default: return backward_typed<double, double>(a);
  }
}

}  // namespace fastspike
