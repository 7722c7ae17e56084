"""snnTorch's ``utils.reset``, for models of fastspike.snntorch neurons."""
from __future__ import annotations

from torch import nn

from ._neurons import SpikingNeuron

__all__ = ["reset"]


def reset(net: nn.Module) -> None:
    """Zero the states of every Leaky/Synaptic in ``net`` (out of the autograd graph), as snnTorch's
    ``utils.reset`` does; snnTorch resets every instance of the classes found in ``net``, anywhere, this
    resets those in ``net``."""
    for m in net.modules():
        if isinstance(m, SpikingNeuron):
            m.reset_mem()
