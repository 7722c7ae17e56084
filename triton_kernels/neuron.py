"""Fused multi-step IF/LIF/PLIF kernels in Triton and the ``torch.library`` ops that launch them.

``fastspike::triton_neuron_forward`` / ``triton_neuron_backward`` have the schemas of
:data:`fastspike._contract.NEURON_FORWARD` / ``NEURON_BACKWARD`` and the layout contract of
:mod:`fastspike._neuron_ops`: every tensor is a flat ``[T, N]`` array (N = one step's numel) in one memory
order. One program owns BLOCK neurons and runs the whole time loop, state in fp32 registers; x, spikes,
grad_spike and grad_x are in the input dtype (fp16/bf16/fp32), the rest fp32. float64 runs on the
reference instead (:func:`fastspike.triton_kernels.neuron_multistep`).

Exactness (fp32 spikes and v bit-identical to :mod:`fastspike.reference.neuron` on the same device): the
charge follows the reference's expression order; constants the reference computes in Python double
(``1 - 1/tau``, surrogate constants) arrive pre-computed and are rounded to fp32 once, as torch rounds a
Python scalar; division is IEEE; on GPUs the charge's products are PTX ``mul.rn``, which no compile option
(``enable_fp_fusion``, Inductor recompiling the kernel in a compiled graph) can contract into an FMA (see
:mod:`.common`). torch divides a CUDA tensor by a Python scalar as a product with the fp32 reciprocal (ATen
div_true_kernel_cuda), a CPU tensor by true division: ``TAU_RECIPROCAL`` follows the device, so LIF's
``/ tau`` matches either.
"""

import torch
import triton
import triton.language as tl

from .. import _neuron_ops
from .. import _ops
from .._contract import NEURON_BACKWARD, NEURON_FORWARD, SURROGATES
from .common import (INPUT_DTYPES, INTERPRETED, STATE_DTYPE, check_like, check_surrogate, check_time_major, config,
                     device_guard, f32, initial_state, launcher, mul_rn, narrow, register_ops,
                     surrogate_grad, surrogate_masked, widen)

_IF = tl.constexpr(0)
_LIF = tl.constexpr(1)
_PLIF = tl.constexpr(2)
_KINDS = {"if": _IF.value, "lif": _LIF.value, "plif": _PLIF.value}


@triton.jit
def _by_tau(a, tau, inv_tau, TAU_RECIPROCAL: tl.constexpr, PTX: tl.constexpr):
    if TAU_RECIPROCAL:
        r = mul_rn(a, inv_tau, PTX)
    else:
        r = tl.div_rn(a, tl.zeros_like(a) + tau)
    return r


@triton.jit
def _one_minus(k_raw):
    # 1 - k rounded to k's dtype, as torch evaluates `1.0 - k` on the tensor k: for a 16-bit k the fp32
    # difference is exact, so rounding it once equals the 16-bit subtraction.
    if k_raw.dtype.primitive_bitwidth == 16:
        r = widen(narrow(1.0 - widen(k_raw), k_raw.dtype))
    else:
        r = (1.0 - k_raw).to(tl.float32)
    return r


@triton.jit
def _charge(v, x, k, km, v_reset, tau, inv_tau, decay_scale, KIND: tl.constexpr, DECAY: tl.constexpr,
            ZERO_RESET: tl.constexpr, TAU_RECIPROCAL: tl.constexpr, PTX: tl.constexpr):
    if KIND == _IF:
        h = v + x
    elif KIND == _LIF:
        if DECAY:
            if ZERO_RESET:
                h = v + _by_tau(x - v, tau, inv_tau, TAU_RECIPROCAL, PTX)
            else:
                h = v + _by_tau(x - (v - v_reset), tau, inv_tau, TAU_RECIPROCAL, PTX)
        elif ZERO_RESET:
            h = mul_rn(v, decay_scale, PTX) + x
        else:
            h = v - _by_tau(v - v_reset, tau, inv_tau, TAU_RECIPROCAL, PTX) + x
    elif DECAY:
        if ZERO_RESET:
            h = v + mul_rn(x - v, k, PTX)
        else:
            h = v + mul_rn(x - (v - v_reset), k, PTX)
    elif ZERO_RESET:
        h = mul_rn(v, km, PTX) + x
    else:
        h = v - mul_rn(v - v_reset, k, PTX) + x
    return h


@triton.jit
def _reset(h, s, v_threshold, v_reset, HARD: tl.constexpr):
    # s is 0 or 1, so these products are exact and an FMA cannot change the result.
    if HARD:
        v = (1.0 - s) * h + s * v_reset
    else:
        v = h - s * v_threshold
    return v


@triton.jit
def _fire(h, v_threshold):
    return tl.where(h - v_threshold >= 0.0, 1.0, 0.0)


@triton.jit(do_not_specialize=["T"])
def _neuron_fwd_kernel(x_ptr, v_init_ptr, k_ptr, spike_ptr, v_last_ptr, v_seq_ptr, h_seq_ptr, T, N,
                       v_init_value, v_threshold, v_reset, tau, inv_tau, decay_scale,
                       KIND: tl.constexpr, DECAY: tl.constexpr, ZERO_RESET: tl.constexpr, HARD: tl.constexpr,
                       HAS_V_INIT: tl.constexpr, STORE_V_SEQ: tl.constexpr, SAVE_H: tl.constexpr,
                       TAU_RECIPROCAL: tl.constexpr, PTX: tl.constexpr, BLOCK: tl.constexpr):
    """Program p runs neurons [p*BLOCK, (p+1)*BLOCK) of flat [T, N] tensors through all T steps. Reads x
    (input dtype) and v_init [N] (fp32, when HAS_V_INIT, else v_init_value); writes spikes (x's dtype),
    v_last [N], and h/v sequences [T, N] (fp32) only when SAVE_H/STORE_V_SEQ. k_ptr: PLIF's sigmoid(w)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    # Scalars may arrive as fp64 (Inductor passes Python floats so); the reference rounds them to fp32.
    v_threshold, v_reset = tl.cast(v_threshold, tl.float32), tl.cast(v_reset, tl.float32)
    tau, inv_tau, decay_scale = tl.cast(tau, tl.float32), tl.cast(inv_tau, tl.float32), tl.cast(decay_scale, tl.float32)
    if KIND == _PLIF:
        k_raw = tl.load(k_ptr)
        k = widen(k_raw)
        km = _one_minus(k_raw)
    else:
        k = v_threshold  # placeholders: only PLIF reads k and 1 - k
        km = v_threshold
    v = initial_state(v_init_ptr, v_init_value, offs, mask, HAS_V_INIT, BLOCK)
    # x of the next step is requested before this step's arithmetic and stores, hiding its latency.
    x_next = tl.load(x_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        o = tl.cast(t, tl.int64) * N + offs
        x = widen(x_next)
        x_next = tl.load(x_ptr + o + N, mask=mask & (t + 1 < T), other=0.0)
        h = _charge(v, x, k, km, v_reset, tau, inv_tau, decay_scale, KIND, DECAY, ZERO_RESET, TAU_RECIPROCAL,
                    PTX)
        s = _fire(h, v_threshold)
        v = _reset(h, s, v_threshold, v_reset, HARD)
        tl.store(spike_ptr + o, s.to(spike_ptr.dtype.element_ty), mask=mask)
        if SAVE_H:
            tl.store(h_seq_ptr + o, h, mask=mask)
        if STORE_V_SEQ:
            tl.store(v_seq_ptr + o, v, mask=mask)
    tl.store(v_last_ptr + offs, v, mask=mask)


@triton.jit
def _grad_h(grad_s, grad_v, h, v_threshold, v_reset, alpha, sg_a, sg_b, HAS_GRAD_V, HARD: tl.constexpr,
            DETACH_RESET: tl.constexpr, SURROGATE: tl.constexpr, PTX: tl.constexpr):
    # dL/dh through fire and reset, product for product as autograd on SpikingJelly's graph (csrc/neuron.h,
    # grad_h_step); without dL/dv (the last step when v has no gradient) only dL/ds g' exists.
    hm = h - v_threshold
    sg = surrogate_grad(hm, alpha, sg_a, sg_b, SURROGATE, PTX)
    if HARD:
        direct = mul_rn(grad_v, 1.0 - tl.where(hm >= 0.0, 1.0, 0.0), PTX)
        if DETACH_RESET:
            grad_s_all = grad_s
        else:
            grad_s_all = grad_s + (mul_rn(grad_v, tl.zeros_like(h) + v_reset, PTX) - mul_rn(grad_v, h, PTX))
    else:
        direct = grad_v
        if DETACH_RESET:
            grad_s_all = grad_s
        else:
            grad_s_all = grad_s - mul_rn(grad_v, tl.zeros_like(h) + v_threshold, PTX)
    masked = surrogate_masked(hm, sg_b, SURROGATE)
    through_s = tl.where(masked, 0.0, mul_rn(grad_s_all, sg, PTX))
    return tl.where(HAS_GRAD_V, direct + through_s, tl.where(masked, 0.0, mul_rn(grad_s, sg, PTX)))


@triton.jit(do_not_specialize=["T"])
def _neuron_bwd_kernel(grad_spike_ptr, grad_v_last_ptr, grad_v_seq_ptr, h_seq_ptr, x_ptr, v_init_ptr, k_ptr,
                       grad_x_ptr, grad_v_init_ptr, grad_k_partial_ptr, T, N, v_init_value, v_threshold, v_reset,
                       tau, inv_tau, decay_scale, alpha, sg_a, sg_b, KIND: tl.constexpr, DECAY: tl.constexpr,
                       ZERO_RESET: tl.constexpr, HARD: tl.constexpr, DETACH_RESET: tl.constexpr,
                       SURROGATE: tl.constexpr, HAS_V_INIT: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr,
                       HAS_GRAD_V_SEQ: tl.constexpr, NEED_GRAD_K: tl.constexpr, TAU_RECIPROCAL: tl.constexpr,
                       PTX: tl.constexpr, BLOCK: tl.constexpr):
    """Backpropagation through time over BLOCK neurons per program, t = T-1 .. 0, from the saved h [T, N]
    (fp32) and grad_spike [T, N] (input dtype), plus grad_v_last [N] / grad_v_seq [T, N] when given; writes
    grad_x (grad_spike's dtype), grad_v_init [N] and, when NEED_GRAD_K (PLIF), this program's fp64 partial
    sum of dL/dk, reading x [T, N] (input dtype) with decay_input. The charge's backward is autograd's on
    the table's expression (csrc/neuron.h, charge_backward)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v_threshold, v_reset = tl.cast(v_threshold, tl.float32), tl.cast(v_reset, tl.float32)
    alpha, sg_a, sg_b = tl.cast(alpha, tl.float32), tl.cast(sg_a, tl.float32), tl.cast(sg_b, tl.float32)
    tau, inv_tau = tl.cast(tau, tl.float32), tl.cast(inv_tau, tl.float32)
    if KIND == _PLIF:
        k_raw = tl.load(k_ptr)
        k = widen(k_raw)
        km = _one_minus(k_raw)
    else:
        k = tl.full([], 1.0, tl.float32)
        km = tl.cast(decay_scale, tl.float32)
    v0 = initial_state(v_init_ptr, v_init_value, offs, mask, HAS_V_INIT, BLOCK)
    if HAS_GRAD_V_LAST:
        grad_v = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0)
    else:
        grad_v = tl.zeros([BLOCK], tl.float32)
    grad_k = tl.zeros([BLOCK], tl.float64)
    h = tl.load(h_seq_ptr + tl.cast(T - 1, tl.int64) * N + offs, mask=mask, other=0.0)
    for i in range(T):
        t = T - 1 - i
        o = tl.cast(t, tl.int64) * N + offs
        # h of step t-1: v_{t-1} for PLIF's dh/dk, and the next iteration's h.
        h_prev = tl.load(h_seq_ptr + o - N, mask=mask & (t > 0), other=0.0)
        grad_s = widen(tl.load(grad_spike_ptr + o, mask=mask, other=0.0))
        if HAS_GRAD_V_SEQ:
            grad_v = grad_v + tl.load(grad_v_seq_ptr + o, mask=mask, other=0.0)
        has_grad_v = (i > 0) | HAS_GRAD_V_LAST | HAS_GRAD_V_SEQ
        grad_h = _grad_h(grad_s, grad_v, h, v_threshold, v_reset, alpha, sg_a, sg_b, has_grad_v, HARD,
                         DETACH_RESET, SURROGATE, PTX)
        if KIND == _LIF:
            u = _by_tau(grad_h, tau, inv_tau, TAU_RECIPROCAL, PTX)
        else:
            u = mul_rn(grad_h, tl.zeros_like(grad_h) + k, PTX)
        if KIND != _IF and DECAY:
            grad_x = u
        else:
            grad_x = grad_h
        tl.store(grad_x_ptr + o, narrow(grad_x, grad_x_ptr.dtype.element_ty), mask=mask)
        if NEED_GRAD_K:
            v_prev = tl.where(t > 0, _reset(h_prev, _fire(h_prev, v_threshold), v_threshold, v_reset, HARD), v0)
            if DECAY:
                dh_dk = widen(tl.load(x_ptr + o, mask=mask, other=0.0)) - (v_prev - v_reset)
            else:
                dh_dk = -(v_prev - v_reset)
            grad_k += tl.where(mask, mul_rn(grad_h, dh_dk, PTX).to(tl.float64), 0.0)
        if KIND == _IF:
            grad_v = grad_h
        elif not DECAY and ZERO_RESET:
            grad_v = mul_rn(grad_h, tl.zeros_like(grad_h) + km, PTX)
        else:
            grad_v = grad_h - u
        h = h_prev
    tl.store(grad_v_init_ptr + offs, grad_v, mask=mask)
    if NEED_GRAD_K:
        tl.store(grad_k_partial_ptr + tl.program_id(0), tl.sum(grad_k, axis=0))


def _check_params(p, k, like) -> None:
    if p.kind not in _KINDS:
        raise RuntimeError(f"fastspike: unknown neuron kind '{p.kind}'")
    check_surrogate(p.surrogate)
    if p.kind == "plif" and (k is None or k.numel() != 1 or k.device != like.device):
        raise RuntimeError(f"fastspike: PLIF needs k = sigmoid(w), a one-element tensor on {like.device}")


def _forward(*args, **kwargs):
    a = _ops.named_args(NEURON_FORWARD, args, kwargs)
    p, x_seq = a.params, a.x_seq
    check_time_major(x_seq, "x_seq")
    if x_seq.dtype not in INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take float16, bfloat16 or float32 x_seq, got "
                           f"{x_seq.dtype} (fastspike.triton_kernels.neuron_multistep runs float64 on the reference)")
    step = x_seq[0]
    check_like(a.v_init, step, STATE_DTYPE, "v_init")
    _check_params(p, a.k, x_seq)
    spike_seq, v_last, v_seq, h_seq = _neuron_ops.forward_outputs(a)
    n = step.numel()
    if n > 0:
        block, warps = config(n)
        with device_guard(x_seq):
            launcher(_neuron_fwd_kernel)[(triton.cdiv(n, block),)](
                x_ptr=x_seq, v_init_ptr=a.v_init, k_ptr=a.k, spike_ptr=spike_seq, v_last_ptr=v_last,
                v_seq_ptr=v_seq if a.store_v_seq else None, h_seq_ptr=h_seq if a.save_h else None,
                T=x_seq.shape[0], N=n, v_init_value=a.v_init_value, v_threshold=p.v_threshold,
                v_reset=0.0 if p.v_reset is None else p.v_reset, tau=p.tau,
                # torch's CUDA reciprocal: 1 / fp32(tau) in fp32; the double quotient rounds to the same fp32.
                inv_tau=1.0 / f32(p.tau), decay_scale=1.0 - 1.0 / p.tau, KIND=_KINDS[p.kind], DECAY=p.decay_input,
                ZERO_RESET=p.v_reset is None or p.v_reset == 0.0, HARD=p.v_reset is not None,
                HAS_V_INIT=a.v_init is not None, STORE_V_SEQ=a.store_v_seq, SAVE_H=a.save_h,
                TAU_RECIPROCAL=x_seq.is_cuda, PTX=not INTERPRETED, BLOCK=block, num_warps=warps)
    return spike_seq, v_last, v_seq, h_seq


def _backward(*args, **kwargs):
    a = _ops.named_args(NEURON_BACKWARD, args, kwargs)
    p, h_seq, grad_spike_seq = a.params, a.h_seq, a.grad_spike_seq
    if h_seq.dim() < 2 or h_seq.shape != grad_spike_seq.shape:
        raise RuntimeError("fastspike: the backward needs the h sequence saved by a forward with save_h=True")
    check_time_major(h_seq, "h_seq")
    if h_seq.dtype != STATE_DTYPE or grad_spike_seq.dtype not in INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take a float32 h_seq and a float16, bfloat16 or "
                           f"float32 grad_spike_seq, got {h_seq.dtype} and {grad_spike_seq.dtype}")
    step = h_seq[0]
    check_like(grad_spike_seq, h_seq, grad_spike_seq.dtype, "grad_spike_seq")
    check_like(a.grad_v_last, step, STATE_DTYPE, "grad_v_last")
    check_like(a.grad_v_seq, h_seq, STATE_DTYPE, "grad_v_seq")
    check_like(a.v_init, step, STATE_DTYPE, "v_init")
    check_like(a.x_seq, h_seq, grad_spike_seq.dtype, "x_seq")
    _check_params(p, a.k, h_seq)
    need_grad_k = p.kind == "plif" and a.need_grad_k
    if need_grad_k and p.decay_input and a.x_seq is None:
        raise RuntimeError("fastspike: PLIF's grad_w with decay_input needs the x sequence saved by the forward")
    grad_x_seq, grad_v_init, grad_k = _neuron_ops.backward_outputs(a)
    n = step.numel()
    block, warps = config(n)
    programs = triton.cdiv(n, block)
    # One fp64 partial sum of dL/dk per program, added up by torch in a fixed order: deterministic.
    partials = h_seq.new_empty((programs,), dtype=torch.float64) if need_grad_k else None
    if n > 0:
        with device_guard(h_seq):
            launcher(_neuron_bwd_kernel)[(programs,)](
                grad_spike_ptr=grad_spike_seq, grad_v_last_ptr=a.grad_v_last, grad_v_seq_ptr=a.grad_v_seq,
                h_seq_ptr=h_seq, x_ptr=a.x_seq if need_grad_k and p.decay_input else None, v_init_ptr=a.v_init,
                k_ptr=a.k, grad_x_ptr=grad_x_seq, grad_v_init_ptr=grad_v_init, grad_k_partial_ptr=partials,
                T=h_seq.shape[0], N=n, v_init_value=a.v_init_value, v_threshold=p.v_threshold,
                v_reset=0.0 if p.v_reset is None else p.v_reset, tau=p.tau, inv_tau=1.0 / f32(p.tau),
                decay_scale=1.0 - 1.0 / p.tau, alpha=p.sg_alpha, sg_a=p.sg_a, sg_b=p.sg_b, KIND=_KINDS[p.kind],
                DECAY=p.decay_input, ZERO_RESET=p.v_reset is None or p.v_reset == 0.0, HARD=p.v_reset is not None,
                DETACH_RESET=p.detach_reset, SURROGATE=SURROGATES.index(p.surrogate),
                HAS_V_INIT=a.v_init is not None, HAS_GRAD_V_LAST=a.grad_v_last is not None,
                HAS_GRAD_V_SEQ=a.grad_v_seq is not None, NEED_GRAD_K=need_grad_k, TAU_RECIPROCAL=h_seq.is_cuda,
                PTX=not INTERPRETED, BLOCK=block, num_warps=warps)
    if need_grad_k:
        grad_k = partials.sum().to(STATE_DTYPE)
    return grad_x_seq, grad_v_init, grad_k


forward_op, backward_op = register_ops(_neuron_ops.FAMILY, "neuron", _forward, _backward)
