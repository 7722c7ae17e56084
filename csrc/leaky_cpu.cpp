// CPU kernels of the leaky family: chunks of kCpuChunk neurons in parallel (at::parallel_for), each walking
// the T steps with its states and parameters in stack arrays and a branch-free inner loop over the chunk
// that the compiler vectorises. The reset, Synaptic and reset_delay are template parameters; the
// surrogate derivative, 15 formulas, is computed in a pass of its own per step so the main backward loop
// is not instantiated once per surrogate.
#include "cpu_common.h"
#include "leaky.h"

#include <cstring>

namespace fastspike {
namespace {

// A parameter's value for each neuron of the chunk: its own, or the one value broadcast.
template <typename T>
void load_param(T* out, const void* p, bool per_neuron, int64_t j0, int64_t n) {
  const T* v = static_cast<const T*>(p);
  for (int64_t i = 0; i < n; ++i) out[i] = v ? v[per_neuron ? j0 + i : 0] : T(0);
}

template <typename T>
void load_state(T* out, const void* p, int64_t j0, int64_t n) {
  const T* v = static_cast<const T*>(p);
  for (int64_t i = 0; i < n; ++i) out[i] = v ? v[j0 + i] : T(0);
}

template <typename T>
void store_state(void* p, int64_t offset, const T* v, int64_t n) {
  if (p) std::memcpy(static_cast<T*>(p) + offset, v, n * sizeof(T));
}

template <typename S, typename T, int RESET, bool SYN, bool DELAY>
FS_CPU_CLONES void forward_chunk(const LeakyForwardArgs& a, int64_t j0, int64_t n) {
  T mem[kCpuChunk], syn[kCpuChunk], pre[kCpuChunk], bc[kCpuChunk], ac[kCpuChunk], thr[kCpuChunk], gsf[kCpuChunk];
  load_state(mem, a.mem_init, j0, n);
  load_state(syn, a.syn_init, j0, n);
  load_param(bc, a.p.beta, a.p.beta_n, j0, n);
  load_param(ac, a.p.alpha, a.p.alpha_n, j0, n);
  load_param(thr, a.p.threshold, a.p.threshold_n, j0, n);
  load_param(gsf, a.p.gsf, a.p.gsf_n, j0, n);
  const S* __restrict__ x = static_cast<const S*>(a.x) + j0;
  T* __restrict__ spk = static_cast<T*>(a.spk) + j0;
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t o = t * a.N;
    // No branches in here, or it does not vectorise; the optional outputs are copied from L1 after.
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      spk[o + i] = leaky_step<T, RESET, SYN, DELAY>(load_input<S, T>(x, o + i), syn[i], mem[i], pre[i], bc[i],
                                                    ac[i], thr[i], gsf[i]);
    }
    store_state(a.mem_seq, o + j0, mem, n);
    store_state(a.pre_seq, o + j0, pre, n);
    store_state(a.syn_seq, o + j0, syn, n);
  }
  store_state(a.mem_last, j0, mem, n);
  store_state(a.syn_last, j0, syn, n);
}

template <typename S, typename T>
void forward_typed(const LeakyForwardArgs& a) {
  dispatch_int(a.reset, std::integer_sequence<int, kSubtract, kZeroReset, kNoReset>{}, [&](auto reset) {
    dispatch_bool(a.synaptic, [&](auto syn) {
      dispatch_bool(a.reset_delay, [&](auto delay) {
        for_each_chunk(a.T, a.N, [&](int64_t, int64_t j0, int64_t n) {
          forward_chunk<S, T, decltype(reset)::value, decltype(syn)::value, decltype(delay)::value>(a, j0, n);
        });
      });
    });
  });
}

template <typename T, int SG>
FS_CPU_CLONES void surrogate_pass(const SurrogateConsts<T>& c, const T* m, const T* thr, T* sg, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) sg[i] = surrogate_grad<T>(SG, c, m[i] - thr[i]);
}

template <typename T>
void surrogate_values(int kind, const SurrogateConsts<T>& c, const T* m, const T* thr, T* sg, int64_t n) {
  dispatch_int(kind, std::make_integer_sequence<int, kNumSurrogates>{}, [&](auto k) {
    surrogate_pass<T, decltype(k)::value>(c, m, thr, sg, n);
  });
}

template <typename S, typename T, int RESET, bool SYN, bool DELAY>
FS_CPU_CLONES void backward_steps(const LeakyBackwardArgs& a, const SurrogateConsts<T>& c, int64_t j0, int64_t n) {
  T G[kCpuChunk], Gs[kCpuChunk], m[kCpuChunk], sg[kCpuChunk];
  T bc[kCpuChunk], ac[kCpuChunk], thr[kCpuChunk], gsf[kCpuChunk];
  T acc_beta[kCpuChunk], acc_alpha[kCpuChunk], acc_thr[kCpuChunk], acc_gsf[kCpuChunk];
  T mem0[kCpuChunk], syn0[kCpuChunk];  // the states before step 0 (0 where absent)
  load_state(mem0, a.mem_init, j0, n);
  load_state(syn0, a.syn_init, j0, n);
  load_state(G, a.grad_mem_last, j0, n);
  load_state(Gs, a.grad_syn_last, j0, n);
  load_param(bc, a.p.beta, a.p.beta_n, j0, n);
  load_param(ac, a.p.alpha, a.p.alpha_n, j0, n);
  load_param(thr, a.p.threshold, a.p.threshold_n, j0, n);
  load_param(gsf, a.p.gsf, a.p.gsf_n, j0, n);
  for (int64_t i = 0; i < n; ++i) acc_beta[i] = acc_alpha[i] = acc_thr[i] = acc_gsf[i] = T(0);
  const T* __restrict__ grad_spk = static_cast<const T*>(a.grad_spk) + j0;
  const T* __restrict__ grad_mem_seq = a.grad_mem_seq ? static_cast<const T*>(a.grad_mem_seq) + j0 : nullptr;
  const T* __restrict__ grad_syn_seq = a.grad_syn_seq ? static_cast<const T*>(a.grad_syn_seq) + j0 : nullptr;
  const T* __restrict__ mem_seq = static_cast<const T*>(a.mem_seq) + j0;
  const T* __restrict__ fired = static_cast<const T*>(DELAY ? a.mem_seq : a.pre_seq) + j0;
  const T* __restrict__ syn_seq = a.syn_seq ? static_cast<const T*>(a.syn_seq) + j0 : nullptr;
  S* __restrict__ grad_x = static_cast<S*>(a.grad_x) + j0;
  const int64_t N = a.N;
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const int64_t o = t * N;
    for (int64_t i = 0; i < n; ++i) m[i] = fired[o + i];
    if (grad_mem_seq) {
      for (int64_t i = 0; i < n; ++i) G[i] += grad_mem_seq[o + i];
    }
    if (SYN && grad_syn_seq) {
      for (int64_t i = 0; i < n; ++i) Gs[i] += grad_syn_seq[o + i];
    }
    surrogate_values(a.surrogate, c, m, thr, sg, n);
    // The states after step t-1: the saved sequences, or the initial ones at t = 0. syn is saved only when
    // alpha needs its gradient, the one use of syn_prev; without it syn0 stands in.
    const T* __restrict__ mem_prev = t > 0 ? mem_seq + o - N : mem0;
    const T* __restrict__ syn_prev = t > 0 && syn_seq ? syn_seq + o - N : syn0;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      LeakyParamGrads<T> acc{acc_beta[i], acc_alpha[i], acc_thr[i], acc_gsf[i]};
      const T gx = leaky_grad_step<T, RESET, SYN, DELAY>(
          grad_spk[o + i], G[i], Gs[i], mem_prev[i], syn_prev[i], m[i], sg[i],
          bc[i], ac[i], thr[i], gsf[i], acc);
      acc_beta[i] = acc.beta; acc_alpha[i] = acc.alpha; acc_thr[i] = acc.threshold; acc_gsf[i] = acc.gsf;
      store_rounded<S, T>(grad_x, o + i, gx);
    }
  }
  store_state(a.grad_mem_init, j0, G, n);
  store_state(a.grad_syn_init, j0, Gs, n);
  store_state(a.grad_beta, j0, acc_beta, n);
  store_state(a.grad_alpha, j0, acc_alpha, n);
  store_state(a.grad_threshold, j0, acc_thr, n);
  store_state(a.grad_gsf, j0, acc_gsf, n);
}

template <typename S, typename T>
void backward_typed(const LeakyBackwardArgs& a) {
  const SurrogateConsts<T> c = make_surrogate_consts<T>(a.sg_alpha, a.sg_a, a.sg_b);
  dispatch_int(a.reset, std::integer_sequence<int, kSubtract, kZeroReset, kNoReset>{}, [&](auto reset) {
    dispatch_bool(a.synaptic, [&](auto syn) {
      dispatch_bool(a.reset_delay, [&](auto delay) {
        for_each_chunk(a.T, a.N, [&](int64_t, int64_t j0, int64_t n) {
          backward_steps<S, T, decltype(reset)::value, decltype(syn)::value, decltype(delay)::value>(a, c, j0, n);
        });
      });
    });
  });
}

}  // namespace

void leaky_forward_cpu(const LeakyForwardArgs& a, int dtype) {
  switch (dtype) {
    case kFloat: return forward_typed<float, float>(a);
    case kHalf: return forward_typed<c10::Half, float>(a);
    case kBFloat16: return forward_typed<c10::BFloat16, float>(a);
    default: return forward_typed<double, double>(a);
  }
}

void leaky_backward_cpu(const LeakyBackwardArgs& a, int dtype) {
  switch (dtype) {
    case kFloat: return backward_typed<float, float>(a);
    case kHalf: return backward_typed<c10::Half, float>(a);
    case kBFloat16: return backward_typed<c10::BFloat16, float>(a);
    default: return backward_typed<double, double>(a);
  }
}

}  // namespace fastspike
