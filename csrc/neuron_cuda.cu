// CUDA kernels: one thread per VEC adjacent neurons with the whole T loop inside, state in registers.
// VEC is chosen so a thread moves 16 bytes of input per step (4 fp32, 8 fp16/bf16, 2 fp64) when N and
// every pointer allow it, else 1. Compiled with -fmad=false: an FMA contraction would change fp32 results.
// No torch headers here (nvcc on 2 cores is slow enough); ops.cpp allocates and calls the launchers.
#include "cuda_common.cuh"
#include "neuron.h"

namespace fastspike {
namespace {

template <typename S, typename T, int VEC>
__global__ void __launch_bounds__(kThreads) neuron_fwd_kernel(const ForwardArgs a, const NeuronConsts<T> c) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
  if (j >= a.N) return;
  const T k = load_scalar<T>(a.k), km = load_scalar<T>(a.km);
  T v[VEC];
  if (a.v_init) {
    const Pack<T, VEC> p = load<T, VEC>(a.v_init, j);
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = p.v[i];
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = static_cast<T>(a.v_init_value);
  }
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t o = t * a.N + j;
    const Pack<S, VEC> x = load<S, VEC>(a.x, o);
    Pack<S, VEC> s;
    Pack<T, VEC> h, vs;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      h.v[i] = charge<T>(a.mode, c, v[i], to_state(x.v[i], T(0)), k, km);
      const T spike = fire(c, h.v[i]);
      v[i] = reset(a.hard, c, h.v[i], spike);
      s.v[i] = from_state<S>(spike);
      vs.v[i] = v[i];
    }
    store<S, VEC>(a.spike, o, s);
    if (a.h_seq) store<T, VEC>(a.h_seq, o, h);
    if (a.v_seq) store<T, VEC>(a.v_seq, o, vs);
  }
  Pack<T, VEC> last;
#pragma unroll
  for (int i = 0; i < VEC; ++i) last.v[i] = v[i];
  store<T, VEC>(a.v_last, j, last);
}

template <typename S, typename T, int VEC>
__global__ void __launch_bounds__(kThreads) neuron_bwd_kernel(const BackwardArgs a, const NeuronConsts<T> c) {
  const int64_t j = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
  // dL/dk is summed only when asked for; PLIF with decay_input then reads x_t.
  const bool plif = a.grad_k_partial != nullptr;
  const bool decay = a.mode == kPlifDecayZero || a.mode == kPlifDecay;
  double grad_k = 0.0;
  if (j < a.N) {
    const ChargeGrad<T> cg = charge_grad<T>(a.mode, a.tau, load_scalar<T>(a.k), load_scalar<T>(a.km));
    // dL/dv_T exists only when v_last or v_seq has a gradient; every earlier step gets one from the next charge.
    const bool grad_v_at_end = a.grad_v_last || a.grad_v_seq;
    T grad_v[VEC];
    Pack<T, VEC> gl;
    if (a.grad_v_last) gl = load<T, VEC>(a.grad_v_last, j);
#pragma unroll
    for (int i = 0; i < VEC; ++i) grad_v[i] = a.grad_v_last ? gl.v[i] : T(0);
    // h of step t-1 is loaded one iteration early: PLIF needs it for v_{t-1}, and every kind reads it next.
    Pack<T, VEC> h = load<T, VEC>(a.h_seq, (a.T - 1) * a.N + j);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t o = t * a.N + j;
      const bool has_v = grad_v_at_end || t < a.T - 1;
      Pack<T, VEC> hp;
      if (t > 0) {
        hp = load<T, VEC>(a.h_seq, o - a.N);
      } else if (plif && a.v_init) {
        hp = load<T, VEC>(a.v_init, j);
      }
      const Pack<S, VEC> gs = load<S, VEC>(a.grad_spike, o);
      Pack<T, VEC> gvs;
      if (a.grad_v_seq) gvs = load<T, VEC>(a.grad_v_seq, o);
      Pack<S, VEC> xs;
      if (plif && decay) xs = load<S, VEC>(a.x, o);
      Pack<S, VEC> gx;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        const T gv = a.grad_v_seq ? grad_v[i] + gvs.v[i] : grad_v[i];
        const T gh = grad_h_step<T>(a.surrogate, a.hard, a.detach_reset, c, to_state(gs.v[i], T(0)), gv, h.v[i],
                                    has_v);
        T gxi;
        charge_backward(cg, c, gh, gxi, grad_v[i]);
        gx.v[i] = from_state<S>(gxi);
        if (plif) {
          const T v_prev = t > 0 ? reset(a.hard, c, hp.v[i], fire(c, hp.v[i]))
                                 : (a.v_init ? hp.v[i] : static_cast<T>(a.v_init_value));
          const T x = decay ? to_state(xs.v[i], T(0)) : T(0);
          grad_k += static_cast<double>(gh * plif_dh_dk<T>(decay, c, x, v_prev));
        }
      }
      store<S, VEC>(a.grad_x, o, gx);
      if (t > 0) h = hp;
    }
    Pack<T, VEC> gvi;
#pragma unroll
    for (int i = 0; i < VEC; ++i) gvi.v[i] = grad_v[i];
    store<T, VEC>(a.grad_v_init, j, gvi);
  }
  if (a.grad_k_partial) {
    const double total = block_sum(grad_k);
    if (threadIdx.x == 0) a.grad_k_partial[blockIdx.x] = total;
  }
}

template <typename S, typename T>
int forward_vec(const ForwardArgs& a) {
  return pick_vec<S, T>(a.N, {a.x, a.spike}, {a.v_last, a.v_seq, a.h_seq, a.v_init});
}

template <typename S, typename T>
int backward_vec(const BackwardArgs& a) {
  return pick_vec<S, T>(a.N, {a.grad_spike, a.grad_x, a.x},
                        {a.grad_v_last, a.grad_v_seq, a.h_seq, a.v_init, a.grad_v_init});
}

template <typename S, typename T>
void launch_forward(const ForwardArgs& a, cudaStream_t stream) {
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau);
  constexpr int V = 16 / sizeof(S);
  if (forward_vec<S, T>(a) == V) {
    neuron_fwd_kernel<S, T, V><<<num_blocks(a.N, V), kThreads, 0, stream>>>(a, c);
  } else {
    neuron_fwd_kernel<S, T, 1><<<num_blocks(a.N, 1), kThreads, 0, stream>>>(a, c);
  }
  check_launch("forward kernel launch");
}

template <typename S, typename T>
void launch_backward(const BackwardArgs& a, cudaStream_t stream) {
  const NeuronConsts<T> c = make_consts<T>(a.mode, a.v_threshold, a.v_reset, a.tau,
                                             make_surrogate_consts<T>(a.sg_alpha, a.sg_a, a.sg_b));
  constexpr int V = 16 / sizeof(S);
  if (backward_vec<S, T>(a) == V) {
    neuron_bwd_kernel<S, T, V><<<num_blocks(a.N, V), kThreads, 0, stream>>>(a, c);
  } else {
    neuron_bwd_kernel<S, T, 1><<<num_blocks(a.N, 1), kThreads, 0, stream>>>(a, c);
  }
  check_launch("backward kernel launch");
}

}  // namespace

int64_t cuda_backward_blocks(const BackwardArgs& a, int dtype) {
  switch (dtype) {
    case kFloat: return num_blocks(a.N, backward_vec<float, float>(a));
    case kHalf: return num_blocks(a.N, backward_vec<__half, float>(a));
    case kBFloat16: return num_blocks(a.N, backward_vec<__nv_bfloat16, float>(a));
    default: return num_blocks(a.N, backward_vec<double, double>(a));
  }
}

void forward_cuda(const ForwardArgs& a, int dtype, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat: return launch_forward<float, float>(a, s);
    case kHalf: return launch_forward<__half, float>(a, s);
    case kBFloat16: return launch_forward<__nv_bfloat16, float>(a, s);
    default: return launch_forward<double, double>(a, s);
  }
}

void backward_cuda(const BackwardArgs& a, int dtype, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat: return launch_backward<float, float>(a, s);
    case kHalf: return launch_backward<__half, float>(a, s);
    case kBFloat16: return launch_backward<__nv_bfloat16, float>(a, s);
    default: return launch_backward<double, double>(a, s);
  }
}

}  // namespace fastspike
