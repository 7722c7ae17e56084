"""Step-mode-aware layers (SpikingJelly's ``activation_based.layer``, same names and arguments).

Each layer takes its ``torch.nn`` counterpart's arguments plus ``step_mode`` ('s' or 'm'). In single-step
mode it is exactly the ``torch.nn`` layer. In multi-step mode it takes a time-major ``[T, N, *]`` input,
runs the layer once on the ``T * N`` merged batch and splits the result back to ``[T, N, *out]``; so
:class:`BatchNorm2d` normalises over all time steps together, as SpikingJelly's does. :class:`Dropout`
draws one mask per sequence and applies it at every time step.

When the input of :class:`Conv2d`, :class:`Linear`, :class:`MaxPool2d`, :class:`AvgPool2d` or
:class:`SeqToANNContainer` is a spike tensor made by a fastspike neuron (it carries the mark of
:mod:`fastspike._bits`), what autograd keeps of it for backward is 1 bit per value, or nothing
(:mod:`fastspike._packed`); outputs and gradients are bit-identical to the unpacked path. Max-pooling and
flattening spikes give spikes, marked as such.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _packed
from ._spec import StepModeMixin
from ._seq import seq_to_ann_forward

__all__ = ["Conv2d", "BatchNorm2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten",
           "Dropout", "SeqToANNContainer"]


class _SeqToANN(StepModeMixin):
    """Mixin for stateless ``torch.nn`` layers: multi-step mode merges T into the batch.

    ``_m_ndim`` is the rank a multi-step input must have (``_m_min_ndim`` the least rank where several are
    valid); checking it matters because several torch layers also accept unbatched inputs and would
    silently misread a missing T axis. Subclasses spell out SpikingJelly's signatures, so ``step_mode`` can
    also be passed by position.
    """

    _m_ndim: Optional[int] = None
    _m_min_ndim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = super().forward
        if self._step_mode == "s":
            return _packed.forward(self, x, base)
        if (self._m_ndim is not None and x.dim() != self._m_ndim) or x.dim() < self._m_min_ndim:
            want = self._m_ndim if self._m_ndim is not None else f"at least {self._m_min_ndim}"
            raise ValueError(f"{type(self).__name__}: multi-step input must have {want} dims [T, N, ...], "
                             f"got shape {tuple(x.shape)}")
        return seq_to_ann_forward(x, lambda merged: _packed.forward(self, merged, base))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, step_mode={self.step_mode}"


class Conv2d(_SeqToANN, nn.Conv2d):
    """``nn.Conv2d``; multi-step input ``[T, N, C, H, W]``."""

    _m_ndim = 5

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", step_mode="s"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)
        self.step_mode = step_mode


class BatchNorm2d(_SeqToANN, nn.BatchNorm2d):
    """``nn.BatchNorm2d``; multi-step input ``[T, N, C, H, W]``, statistics over T, N, H, W."""

    _m_ndim = 5

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 step_mode="s"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.step_mode = step_mode


class Linear(_SeqToANN, nn.Linear):
    """``nn.Linear``; multi-step input ``[T, N, ..., in_features]`` (3 or more dims)."""

    _m_min_ndim = 3

    def __init__(self, in_features, out_features, bias=True, step_mode="s"):
        super().__init__(in_features, out_features, bias)
        self.step_mode = step_mode


class MaxPool2d(_SeqToANN, nn.MaxPool2d):
    """``nn.MaxPool2d``; multi-step input ``[T, N, C, H, W]``."""

    _m_ndim = 5

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False,
                 step_mode="s"):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.step_mode = step_mode


class AvgPool2d(_SeqToANN, nn.AvgPool2d):
    """``nn.AvgPool2d``; multi-step input ``[T, N, C, H, W]``."""

    _m_ndim = 5

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, step_mode="s"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self.step_mode = step_mode


class AdaptiveAvgPool2d(_SeqToANN, nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d``; multi-step input ``[T, N, C, H, W]``."""

    _m_ndim = 5

    def __init__(self, output_size, step_mode="s"):
        super().__init__(output_size)
        self.step_mode = step_mode


class Flatten(_SeqToANN, nn.Flatten):
    """``nn.Flatten(start_dim=1, end_dim=-1)`` of each step: ``[T, N, *]`` -> ``[T, N, prod(*)]``."""

    def __init__(self, start_dim=1, end_dim=-1, step_mode="s"):
        super().__init__(start_dim, end_dim)
        self.step_mode = step_mode


class SeqToANNContainer(nn.Sequential):
    """Runs plain (single-step) modules on ``[T, N, *]`` by merging T into the batch; always multi-step.

    A spike input reaches its first modules marked: torch's or fastspike's Conv2d, Linear, MaxPool2d,
    AvgPool2d and Flatten (without hooks) keep it as bits for backward."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return seq_to_ann_forward(x_seq, list(self))


class Dropout(StepModeMixin, nn.Module):
    """Dropout whose mask is drawn once and reused at every time step until :meth:`reset`.

    Kept elements are scaled by ``1 / (1 - p)`` as in ``nn.Dropout``; identity in eval mode or when p = 0.
    Multi-step input ``[T, N, *]`` uses a mask of shape ``[N, *]``; in single-step mode the mask drawn at
    the first step is reused until reset.
    """

    def __init__(self, p: float = 0.5, step_mode: str = "s"):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        self.p = float(p)
        self.step_mode = step_mode
        self.mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        step = x[0] if self._step_mode == "m" else x
        if self.mask is None:
            self.mask = F.dropout(torch.ones_like(step), self.p, training=True)
        elif self.mask.shape != step.shape:
            raise ValueError(f"Dropout: the mask has shape {tuple(self.mask.shape)} but one step of the input "
                             f"has {tuple(step.shape)}; call functional.reset_net(net) between batches")
        return x * self.mask

    def reset(self) -> None:
        self.mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"
