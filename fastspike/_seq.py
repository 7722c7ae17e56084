"""Running stateless and single-step modules over time-major ``[T, N, *]`` sequences; used by
:mod:`fastspike.layer` and re-exported by :mod:`fastspike.functional` (SpikingJelly's names).

A spike mark (:mod:`fastspike._bits`) on the input carries over to the ``[T * N, *]`` merge and back, so
the modules inside see that their input is spikes and keep it as bits for backward (:mod:`fastspike._packed`).
"""
from __future__ import annotations

from typing import Callable, Union

import torch

from . import _packed
from ._bits import mark_like

Modules = Union[Callable, list, tuple]


def _chain(modules: Modules, x: torch.Tensor) -> torch.Tensor:
    for m in modules if isinstance(modules, (list, tuple)) else (modules,):
        x = _packed.call(m, x)
    return x


def seq_to_ann_forward(x_seq: torch.Tensor, stateless_module: Modules) -> torch.Tensor:
    """Apply a stateless module (or a list/tuple of them, in order) to ``x_seq [T, N, *]`` as one batch of
    ``T * N``; returns ``[T, N, *out]``."""
    if x_seq.dim() < 2:
        raise ValueError(f"multi-step input must be time-major [T, N, *], got shape {tuple(x_seq.shape)}")
    out = _chain(stateless_module, mark_like(x_seq.flatten(0, 1), x_seq))
    return mark_like(out.unflatten(0, x_seq.shape[:2]), out)


def multi_step_forward(x_seq: torch.Tensor, single_step_module: Modules) -> torch.Tensor:
    """Call a single-step module (or a list/tuple of them, in order) on each ``x_seq[t]`` in turn and stack
    the outputs to ``[T, N, *out]``."""
    return torch.stack([_chain(single_step_module, x) for x in x_seq])
