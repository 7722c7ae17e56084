"""Fused multi-step kernels of snnTorch's Leaky and Synaptic in Triton, and the ops that launch them.

``fastspike::triton_leaky_forward`` / ``triton_leaky_backward`` have the schemas of
:data:`fastspike._contract.LEAKY_FORWARD` / ``LEAKY_BACKWARD`` and the layout contract of
:mod:`fastspike._leaky_ops`. One program owns BLOCK neurons and runs the whole time loop with the states
and parameters in fp32 registers; x and grad_x are in the input dtype, the rest fp32 (float64 runs on the
reference, :func:`fastspike.triton_kernels.leaky_multistep`). The expressions are
:mod:`fastspike.reference.leaky`'s in its order; products whose rounding decides a spike (``beta * mem``,
``alpha * syn``) are PTX ``mul.rn`` on GPUs, so no FMA contraction changes fp32 results.
"""

import torch
import triton
import triton.language as tl

from .. import _leaky_ops, _ops
from .._contract import LEAKY_BACKWARD, LEAKY_FORWARD, SURROGATES
from .common import (INPUT_DTYPES, INTERPRETED, STATE_DTYPE, check_like, check_surrogate, check_time_major, config,
                     device_guard, div_rn, initial_state, launcher, mul_rn, narrow, register_ops, surrogate_grad,
                     widen)

_RESETS = {"subtract": 0, "zero": 1, "none": 2}
_SUBTRACT = tl.constexpr(0)
_ZERO = tl.constexpr(1)


@triton.jit
def _param(ptr, offs, mask, PER_NEURON: tl.constexpr, BLOCK: tl.constexpr):
    if PER_NEURON:
        # 1 in the lanes past N: they divide by the graded spikes factor too.
        p = tl.load(ptr + offs, mask=mask, other=1.0)
    else:
        p = tl.zeros([BLOCK], tl.float32) + tl.load(ptr)
    return p


@triton.jit
def _spike(x):
    return tl.where(x > 0.0, 1.0, 0.0)


@triton.jit(do_not_specialize=["T"])
def _leaky_fwd_kernel(x_ptr, syn_init_ptr, mem_init_ptr, beta_ptr, alpha_ptr, thr_ptr, gsf_ptr, spk_ptr,
                      syn_last_ptr, mem_last_ptr, syn_seq_ptr, mem_seq_ptr, pre_seq_ptr, T, N,
                      RESET: tl.constexpr, SYN: tl.constexpr, DELAY: tl.constexpr, HAS_SYN_INIT: tl.constexpr,
                      HAS_MEM_INIT: tl.constexpr, BETA_N: tl.constexpr, ALPHA_N: tl.constexpr,
                      THR_N: tl.constexpr, GSF_N: tl.constexpr, STORE_SYN: tl.constexpr, STORE_MEM: tl.constexpr,
                      STORE_PRE: tl.constexpr, PTX: tl.constexpr, BLOCK: tl.constexpr):
    """Program p runs neurons [p*BLOCK, (p+1)*BLOCK) of flat [T, N] tensors through all T steps: reads x
    (input dtype), writes spikes and the requested state sequences (fp32) and the last states."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    bc = _param(beta_ptr, offs, mask, BETA_N, BLOCK)
    thr = _param(thr_ptr, offs, mask, THR_N, BLOCK)
    gsf = _param(gsf_ptr, offs, mask, GSF_N, BLOCK)
    mem = initial_state(mem_init_ptr, 0.0, offs, mask, HAS_MEM_INIT, BLOCK)
    if SYN:
        ac = _param(alpha_ptr, offs, mask, ALPHA_N, BLOCK)
        syn = initial_state(syn_init_ptr, 0.0, offs, mask, HAS_SYN_INIT, BLOCK)
    x_next = tl.load(x_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        o = tl.cast(t, tl.int64) * N + offs
        x = widen(x_next)
        x_next = tl.load(x_ptr + o + N, mask=mask & (t + 1 < T), other=0.0)
        r = _spike(mem - thr)
        if SYN:
            syn = mul_rn(ac, syn, PTX) + x
            base = mul_rn(bc, mem, PTX) + syn
            if RESET == _SUBTRACT:
                m = base - r * thr
            elif RESET == _ZERO:
                m = base - base * r
            else:
                m = base
        elif RESET == _SUBTRACT:
            m = (mul_rn(bc, mem, PTX) + x) - r * thr
        elif RESET == _ZERO:
            m = mul_rn(bc, (1.0 - r) * mem, PTX) + x
        else:
            m = mul_rn(bc, mem, PTX) + x
        spk = _spike(m - thr) * gsf
        if STORE_PRE:
            tl.store(pre_seq_ptr + o, m, mask=mask)
        if not DELAY:
            d = div_rn(spk, gsf) - r
            if RESET == _SUBTRACT:
                m = m - d * thr
            elif RESET == _ZERO:
                m = m - d * m
        mem = m
        tl.store(spk_ptr + o, spk, mask=mask)
        if STORE_MEM:
            tl.store(mem_seq_ptr + o, mem, mask=mask)
        if SYN:
            if STORE_SYN:
                tl.store(syn_seq_ptr + o, syn, mask=mask)
    tl.store(mem_last_ptr + offs, mem, mask=mask)
    if SYN:
        tl.store(syn_last_ptr + offs, syn, mask=mask)


@triton.jit(do_not_specialize=["T"])
def _leaky_bwd_kernel(grad_spk_ptr, grad_syn_last_ptr, grad_mem_last_ptr, grad_syn_seq_ptr, grad_mem_seq_ptr,
                      mem_seq_ptr, pre_seq_ptr, syn_seq_ptr, syn_init_ptr, mem_init_ptr, beta_ptr, alpha_ptr, thr_ptr,
                      gsf_ptr, grad_x_ptr, grad_syn_init_ptr, grad_mem_init_ptr, grad_beta_ptr, grad_alpha_ptr,
                      grad_thr_ptr, grad_gsf_ptr, T, N, sg_alpha, sg_a, sg_b,
                      RESET: tl.constexpr, SYN: tl.constexpr, DELAY: tl.constexpr, SURROGATE: tl.constexpr,
                      HAS_SYN_INIT: tl.constexpr, HAS_MEM_INIT: tl.constexpr, HAS_GRAD_SYN_LAST: tl.constexpr,
                      HAS_GRAD_SYN_SEQ: tl.constexpr, HAS_GRAD_MEM_SEQ: tl.constexpr, HAS_SYN_SEQ: tl.constexpr,
                      BETA_N: tl.constexpr, ALPHA_N: tl.constexpr, THR_N: tl.constexpr, GSF_N: tl.constexpr,
                      NEED_BETA: tl.constexpr, NEED_ALPHA: tl.constexpr, NEED_THR: tl.constexpr,
                      NEED_GSF: tl.constexpr, PTX: tl.constexpr, BLOCK: tl.constexpr):
    """Backpropagation through time, t = T-1 .. 0, the derivative of the forward's expressions term by term
    (csrc/leaky.h's leaky_grad_step); parameter gradients are summed over time per neuron."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    sg_alpha, sg_a, sg_b = tl.cast(sg_alpha, tl.float32), tl.cast(sg_a, tl.float32), tl.cast(sg_b, tl.float32)
    bc = _param(beta_ptr, offs, mask, BETA_N, BLOCK)
    thr = _param(thr_ptr, offs, mask, THR_N, BLOCK)
    gsf = _param(gsf_ptr, offs, mask, GSF_N, BLOCK)
    G = tl.load(grad_mem_last_ptr + offs, mask=mask, other=0.0)
    mem0 = initial_state(mem_init_ptr, 0.0, offs, mask, HAS_MEM_INIT, BLOCK)
    acc_beta = tl.zeros([BLOCK], tl.float32)
    acc_alpha = tl.zeros([BLOCK], tl.float32)
    acc_thr = tl.zeros([BLOCK], tl.float32)
    acc_gsf = tl.zeros([BLOCK], tl.float32)
    if SYN:
        ac = _param(alpha_ptr, offs, mask, ALPHA_N, BLOCK)
        syn0 = initial_state(syn_init_ptr, 0.0, offs, mask, HAS_SYN_INIT, BLOCK)
        Gs = initial_state(grad_syn_last_ptr, 0.0, offs, mask, HAS_GRAD_SYN_LAST, BLOCK)
    for i in range(T):
        t = T - 1 - i
        o = tl.cast(t, tl.int64) * N + offs
        if HAS_GRAD_MEM_SEQ:
            G = G + tl.load(grad_mem_seq_ptr + o, mask=mask, other=0.0)
        mem_prev = tl.where(t > 0, tl.load(mem_seq_ptr + o - N, mask=mask & (t > 0), other=0.0), mem0)
        if DELAY:
            m = tl.load(mem_seq_ptr + o, mask=mask, other=0.0)
        else:
            m = tl.load(pre_seq_ptr + o, mask=mask, other=0.0)
        grad_spk = tl.load(grad_spk_ptr + o, mask=mask, other=0.0)
        sg = surrogate_grad(m - thr, sg_alpha, sg_a, sg_b, SURROGATE, PTX)
        r = _spike(mem_prev - thr)
        s = _spike(m - thr)
        gm = G
        if not DELAY:
            spk = s * gsf
            d = div_rn(spk, gsf) - r
            gd = tl.zeros([BLOCK], tl.float32)
            if RESET == _SUBTRACT:
                gd = -G * thr
                acc_thr = acc_thr + -G * d
            elif RESET == _ZERO:
                gm = G - G * d
                gd = -G * m
            grad_spk = grad_spk + div_rn(gd, gsf)
            acc_gsf = acc_gsf - div_rn(gd * spk, gsf * gsf)
        acc_gsf = acc_gsf + grad_spk * s
        grad_fire = grad_spk * gsf * sg
        gm = gm + grad_fire
        acc_thr = acc_thr - grad_fire
        if RESET == _SUBTRACT:
            acc_thr = acc_thr - r * gm
        if SYN:
            if HAS_GRAD_SYN_SEQ:
                Gs = Gs + tl.load(grad_syn_seq_ptr + o, mask=mask, other=0.0)
            if RESET == _ZERO:
                grad_base = gm - gm * r
            else:
                grad_base = gm
            acc_beta = acc_beta + grad_base * mem_prev
            G = grad_base * bc
            gsyn = grad_base + Gs
            if HAS_SYN_SEQ:
                syn_prev = tl.where(t > 0, tl.load(syn_seq_ptr + o - N, mask=mask & (t > 0), other=0.0), syn0)
                acc_alpha = acc_alpha + gsyn * syn_prev
            Gs = gsyn * ac
            gx = gsyn
        else:
            if RESET == _ZERO:
                keep = 1.0 - r
                acc_beta = acc_beta + gm * (keep * mem_prev)
                G = gm * bc * keep
            else:
                acc_beta = acc_beta + gm * mem_prev
                G = gm * bc
            gx = gm
        tl.store(grad_x_ptr + o, narrow(gx, grad_x_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_mem_init_ptr + offs, G, mask=mask)
    if SYN:
        tl.store(grad_syn_init_ptr + offs, Gs, mask=mask)
    if NEED_BETA:
        tl.store(grad_beta_ptr + offs, acc_beta, mask=mask)
    if NEED_ALPHA:
        tl.store(grad_alpha_ptr + offs, acc_alpha, mask=mask)
    if NEED_THR:
        tl.store(grad_thr_ptr + offs, acc_thr, mask=mask)
    if NEED_GSF:
        tl.store(grad_gsf_ptr + offs, acc_gsf, mask=mask)


def _check_params(p) -> None:
    if p.reset not in _RESETS:
        raise RuntimeError(f"fastspike: unknown reset '{p.reset}'")
    check_surrogate(p.surrogate)


def _check_param_tensors(a, step) -> None:
    for name in _leaky_ops.PARAMS:
        t = getattr(a, name)
        if name == "alpha" and not a.params.synaptic:
            continue
        if t is None:
            raise RuntimeError(f"fastspike: {name} is required")
        if t.numel() != 1:
            check_like(t, step, STATE_DTYPE, name)
        elif t.dtype != STATE_DTYPE or t.device != step.device:
            raise RuntimeError(f"fastspike: {name} must be {STATE_DTYPE} on {step.device}, got {t.dtype} on {t.device}")


def _flags(a) -> dict:
    """The per-neuron flags of the parameters."""
    return {f"{k}_N": getattr(a, n) is not None and getattr(a, n).numel() != 1
            for k, n in (("BETA", "beta"), ("ALPHA", "alpha"), ("THR", "threshold"), ("GSF", "gsf"))}


def _forward(*args, **kwargs):
    a = _ops.named_args(LEAKY_FORWARD, args, kwargs)
    p, x_seq = a.params, a.x_seq
    check_time_major(x_seq, "x_seq")
    if x_seq.dtype not in INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take float16, bfloat16 or float32 x_seq, got "
                           f"{x_seq.dtype} (fastspike.triton_kernels.leaky_multistep runs float64 on the reference)")
    step = x_seq[0]
    _check_params(p)
    _check_param_tensors(a, step)
    check_like(a.syn_init, step, STATE_DTYPE, "syn_init")
    check_like(a.mem_init, step, STATE_DTYPE, "mem_init")
    out = _leaky_ops.forward_outputs(a)
    spk, syn_last, mem_last, syn_seq, mem_seq, pre_seq = out
    n = step.numel()
    if n > 0:
        block, warps = config(n)
        store_syn, store_mem, store_pre = syn_seq.numel() > 0, mem_seq.numel() > 0, pre_seq.numel() > 0
        with device_guard(x_seq):
            launcher(_leaky_fwd_kernel)[(triton.cdiv(n, block),)](
                x_ptr=x_seq, syn_init_ptr=a.syn_init, mem_init_ptr=a.mem_init, beta_ptr=a.beta,
                alpha_ptr=a.alpha if p.synaptic else None, thr_ptr=a.threshold, gsf_ptr=a.gsf, spk_ptr=spk,
                syn_last_ptr=syn_last if p.synaptic else None, mem_last_ptr=mem_last,
                syn_seq_ptr=syn_seq if store_syn else None, mem_seq_ptr=mem_seq if store_mem else None,
                pre_seq_ptr=pre_seq if store_pre else None, T=x_seq.shape[0], N=n, RESET=_RESETS[p.reset],
                SYN=p.synaptic, DELAY=p.reset_delay, HAS_SYN_INIT=a.syn_init is not None,
                HAS_MEM_INIT=a.mem_init is not None, STORE_SYN=store_syn, STORE_MEM=store_mem, STORE_PRE=store_pre,
                PTX=not INTERPRETED, BLOCK=block, num_warps=warps, **_flags(a))
    return out


def _backward(*args, **kwargs):
    a = _ops.named_args(LEAKY_BACKWARD, args, kwargs)
    p, mem_seq = a.params, a.mem_seq
    if mem_seq.dim() < 2 or mem_seq.shape != a.grad_spk_seq.shape:
        raise RuntimeError("fastspike: the backward needs the mem sequence saved by a forward with save=True")
    check_time_major(mem_seq, "mem_seq")
    if mem_seq.dtype != STATE_DTYPE or a.grad_x_dtype not in INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take a float32 mem_seq and compute a float16, bfloat16 "
                           f"or float32 grad_x, got {mem_seq.dtype} and {a.grad_x_dtype}")
    step = mem_seq[0]
    _check_params(p)
    _check_param_tensors(a, step)
    for name in ("grad_spk_seq", "grad_syn_seq", "grad_mem_seq", "pre_seq", "syn_seq"):
        check_like(getattr(a, name), mem_seq, STATE_DTYPE, name)
    for name in ("grad_syn_last", "grad_mem_last", "syn_init", "mem_init"):
        check_like(getattr(a, name), step, STATE_DTYPE, name)
    if not p.reset_delay and a.pre_seq is None:
        raise RuntimeError("fastspike: reset_delay=False needs the saved pre_seq")
    need_alpha = p.synaptic and a.need_alpha
    if need_alpha and a.syn_seq is None:
        raise RuntimeError("fastspike: alpha's gradient needs the saved syn_seq")
    out = _leaky_ops.backward_outputs(a)
    grad_x, grad_syn_init, grad_mem_init, grad_beta, grad_alpha, grad_thr, grad_gsf = out
    n = step.numel()
    if n > 0:
        block, warps = config(n)
        with device_guard(mem_seq):
            launcher(_leaky_bwd_kernel)[(triton.cdiv(n, block),)](
                grad_spk_ptr=a.grad_spk_seq, grad_syn_last_ptr=a.grad_syn_last, grad_mem_last_ptr=a.grad_mem_last,
                grad_syn_seq_ptr=a.grad_syn_seq, grad_mem_seq_ptr=a.grad_mem_seq, mem_seq_ptr=mem_seq,
                pre_seq_ptr=a.pre_seq, syn_seq_ptr=a.syn_seq if need_alpha else None, syn_init_ptr=a.syn_init,
                mem_init_ptr=a.mem_init, beta_ptr=a.beta, alpha_ptr=a.alpha if p.synaptic else None,
                thr_ptr=a.threshold, gsf_ptr=a.gsf, grad_x_ptr=grad_x,
                grad_syn_init_ptr=grad_syn_init if p.synaptic else None, grad_mem_init_ptr=grad_mem_init,
                grad_beta_ptr=grad_beta if a.need_beta else None, grad_alpha_ptr=grad_alpha if need_alpha else None,
                grad_thr_ptr=grad_thr if a.need_threshold else None, grad_gsf_ptr=grad_gsf if a.need_gsf else None,
                T=mem_seq.shape[0], N=n, sg_alpha=p.sg_alpha, sg_a=p.sg_a, sg_b=p.sg_b, RESET=_RESETS[p.reset],
                SYN=p.synaptic, DELAY=p.reset_delay, SURROGATE=SURROGATES.index(p.surrogate),
                HAS_SYN_INIT=p.synaptic and a.syn_init is not None, HAS_MEM_INIT=a.mem_init is not None,
                HAS_GRAD_SYN_LAST=p.synaptic and a.grad_syn_last is not None,
                HAS_GRAD_SYN_SEQ=p.synaptic and a.grad_syn_seq is not None,
                HAS_GRAD_MEM_SEQ=a.grad_mem_seq is not None, HAS_SYN_SEQ=need_alpha, NEED_BETA=a.need_beta,
                NEED_ALPHA=need_alpha, NEED_THR=a.need_threshold, NEED_GSF=a.need_gsf, PTX=not INTERPRETED,
                BLOCK=block, num_warps=warps, **_flags(a))
    return out


forward_op, backward_op = register_ops(_leaky_ops.FAMILY, "leaky", _forward, _backward)
