"""Fused multi-step IF/LIF/PLIF kernels in Triton and the ``torch.library`` ops that launch them.

``fastspike::triton_neuron_forward`` / ``triton_neuron_backward`` have the schemas and layout contract of
:mod:`fastspike._ops`: every tensor is a flat ``[T, N]`` array (N = one step's numel) in one memory order.
One program owns BLOCK neurons and runs the whole time loop, state in fp32 registers; x, spikes, grad_spike
and grad_x are in the input dtype (fp16/bf16/fp32), the rest fp32. float64 runs on the reference instead
(:func:`fastspike.triton_kernels.multistep`).

Exactness (fp32 spikes and v bit-identical to :mod:`fastspike.reference` on the same device): the charge
follows the reference's expression order; constants the reference computes in Python double (``1 - 1/tau``,
surrogate constants) arrive pre-computed and are rounded to fp32 once, as torch rounds a Python scalar;
division is IEEE (``tl.div_rn``); on GPUs the charge's products are PTX ``mul.rn``, which no compile option
(``enable_fp_fusion``, Inductor recompiling the kernel in a compiled graph) can contract into an FMA. torch
divides a CUDA tensor by a Python scalar as a product with the fp32 reciprocal (ATen div_true_kernel_cuda),
a CPU tensor by true division: ``TAU_RECIPROCAL`` follows the device, so LIF's ``/ tau`` matches either.
Gradients agree to rounding; on GPUs the surrogates' exp is libdevice's expf (``tl.exp`` is approximate).

Under ``TRITON_INTERPRET=1`` (CPU tensors) the ops are opaque ``custom_op``s with explicit fake kernels:
``triton_op`` derives its fake kernel by running the body on fake tensors, which needs the traceable
``wrap_triton`` launch that the interpreter's eager kernels do not have.
"""

import contextlib
import math
import struct
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import custom_op, triton_op, wrap_triton
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from .. import _ops

_IF = tl.constexpr(0)
_LIF = tl.constexpr(1)
_PLIF = tl.constexpr(2)
_KINDS = {"if": _IF.value, "lif": _LIF.value, "plif": _PLIF.value}
_SURROGATES = ("sigmoid", "atan", "piecewise_quadratic", "piecewise_exp", "soft_sign", "super_spike", "erf",
               "fast_sigmoid")


@triton.jit
def _mul(a, b, PTX: tl.constexpr):
    # PTX mul.rn is never contracted into an FMA, and unlike libdevice's mul_rn (linked with ftz by Triton)
    # keeps subnormals, as torch does. The interpreter's numpy products are IEEE already.
    if PTX:
        r = tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.float32,
                                      is_pure=True, pack=1)
    else:
        r = a * b
    return r


@triton.jit
def _exp(x, PTX: tl.constexpr):
    # An accurate expf like torch's (tl.exp is ex2.approx on GPUs); the interpreter rounds numpy's fp64 exp.
    if PTX:
        r = libdevice.exp(x)
    else:
        r = tl.exp(x.to(tl.float64)).to(tl.float32)
    return r


@triton.jit
def _div(a, b):
    # IEEE a / b for a block b; tl.div_rn takes operands of one shape and a may be a scalar.
    return tl.div_rn(tl.zeros_like(b) + a, b)


@triton.jit
def _by_tau(a, tau, inv_tau, TAU_RECIPROCAL: tl.constexpr, PTX: tl.constexpr):
    if TAU_RECIPROCAL:
        r = _mul(a, inv_tau, PTX)
    else:
        r = tl.div_rn(a, tl.zeros_like(a) + tau)
    return r


@triton.jit
def _widen(x):
    # bf16 -> fp32 on the bits: exact with subnormals kept, on GPUs and in the interpreter (which flushes them).
    if x.dtype == tl.bfloat16:
        r = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        r = x.to(tl.float32)
    return r


@triton.jit
def _narrow(x, dtype: tl.constexpr):
    # fp32 -> bf16 on the bits, to nearest even (NaN to a quiet NaN first, so the sum cannot wrap), on GPUs
    # and in the interpreter (which truncates); fp16 conversions round to nearest even in both already.
    if dtype == tl.bfloat16:
        b = tl.where(x != x, 0x7FC00000, x.to(tl.uint32, bitcast=True))
        b = b + 0x7FFF + ((b >> 16) & 1)
        r = (b >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        r = x.to(dtype)
    return r


@triton.jit
def _one_minus(k_raw):
    # 1 - k rounded to k's dtype, as torch evaluates `1.0 - k` on the tensor k: for a 16-bit k the fp32
    # difference is exact, so rounding it once equals the 16-bit subtraction.
    if k_raw.dtype.primitive_bitwidth == 16:
        r = _widen(_narrow(1.0 - _widen(k_raw), k_raw.dtype))
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
            h = _mul(v, decay_scale, PTX) + x
        else:
            h = v - _by_tau(v - v_reset, tau, inv_tau, TAU_RECIPROCAL, PTX) + x
    elif DECAY:
        if ZERO_RESET:
            h = v + _mul(x - v, k, PTX)
        else:
            h = v + _mul(x - (v - v_reset), k, PTX)
    elif ZERO_RESET:
        h = _mul(v, km, PTX) + x
    else:
        h = v - _mul(v - v_reset, k, PTX) + x
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
def _surrogate_grad(x, alpha, sg_a, sg_b, SURROGATE: tl.constexpr, PTX: tl.constexpr):
    # SURROGATE indexes _SURROGATES; sg_a, sg_b as in _surrogate_consts.
    ax = tl.abs(x)
    if SURROGATE == 0:
        s = _div(1.0, 1.0 + _exp(-(x * alpha), PTX))
        g = (1.0 - s) * s * alpha
    elif SURROGATE == 1:
        u = sg_a * x
        g = _div(sg_b, 1.0 + u * u)
    elif SURROGATE == 2:
        g = tl.where(ax > sg_b, 0.0, alpha - sg_a * ax)
    elif SURROGATE == 3:
        g = sg_b * _exp(sg_a * ax, PTX)
    elif SURROGATE == 4:
        u = sg_a + ax
        g = _div(1.0, sg_b * (u * u))
    elif SURROGATE == 5:
        u = ax + 1.0
        g = _div(alpha, u * u)
    elif SURROGATE == 6:
        u = x * alpha
        g = _exp(-(u * u), PTX) * sg_b
    else:
        u = alpha * ax + 1.0
        g = _div(1.0, u * u)
    return g


@triton.jit
def _initial_v(v_init_ptr, v_init_value, offs, mask, HAS_V_INIT: tl.constexpr, BLOCK: tl.constexpr):
    # The state before step 0: v_init [N] (fp32) when given, else the scalar v_init_value.
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK], tl.float32) + tl.cast(v_init_value, tl.float32)
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
        k = _widen(k_raw)
        km = _one_minus(k_raw)
    else:
        k = v_threshold  # placeholders: only PLIF reads k and 1 - k
        km = v_threshold
    v = _initial_v(v_init_ptr, v_init_value, offs, mask, HAS_V_INIT, BLOCK)
    # x of the next step is requested before this step's arithmetic and stores, hiding its latency.
    x_next = tl.load(x_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        o = tl.cast(t, tl.int64) * N + offs
        x = _widen(x_next)
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


@triton.jit(do_not_specialize=["T"])
def _neuron_bwd_kernel(grad_spike_ptr, grad_v_last_ptr, grad_v_seq_ptr, h_seq_ptr, v_init_ptr, k_ptr, grad_x_ptr,
                       grad_v_init_ptr, grad_k_partial_ptr, T, N, v_init_value, v_threshold, v_reset, dh_dx,
                       dh_dv, alpha, sg_a, sg_b, KIND: tl.constexpr, DECAY: tl.constexpr,
                       ZERO_RESET: tl.constexpr, HARD: tl.constexpr, DETACH_RESET: tl.constexpr,
                       SURROGATE: tl.constexpr, HAS_V_INIT: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr,
                       PTX: tl.constexpr, BLOCK: tl.constexpr):
    """Backpropagation through time over BLOCK neurons per program, t = T-1 .. 0, from the saved h [T, N]
    (fp32) and grad_spike [T, N] (input dtype), plus grad_v_seq [T, N] when HAS_GRAD_V_SEQ; writes grad_x
    (grad_spike's dtype), grad_v_init [N] and, for PLIF, this program's fp64 partial sum of dL/dk."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v_threshold, v_reset = tl.cast(v_threshold, tl.float32), tl.cast(v_reset, tl.float32)
    alpha, sg_a, sg_b = tl.cast(alpha, tl.float32), tl.cast(sg_a, tl.float32), tl.cast(sg_b, tl.float32)
    if KIND == _PLIF:
        k_raw = tl.load(k_ptr)
        k = _widen(k_raw)
        if DECAY:
            dx_scale = k
        else:
            dx_scale = tl.full([], 1.0, tl.float32)
        dv_scale = _one_minus(k_raw)
    else:
        dx_scale = tl.cast(dh_dx, tl.float32)
        dv_scale = tl.cast(dh_dv, tl.float32)
    v0 = _initial_v(v_init_ptr, v_init_value, offs, mask, HAS_V_INIT, BLOCK)
    grad_v = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0)
    grad_k = tl.zeros([BLOCK], tl.float64)
    h = tl.load(h_seq_ptr + tl.cast(T - 1, tl.int64) * N + offs, mask=mask, other=0.0)
    for i in range(T):
        t = T - 1 - i
        o = tl.cast(t, tl.int64) * N + offs
        # h of step t-1: v_{t-1} for PLIF's dh/dk, and the next iteration's h.
        h_prev = tl.load(h_seq_ptr + o - N, mask=mask & (t > 0), other=0.0)
        grad_s = _widen(tl.load(grad_spike_ptr + o, mask=mask, other=0.0))
        if HAS_GRAD_V_SEQ:
            grad_v = grad_v + tl.load(grad_v_seq_ptr + o, mask=mask, other=0.0)
        hm = h - v_threshold
        sg = _surrogate_grad(hm, alpha, sg_a, sg_b, SURROGATE, PTX)
        if HARD:
            dv_dh = 1.0 - tl.where(hm >= 0.0, 1.0, 0.0)
            if not DETACH_RESET:
                dv_dh = dv_dh + (v_reset - h) * sg
            grad_h = grad_s * sg + grad_v * dv_dh
        elif DETACH_RESET:
            grad_h = grad_s * sg + grad_v
        else:
            grad_h = grad_s * sg + grad_v * (1.0 - v_threshold * sg)
        tl.store(grad_x_ptr + o, _narrow(grad_h * dx_scale, grad_x_ptr.dtype.element_ty), mask=mask)
        if KIND == _PLIF:
            v_prev = tl.where(t > 0, _reset(h_prev, _fire(h_prev, v_threshold), v_threshold, v_reset, HARD), v0)
            # decay_input: h = v + (x - v_rel) k, so dh/dk = x - v_rel = (h - v) / k without keeping x. A k
            # that underflowed to 0 gets 0, not 0/0: grad_w = grad_k k (1 - k) is 0 then, as in the reference.
            if DECAY:
                dh_dk = tl.where(k != 0.0, tl.div_rn(h - v_prev, tl.zeros_like(h) + k), 0.0)
            elif ZERO_RESET:
                dh_dk = -v_prev
            else:
                dh_dk = -(v_prev - v_reset)
            grad_k += tl.where(mask, (grad_h * dh_dk).to(tl.float64), 0.0)
        grad_v = grad_h * dv_scale
        h = h_prev
    tl.store(grad_v_init_ptr + offs, grad_v, mask=mask)
    if KIND == _PLIF:
        tl.store(grad_k_partial_ptr + tl.program_id(0), tl.sum(grad_k, axis=0))


INTERPRETED = isinstance(_neuron_fwd_kernel, InterpretedFunction)
_STATE_DTYPE = torch.float32
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as a Python float); pure Python, so fake tensors trace it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _config(n: int) -> tuple:
    """(BLOCK, num_warps) for ``n`` neurons per step: wide blocks when they fill a GPU, narrow ones so small
    layers still spread over the SMs; two sizes bound the compiled variants. Untuned first guesses."""
    return (1024, 4) if n >= 1 << 18 else (128, 4)


def _launcher(kernel):
    return kernel if INTERPRETED else wrap_triton(kernel)


def _device_guard(t: torch.Tensor):
    # Triton launches on the current CUDA device, which need not be the tensor's.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _check_time_major(t: torch.Tensor, name: str) -> None:
    if t.dim() < 2 or t.shape[0] == 0:
        raise RuntimeError(f"fastspike: {name} must be [T, N, *] with T > 0, got shape {tuple(t.shape)}")
    if t.numel() > 0 and (not _ops._dense(t) or (t.shape[0] != 1 and t.stride(0) != t.numel() // t.shape[0])):
        raise RuntimeError(f"fastspike: {name} must be dense with the time dimension outermost (the Python "
                           f"wrapper makes it so; call the op through fastspike.functional)")


def _check_like(t: Optional[torch.Tensor], like: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    """``t`` (if given) is on like's device, has ``dtype``, like's shape and like's memory order."""
    if t is None:
        return
    if t.device != like.device or t.dtype != dtype:
        raise RuntimeError(f"fastspike: {name} is {t.dtype} on {t.device}, expected {dtype} on {like.device}")
    same_order = t.shape == like.shape and (t.numel() == 0 or _ops._dense(t) and all(
        size == 1 or a == b for size, a, b in zip(t.shape, t.stride(), like.stride())))
    if not same_order:
        raise RuntimeError(f"fastspike: {name} must have shape {tuple(like.shape)} and the same memory order "
                           f"as the step it belongs to")


def _check_params(kind: str, k: Optional[torch.Tensor], like: torch.Tensor, surrogate: str) -> None:
    if kind not in _KINDS:
        raise RuntimeError(f"fastspike: unknown neuron kind '{kind}'")
    if surrogate not in _SURROGATES:
        raise RuntimeError(f"fastspike: unknown surrogate '{surrogate}'")
    if kind == "plif" and (k is None or k.numel() != 1 or k.device != like.device):
        raise RuntimeError(f"fastspike: PLIF needs k = sigmoid(w), a one-element tensor on {like.device}")


def _forward(x_seq: torch.Tensor, v_init: Optional[torch.Tensor], v_init_value: float, k: Optional[torch.Tensor],
             kind: str, v_threshold: float, v_reset: Optional[float], tau: float, decay_input: bool,
             detach_reset: bool, surrogate: str, alpha: float, store_v_seq: bool,
             save_h: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_time_major(x_seq, "x_seq")
    if x_seq.dtype not in _INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take float16, bfloat16 or float32 x_seq, got "
                           f"{x_seq.dtype} (fastspike.triton_kernels.multistep runs float64 on the reference)")
    step = x_seq[0]
    _check_like(v_init, step, _STATE_DTYPE, "v_init")
    _check_params(kind, k, x_seq, surrogate)
    spike_seq, v_last, v_seq, h_seq = _ops.forward_outputs(x_seq, _STATE_DTYPE, store_v_seq, save_h)
    n = step.numel()
    if n > 0:
        block, warps = _config(n)
        # torch's CUDA reciprocal: 1 / fp32(tau) in fp32; the double quotient rounds to the same fp32.
        inv_tau = 1.0 / _f32(tau)
        with _device_guard(x_seq):
            _launcher(_neuron_fwd_kernel)[(triton.cdiv(n, block),)](
                x_seq, v_init, k, spike_seq, v_last, v_seq if store_v_seq else None, h_seq if save_h else None,
                x_seq.shape[0], n, v_init_value, v_threshold, 0.0 if v_reset is None else v_reset, tau,
                inv_tau, 1.0 - 1.0 / tau, KIND=_KINDS[kind], DECAY=decay_input,
                ZERO_RESET=v_reset is None or v_reset == 0.0, HARD=v_reset is not None,
                HAS_V_INIT=v_init is not None, STORE_V_SEQ=store_v_seq, SAVE_H=save_h,
                TAU_RECIPROCAL=x_seq.is_cuda, PTX=not INTERPRETED, BLOCK=block, num_warps=warps)
    return spike_seq, v_last, v_seq, h_seq


def _surrogate_consts(surrogate: str, alpha: float) -> tuple:
    """(sg_a, sg_b) of ``_surrogate_grad``, computed in double from alpha as surrogate.py does."""
    return {"atan": (math.pi / 2 * alpha, alpha / 2), "piecewise_quadratic": (alpha * alpha, 1.0 / alpha),
            "piecewise_exp": (-alpha, alpha / 2), "soft_sign": (1.0 / alpha, 2 * alpha),
            "erf": (alpha, alpha / math.sqrt(math.pi))}.get(surrogate, (alpha, alpha))


def _backward(grad_spike_seq: torch.Tensor, grad_v_last: torch.Tensor, grad_v_seq: Optional[torch.Tensor],
              h_seq: torch.Tensor, v_init: Optional[torch.Tensor], v_init_value: float, k: Optional[torch.Tensor],
              kind: str, v_threshold: float, v_reset: Optional[float], tau: float, decay_input: bool,
              detach_reset: bool, surrogate: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if h_seq.dim() < 2 or h_seq.shape != grad_spike_seq.shape:
        raise RuntimeError("fastspike: the backward needs the h sequence saved by a forward with save_h=True")
    _check_time_major(h_seq, "h_seq")
    if h_seq.dtype != _STATE_DTYPE or grad_spike_seq.dtype not in _INPUT_DTYPES:
        raise RuntimeError(f"fastspike: the Triton kernels take a float32 h_seq and a float16, bfloat16 or "
                           f"float32 grad_spike_seq, got {h_seq.dtype} and {grad_spike_seq.dtype}")
    step = h_seq[0]
    _check_like(grad_spike_seq, h_seq, grad_spike_seq.dtype, "grad_spike_seq")
    _check_like(grad_v_last, step, _STATE_DTYPE, "grad_v_last")
    _check_like(grad_v_seq, h_seq, _STATE_DTYPE, "grad_v_seq")
    _check_like(v_init, step, _STATE_DTYPE, "v_init")
    _check_params(kind, k, h_seq, surrogate)
    plif = kind == "plif"
    grad_x_seq, grad_v_init, grad_k = _ops.backward_outputs(grad_spike_seq, h_seq, plif)
    n = step.numel()
    block, warps = _config(n)
    programs = triton.cdiv(n, block)
    # One fp64 partial sum of dL/dk per program, added up by torch in a fixed order: deterministic.
    partials = h_seq.new_empty((programs,), dtype=torch.float64) if plif else None
    if n > 0:
        lif = kind == "lif"
        sg_a, sg_b = _surrogate_consts(surrogate, alpha)
        with _device_guard(h_seq):
            _launcher(_neuron_bwd_kernel)[(programs,)](
                grad_spike_seq, grad_v_last, grad_v_seq, h_seq, v_init, k, grad_x_seq, grad_v_init, partials,
                h_seq.shape[0], n, v_init_value, v_threshold, 0.0 if v_reset is None else v_reset,
                1.0 / tau if lif and decay_input else 1.0, 1.0 - 1.0 / tau if lif else 1.0, alpha, sg_a, sg_b,
                KIND=_KINDS[kind], DECAY=decay_input, ZERO_RESET=v_reset is None or v_reset == 0.0,
                HARD=v_reset is not None, DETACH_RESET=detach_reset, SURROGATE=_SURROGATES.index(surrogate),
                HAS_V_INIT=v_init is not None, HAS_GRAD_V_SEQ=grad_v_seq is not None, PTX=not INTERPRETED, BLOCK=block,
                num_warps=warps)
    if plif:
        grad_k = partials.sum().to(_STATE_DTYPE)
    return grad_x_seq, grad_v_init, grad_k


def _fake_forward(x_seq, v_init, v_init_value, k, kind, v_threshold, v_reset, tau, decay_input, detach_reset,
                  surrogate, alpha, store_v_seq, save_h):
    return _ops.forward_outputs(x_seq, _STATE_DTYPE, store_v_seq, save_h)


def _fake_backward(grad_spike_seq, grad_v_last, grad_v_seq, h_seq, v_init, v_init_value, k, kind, *params):
    return _ops.backward_outputs(grad_spike_seq, h_seq, kind == "plif")


if INTERPRETED:
    forward_op = custom_op("fastspike::triton_neuron_forward", _forward, mutates_args=())
    backward_op = custom_op("fastspike::triton_neuron_backward", _backward, mutates_args=())
    forward_op.register_fake(_fake_forward)
    backward_op.register_fake(_fake_backward)
else:
    forward_op = triton_op("fastspike::triton_neuron_forward", _forward, mutates_args=())
    backward_op = triton_op("fastspike::triton_neuron_backward", _backward, mutates_args=())
_ops.register_autograd(forward_op, backward_op)
