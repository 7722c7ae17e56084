"""The pure-torch reference of snnTorch's ``Leaky`` and ``Synaptic`` (backend 'torch' of the leaky family).

One step, from the previous state ``mem`` (and ``syn``) and the input ``x``, is snnTorch 1.0.0's own
sequence of tensor ops, in its order, so fp32 results are bit-identical to it (``bc = beta.clamp(0, 1)``,
``ac = alpha.clamp(0, 1)``, ``thr`` the threshold, ``gsf`` the graded spikes factor)::

    r = (mem - thr > 0)                               the delayed reset, no gradient
    Leaky     subtract  mem = (bc * mem + x) - r * thr
              zero      mem = bc * ((1 - r) * mem) + x
              none      mem = bc * mem + x
    Synaptic  syn = ac * syn + x;  base = bc * mem + syn
              subtract  mem = base - r * thr
              zero      mem = base - base * r
              none      mem = base
    spk = surrogate(mem - thr) * gsf                  surrogate(x) = (x > 0), gradient surrogate.derivative(x)
    reset_delay=False:  d = spk / gsf - r
              subtract  mem = mem - d * thr
              zero      mem = mem - d * mem

Gradients are torch autograd's through these ops, as in snnTorch. The state is computed in fp32 for
fp16/bf16/fp32 inputs (snnTorch keeps some states in the input's 16-bit dtype), fp64 for fp64; parameters
are rounded to it, as torch does with snnTorch's 0-dim parameters.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._spec import LeakySpec


def step(spec: LeakySpec, x, syn, mem, bc, ac, thr, gsf):
    """One time step; returns ``(spk, syn, mem)`` (``syn`` is None for Leaky)."""
    r = (mem - thr > 0).to(mem.dtype)
    if spec.synaptic:
        syn = ac * syn + x
        base = bc * mem + syn
        if spec.reset == "subtract":
            mem = base - r * thr
        elif spec.reset == "zero":
            mem = base - base * r
        else:
            mem = base
    elif spec.reset == "subtract":
        mem = (bc * mem + x) - r * thr
    elif spec.reset == "zero":
        mem = bc * ((1 - r) * mem) + x
    else:
        mem = bc * mem + x
    spk = spec.surrogate(mem - thr) * gsf
    if not spec.reset_delay:
        d = spk / gsf - r
        if spec.reset == "subtract":
            mem = mem - d * thr
        elif spec.reset == "zero":
            mem = mem - d * mem
    return spk, syn, mem


def multistep(spec: LeakySpec, x_seq: torch.Tensor, syn_init: Optional[torch.Tensor],
              mem_init: Optional[torch.Tensor], beta: torch.Tensor, alpha: Optional[torch.Tensor],
              threshold: torch.Tensor, gsf: torch.Tensor, state: torch.dtype, store_seq: bool):
    """Run ``spec`` over ``x_seq [T, N, *]`` in the state dtype ``state``; ``*_init`` None means zeros.

    ``beta``, ``alpha``, ``threshold``, ``gsf`` broadcast against one step (already clamped where snnTorch
    clamps, in the state dtype). Returns ``(spk_seq, syn_last, mem_last, syn_seq, mem_seq)``: spikes in the
    state dtype; the sequences (post-reset states of every step) only when ``store_seq``, else None; the
    syn entries None for Leaky.
    """
    zeros = x_seq.new_zeros(x_seq.shape[1:], dtype=state)
    mem = mem_init if mem_init is not None else zeros
    syn = (syn_init if syn_init is not None else zeros) if spec.synaptic else None
    spikes, syns, mems = [], [], []
    for x in x_seq:
        spk, syn, mem = step(spec, x.to(state), syn, mem, beta, alpha, threshold, gsf)
        spikes.append(spk)
        if store_seq:
            mems.append(mem)
            if spec.synaptic:
                syns.append(syn)
    spk_seq = torch.stack(spikes)
    syn_seq = torch.stack(syns) if store_seq and spec.synaptic else None
    return spk_seq, syn, mem, syn_seq, (torch.stack(mems) if store_seq else None)
