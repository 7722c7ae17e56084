// The leaky family's math (snnTorch's Leaky and Synaptic), shared by the CPU and CUDA kernels; free of
// torch headers.
//
// Every expression is snnTorch 1.0.0's, in its order (fastspike/reference/leaky.py lists them), with no
// FMA contraction (g++ -ffp-contract=off, nvcc -fmad=false), so fp32 spikes and states are bit-identical
// to it. The backward is the derivative autograd takes through those expressions, term by term.
#pragma once

#include "surrogate.h"

namespace fastspike {

enum LeakyReset : int { kSubtract = 0, kZeroReset, kNoReset };  // snnTorch's reset_mechanism_val order

// One forward step of one neuron: updates syn (Synaptic) and mem, returns the spike; `pre` gets mem before
// the immediate reset of reset_delay=False (the value the spike was fired from).
template <typename T, int RESET, bool SYN, bool DELAY>
FS_HD T leaky_step(T x, T& syn, T& mem, T& pre, T bc, T ac, T thr, T gsf) {
  const T r = heaviside_strict(mem - thr);
  T m;
  if (SYN) {
    syn = ac * syn + x;
    const T base = bc * mem + syn;
    if (RESET == kSubtract) m = base - r * thr;
    else if (RESET == kZeroReset) m = base - base * r;
    else m = base;
  } else {
    if (RESET == kSubtract) m = (bc * mem + x) - r * thr;
    else if (RESET == kZeroReset) m = bc * ((T(1) - r) * mem) + x;
    else m = bc * mem + x;
  }
  const T spk = heaviside_strict(m - thr) * gsf;
  pre = m;
  if (!DELAY) {
    const T d = spk / gsf - r;
    if (RESET == kSubtract) m = m - d * thr;
    else if (RESET == kZeroReset) m = m - d * m;
  }
  mem = m;
  return spk;
}

// Gradients of one neuron's parameters, summed over the steps.
template <typename T>
struct LeakyParamGrads {
  T beta, alpha, threshold, gsf;
};

// One reverse step of one neuron. In: dL/dspk_t, G = dL/dmem_t and Gs = dL/dsyn_t (Synaptic), each
// including the gradient of that step's output; mem_prev, syn_prev the states after step t-1; m the mem
// the spike was fired from; sg = g'(m - thr). Out: dL/dx_t; G and Gs become dL/dmem_{t-1}, dL/dsyn_{t-1}
// (without step t-1's own outputs); the parameter gradients accumulate into acc.
template <typename T, int RESET, bool SYN, bool DELAY>
FS_HD T leaky_grad_step(T grad_spk, T& G, T& Gs, T mem_prev, T syn_prev, T m, T sg, T bc, T ac, T thr, T gsf,
                        LeakyParamGrads<T>& acc) {
  const T r = heaviside_strict(mem_prev - thr);
  const T s = heaviside_strict(m - thr);
  T gm = G, gspk = grad_spk;
  if (!DELAY) {
    // mem = m - d * thr (subtract) or m - d * m (zero), d = spk / gsf - r.
    const T spk = s * gsf;
    const T d = spk / gsf - r;
    T gd = T(0);
    if (RESET == kSubtract) {
      gd = -G * thr;
      acc.threshold = acc.threshold + -G * d;
    } else if (RESET == kZeroReset) {
      gm = G - G * d;
      gd = -G * m;
    }
    gspk = gspk + gd / gsf;
    acc.gsf = acc.gsf - gd * spk / (gsf * gsf);
  }
  acc.gsf = acc.gsf + gspk * s;
  const T grad_fire = gspk * gsf * sg;  // through spk = surrogate(m - thr) * gsf
  gm = gm + grad_fire;
  acc.threshold = acc.threshold - grad_fire;
  if (RESET == kSubtract) acc.threshold = acc.threshold - r * gm;
  if (SYN) {
    const T grad_base = RESET == kZeroReset ? gm - gm * r : gm;
    acc.beta = acc.beta + grad_base * mem_prev;
    G = grad_base * bc;
    const T gsyn = grad_base + Gs;
    acc.alpha = acc.alpha + gsyn * syn_prev;
    Gs = gsyn * ac;
    return gsyn;
  }
  if (RESET == kZeroReset) {
    const T keep = T(1) - r;
    acc.beta = acc.beta + gm * (keep * mem_prev);
    G = gm * bc * keep;
  } else {
    acc.beta = acc.beta + gm * mem_prev;
    G = gm * bc;
  }
  return gm;
}

// Pointers and sizes of one op; flat [T, N] tensors in one memory order, null when absent. x and grad_x
// have the input type, the rest the state type. A parameter is per neuron ([N]) where its flag is set,
// else one value.
struct LeakyParamPtrs {
  const void* beta; const void* alpha; const void* threshold; const void* gsf;
  bool beta_n, alpha_n, threshold_n, gsf_n;
};

struct LeakyForwardArgs {
  const void* x; void* spk; void* syn_last; void* mem_last; void* syn_seq; void* mem_seq; void* pre_seq;
  const void* syn_init; const void* mem_init;
  LeakyParamPtrs p;
  int64_t T, N;
  bool synaptic; int reset; bool reset_delay;
};

struct LeakyBackwardArgs {
  const void* grad_spk; const void* grad_syn_last; const void* grad_mem_last; const void* grad_syn_seq;
  const void* grad_mem_seq;
  const void* mem_seq; const void* pre_seq; const void* syn_seq; const void* syn_init; const void* mem_init;
  LeakyParamPtrs p;
  void* grad_x; void* grad_syn_init; void* grad_mem_init;
  void* grad_beta; void* grad_alpha; void* grad_threshold; void* grad_gsf;  // null unless needed
  int64_t T, N;
  bool synaptic; int reset; bool reset_delay; int surrogate;
  double sg_alpha, sg_a, sg_b;
};

void leaky_forward_cpu(const LeakyForwardArgs& a, int dtype);
void leaky_backward_cpu(const LeakyBackwardArgs& a, int dtype);

#ifdef FASTSPIKE_WITH_CUDA
void leaky_forward_cuda(const LeakyForwardArgs& a, int dtype, void* stream);
void leaky_backward_cuda(const LeakyBackwardArgs& a, int dtype, void* stream);
#endif

}  // namespace fastspike
