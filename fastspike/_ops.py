"""Glue between the neuron API and the fused kernel backends ('native': :mod:`fastspike.native`,
'triton': :mod:`fastspike.triton_kernels`). Each backend provides two ``torch.library`` ops::

    neuron_forward(Tensor x_seq, Tensor? v_init, float v_init_value, Tensor? k, str kind,
                   float v_threshold, float? v_reset, float tau, bool decay_input, bool detach_reset,
                   str surrogate, float alpha, bool store_v_seq, bool save_h)
        -> (Tensor spike_seq, Tensor v_last, Tensor v_seq, Tensor h_seq)
    neuron_backward(Tensor grad_spike_seq, Tensor grad_v_last, Tensor? grad_v_seq, Tensor h_seq,
                    Tensor? v_init, float v_init_value, Tensor? k, str kind, float v_threshold,
                    float? v_reset, float tau, bool decay_input, bool detach_reset, str surrogate,
                    float alpha)
        -> (Tensor grad_x_seq, Tensor grad_v_init, Tensor grad_k)

computing :mod:`fastspike.reference`'s equations (kind 'if'/'lif'/'plif'; v_reset None = soft reset;
``k = sigmoid(w)`` for PLIF, in w's dtype; ``surrogate``/``alpha`` = ``SurrogateFunctionBase.spec``).

Layout contract (this module establishes it, the kernels rely on it): ``x_seq [T, N, *]`` is dense with T
outermost, so it is a flat ``[T, N]`` array whose steps share one memory order (channels_last from a
Conv/BN passes through without a copy). ``v_init`` (when given), ``grad_v_last``, ``grad_spike_seq`` and
``grad_v_seq`` are in that same order. The state dtype is ``v_init``'s, else fp32 (fp64 for fp64 inputs);
x is fp16/bf16/fp32 with fp32 state or fp64 with fp64 state. Outputs (see :func:`forward_outputs`):
``spike_seq`` like x; ``v_last`` like one step of x in the state dtype; ``v_seq``/``h_seq`` like x in the
state dtype when ``store_v_seq``/``save_h``, else empty ``[0]``. Backward: ``grad_x_seq`` like ``h_seq``
in grad_spike_seq's dtype, ``grad_v_init`` like one step of ``h_seq``, ``grad_k`` 0-dim (PLIF; empty [0]
otherwise) in the state dtype. ``detach_reset``/``surrogate``/``alpha`` are unused by the forward; they are
its arguments so the registered autograd formula has them.

Byte budget: an inference forward (no input requires grad) writes spikes only (and v_seq when asked); a
training forward also saves ``h`` (fp32) and nothing else: PLIF's backward recovers ``x - v`` from ``h``.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from ._spec import NeuronSpec, state_dtype


def op_params(spec: NeuronSpec) -> tuple:
    """(kind, v_threshold, v_reset, tau, decay_input, detach_reset, surrogate, alpha) of ``spec``."""
    name, alpha = spec.surrogate.spec
    return (spec.kind, spec.v_threshold, spec.v_reset, spec.tau if spec.tau is not None else 1.0,
            spec.decay_input, spec.detach_reset, name, alpha)


def _dense(t: torch.Tensor) -> bool:
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
    if (x.shape[0] == 1 or x.stride(0) == step.numel()) and _dense(step):
        return x
    return x.contiguous()


def in_order_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (same shape as ``like``) with its elements in ``like``'s memory order; a copy only if needed."""
    if t.stride() == like.stride() or all(
            size == 1 or a == b for size, a, b in zip(t.shape, t.stride(), like.stride())):
        if _dense(t):
            return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def forward_outputs(x_seq: torch.Tensor, state: torch.dtype, store_v_seq: bool, save_h: bool):
    """Allocate ``(spike_seq, v_last, v_seq, h_seq)`` as the contract says (also the fake implementation)."""
    # Not-requested outputs are 1-d and empty, which also tells them from a saved h of an empty input.
    empty = x_seq.new_empty((0,), dtype=state)
    return (torch.empty_like(x_seq), torch.empty_like(x_seq[0], dtype=state),
            torch.empty_like(x_seq, dtype=state) if store_v_seq else empty,
            torch.empty_like(x_seq, dtype=state) if save_h else empty.clone())


def backward_outputs(grad_spike_seq: torch.Tensor, h_seq: torch.Tensor, plif: bool):
    """Allocate ``(grad_x_seq, grad_v_init, grad_k)`` as the contract says (also the fake implementation)."""
    return (torch.empty_like(h_seq, dtype=grad_spike_seq.dtype), torch.empty_like(h_seq[0]),
            h_seq.new_empty(() if plif else (0,)))


def op_state_dtype(x_seq: torch.Tensor, v_init: Optional[torch.Tensor]) -> torch.dtype:
    return v_init.dtype if v_init is not None else state_dtype(x_seq.dtype)


def _setup_context(ctx, inputs, output):
    x_seq, v_init, v_init_value, k = inputs[:4]
    ctx.params = inputs[4:12]
    ctx.v_init_value = v_init_value
    ctx.store_v_seq = inputs[12]
    ctx.x_dtype = x_seq.dtype
    # Unused outputs get None, not a materialised zero tensor the size of the input (h_seq never has a
    # gradient; spike_seq or v_seq often have none).
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(output[3])
    ctx.save_for_backward(output[3], v_init, k)


def _make_backward(backward_op: Callable) -> Callable:
    def backward(ctx, grad_spike_seq, grad_v_last, grad_v_seq, _grad_h_seq):
        if torch.is_grad_enabled():
            # create_graph=True: the surrogate derivative is treated as a constant, so a second
            # derivative through this backward would be silently wrong.
            raise RuntimeError("fastspike neurons have first-order gradients only: a backward with "
                               "create_graph=True (double backward, gradient penalties) is not supported")
        h_seq, v_init, k = ctx.saved_tensors
        if h_seq.dim() < 2:
            raise RuntimeError("fastspike: this neuron_forward ran with save_h=False, so it kept nothing to "
                               "differentiate; call it through fastspike.functional")
        if grad_spike_seq is None:
            grad_spike_seq = torch.zeros_like(h_seq, dtype=ctx.x_dtype)
        if grad_v_last is None:
            grad_v_last = torch.zeros_like(h_seq[0])
        grad_spike_seq = in_order_of(grad_spike_seq, h_seq)
        grad_v_last = in_order_of(grad_v_last, h_seq[0])
        if ctx.store_v_seq and grad_v_seq is not None:
            grad_v_seq = in_order_of(grad_v_seq, h_seq)
        else:
            grad_v_seq = None
        grad_x, grad_v_init, grad_k = backward_op(grad_spike_seq, grad_v_last, grad_v_seq, h_seq, v_init,
                                                  ctx.v_init_value, k, *ctx.params)
        grad_k = grad_k.to(k.dtype).reshape(k.shape) if k is not None else None
        return (grad_x, grad_v_init if v_init is not None else None, None, grad_k) + (None,) * 10
    return backward


def register_autograd(forward_op, backward_op) -> None:
    """Make ``forward_op`` differentiable (x_seq, v_init, k) through ``backward_op``."""
    torch.library.register_autograd(forward_op, _make_backward(backward_op), setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The registered autograd formula as a plain autograd.Function, for eager calls.

    Calling the op through its registered autograd kernel costs tens of microseconds of Python per call
    (torch.library re-parses the 14-argument schema), which dominates small, dispatch-bound layers. Eager
    calls run the same kernels and the same backward this way; torch.compile traces the registered op.
    """

    @staticmethod
    def forward(ctx, forward_op, backward_op, *inputs):
        # forward(ctx, ...) rather than a separate setup_context: that style makes apply() bind arguments
        # through inspect.signature on every call.
        with torch._C._AutoDispatchBelowAutograd():
            output = forward_op(*inputs)
        ctx.backward_op = backward_op
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return (None, None) + _make_backward(ctx.backward_op)(ctx, *grads)


def multistep(forward_op, backward_op, spec: NeuronSpec, x_seq: torch.Tensor,
              v_init: Union[float, torch.Tensor], w: Optional[torch.Tensor], store_v_seq: bool):
    """A backend's ``multistep(spec, x_seq, v_init, w, store_v_seq) -> (spike_seq, v_last, v_seq or None)``
    (see :mod:`fastspike.backends`) on top of its ops (``backward_op`` differentiates ``forward_op`` as
    :func:`register_autograd` registers it); inputs are already checked."""
    state = state_dtype(x_seq.dtype)
    if isinstance(v_init, torch.Tensor):
        state = torch.promote_types(state, v_init.dtype)
    # A fp64 stored state widens the whole computation, as in the reference; kernels take fp64 x then.
    x = x_seq if state != torch.float64 or x_seq.dtype == torch.float64 else x_seq.to(state)
    x = time_major_dense(x)
    if isinstance(v_init, torch.Tensor):
        v, v_value = in_order_of(v_init.to(state), x[0]), 0.0
    else:
        v, v_value = None, float(v_init)
    k = w.sigmoid() if spec.kind == "plif" else None
    save_h = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, v, k))
    args = (x, v, v_value, k, *op_params(spec), store_v_seq, save_h)
    if torch.compiler.is_compiling():
        spike_seq, v_last, v_seq, _ = forward_op(*args)
    elif save_h:
        spike_seq, v_last, v_seq, _ = _Eager.apply(forward_op, backward_op, *args)
    else:
        with torch._C._AutoDispatchBelowAutograd():
            spike_seq, v_last, v_seq, _ = forward_op(*args)
    if spike_seq.dtype != x_seq.dtype:
        spike_seq = spike_seq.to(x_seq.dtype)
    return spike_seq, v_last, (v_seq if store_v_seq else None)
