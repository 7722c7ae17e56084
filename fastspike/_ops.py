"""Glue between the module API and the fused backends ('native': :mod:`fastspike.native`, 'triton':
:mod:`fastspike.triton_kernels`), shared by every op family.

- Layout helpers that establish the contract the kernels rely on: a time-major ``[T, N, *]`` tensor is
  handed over dense with T outermost, i.e. as a flat ``[T, N]`` array whose steps share one memory order
  (channels_last from a Conv/BN passes through without a copy), and every per-step tensor of the call is
  brought into that same order.
- :class:`Family`: what differs between op families (their signatures in :mod:`fastspike._contract`,
  output allocation, what the forward saves, the backward formula); :func:`register` makes one backend's
  op pair of a family known to torch (fake implementations, autograd), :func:`call` runs a forward.

The families themselves: :mod:`fastspike._neuron_ops` (IF/LIF/PLIF), :mod:`fastspike._leaky_ops`
(snnTorch's Leaky/Synaptic).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ._contract import OpSignature


def is_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill its storage span without gaps or overlaps (any dimension order)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda p: p[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def time_major_dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when it is dense with T outermost (contiguous, or channels_last steps), else a
    contiguous copy (e.g. a slice with gaps, or a time axis that is not outermost)."""
    if x.is_contiguous():
        return x
    step = x[0]
    if (x.shape[0] == 1 or x.stride(0) == step.numel()) and is_dense(step):
        return x
    return x.contiguous()


def in_order_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (same shape as ``like``) with its elements in ``like``'s memory order; a copy only if needed."""
    # Under Dynamo a carried state's strides can be SymInts that Dynamo cannot read back as constants
    # (torch.compile fails on the second call); there the copy is made unconditionally, which Inductor can
    # elide, and is value-preserving either way.
    if not torch.compiler.is_compiling() and (t.stride() == like.stride() or all(
            size == 1 or a == b for size, a, b in zip(t.shape, t.stride(), like.stride()))):
        if is_dense(t):
            return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


class Family(NamedTuple):
    """An op family's glue.

    ``forward_outputs(a)`` / ``backward_outputs(a)`` allocate an op's outputs from its unpacked arguments
    (:meth:`OpSignature.unpack`), as the kernels do: they are the fake implementations too.
    ``setup_context(ctx, a, out)`` saves what the backward needs (``out`` is the forward's named outputs);
    ``backward(ctx, backward_op, grads) -> dict`` returns the gradients of the forward's inputs by name.
    """

    forward: OpSignature
    backward: OpSignature
    forward_outputs: Callable
    backward_outputs: Callable
    setup_context: Callable
    backward_formula: Callable


def named_args(sig: OpSignature, args: tuple, kwargs: dict):
    """A call's positional and keyword arguments, unpacked by name (:meth:`OpSignature.unpack`)."""
    return sig.unpack(tuple(args) + tuple(kwargs[n] for n, _ in sig.args[len(args):]))


def _setup_context(family: Family, ctx, inputs, output) -> None:
    # Unused outputs get None, not a materialised zero tensor the size of the input.
    ctx.set_materialize_grads(False)
    family.setup_context(ctx, family.forward.unpack(inputs), family.forward.Out(*output))


def _backward(family: Family, backward_op, ctx, grads) -> tuple:
    if torch.is_grad_enabled():
        # create_graph=True: the surrogate derivative is treated as a constant, so a second derivative
        # through this backward would be silently wrong.
        raise RuntimeError("fastspike neurons have first-order gradients only: a backward with "
                           "create_graph=True (double backward, gradient penalties) is not supported")
    named = family.backward_formula(ctx, backward_op, family.forward.Out(*grads))
    return family.forward.grads(**named)


def register(family: Family, forward_op, backward_op, fakes: bool = True) -> None:
    """Register the fake implementations of a backend's op pair (unless its ops derive their own, as
    ``triton_op`` does) and the autograd formula of ``forward_op`` through ``backward_op``."""
    if fakes:
        torch.library.register_fake(forward_op)(
            lambda *args, **kwargs: family.forward_outputs(named_args(family.forward, args, kwargs)))
        torch.library.register_fake(backward_op)(
            lambda *args, **kwargs: family.backward_outputs(named_args(family.backward, args, kwargs)))
    torch.library.register_autograd(
        forward_op, lambda ctx, *grads: _backward(family, backward_op, ctx, grads),
        setup_context=lambda ctx, inputs, output: _setup_context(family, ctx, inputs, output))


class _Eager(torch.autograd.Function):
    """The registered autograd formula as a plain autograd.Function, for eager calls.

    Calling an op through its registered autograd kernel costs tens of microseconds of Python per call,
    which dominates small, dispatch-bound layers. Eager calls run the same kernels and the same backward
    this way; torch.compile traces the registered op.
    """

    @staticmethod
    def forward(ctx, family, forward_op, backward_op, *inputs):
        # forward(ctx, ...) rather than a separate setup_context: that style makes apply() bind arguments
        # through inspect.signature on every call.
        with torch._C._AutoDispatchBelowAutograd():
            output = forward_op(*inputs)
        ctx.family, ctx.backward_op = family, backward_op
        _setup_context(family, ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, None) + _backward(ctx.family, ctx.backward_op, ctx, grads)


def call(family: Family, forward_op, backward_op, args: tuple, differentiable: bool):
    """``forward_op(*args)`` as the family's named outputs: traced as the op under torch.compile; else
    through :class:`_Eager` when ``differentiable`` (an input requires grad and grad mode is on), or
    below autograd."""
    if torch.compiler.is_compiling():
        output = forward_op(*args)
    elif differentiable:
        output = _Eager.apply(family, forward_op, backward_op, *args)
    else:
        with torch._C._AutoDispatchBelowAutograd():
            output = forward_op(*args)
    return family.forward.Out(*output)
