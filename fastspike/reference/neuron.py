"""The pure-torch reference backend ('torch'): the oracle every faster backend is tested against.

For each time step ``t`` of a time-major input ``x_seq [T, N, *]`` and state ``v`` (``v_init`` at t = 0):

charge (the expression SpikingJelly 0.0.0.0.14's torch backend uses, term for term, so fp32 results are
bit-identical to it; ``k = 1/tau`` for LIF, ``k = sigmoid(w)`` for PLIF)::

    IF                                   h = v + x
    LIF/PLIF, decay_input, v_reset 0/None h = v + (x - v) * k                (LIF: (x - v) / tau)
    LIF/PLIF, decay_input, v_reset != 0   h = v + (x - (v - v_reset)) * k    (LIF: ... / tau)
    LIF/PLIF, no decay_input, 0/None      h = v * (1 - k) + x
    LIF/PLIF, no decay_input, != 0        h = v - (v - v_reset) * k + x     (LIF: ... / tau)

fire ``s = (h - v_threshold >= 0)``; reset: hard ``v = (1 - s) * h + s * v_reset``, soft (v_reset None)
``v = h - s * v_threshold``.

The backward is hand-written backpropagation through time over the saved ``h`` sequence, with the
surrogate derivative ``g' = surrogate.derivative(h - v_threshold)`` standing in for ``ds/dh``. Each
product is the one autograd forms on SpikingJelly's graph of the same step, in the same order, so values
agree to rounding and a ``0 * inf`` (huge or infinite ``h``) is NaN exactly where SpikingJelly's is::

    hard:  dL/dh = dL/dv (1 - s) + (dL/ds + (dL/dv v_reset - dL/dv h)) g'
    soft:  dL/dh = dL/dv + (dL/ds - dL/dv v_threshold) g'

with ``dL/ds`` alone (no ``dL/dv`` term) when ``detach_reset``, and ``dL/dh = dL/ds g'`` at the last
step when v has no gradient there (autograd never evaluates that reset backward; a zero would make
``0 * inf``). Each ``(...) g'`` product is the surrogate's ``grad_input``: for PiecewiseQuadratic it is 0
outside the window even when the other factor is Inf or NaN, as SpikingJelly masks it. The charge then
passes ``u = dL/dh / tau`` (LIF) or ``dL/dh k`` (PLIF) to a scaled x and ``dL/dh - u`` or ``dL/dh (1 - k)``
to v, by its form in the table.

fp16/bf16 inputs are computed in fp32 (state, arithmetic, v outputs); spikes come back in the input dtype.
fp64 inputs, or a fp64 initial state, are computed in fp64.

The backward is first-order only: a backward with ``create_graph=True`` (double backward, gradient
penalties) raises an error instead of silently dropping the surrogate derivative's dependence on its input.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .._spec import NeuronSpec, state_dtype
from ..surrogate import heaviside


def charge(spec: NeuronSpec, v: torch.Tensor, x: torch.Tensor, k: Optional[torch.Tensor]) -> torch.Tensor:
    """One charge step ``h = f(v, x)`` of the table above (``k`` = sigmoid(w) for PLIF, else unused)."""
    if spec.kind == "if":
        return v + x
    # LIF divides by the Python scalar tau as SpikingJelly does; torch evaluates that as a true division on
    # CPU and as a product with the fp32 reciprocal on CUDA, and the kernels follow the device alike.
    # PLIF multiplies by the tensor sigmoid(w).
    if spec.kind == "lif":
        tau = spec.tau
        if spec.decay_input:
            if spec.reset_is_zero:
                return v + (x - v) / tau
            return v + (x - (v - spec.v_reset)) / tau
        if spec.reset_is_zero:
            return v * (1.0 - 1.0 / tau) + x
        return v - (v - spec.v_reset) / tau + x
    if spec.decay_input:
        if spec.reset_is_zero:
            return v + (x - v) * k
        return v + (x - (v - spec.v_reset)) * k
    if spec.reset_is_zero:
        return v * (1.0 - k) + x
    return v - (v - spec.v_reset) * k + x


def reset(h: torch.Tensor, s: torch.Tensor, v_threshold: float, v_reset: Optional[float]) -> torch.Tensor:
    """Hard reset ``(1 - s) * h + s * v_reset``, or soft reset ``h - s * v_threshold`` when v_reset is None."""
    if v_reset is not None:
        return (1.0 - s) * h + s * v_reset
    return h - s * v_threshold


def _charge_backward(spec: NeuronSpec, k, grad_h):
    """``(dL/dx, dL/dv)`` of one charge step, as autograd differentiates the table's expression."""
    if spec.kind == "if":
        return grad_h, grad_h
    u = grad_h / spec.tau if spec.kind == "lif" else grad_h * k
    if spec.decay_input:
        return u, grad_h - u
    if spec.reset_is_zero:
        return grad_h, grad_h * ((1.0 - 1.0 / spec.tau) if spec.kind == "lif" else (1.0 - k))
    return grad_h, grad_h - u


def _grad_h(spec: NeuronSpec, grad_s, grad_v, h):
    """dL/dh of one step through fire and reset; ``grad_v`` None when v has no gradient at that step."""
    hm = h - spec.v_threshold
    if grad_v is None:
        return spec.surrogate.grad_input(grad_s, hm)
    if spec.hard_reset:
        direct = grad_v * (1.0 - heaviside(hm))
        if not spec.detach_reset:
            grad_s = grad_s + (grad_v * spec.v_reset - grad_v * h)
    else:
        direct = grad_v
        if not spec.detach_reset:
            grad_s = grad_s - grad_v * spec.v_threshold
    return direct + spec.surrogate.grad_input(grad_s, hm)


def _forward(spec: NeuronSpec, x_seq, v_init, w, store_v_seq: bool, keep_h: bool):
    """The time loop. Returns spikes, v_last, v_seq (or None), and for backward h_seq (or None), v at t=0, k."""
    sdt = state_dtype(x_seq.dtype)
    if isinstance(v_init, torch.Tensor):
        # A wider stored state (e.g. after module.double() mid-sequence) widens the computation, never narrows.
        sdt = torch.promote_types(sdt, v_init.dtype)
        v = v_init.to(sdt)
    else:
        v = torch.full(x_seq.shape[1:], float(v_init), dtype=sdt, device=x_seq.device)
    v0 = v
    k = w.sigmoid() if spec.kind == "plif" else None
    spike_seq = torch.empty_like(x_seq, memory_format=torch.contiguous_format)
    h_seq = x_seq.new_empty(x_seq.shape, dtype=sdt) if keep_h else None
    v_seq = x_seq.new_empty(x_seq.shape, dtype=sdt) if store_v_seq else None
    for t in range(x_seq.shape[0]):
        h = charge(spec, v, x_seq[t].to(sdt), k)
        s = heaviside(h - spec.v_threshold)
        v = reset(h, s, spec.v_threshold, spec.v_reset)
        spike_seq[t] = s
        if keep_h:
            h_seq[t] = h
        if store_v_seq:
            v_seq[t] = v
    return spike_seq, v, v_seq, h_seq, v0, k


class _MultiStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v_init, w, spec: NeuronSpec, store_v_seq: bool):
        spike_seq, v, v_seq, h_seq, v0, k = _forward(spec, x_seq, v_init, w, store_v_seq, keep_h=True)
        ctx.spec = spec
        # A gradient that does not reach an output stays None, as in autograd (see _grad_h).
        ctx.set_materialize_grads(False)
        ctx.v_init_dtype = v_init.dtype if isinstance(v_init, torch.Tensor) else None
        ctx.x_dtype = x_seq.dtype
        if spec.kind == "plif":
            ctx.save_for_backward(h_seq, x_seq, v0, w, k)
        else:
            ctx.save_for_backward(h_seq)
        return spike_seq, v, v_seq

    @staticmethod
    def backward(ctx, grad_spike_seq, grad_v_last, grad_v_seq):
        if torch.is_grad_enabled():
            # create_graph=True: the result would be used as a differentiable gradient, but this backward
            # treats the surrogate derivative as a constant, so a second derivative would be silently wrong.
            raise RuntimeError("fastspike neurons have first-order gradients only: a backward with "
                               "create_graph=True (double backward, gradient penalties) is not supported")
        spec: NeuronSpec = ctx.spec
        h_seq = ctx.saved_tensors[0]
        plif = spec.kind == "plif"
        if plif:
            _, x_seq, v0, w, k = ctx.saved_tensors
            grad_k = torch.zeros((), dtype=h_seq.dtype, device=h_seq.device)
        else:
            k = None
        sdt = h_seq.dtype
        grad_x = torch.empty_like(h_seq)
        grad_v = grad_v_last.to(sdt) if grad_v_last is not None else None
        for t in range(h_seq.shape[0] - 1, -1, -1):
            h = h_seq[t]
            if grad_v_seq is not None:
                grad_v = grad_v_seq[t].to(sdt) if grad_v is None else grad_v + grad_v_seq[t].to(sdt)
            grad_s = grad_spike_seq[t].to(sdt) if grad_spike_seq is not None else torch.zeros_like(h)
            grad_h = _grad_h(spec, grad_s, grad_v, h)
            grad_x[t], grad_v = _charge_backward(spec, k, grad_h)
            if plif:
                if t > 0:
                    h_prev = h_seq[t - 1]
                    v_prev = reset(h_prev, heaviside(h_prev - spec.v_threshold), spec.v_threshold, spec.v_reset)
                else:
                    v_prev = v0
                v_rel = v_prev if spec.reset_is_zero else v_prev - spec.v_reset
                dh_dk = x_seq[t].to(sdt) - v_rel if spec.decay_input else -v_rel
                grad_k = grad_k + (grad_h * dh_dk).sum()
        grad_x = grad_x.to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        grad_v_init = grad_v.to(ctx.v_init_dtype) if ctx.needs_input_grad[1] else None
        grad_w = None
        if plif and ctx.needs_input_grad[2]:
            grad_w = (grad_k * k * (1.0 - k)).to(w.dtype).reshape(w.shape)
        return grad_x, grad_v_init, grad_w, None, None


def multistep(spec: NeuronSpec, x_seq: torch.Tensor, v_init: Union[float, torch.Tensor],
              w: Optional[torch.Tensor], store_v_seq: bool):
    """Run ``spec``'s neuron over ``x_seq [T, N, *]``; returns ``(spike_seq, v_last, v_seq or None)``.

    Inputs are assumed checked (:mod:`fastspike._spec`). ``spike_seq`` has x_seq's dtype and shape;
    ``v_last [N, *]`` and ``v_seq [T, N, *]`` (post-reset membrane potentials) have the state dtype.
    """
    tensors = (x_seq, v_init, w)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        return _MultiStep.apply(x_seq, v_init, w, spec, store_v_seq)
    # Without autograd, h need not be kept for a backward pass.
    return _forward(spec, x_seq, v_init, w, store_v_seq, keep_h=False)[:3]
