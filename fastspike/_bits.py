"""Spike tensors: how a layer knows its input is binary, and how it keeps it in 1 bit per value.

**The mark.** A fastspike neuron's fused op returns spikes that are exactly 0 or 1 by construction; it sets
the attribute ``_fastspike_spikes`` on that output tensor (:func:`mark`). A layer that receives a marked
tensor (:func:`is_spikes`) may save it bit-packed for its backward. Nothing is ever scanned: an unmarked
tensor is treated as real-valued, whatever its values. Only fastspike's own code propagates the mark, to
outputs that are binary whenever their input is (max-pooling, flatten, the ``[T, N]`` merge of
:func:`fastspike.functional.seq_to_ann_forward`); any other op returns a new, unmarked tensor.

In eager mode the mark records the tensor's version counter, so an in-place change after the neuron
(``s.mul_(2)``) invalidates it. Under ``torch.compile`` Dynamo traces setting and reading the attribute in
fullgraph mode (on a view of a custom op's output: it refuses the output itself) but cannot read version
counters, so the mark is unconditional there; in-place ops on a marked tensor inside a compiled region are
not detected.

Why an attribute: a tensor subclass would have to follow the spikes through every op (slowing each one down,
and Dynamo traces subclasses only through extra protocols), and an analysis of ``nn.Sequential`` structure
sees neither custom ``forward`` methods nor what happens between children. The attribute sits on exactly
the tensor the neuron made, costs nothing, and whatever else touches the spikes yields an unmarked tensor.

**The packing.** :func:`pack` keeps 8 values per uint8, in the tensor's memory order (bit ``i`` of byte
``j`` is element ``8 j + i``), so :func:`unpack` rebuilds the same strides (contiguous or channels_last)
and the backward kernels see exactly the tensor the forward had. On CPU in eager mode it is numpy's
``packbits``/``unpackbits`` (one single-threaded pass each: on a busy 2-core machine a chain of small
multi-threaded torch ops costs tens of times more); elsewhere, and under ``torch.compile``, plain torch
arithmetic on 8-byte words (a multiply gathers 8 bytes of 0/1 into one byte, another spreads them back),
which runs on every device and fuses. Both give the same bytes.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

_ATTR = "_fastspike_spikes"
# 0x0102040810204080: byte i of a 0/1 word, times this, lands on bit 56 + i (no carries: see pack()).
_GATHER = 0x0102040810204080
_SPREAD = 0x0101010101010101
# 0x8040201008040201 as a signed int64: keeps bit i of byte i after the spread.
_SELECT = -0x7FBFDFEFF7FBFDFF
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _numpy_path(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def mark(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t`` (values exactly 0 or 1) as spikes and return it; use the result: under torch.compile
    it is a view of ``t`` (Dynamo refuses attributes on a custom op's output, not on a view of it)."""
    if torch.compiler.is_compiling():
        t = t.view_as(t)
        setattr(t, _ATTR, -1)
    else:
        setattr(t, _ATTR, t._version)
    return t


def is_spikes(t) -> bool:
    """Whether ``t`` carries a valid spike mark (see the module docstring)."""
    version = getattr(t, _ATTR, None)
    if version is None:
        return False
    return torch.compiler.is_compiling() or version == t._version


def mark_like(out: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Mark ``out`` when ``source`` is marked: for ops whose output is binary whenever the input is."""
    return mark(out) if is_spikes(source) else out


def _memory_order(t: torch.Tensor) -> Optional[Tuple[int, ...]]:
    """Dimensions from outermost to innermost in memory, or None when ``t`` is not dense in that order.

    Contiguous and channels_last are recognised directly; other orders are found by sorting the strides,
    in eager mode only (under torch.compile strides may be symbolic, which Dynamo cannot sort).
    """
    if t.is_contiguous():
        return tuple(range(t.dim()))
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    if torch.compiler.is_compiling():
        return None
    order = tuple(sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    return order if t.permute(order).is_contiguous() else None


def is_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill its storage span without gaps or overlaps, in an order :func:`pack` keeps."""
    return _memory_order(t) is not None


class Packed(NamedTuple):
    """What :func:`unpack` needs besides the bytes: shape, dimension order in memory, dtype."""

    shape: torch.Size
    order: Tuple[int, ...]
    dtype: torch.dtype


def pack(t: torch.Tensor) -> Tuple[torch.Tensor, Packed]:
    """``(bits, meta)``: ``bits`` uint8 ``[ceil(numel / 8)]`` holding ``t`` (dense, values 0 or 1) in memory
    order. Any nonzero value packs as 1: callers pack only marked tensors."""
    order = _memory_order(t)
    flat = t.detach().permute(order).reshape(-1)
    if _numpy_path(flat):
        # bfloat16 has no numpy type; its bits as int16 are nonzero exactly where the value is (spikes are +0.0).
        values = (flat if t.dtype in _NUMPY_FLOATS else flat.view(torch.int16)).numpy()
        return torch.from_numpy(np.packbits(values != 0, bitorder="little")), Packed(t.shape, order, t.dtype)
    flat = flat.ne(0)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    words = flat.view(torch.uint8).view(torch.int64)
    # Each byte of a word is 0 or 1; the product's top byte is sum(b_i << i): every cross term falls
    # outside bits 56-63 and the partial products below them cannot carry into them.
    bits = (words * _GATHER).bitwise_right_shift(56).to(torch.uint8)
    return bits, Packed(t.shape, order, t.dtype)


def unpack(bits: torch.Tensor, meta: Packed) -> torch.Tensor:
    """The tensor :func:`pack` packed: same shape, dtype, device and strides, values 0 or 1."""
    numel = 1
    for size in meta.shape:
        numel *= size
    if _numpy_path(bits):
        ones = torch.from_numpy(np.unpackbits(bits.numpy(), count=numel, bitorder="little"))
        flat = torch.empty(numel, dtype=meta.dtype)
        if meta.dtype in _NUMPY_FLOATS:
            np.copyto(flat.numpy(), ones.numpy(), casting="unsafe")
        else:
            flat.copy_(ones)
    else:
        words = (bits.to(torch.int64) * _SPREAD).bitwise_and_(_SELECT)
        flat = words.view(torch.uint8)[:numel].ne(0).to(meta.dtype)
    permuted = flat.view([meta.shape[d] for d in meta.order])
    inverse = [0] * len(meta.order)
    for position, d in enumerate(meta.order):
        inverse[d] = position
    return permuted.permute(inverse)
