// The neuron math shared by the CPU and CUDA kernels, free of torch headers so nvcc stays fast.
//
// Every expression is written in the order SpikingJelly 0.0.0.0.14's torch backend (and
// fastspike/reference.py) evaluates it on the same device (see div_tau), with no FMA contraction
// (g++ -ffp-contract=off, nvcc -fmad=false): fp32 results are then bit-identical to the reference.
// Constants that the reference computes in Python (double) arrive here already rounded the same way, see
// NeuronConsts.
#pragma once

#include "surrogate.h"

#include <cstdint>

namespace fastspike {

// The charge expression, one per row of reference.py's table; PLIF rows multiply by k = sigmoid(w)
// where LIF rows divide by tau.
enum ChargeMode : int {
  kIF = 0,
  kLifDecayZero, kLifDecay, kLifNoDecayZero, kLifNoDecay,
  kPlifDecayZero, kPlifDecay, kPlifNoDecayZero, kPlifNoDecay,
  kNumChargeModes
};

// The surrogates the neuron kernels are compiled for: fastspike.surrogate's, ids 0 .. kFastSigmoid.
constexpr int kNumNeuronSurrogates = kFastSigmoid + 1;

FS_HD bool is_plif(int mode) { return mode >= kPlifDecayZero; }

// Scalars of one neuron op in the state type T. The reference's Python scalars are doubles that torch
// rounds to the tensor dtype when an op uses them, so each constant is rounded from its double value.
template <typename T>
struct NeuronConsts {
  T v_threshold, v_reset, tau, decay_scale;  // decay_scale: 1 - 1/tau (LIF without decay_input)
  T inv_tau;                                 // 1/tau rounded as torch's CUDA division computes it
  T dh_dx, dh_dv;                            // charge partials of IF and LIF (PLIF's come from k)
  SurrogateConsts<T> sg;
};

template <typename T>
NeuronConsts<T> make_consts(int mode, double v_threshold, double v_reset, double tau,
                            const SurrogateConsts<T>& sg = {}) {
  NeuronConsts<T> c;
  c.v_threshold = static_cast<T>(v_threshold);
  c.v_reset = static_cast<T>(v_reset);
  c.tau = static_cast<T>(tau);
  c.decay_scale = static_cast<T>(1.0 - 1.0 / tau);
  c.inv_tau = T(1) / static_cast<T>(tau);
  const bool lif = mode >= kLifDecayZero && mode <= kLifNoDecay;
  const bool decay = mode == kLifDecayZero || mode == kLifDecay;
  c.dh_dx = static_cast<T>(lif && decay ? 1.0 / tau : 1.0);
  c.dh_dv = static_cast<T>(lif ? 1.0 - 1.0 / tau : 1.0);
  c.sg = sg;
  return c;
}

// a / tau as the reference computes it on this device: torch divides a CPU tensor by a Python scalar, but
// on CUDA multiplies by the scalar's reciprocal, rounded in the tensor's dtype (ATen's div_true_kernel_cuda).
template <typename T>
FS_HD T div_tau(const NeuronConsts<T>& c, T a) {
#if defined(__CUDA_ARCH__)
  return a * c.inv_tau;
#else
  return a / c.tau;
#endif
}

// h = f(v, x). k = sigmoid(w) and km = 1 - k (computed in w's dtype, then rounded) are PLIF's.
template <typename T>
FS_HD T charge(int mode, const NeuronConsts<T>& c, T v, T x, T k, T km) {
  switch (mode) {
    case kIF: return v + x;
    case kLifDecayZero: return v + div_tau(c, x - v);
    case kLifDecay: return v + div_tau(c, x - (v - c.v_reset));
    case kLifNoDecayZero: return v * c.decay_scale + x;
    case kLifNoDecay: return v - div_tau(c, v - c.v_reset) + x;
    case kPlifDecayZero: return v + (x - v) * k;
    case kPlifDecay: return v + (x - (v - c.v_reset)) * k;
    case kPlifNoDecayZero: return v * km + x;
    default: return v - (v - c.v_reset) * k + x;
  }
}

// Heaviside of h - v_threshold, as a 0/1 value of T (NaN does not fire).
template <typename T>
FS_HD T fire(const NeuronConsts<T>& c, T h) { return (h - c.v_threshold >= T(0)) ? T(1) : T(0); }

template <typename T>
FS_HD T reset(bool hard, const NeuronConsts<T>& c, T h, T s) {
  return hard ? (T(1) - s) * h + s * c.v_reset : h - s * c.v_threshold;
}

// One reverse step of backpropagation through time. In: dL/ds_t, dL/dv_t (after reset, including the
// v_seq gradient), h_t. Out: dL/dh_t.
template <typename T>
FS_HD T grad_h_step(int surrogate, bool hard, bool detach_reset, const NeuronConsts<T>& c, T grad_s,
                    T grad_v, T h) {
  const T hm = h - c.v_threshold;
  const T sg = surrogate_grad(surrogate, c.sg, hm);
  T dv_dh;
  if (hard) {
    dv_dh = T(1) - (hm >= T(0) ? T(1) : T(0));
    if (!detach_reset) dv_dh = dv_dh + (c.v_reset - h) * sg;
  } else {
    dv_dh = detach_reset ? T(1) : T(1) - c.v_threshold * sg;
  }
  return grad_s * sg + grad_v * dv_dh;
}

// dh_t/dk of PLIF given the potential before the charge: decay_input h = v + (x - v_rel) k, so the
// derivative x - v_rel is recovered as (h - v) / k without keeping x alive for the backward. Its error is
// about ulp(h) / k, which matters only for k = sigmoid(w) below ~1e-3 (tau above ~1000); k that rounds to
// 0 contributes 0 (the charge then ignores x) instead of 0/0.
template <typename T>
FS_HD T plif_dh_dk(int mode, const NeuronConsts<T>& c, T h, T v_prev, T k) {
  if (mode == kPlifDecayZero || mode == kPlifDecay) return k == T(0) ? T(0) : (h - v_prev) / k;
  return mode == kPlifNoDecayZero ? -v_prev : -(v_prev - c.v_reset);
}

// Pointers and sizes of one op. Tensors are flat [T, N] in one memory order (the glue guarantees it);
// optional pointers are null when absent. x/spike/grad_x/grad_spike have the input type, the rest the
// state type.
struct ForwardArgs {
  const void* x; void* spike; void* v_last; void* v_seq; void* h_seq;
  const void* v_init; double v_init_value;
  const void* k; const void* km;
  int64_t T, N;
  int mode; bool hard;
  double v_threshold, v_reset, tau;
};

struct BackwardArgs {
  const void* grad_spike; const void* grad_v_last; const void* grad_v_seq; const void* h_seq;
  const void* v_init; double v_init_value;
  const void* k; const void* km;
  void* grad_x; void* grad_v_init;
  double* grad_k_partial;  // PLIF: one partial sum of dL/dk per work chunk, summed by the caller
  int64_t T, N;
  int mode; bool hard; bool detach_reset; int surrogate;
  double v_threshold, v_reset, tau;
  double sg_alpha, sg_a, sg_b;  // the surrogate's constants
};

void forward_cpu(const ForwardArgs& a, int dtype);
void backward_cpu(const BackwardArgs& a, int dtype);

#ifdef FASTSPIKE_WITH_CUDA
int64_t cuda_backward_blocks(const BackwardArgs& a, int dtype);  // = PLIF partial sums written
void forward_cuda(const ForwardArgs& a, int dtype, void* stream);
void backward_cuda(const BackwardArgs& a, int dtype, void* stream);
#endif

}  // namespace fastspike
