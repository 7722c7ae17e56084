"""Running stateless and single-step modules over time-major ``[T, N, *]`` sequences; used by
:mod:`fastspike.layer` and re-exported by :mod:`fastspike.functional` (SpikingJelly's names)."""
from __future__ import annotations

from typing import Callable, Union

import torch

Modules = Union[Callable, list, tuple]


def _chain(modules: Modules, x: torch.Tensor) -> torch.Tensor:
    for m in modules if isinstance(modules, (list, tuple)) else (modules,):
        x = m(x)
    return x


def seq_to_ann_forward(x_seq: torch.Tensor, stateless_module: Modules) -> torch.Tensor:
    """Apply a stateless module (or a list/tuple of them, in order) to ``x_seq [T, N, *]`` as one batch of
    ``T * N``; returns ``[T, N, *out]``."""
    if x_seq.dim() < 2:
        raise ValueError(f"multi-step input must be time-major [T, N, *], got shape {tuple(x_seq.shape)}")
    return _chain(stateless_module, x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])


def multi_step_forward(x_seq: torch.Tensor, single_step_module: Modules) -> torch.Tensor:
    """Call a single-step module (or a list/tuple of them, in order) on each ``x_seq[t]`` in turn and stack
    the outputs to ``[T, N, *out]``."""
    return torch.stack([_chain(single_step_module, x) for x in x_seq])
