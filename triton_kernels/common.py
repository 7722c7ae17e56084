"""Triton helpers shared by the op families' kernels (:mod:`.neuron`, :mod:`.leaky`): exact arithmetic,
conversions, the surrogate derivatives, and the launch-side checks and guards.

Exactness: products that must not be contracted into an FMA are PTX ``mul.rn`` on GPUs; divisions are IEEE
(``tl.div_rn``); the surrogates' exp is libdevice's expf on GPUs (``tl.exp`` is approximate) and numpy's,
rounded, in the interpreter. bf16 conversions work on the bits, so the interpreter (which truncates and
flushes subnormals in its own conversions) rounds as the GPU does.
"""

import contextlib
import struct
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from .. import _ops
from .._contract import SURROGATES


@triton.jit
def mul_rn(a, b, PTX: tl.constexpr):
    # PTX mul.rn is never contracted into an FMA, and unlike libdevice's mul_rn (linked with ftz by Triton)
    # keeps subnormals, as torch does. The interpreter's numpy products are IEEE already.
    if PTX:
        r = tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.float32,
                                      is_pure=True, pack=1)
    else:
        r = a * b
    return r


@triton.jit
def exp_accurate(x, PTX: tl.constexpr):
    # An accurate expf like torch's (tl.exp is ex2.approx on GPUs); the interpreter rounds numpy's fp64 exp.
    if PTX:
        r = libdevice.exp(x)
    else:
        r = tl.exp(x.to(tl.float64)).to(tl.float32)
    return r


@triton.jit
def div_rn(a, b):
    # IEEE a / b for a block b; tl.div_rn takes operands of one shape and a may be a scalar.
    return tl.div_rn(tl.zeros_like(b) + a, b)


@triton.jit
def widen(x):
    # bf16 -> fp32 on the bits: exact with subnormals kept, on GPUs and in the interpreter (which flushes them).
    if x.dtype == tl.bfloat16:
        r = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        r = x.to(tl.float32)
    return r


@triton.jit
def narrow(x, dtype: tl.constexpr):
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
def initial_state(ptr, value, offs, mask, HAS_TENSOR: tl.constexpr, BLOCK: tl.constexpr):
    # A state before step 0: a tensor [N] (fp32) when given, else the scalar value.
    if HAS_TENSOR:
        v = tl.load(ptr + offs, mask=mask, other=0.0)
    else:
        v = tl.zeros([BLOCK], tl.float32) + tl.cast(value, tl.float32)
    return v


# Ids of the surrogates (their index in fastspike._contract.SURROGATES, whose table gives the formulas).
_SG = {name: tl.constexpr(i) for i, name in enumerate(SURROGATES)}
SG_SIGMOID, SG_ATAN, SG_PIECEWISE_QUADRATIC = _SG["sigmoid"], _SG["atan"], _SG["piecewise_quadratic"]
SG_PIECEWISE_EXP, SG_SOFT_SIGN, SG_SUPER_SPIKE = _SG["piecewise_exp"], _SG["soft_sign"], _SG["super_spike"]
SG_ERF, SG_FAST_SIGMOID, SG_SIGMOID_EXP = _SG["erf"], _SG["fast_sigmoid"], _SG["sigmoid_exp"]
SG_STRAIGHT_THROUGH, SG_TRIANGULAR, SG_HEAVISIDE = _SG["straight_through"], _SG["triangular"], _SG["heaviside"]
SG_SPIKE_RATE_ESCAPE, SG_SPARSE_FAST_SIGMOID = _SG["spike_rate_escape"], _SG["sparse_fast_sigmoid"]


@triton.jit
def surrogate_grad(x, alpha, sg_a, sg_b, SURROGATE: tl.constexpr, PTX: tl.constexpr):
    ax = tl.abs(x)
    if SURROGATE == SG_SIGMOID:
        s = div_rn(1.0, 1.0 + exp_accurate(-(x * alpha), PTX))
        g = (1.0 - s) * s * alpha
    elif SURROGATE == SG_ATAN:
        u = sg_a * x
        g = div_rn(sg_b, 1.0 + u * u)
    elif SURROGATE == SG_PIECEWISE_QUADRATIC:
        g = tl.where(ax > sg_b, 0.0, alpha - sg_a * ax)
    elif SURROGATE == SG_PIECEWISE_EXP:
        g = sg_b * exp_accurate(sg_a * ax, PTX)
    elif SURROGATE == SG_SOFT_SIGN:
        u = sg_a + ax
        g = div_rn(1.0, sg_b * (u * u))
    elif SURROGATE == SG_SUPER_SPIKE:
        u = ax + 1.0
        g = div_rn(alpha, u * u)
    elif SURROGATE == SG_ERF:
        u = x * alpha
        g = exp_accurate(-(u * u), PTX) * sg_b
    elif SURROGATE == SG_FAST_SIGMOID:
        u = alpha * ax + 1.0
        g = div_rn(1.0, u * u)
    elif SURROGATE == SG_SIGMOID_EXP:
        e = exp_accurate(sg_a * x, PTX)
        u = e + 1.0
        g = div_rn(alpha * e, u * u)
    elif SURROGATE == SG_STRAIGHT_THROUGH:
        g = tl.zeros_like(x) + 1.0
    elif SURROGATE == SG_TRIANGULAR:
        g = tl.where(x >= 0.0, -alpha, alpha)
    elif SURROGATE == SG_HEAVISIDE:
        g = tl.where(x > 0.0, 1.0, 0.0)
    elif SURROGATE == SG_SPIKE_RATE_ESCAPE:
        g = sg_b * exp_accurate(sg_a * tl.abs(x - 1.0), PTX)
    elif SURROGATE == SG_SPARSE_FAST_SIGMOID:
        u = alpha * ax + 1.0
        g = tl.where(x > sg_b, div_rn(1.0, u * u), 0.0)
    else:
        g = tl.zeros_like(x)
    return g


@triton.jit
def surrogate_masked(x, sg_b, SURROGATE: tl.constexpr):
    # csrc/surrogate.h, surrogate_masked: where SpikingJelly masks grad_out * g'(x) to 0 instead of multiplying
    if SURROGATE == SG_PIECEWISE_QUADRATIC:
        m = tl.abs(x) > sg_b
    else:
        m = tl.zeros_like(x) != 0.0
    return m


INTERPRETED = isinstance(mul_rn, InterpretedFunction)
STATE_DTYPE = torch.float32
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as a Python float); pure Python, so fake tensors trace it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def config(n: int) -> tuple:
    """(BLOCK, num_warps) for ``n`` neurons per step: wide blocks when they fill a GPU, narrow ones so small
    layers still spread over the SMs; two sizes bound the compiled variants. Untuned first guesses."""
    return (1024, 4) if n >= 1 << 18 else (128, 4)


def launcher(kernel):
    return kernel if INTERPRETED else wrap_triton(kernel)


def device_guard(t: torch.Tensor):
    # Triton launches on the current CUDA device, which need not be the tensor's.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def check_time_major(t: torch.Tensor, name: str) -> None:
    if t.dim() < 2 or t.shape[0] == 0:
        raise RuntimeError(f"fastspike: {name} must be [T, N, *] with T > 0, got shape {tuple(t.shape)}")
    if t.numel() > 0 and (not _ops.is_dense(t) or (t.shape[0] != 1 and t.stride(0) != t.numel() // t.shape[0])):
        raise RuntimeError(f"fastspike: {name} must be dense with the time dimension outermost (the Python "
                           f"wrapper makes it so; call the op through fastspike.functional)")


def check_like(t: Optional[torch.Tensor], like: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    """``t`` (if given) is on like's device, has ``dtype``, like's shape and like's memory order."""
    if t is None:
        return
    if t.device != like.device or t.dtype != dtype:
        raise RuntimeError(f"fastspike: {name} is {t.dtype} on {t.device}, expected {dtype} on {like.device}")
    same_order = t.shape == like.shape and (t.numel() == 0 or _ops.is_dense(t) and all(
        size == 1 or a == b for size, a, b in zip(t.shape, t.stride(), like.stride())))
    if not same_order:
        raise RuntimeError(f"fastspike: {name} must have shape {tuple(like.shape)} and the same memory order "
                           f"as the step it belongs to")


def check_surrogate(name: str) -> None:
    if name not in SURROGATES:
        raise RuntimeError(f"fastspike: unknown surrogate '{name}'")


def register_ops(family, name: str, forward, backward):
    """``fastspike::triton_<name>_forward/_backward`` from the launch functions ``forward``/``backward``
    (which take the signatures' arguments positionally), with ``family``'s autograd. On GPUs they are
    ``triton_op``s (traceable by torch.compile, fakes derived by running them on fake tensors); under the
    interpreter opaque ``custom_op``s with the family's fakes, since the interpreter's eager kernels have
    no traceable launch."""
    make = torch.library.custom_op if INTERPRETED else torch.library.triton_op
    ops = []
    for sig, fn in ((family.forward, forward), (family.backward, backward)):
        ops.append(make(f"fastspike::triton_{sig.name}", fn, mutates_args=(), schema=sig.schema))
    _ops.register(family, ops[0], ops[1], fakes=INTERPRETED)
    return ops
