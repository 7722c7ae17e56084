// CPU kernels: neurons are split into chunks of kCpuChunk run in parallel (at::parallel_for, so
// torch.set_num_threads applies); each chunk keeps its state in a stack array and walks the T steps, with
// a branch-free inner loop over the chunk's neurons that the compiler vectorises. Unless every step's state
// is needed (forward: v_seq; backward: grad_v_seq, PLIF's v_prev), one loop runs kCpuSteps steps with the
// state in a register. The charge mode and the reset (and, backward, the surrogate) are template parameters
// so these loops have no switch in them.
#include "cpu_common.h"
#include "neuron.h"

#include <cstring>

namespace fastspike {
namespace {

constexpr int kCpuSteps = 4;

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
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau);
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

// PLIF: 1 (decay_input) or 2 (without) when dL/dk is summed, else 0 (IF, LIF, or PLIF without grad_k).
template <typename S, typename T, int PLIF, bool HARD, bool DETACH, int SG>
FS_CPU_CLONES double backward_chunk(const BackwardArgs& a, const NeuronConsts<T>& c, const ChargeGrad<T>& cg,
                                    int64_t j0, int64_t n) {
  T grad_v[kCpuChunk], v_prev[kCpuChunk], x_t[kCpuChunk];
  const T* __restrict__ grad_v_last = a.grad_v_last ? static_cast<const T*>(a.grad_v_last) + j0 : nullptr;
  for (int64_t i = 0; i < n; ++i) grad_v[i] = grad_v_last ? grad_v_last[i] : T(0);
  const S* __restrict__ grad_spike = static_cast<const S*>(a.grad_spike) + j0;
  const T* __restrict__ grad_v_seq = a.grad_v_seq ? static_cast<const T*>(a.grad_v_seq) + j0 : nullptr;
  const T* __restrict__ h_seq = static_cast<const T*>(a.h_seq) + j0;
  const S* __restrict__ x = PLIF == 1 ? static_cast<const S*>(a.x) + j0 : nullptr;
  const T* __restrict__ v_init = a.v_init ? static_cast<const T*>(a.v_init) + j0 : nullptr;
  S* __restrict__ grad_x = static_cast<S*>(a.grad_x) + j0;
  // dL/dv_T exists only when v_last or v_seq has a gradient; every earlier step gets one from the next charge.
  const bool grad_v_at_end = grad_v_last || grad_v_seq;
  double grad_k = 0.0;
  const int64_t N = a.N;
  int64_t t_end = a.T;  // the steps from t_end on are done
  if (!PLIF && !grad_v_seq) {
    // As in the forward: four steps per pass, dL/dv in a register between them.
    for (; t_end >= kCpuSteps; t_end -= kCpuSteps) {
      const int64_t o = (t_end - kCpuSteps) * N;
      const bool has_v_end = grad_v_at_end || t_end < a.T;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T gv = grad_v[i];
#pragma GCC unroll 4
        for (int u = kCpuSteps - 1; u >= 0; --u) {
          const T gh = grad_h_step<T>(SG, HARD, DETACH, c, load_input<S, T>(grad_spike, o + u * N + i), gv,
                                      h_seq[o + u * N + i], has_v_end || u < kCpuSteps - 1);
          T gx;
          charge_backward(cg, c, gh, gx, gv);
          store_rounded<S, T>(grad_x, o + u * N + i, gx);
        }
        grad_v[i] = gv;
      }
    }
  }
  for (int64_t t = t_end - 1; t >= 0; --t) {
    const int64_t o = t * a.N;
    const bool has_v = grad_v_at_end || t < a.T - 1;
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
        x_t[i] = PLIF == 1 ? load_input<S, T>(x, o + i) : T(0);
      }
    }
#pragma omp simd reduction(+ : grad_k)
    for (int64_t i = 0; i < n; ++i) {
      const T gh = grad_h_step<T>(SG, HARD, DETACH, c, load_input<S, T>(grad_spike, o + i), grad_v[i],
                                  h_seq[o + i], has_v);
      T gx;
      charge_backward(cg, c, gh, gx, grad_v[i]);
      store_rounded<S, T>(grad_x, o + i, gx);
      if (PLIF) grad_k += static_cast<double>(gh * plif_dh_dk<T>(PLIF == 1, c, x_t[i], v_prev[i]));
    }
  }
  T* __restrict__ grad_v_init = static_cast<T*>(a.grad_v_init) + j0;
  for (int64_t i = 0; i < n; ++i) grad_v_init[i] = grad_v[i];
  return grad_k;
}

template <typename S, typename T>
void backward_typed(const BackwardArgs& a) {
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau,
                                             make_surrogate_consts<T>(a.sg_alpha, a.sg_a, a.sg_b));
  const ChargeGrad<T> cg = charge_grad<T>(a.mode, a.tau, load_scalar<T>(a.k), load_scalar<T>(a.km));
  // SpikingJelly's surrogates only (fastspike.surrogate; neuron_ops.cpp refuses the others): each one is a
  // clone of every backward loop.
  dispatch_int(a.surrogate, std::make_integer_sequence<int, kNumNeuronSurrogates>{}, [&](auto sg) {
    const bool decay = a.mode == kPlifDecayZero || a.mode == kPlifDecay;
    const int plif = !a.grad_k_partial ? 0 : decay ? 1 : 2;
    dispatch_int(plif, std::integer_sequence<int, 0, 1, 2>{}, [&](auto plif) {
      dispatch_bool(a.hard, [&](auto hard) {
        dispatch_bool(a.detach_reset, [&](auto detach) {
          for_each_chunk(a.T, a.N, [&](int64_t ch, int64_t j0, int64_t n) {
            const double gk = backward_chunk<S, T, decltype(plif)::value, decltype(hard)::value,
                                             decltype(detach)::value, decltype(sg)::value>(a, c, cg, j0, n);
            if (a.grad_k_partial) a.grad_k_partial[ch] = gk;
          });
        });
      });
    });
  });
}

}  // namespace

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
