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

// The backward is written as autograd evaluates SpikingJelly's graph of the same step, product for product:
// values agree to rounding, and where one of those products is 0 * Inf (a huge or infinite h) the result is
// NaN exactly where SpikingJelly's is. In particular a gradient that does not exist in SpikingJelly's graph
// (dL/dv of the last step when v is unused) is not a zero here, or 0 * Inf would make NaN of it.
//
// One reverse step through fire and reset. In: dL/ds_t, dL/dv_t (after reset, including the v_seq
// gradient; has_grad_v false when there is none), h_t. Out: dL/dh_t.
//   hard: v = (1 - s) h + s v_reset    soft: v = h - s v_threshold    (s a function of h unless detached)
template <typename T>
FS_HD T grad_h_step(int surrogate, bool hard, bool detach_reset, const NeuronConsts<T>& c, T grad_s,
                    T grad_v, T h, bool has_grad_v) {
  const T hm = h - c.v_threshold;
  const T sg = surrogate_grad(surrogate, c.sg, hm);
  T direct, grad_s_all = grad_s;
  if (hard) {
    direct = grad_v * (T(1) - (hm >= T(0) ? T(1) : T(0)));
    if (!detach_reset) grad_s_all = grad_s + (grad_v * c.v_reset - grad_v * h);
  } else {
    direct = grad_v;
    if (!detach_reset) grad_s_all = grad_s - grad_v * c.v_threshold;
  }
  // Both sides are computed so the CPU loops stay branch-free.
  const bool masked = surrogate_masked(surrogate, c.sg, hm);
  const T through_s = masked ? T(0) : grad_s_all * sg, through_s_only = masked ? T(0) : grad_s * sg;
  return has_grad_v ? direct + through_s : through_s_only;
}

// The charge's backward, in the form autograd gives each charge expression: with u = dL/dh / tau (LIF,
// divided as div_tau does, like autograd's DivBackward on this device) or dL/dh * k (PLIF), dL/dx is u where
// x is scaled (decay_input) and dL/dh where it is not; dL/dv is dL/dh - u where the charge subtracts a scaled
// v, and dL/dh * m for the forms that multiply v by m = 1 - 1/tau or 1 - k (no decay_input, zero reset;
// IF: m = 1).
template <typename T>
struct ChargeGrad {
  T k, m;
  bool lif, scaled_x, sub;
};

template <typename T>
FS_HD ChargeGrad<T> charge_grad(int mode, double tau, T k, T km) {
  const bool lif = mode >= kLifDecayZero && mode <= kLifNoDecay;
  switch (mode) {
    case kIF: return {T(1), T(1), false, false, false};
    case kLifNoDecayZero: return {k, static_cast<T>(1.0 - 1.0 / tau), true, false, false};
    case kPlifNoDecayZero: return {k, km, false, false, false};
    case kLifNoDecay: case kPlifNoDecay: return {k, T(1), lif, false, true};
    default: return {k, T(1), lif, true, true};
  }
}

template <typename T>
FS_HD void charge_backward(const ChargeGrad<T>& g, const NeuronConsts<T>& c, T grad_h, T& grad_x, T& grad_v) {
  const T u = g.lif ? div_tau(c, grad_h) : grad_h * g.k;
  grad_x = g.scaled_x ? u : grad_h;
  grad_v = g.sub ? grad_h - u : grad_h * g.m;
}

// dh_t/dk of PLIF, from x_t and the potential before the charge: x - (v - v_reset) with decay_input, else
// -(v - v_reset) (v - 0 is v exactly, so the zero-reset forms are covered).
template <typename T>
FS_HD T plif_dh_dk(bool decay_input, const NeuronConsts<T>& c, T x, T v_prev) {
  const T v_rel = v_prev - c.v_reset;
  return decay_input ? x - v_rel : -v_rel;
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
  const void* x;  // PLIF with decay_input: x_seq, for dL/dk
  const void* v_init; double v_init_value;
  const void* k; const void* km;
  void* grad_x; void* grad_v_init;
  double* grad_k_partial;  // PLIF when dL/dk is needed: one partial sum per work chunk, summed by the caller
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
