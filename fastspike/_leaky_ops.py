"""The leaky family's glue (snnTorch's Leaky and Synaptic) for the fused backends.

Each fused backend provides the op pair of :data:`fastspike._contract.LEAKY_FORWARD` /
:data:`~fastspike._contract.LEAKY_BACKWARD`, computing :mod:`fastspike.reference.leaky`'s equations.

Layout (see :mod:`fastspike._ops`): ``x_seq [T, N, *]`` is dense with T outermost; ``syn_init``,
``mem_init`` and every per-step gradient are in the same order. The state dtype is the parameters' (fp32,
or fp64 with fp64 inputs; 16-bit inputs keep fp32 state). ``beta``, ``alpha`` (Synaptic), ``threshold`` and
``gsf`` (graded spikes factor) are each either one element (the same for every neuron) or one value per
neuron of a step, laid out like a step; the caller has clamped beta and alpha to [0, 1].

Forward outputs: ``spk_seq`` like x in the state dtype; ``syn_last`` (Synaptic), ``mem_last`` like one
step; ``mem_seq`` (every step's final mem) when ``store_seq`` or ``save``; ``syn_seq`` (Synaptic) when
``store_seq`` or ``save_syn`` (alpha needs its gradient); ``pre_seq`` (mem before the immediate reset of
``reset_delay=False``) when ``save`` and not ``reset_delay``; unwritten outputs are empty ``[0]``. So a
training forward saves one value per element (mem), two with ``reset_delay=False``, one more for a
learnable alpha, and never x. Backward outputs: ``grad_x_seq`` in ``grad_x_dtype``, ``grad_syn_init``,
``grad_mem_init`` like a step, and for each parameter whose ``need_*`` is set its gradient summed over
time per neuron (a step-shaped tensor; empty [0] otherwise), which this glue sums over the neurons, in
fp64, for a one-element parameter.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _ops
from ._contract import LEAKY_BACKWARD, LEAKY_FORWARD, LeakyParams
from ._spec import LeakySpec

PARAMS = ("beta", "alpha", "threshold", "gsf")


def params(spec: LeakySpec) -> LeakyParams:
    name, alpha, a, b = spec.surrogate.kernel_spec
    return LeakyParams(synaptic=spec.synaptic, reset=spec.reset, reset_delay=spec.reset_delay, surrogate=name,
                       sg_alpha=alpha, sg_a=a, sg_b=b)


def forward_outputs(a):
    x, p, state = a.x_seq, a.params, a.beta.dtype
    empty = x.new_empty((0,), dtype=state)

    def seq(written):
        return torch.empty_like(x, dtype=state) if written else empty.clone()

    return (torch.empty_like(x, dtype=state),
            torch.empty_like(x[0], dtype=state) if p.synaptic else empty.clone(),
            torch.empty_like(x[0], dtype=state),
            seq(p.synaptic and (a.store_seq or a.save_syn)), seq(a.store_seq or a.save),
            seq(a.save and not p.reset_delay))


def backward_outputs(a):
    mem_seq, p = a.mem_seq, a.params
    step = mem_seq[0]
    empty = mem_seq.new_empty((0,))
    return (torch.empty_like(mem_seq, dtype=a.grad_x_dtype),
            torch.empty_like(step) if p.synaptic else empty.clone(), torch.empty_like(step),
            *(torch.empty_like(step) if need else empty.clone()
              for need in (a.need_beta, a.need_alpha, a.need_threshold, a.need_gsf)))


def setup_context(ctx, a, out) -> None:
    ctx.params, ctx.store_seq, ctx.x_dtype = a.params, a.store_seq, a.x_seq.dtype
    ctx.need = {n: getattr(a, n) is not None and getattr(a, n).requires_grad for n in PARAMS}
    ctx.shapes = {n: getattr(a, n).shape if getattr(a, n) is not None else None for n in PARAMS}
    ctx.mark_non_differentiable(out.pre_seq)
    if not a.store_seq:
        ctx.mark_non_differentiable(out.mem_seq, out.syn_seq)
    ctx.save_for_backward(out.mem_seq, out.pre_seq if not a.params.reset_delay else None,
                          out.syn_seq if a.save_syn else None, a.syn_init, a.mem_init, a.beta, a.alpha,
                          a.threshold, a.gsf)


def backward_formula(ctx, backward_op, g) -> dict:
    mem_seq, pre_seq, syn_seq, syn_init, mem_init, beta, alpha, threshold, gsf = ctx.saved_tensors
    if mem_seq.dim() < 2:
        raise RuntimeError("fastspike: this leaky_forward ran with save=False, so it kept nothing to "
                           "differentiate; call it through fastspike.snntorch")
    step, synaptic = mem_seq[0], ctx.params.synaptic

    def seq_grad(grad):
        return _ops.in_order_of(grad.to(mem_seq.dtype), mem_seq) if ctx.store_seq and grad is not None else None

    grad_spk = g.spk_seq if g.spk_seq is not None else torch.zeros_like(mem_seq)
    grad_mem_last = g.mem_last if g.mem_last is not None else torch.zeros_like(step)
    grad_syn_last = None
    if synaptic and g.syn_last is not None:
        grad_syn_last = _ops.in_order_of(g.syn_last.to(mem_seq.dtype), step)
    out = LEAKY_BACKWARD.Out(*backward_op(*LEAKY_BACKWARD.pack(
        ctx.params, grad_spk_seq=_ops.in_order_of(grad_spk.to(mem_seq.dtype), mem_seq),
        grad_syn_last=grad_syn_last, grad_mem_last=_ops.in_order_of(grad_mem_last.to(mem_seq.dtype), step),
        grad_syn_seq=seq_grad(g.syn_seq) if synaptic else None, grad_mem_seq=seq_grad(g.mem_seq),
        mem_seq=mem_seq, pre_seq=pre_seq, syn_seq=syn_seq, syn_init=syn_init, mem_init=mem_init, beta=beta,
        alpha=alpha, threshold=threshold, gsf=gsf, need_beta=ctx.need["beta"], need_alpha=ctx.need["alpha"],
        need_threshold=ctx.need["threshold"], need_gsf=ctx.need["gsf"], grad_x_dtype=ctx.x_dtype)))
    grads = {"x_seq": out.grad_x_seq, "syn_init": out.grad_syn_init if syn_init is not None else None,
             "mem_init": out.grad_mem_init if mem_init is not None else None}
    for name in PARAMS:
        if ctx.need[name]:
            grad = getattr(out, f"grad_{name}")
            shape = ctx.shapes[name]
            # One value for every neuron: its per-neuron sums over time are summed here, in fp64.
            grads[name] = grad.double().sum().to(grad.dtype).reshape(shape) if shape.numel() == 1 else grad
    return grads


FAMILY = _ops.Family(LEAKY_FORWARD, LEAKY_BACKWARD, forward_outputs, backward_outputs, setup_context,
                     backward_formula)


def _per_step(p: Optional[torch.Tensor], step: torch.Tensor) -> Optional[torch.Tensor]:
    """One element as it is; else one value per neuron of ``step``, in its memory order."""
    if p is None or p.numel() == 1:
        return p
    return _ops.in_order_of(p.expand(step.shape), step)


def multistep(forward_op, backward_op, spec: LeakySpec, x_seq: torch.Tensor, syn_init, mem_init, beta, alpha,
              threshold, gsf, state: torch.dtype, store_seq: bool):
    """A backend's leaky ``multistep`` (the arguments and results of
    :func:`fastspike.reference.leaky.multistep`) on top of its op pair; inputs are already checked."""
    x = x_seq if state != torch.float64 or x_seq.dtype == torch.float64 else x_seq.to(state)
    x = _ops.time_major_dense(x)
    step = x[0]
    syn = _ops.in_order_of(syn_init, step) if syn_init is not None and spec.synaptic else None
    mem = _ops.in_order_of(mem_init, step) if mem_init is not None else None
    named = {n: _per_step(t, step) for n, t in zip(PARAMS, (beta, alpha if spec.synaptic else None, threshold, gsf))}
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, syn, mem, *named.values()))
    save_syn = save and spec.synaptic and named["alpha"].requires_grad
    args = LEAKY_FORWARD.pack(params(spec), x_seq=x, syn_init=syn, mem_init=mem, store_seq=store_seq, save=save,
                              save_syn=save_syn, **named)
    out = _ops.call(FAMILY, forward_op, backward_op, args, save)
    syn_last = out.syn_last if spec.synaptic else None
    syn_seq = out.syn_seq if spec.synaptic and store_seq else None
    return out.spk_seq, syn_last, out.mem_last, syn_seq, (out.mem_seq if store_seq else None)
