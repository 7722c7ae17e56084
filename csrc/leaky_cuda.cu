// CUDA kernels of the leaky family: one thread per neuron with the whole T loop inside, states and
// parameters in registers (per-step loads are coalesced across a warp). The reset, Synaptic and
// reset_delay are template parameters; the surrogate is a warp-uniform switch. Compiled with -fmad=false.
#include "cuda_common.cuh"
#include "leaky.h"

namespace fastspike {
namespace {

template <typename T>
__device__ __forceinline__ T param(const void* p, bool per_neuron, int64_t j) {
  return p ? static_cast<const T*>(p)[per_neuron ? j : 0] : T(0);
}

template <typename T>
__device__ __forceinline__ T state_at(const void* p, int64_t i) {
  return p ? static_cast<const T*>(p)[i] : T(0);
}

template <typename S, typename T, int RESET, bool SYN, bool DELAY>
__global__ void __launch_bounds__(kThreads) leaky_fwd_kernel(const LeakyForwardArgs a) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= a.N) return;
  const T bc = param<T>(a.p.beta, a.p.beta_n, j), ac = param<T>(a.p.alpha, a.p.alpha_n, j);
  const T thr = param<T>(a.p.threshold, a.p.threshold_n, j), gsf = param<T>(a.p.gsf, a.p.gsf_n, j);
  T mem = state_at<T>(a.mem_init, j), syn = state_at<T>(a.syn_init, j), pre;
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t o = t * a.N + j;
    const T x = to_state(static_cast<const S*>(a.x)[o], T(0));
    static_cast<T*>(a.spk)[o] = leaky_step<T, RESET, SYN, DELAY>(x, syn, mem, pre, bc, ac, thr, gsf);
    if (a.mem_seq) static_cast<T*>(a.mem_seq)[o] = mem;
    if (a.pre_seq) static_cast<T*>(a.pre_seq)[o] = pre;
    if (SYN && a.syn_seq) static_cast<T*>(a.syn_seq)[o] = syn;
  }
  static_cast<T*>(a.mem_last)[j] = mem;
  if (SYN) static_cast<T*>(a.syn_last)[j] = syn;
}

template <typename S, typename T, int RESET, bool SYN, bool DELAY>
__global__ void __launch_bounds__(kThreads) leaky_bwd_kernel(const LeakyBackwardArgs a, const SurrogateConsts<T> c) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= a.N) return;
  const T bc = param<T>(a.p.beta, a.p.beta_n, j), ac = param<T>(a.p.alpha, a.p.alpha_n, j);
  const T thr = param<T>(a.p.threshold, a.p.threshold_n, j), gsf = param<T>(a.p.gsf, a.p.gsf_n, j);
  T G = static_cast<const T*>(a.grad_mem_last)[j];
  T Gs = SYN ? state_at<T>(a.grad_syn_last, j) : T(0);
  LeakyParamGrads<T> acc{T(0), T(0), T(0), T(0)};
  const T* mem_seq = static_cast<const T*>(a.mem_seq);
  const T* fired = static_cast<const T*>(DELAY ? a.mem_seq : a.pre_seq);
  const T* syn_seq = static_cast<const T*>(a.syn_seq);
  // mem after step t-1 is loaded one iteration early; it is the next iteration's mem_seq[t] too.
  T mem_prev = a.T > 1 ? mem_seq[(a.T - 2) * a.N + j] : state_at<T>(a.mem_init, j);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const int64_t o = t * a.N + j;
    if (a.grad_mem_seq) G = G + static_cast<const T*>(a.grad_mem_seq)[o];
    if (SYN && a.grad_syn_seq) Gs = Gs + static_cast<const T*>(a.grad_syn_seq)[o];
    const T m = fired[o];
    const T syn_prev = syn_seq && t > 0 ? syn_seq[o - a.N] : state_at<T>(a.syn_init, j);
    const T sg = surrogate_grad<T>(a.surrogate, c, m - thr);
    const T gx = leaky_grad_step<T, RESET, SYN, DELAY>(static_cast<const T*>(a.grad_spk)[o], G, Gs, mem_prev, syn_prev,
                                                        m, sg, bc, ac, thr, gsf, acc);
    static_cast<S*>(a.grad_x)[o] = from_state<S>(gx);
    if (t > 0) mem_prev = t > 1 ? mem_seq[o - 2 * a.N] : state_at<T>(a.mem_init, j);
  }
  static_cast<T*>(a.grad_mem_init)[j] = G;
  if (SYN) static_cast<T*>(a.grad_syn_init)[j] = Gs;
  if (a.grad_beta) static_cast<T*>(a.grad_beta)[j] = acc.beta;
  if (a.grad_alpha) static_cast<T*>(a.grad_alpha)[j] = acc.alpha;
  if (a.grad_threshold) static_cast<T*>(a.grad_threshold)[j] = acc.threshold;
  if (a.grad_gsf) static_cast<T*>(a.grad_gsf)[j] = acc.gsf;
}

// Calls f.template operator()<RESET, SYN, DELAY>() for the runtime values.
template <typename F>
void dispatch_leaky(int reset, bool syn, bool delay, F&& f) {
  auto with_delay = [&](auto r, auto s) {
    if (delay) f(r, s, std::true_type{}); else f(r, s, std::false_type{});
  };
  auto with_syn = [&](auto r) {
    if (syn) with_delay(r, std::true_type{}); else with_delay(r, std::false_type{});
  };
  if (reset == kSubtract) with_syn(std::integral_constant<int, kSubtract>{});
  else if (reset == kZeroReset) with_syn(std::integral_constant<int, kZeroReset>{});
  else with_syn(std::integral_constant<int, kNoReset>{});
}

template <typename S, typename T>
void launch_forward(const LeakyForwardArgs& a, cudaStream_t stream) {
  dispatch_leaky(a.reset, a.synaptic, a.reset_delay, [&](auto r, auto s, auto d) {
    leaky_fwd_kernel<S, T, decltype(r)::value, decltype(s)::value, decltype(d)::value>
        <<<num_blocks(a.N, 1), kThreads, 0, stream>>>(a);
  });
  check_launch("leaky forward kernel launch");
}

template <typename S, typename T>
void launch_backward(const LeakyBackwardArgs& a, cudaStream_t stream) {
  const SurrogateConsts<T> c = make_surrogate_consts<T>(a.sg_alpha, a.sg_a, a.sg_b);
  dispatch_leaky(a.reset, a.synaptic, a.reset_delay, [&](auto r, auto s, auto d) {
    leaky_bwd_kernel<S, T, decltype(r)::value, decltype(s)::value, decltype(d)::value>
        <<<num_blocks(a.N, 1), kThreads, 0, stream>>>(a, c);
  });
  check_launch("leaky backward kernel launch");
}

}  // namespace

void leaky_forward_cuda(const LeakyForwardArgs& a, int dtype, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat: return launch_forward<float, float>(a, s);
    case kHalf: return launch_forward<__half, float>(a, s);
    case kBFloat16: return launch_forward<__nv_bfloat16, float>(a, s);
    default: return launch_forward<double, double>(a, s);
  }
}

void leaky_backward_cuda(const LeakyBackwardArgs& a, int dtype, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat: return launch_backward<float, float>(a, s);
    case kHalf: return launch_backward<__half, float>(a, s);
    case kBFloat16: return launch_backward<__nv_bfloat16, float>(a, s);
    default: return launch_backward<double, double>(a, s);
  }
}

}  // namespace fastspike
