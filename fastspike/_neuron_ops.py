"""The neuron family's glue (SpikingJelly's IF/LIF/PLIF) for the fused backends.

Each fused backend provides the op pair of :data:`fastspike._contract.NEURON_FORWARD` /
:data:`~fastspike._contract.NEURON_BACKWARD` (schemas there, arguments by name), computing
:mod:`fastspike.reference.neuron`'s equations: kind 'if'/'lif'/'plif'; v_reset None = soft reset;
``k = sigmoid(w)`` for PLIF, in w's dtype; the surrogate as its kernel name and constants.

Layout (see :mod:`fastspike._ops`): ``x_seq [T, N, *]`` is dense with T outermost; ``v_init`` (when given),
``grad_v_last``, ``grad_spike_seq`` and ``grad_v_seq`` are in the same order. The state dtype is
``v_init``'s, else fp32 (fp64 for fp64 inputs); x is fp16/bf16/fp32 with fp32 state or fp64 with fp64
state. Outputs (:func:`forward_outputs`): ``spike_seq`` like x; ``v_last`` like one step of x in the state
dtype; ``v_seq``/``h_seq`` like x in the state dtype when ``store_v_seq``/``save_h``, else empty ``[0]``.
Backward: ``grad_v_last`` is None when v_last has no gradient; ``x_seq`` is the forward's input, needed
(and saved) only for PLIF's dL/dk with decay_input; ``need_grad_k`` says whether dL/dk is computed.
``grad_x_seq`` like ``h_seq`` in grad_spike_seq's dtype, ``grad_v_init`` like one step of ``h_seq``,
``grad_k`` 0-dim in the state dtype when ``need_grad_k`` (PLIF), else empty [0]. ``detach_reset`` and the
surrogate are unused by the forward; they are in its record so the registered autograd formula has them.

Byte budget: an inference forward (no input requires grad) writes spikes only (and v_seq when asked); a
training forward also saves ``h`` (fp32). PLIF with decay_input whose w requires grad keeps a reference
to x as well (no copy, but x stays alive until the backward, which reads it: 4 more bytes per element in
fp32), because dh/dk = x - (v - v_reset) recovered from h as (h - v) / k loses digits when k is small.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _ops
from ._contract import NEURON_BACKWARD, NEURON_FORWARD, NeuronParams
from ._spec import NeuronSpec, state_dtype


def params(spec: NeuronSpec) -> NeuronParams:
    """The op record of ``spec``."""
    name, alpha, a, b = spec.surrogate.kernel_spec
    return NeuronParams(kind=spec.kind, v_threshold=spec.v_threshold, v_reset=spec.v_reset,
                        tau=spec.tau if spec.tau is not None else 1.0, decay_input=spec.decay_input,
                        detach_reset=spec.detach_reset, surrogate=name, sg_alpha=alpha, sg_a=a, sg_b=b)


def forward_outputs(a):
    """``(spike_seq, v_last, v_seq, h_seq)`` of a forward call as the contract says."""
    x_seq = a.x_seq
    state = a.v_init.dtype if a.v_init is not None else state_dtype(x_seq.dtype)
    # Not-requested outputs are 1-d and empty, which also tells them from a saved h of an empty input.
    empty = x_seq.new_empty((0,), dtype=state)
    return (torch.empty_like(x_seq), torch.empty_like(x_seq[0], dtype=state),
            torch.empty_like(x_seq, dtype=state) if a.store_v_seq else empty,
            torch.empty_like(x_seq, dtype=state) if a.save_h else empty.clone())


def backward_outputs(a):
    """``(grad_x_seq, grad_v_init, grad_k)`` of a backward call as the contract says."""
    h_seq = a.h_seq
    grad_k_shape = () if a.params.kind == "plif" and a.need_grad_k else (0,)
    return (torch.empty_like(h_seq, dtype=a.grad_spike_seq.dtype), torch.empty_like(h_seq[0]),
            h_seq.new_empty(grad_k_shape))


def setup_context(ctx, a, out) -> None:
    ctx.params, ctx.v_init_value, ctx.store_v_seq = a.params, a.v_init_value, a.store_v_seq
    ctx.x_dtype = a.x_seq.dtype
    ctx.mark_non_differentiable(out.h_seq)
    ctx.need_grad_k = a.params.kind == "plif" and a.k is not None and a.k.requires_grad
    # x is needed only for PLIF's dL/dk with decay_input (see the byte budget above).
    needs_x = ctx.need_grad_k and a.params.decay_input
    ctx.save_for_backward(out.h_seq, a.v_init, a.k, a.x_seq if needs_x else None)


def backward_formula(ctx, backward_op, g) -> dict:
    h_seq, v_init, k, x_seq = ctx.saved_tensors
    if h_seq.dim() < 2:
        raise RuntimeError("fastspike: this neuron_forward ran with save_h=False, so it kept nothing to "
                           "differentiate; call it through fastspike.functional")
    grad_spike_seq = g.spike_seq if g.spike_seq is not None else torch.zeros_like(h_seq, dtype=ctx.x_dtype)
    grad_v_last = _ops.in_order_of(g.v_last, h_seq[0]) if g.v_last is not None else None
    grad_v_seq = _ops.in_order_of(g.v_seq, h_seq) if ctx.store_v_seq and g.v_seq is not None else None
    need_grad_k = ctx.need_grad_k
    grad_x, grad_v_init, grad_k = backward_op(*NEURON_BACKWARD.pack(
        ctx.params, grad_spike_seq=_ops.in_order_of(grad_spike_seq, h_seq), grad_v_last=grad_v_last,
        grad_v_seq=grad_v_seq, h_seq=h_seq, x_seq=x_seq, v_init=v_init, k=k, v_init_value=ctx.v_init_value,
        need_grad_k=need_grad_k))
    return {"x_seq": grad_x, "v_init": grad_v_init if v_init is not None else None,
            "k": grad_k.to(k.dtype).reshape(k.shape) if need_grad_k else None}


FAMILY = _ops.Family(NEURON_FORWARD, NEURON_BACKWARD, forward_outputs, backward_outputs, setup_context,
                     backward_formula)


def multistep(forward_op, backward_op, spec: NeuronSpec, x_seq: torch.Tensor,
              v_init: Union[float, torch.Tensor], w: Optional[torch.Tensor], store_v_seq: bool):
    """A backend's ``multistep(spec, x_seq, v_init, w, store_v_seq) -> (spike_seq, v_last, v_seq or None)``
    (see :mod:`fastspike.backends`) on top of its op pair; inputs are already checked."""
    state = state_dtype(x_seq.dtype)
    if isinstance(v_init, torch.Tensor):
        state = torch.promote_types(state, v_init.dtype)
    # A fp64 stored state widens the whole computation, as in the reference; kernels take fp64 x then.
    x = x_seq if state != torch.float64 or x_seq.dtype == torch.float64 else x_seq.to(state)
    x = _ops.time_major_dense(x)
    if isinstance(v_init, torch.Tensor):
        v, v_value = _ops.in_order_of(v_init.to(state), x[0]), 0.0
    else:
        v, v_value = None, float(v_init)
    k = w.sigmoid() if spec.kind == "plif" else None
    save_h = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, v, k))
    args = NEURON_FORWARD.pack(params(spec), x_seq=x, v_init=v, k=k, v_init_value=v_value,
                               store_v_seq=store_v_seq, save_h=save_h)
    out = _ops.call(FAMILY, forward_op, backward_op, args, save_h)
    spike_seq = out.spike_seq if out.spike_seq.dtype == x_seq.dtype else out.spike_seq.to(x_seq.dtype)
    return spike_seq, out.v_last, (out.v_seq if store_v_seq else None)
