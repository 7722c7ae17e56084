"""Memory modes (:func:`fastspike.functional.set_memory_mode`) and the recomputed Conv/Linear(-BN)-neuron block.

Modes, set per module on every module of a net:

- ``'default'``: a spike input is kept as bits by the layers (:mod:`fastspike._packed`); nothing is
  recomputed.
- ``'recompute'``: in every ``nn.Sequential`` of the net, each block of consecutive children
  ``Conv2d|Linear, [BatchNorm2d], [Dropout], neuron`` (fastspike's layers and a fused fastspike neuron,
  all multi-step, none with hooks; ``Dropout`` is fastspike's or ``nn.Dropout``) runs as one autograd
  Function that keeps only its input (bits when it is spikes) and what an exact replay needs, and runs its
  forward again in backward. Everything else runs as in ``'default'``.
- ``'plain'``: nothing packed, nothing recomputed: what torch's autograd keeps (for comparisons).

What a recomputed block keeps: the input (packed when marked spikes, else the tensor itself), the
neuron's initial state when it is a tensor, eval-mode BatchNorm's running statistics as they were (two
vectors of C), a fastspike ``Dropout``'s mask, the CPU/CUDA RNG state when an ``nn.Dropout`` draws in it,
and the autocast state. Parameters are used from the modules, their version counters checked in backward.
Train-mode BatchNorm recomputes its batch statistics from the replayed input (the same input and kernel:
bit-identical on CPU); its running statistics are updated once, by the forward (the replay updates throwaway
copies). The replay is the default mode's computation on the same values, so on CPU every gradient is
bit-identical to the default mode's.

Not covered (they run as in 'default'): blocks outside an ``nn.Sequential`` or inside a subclass of it
that overrides ``forward`` (``SeqToANNContainer`` included), single-step mode, neurons that run SpikingJelly's
per-step hooks, any other module between the layer and the neuron, modules with hooks, and everything under
``torch.compile``, whose own partitioner decides what is kept.
"""
from __future__ import annotations

import contextlib
import functools
from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import layer, neuron
from ._bits import is_spikes, mark, pack, unpack
from ._packed import MODE_ATTR, _hooked
from ._seq import seq_to_ann_forward
from .functional import neuron_multistep

MODES = ("default", "recompute", "plain")


def set_memory_mode(net: nn.Module, mode: str) -> None:
    """Set the memory mode of ``net`` and all its submodules: 'default', 'recompute' or 'plain' (see the
    module docstring). Returns nothing; the net is changed in place and can be switched back."""
    if mode not in MODES:
        raise ValueError(f"set_memory_mode: mode must be one of {MODES}, got {mode!r}")
    for m in net.modules():
        m.__dict__.pop(MODE_ATTR, None)
        if mode != "default":
            setattr(m, MODE_ATTR, mode)
        if type(m).forward is nn.Sequential.forward:
            m.__dict__.pop("forward", None)
            if mode == "recompute":
                # An instance attribute, so the module keeps its class, repr and state_dict.
                m.forward = functools.partial(_sequential_forward, m)


class Block(NamedTuple):
    """The modules of one recomputed block; ``bn`` and ``dropout`` may be None."""

    lin: nn.Module
    bn: Optional[nn.Module]
    dropout: Optional[nn.Module]
    node: neuron.BaseNode


def _multi_step_layer(m, cls) -> bool:
    return isinstance(m, cls) and type(m).forward is layer._SeqToANN.forward and m.step_mode == "m"


def find_block(modules: List[nn.Module], i: int) -> Optional[Block]:
    """The block starting at ``modules[i]``, or None."""
    if i >= len(modules) or not (_multi_step_layer(modules[i], layer.Conv2d)
                                 or _multi_step_layer(modules[i], layer.Linear)):
        return None
    j, parts = i + 1, {"bn": None, "dropout": None}
    if j < len(modules) and _multi_step_layer(modules[j], layer.BatchNorm2d):
        parts["bn"], j = modules[j], j + 1
    if j < len(modules) and (type(modules[j]) in (layer.Dropout, nn.Dropout)
                             and getattr(modules[j], "step_mode", "m") == "m"):
        parts["dropout"], j = modules[j], j + 1
    node = modules[j] if j < len(modules) else None
    if not (isinstance(node, neuron.BaseNode) and node.step_mode == "m" and not node._per_step()):
        return None
    block = Block(modules[i], parts["bn"], parts["dropout"], node)
    return None if any(m is not None and _hooked(m) for m in block) else block


def _sequential_forward(seq: nn.Sequential, x):
    modules = list(seq._modules.values())
    recording = torch.is_grad_enabled() and not torch.compiler.is_compiling()
    i = 0
    while i < len(modules):
        block = find_block(modules, i) if recording else None
        if block is None:
            x = modules[i](x)
            i += 1
        else:
            x = run_block(block, x)
            i += sum(m is not None for m in block)
    return x


def _params(block: Block) -> List[torch.Tensor]:
    return [p for m in (block.lin, block.bn, block.node) if m is not None for p in m.parameters(recurse=False)]


def run_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """The block's output spikes for ``x [T, N, *]``, with the modules' state updated as their own forward
    calls would (BatchNorm's running statistics, the Dropout mask, the neuron's ``v`` and ``v_seq``)."""
    node, params = block.node, _params(block)
    v = node.v if isinstance(node.v, torch.Tensor) else None
    if not (x.requires_grad or (v is not None and v.requires_grad) or any(p.requires_grad for p in params)):
        for m in block:
            if m is not None:
                x = m(x)
        return x
    spikes, v_last, v_seq = _Block.apply(block, x, v, *params)
    node.v = v_last
    if node.store_v_seq:
        node.v_seq = v_seq
    return mark(spikes)


def _bn_replay(bn: nn.BatchNorm2d, h: torch.Tensor, running) -> torch.Tensor:
    """``bn(h)``'s output, the running statistics untouched: train mode updates copies of them, eval mode
    uses ``running`` (their values at the forward)."""
    if bn.training or running is None:
        rm, rv = (None, None) if bn.running_mean is None else (bn.running_mean.clone(), bn.running_var.clone())
        return seq_to_ann_forward(h, lambda t: F.batch_norm(t, rm, rv, bn.weight, bn.bias, True, 0.0, bn.eps))
    return seq_to_ann_forward(h, lambda t: F.batch_norm(t, running[0], running[1], bn.weight, bn.bias, False,
                                                        0.0, bn.eps))


class _Block(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: Block, x, v_init, *params):
        ctx.block, ctx.spikes_in = block, is_spikes(x)
        ctx.versions = [p._version for p in params]
        device = x.device.type
        ctx.autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        ctx.rng = None
        if isinstance(block.dropout, nn.Dropout) and block.dropout.training and block.dropout.p > 0:
            ctx.rng = (torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.is_cuda else None)
        ctx.running = None
        if block.bn is not None and not block.bn.training and block.bn.running_mean is not None:
            ctx.running = (block.bn.running_mean.clone(), block.bn.running_var.clone())
        h = block.lin(x)
        if block.bn is not None:
            h = block.bn(h)
        if block.dropout is not None:
            h = block.dropout(h)
        mask = getattr(block.dropout, "mask", None) if isinstance(block.dropout, layer.Dropout) else None
        node = block.node
        spikes, v_last, *v_seq = neuron_multistep(
            node.spec, h, node.v if v_init is None else v_init, node._plif_weight(), node.backend,
            node.store_v_seq, owner=type(node).__name__, x_name="x_seq", v_name="stored state v")
        if ctx.spikes_in:
            bits, ctx.meta = pack(x)
            kept = bits
        else:
            ctx.meta, kept = None, x
        ctx.v_value = node.v if v_init is None else None
        ctx.save_for_backward(kept, v_init, mask)
        v_seq = v_seq[0] if v_seq else x.new_empty(0)
        if not node.store_v_seq:
            ctx.mark_non_differentiable(v_seq)
        return spikes, v_last, v_seq

    @staticmethod
    def backward(ctx, g_spikes, g_v_last, g_v_seq):
        block = ctx.block
        params = _params(block)
        for p, version in zip(params, ctx.versions):
            if p._version != version:
                raise RuntimeError(f"fastspike recompute: a parameter ({tuple(p.shape)}) has been modified by an "
                                   f"inplace operation since the forward: version {p._version}, expected {version}")
        kept, v_init, mask = ctx.saved_tensors
        x = unpack(kept, ctx.meta) if ctx.spikes_in else kept
        device = x.device.type
        amp = torch.autocast(device, ctx.autocast) if ctx.autocast is not None else contextlib.nullcontext()
        rng = torch.random.fork_rng(devices=[x.device] if x.is_cuda else []) if ctx.rng else contextlib.nullcontext()
        with torch.enable_grad(), amp, rng:
            if ctx.rng:
                torch.set_rng_state(ctx.rng[0])
                if ctx.rng[1] is not None:
                    torch.cuda.set_rng_state(ctx.rng[1], x.device)
            xd = x.detach().requires_grad_(ctx.needs_input_grad[1])
            vd = None if v_init is None else v_init.detach().requires_grad_(ctx.needs_input_grad[2])
            h = block.lin(xd)
            if block.bn is not None:
                h = _bn_replay(block.bn, h, ctx.running)
            if isinstance(block.dropout, nn.Dropout):
                h = block.dropout(h)
            elif mask is not None:
                h = h * mask
            node = block.node
            outs = neuron_multistep(node.spec, h, ctx.v_value if vd is None else vd, node._plif_weight(),
                                    node.backend, node.store_v_seq, owner=type(node).__name__)
        pairs = [(o, g) for o, g in zip(outs, (g_spikes, g_v_last, g_v_seq)) if g is not None and o.requires_grad]
        wanted = [(k, t) for k, t in enumerate([xd, vd, *params]) if t is not None and ctx.needs_input_grad[k + 1]]
        grads = [None] * (2 + len(params))
        if pairs and wanted:
            got = torch.autograd.grad([o for o, _ in pairs], [t for _, t in wanted], [g for _, g in pairs],
                                      allow_unused=True)
            for (k, _), g in zip(wanted, got):
                grads[k] = g
        return (None, *grads)
