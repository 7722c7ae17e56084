"""Input encoders and output losses for spiking classifiers.

Encoders turn a static input ``x [N, *]`` (pixel intensities in [0, 1]) into a time-major spike or
current sequence ``[T, N, *]`` in ``x``'s dtype:

- :func:`direct`: the input itself at every step (the first layer's neurons do the encoding);
- :func:`poisson`: rate coding, a spike at each step with probability ``x`` (clipped to [0, 1]);
- :func:`latency`: time-to-first-spike coding, one spike per element, earlier for larger ``x``.

Losses read the output spikes ``spike_seq [T, N, K]`` of a network with K classes against integer
``labels [N]`` and return a scalar:

- :func:`mse_rate_loss`: mean squared error between the firing rate and the one-hot label;
- :func:`ce_step_loss`: cross-entropy with each step's spikes as logits, averaged over the T steps
  (snnTorch's ``ce_rate_loss``);
- :func:`ce_rate_loss`: cross-entropy of the mean firing rate: the rates (in [0, 1]) as logits;
- :func:`ce_count_loss`: cross-entropy with the spike counts (in [0, T]) as logits;
- :func:`ce_mem_loss`: cross-entropy of every step's membrane potential, summed over the steps (seed 004,
  snnTorch's tutorial 5); it reads a :class:`fastspike.models.Readout`, the others its ``spikes``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .snntorch import functional as snntorch_functional

__all__ = ["direct", "poisson", "latency", "encode", "ENCODERS", "firing_rate", "mse_rate_loss",
           "ce_step_loss", "ce_rate_loss", "ce_count_loss", "ce_mem_loss", "LOSSES"]


def _check(x: torch.Tensor, T: int, owner: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: x must be a floating-point tensor [N, *], got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"{owner}: T must be a positive integer, got {T!r}")


def direct(x: torch.Tensor, T: int) -> torch.Tensor:
    """``x [N, *]`` repeated at every step: ``[T, N, *]`` (a broadcast view, no copy)."""
    _check(x, T, "direct")
    return x.unsqueeze(0).expand(T, *x.shape)


def poisson(x: torch.Tensor, T: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Rate coding: ``[T, N, *]`` spikes, each an independent Bernoulli(``x``) draw.

    So the expected firing rate of an element equals its intensity; ``x <= 0`` never fires and ``x >= 1``
    fires at every step. ``generator`` (on ``x``'s device) makes the draw reproducible.
    """
    _check(x, T, "poisson")
    u = torch.rand((T, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (u < x).to(x.dtype)


def latency(x: torch.Tensor, T: int) -> torch.Tensor:
    """Time-to-first-spike coding: ``[T, N, *]`` with one spike per element with ``x > 0``.

    The spike comes at step ``round((T - 1) * (1 - x))``, linear in the intensity: ``x >= 1`` fires at
    step 0, intensities near 0 at step ``T - 1``; ``x <= 0`` never fires (no input, no spike).
    """
    _check(x, T, "latency")
    t_fire = torch.round((T - 1) * (1 - x.clamp(0, 1)))
    steps = torch.arange(T, device=x.device, dtype=x.dtype).view(T, *([1] * x.dim()))
    return ((steps == t_fire) & (x > 0)).to(x.dtype)


ENCODERS = {"direct": direct, "poisson": poisson, "latency": latency}


def encode(x: torch.Tensor, T: int, encoder: str) -> torch.Tensor:
    """Apply the encoder named ``encoder`` (a key of :data:`ENCODERS`) to ``x [N, *]`` -> ``[T, N, *]``."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(ENCODERS)}")
    return ENCODERS[encoder](x, T)


def firing_rate(spike_seq: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``spike_seq [T, N, *]``: ``[N, *]``."""
    return spike_seq.mean(0)


def _check_output(spike_seq: torch.Tensor, labels: torch.Tensor, owner: str) -> None:
    if spike_seq.dim() != 3 or labels.shape != spike_seq.shape[1:2]:
        raise ValueError(f"{owner}: expected spike_seq [T, N, K] and labels [N], got "
                         f"{tuple(spike_seq.shape)} and {tuple(labels.shape)}")


def mse_rate_loss(spike_seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MSE between the firing rate ``[N, K]`` and the one-hot labels (SpikingJelly's tutorials' loss)."""
    _check_output(spike_seq, labels, "mse_rate_loss")
    rate = firing_rate(spike_seq.float())  # fp32 before the sum: bf16 would round the counts
    return F.mse_loss(rate, F.one_hot(labels, rate.shape[1]).to(rate.dtype))


def ce_step_loss(spike_seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every step's spikes ``[N, K]`` as logits, averaged over the T steps and the batch:
    snnTorch's ``ce_rate_loss``. Each step is scored on its own, so a step without a spike of the right
    class costs as much early as late; with logits in {0, 1} no step's loss falls below
    ``log(1 + (K - 1) / e)``."""
    _check_output(spike_seq, labels, "ce_step_loss")
    # snnTorch's own expression order (a sum over the steps, then / T), so the loss is its number.
    return snntorch_functional.ce_rate_loss()(spike_seq.float(), labels).reshape(())


def ce_rate_loss(spike_seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the mean firing rate: the rates ``[N, K]`` (in [0, 1]) are the logits. Not
    snnTorch's loss of the same name (that is :func:`ce_step_loss`). Bounded logits keep a gradient on
    every class even when the right one already fires most: the loss cannot fall below
    ``log(1 + (K - 1) / e)``."""
    _check_output(spike_seq, labels, "ce_rate_loss")
    return F.cross_entropy(firing_rate(spike_seq.float()), labels)


def ce_count_loss(spike_seq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the spike counts ``[N, K]`` (sum over T) as logits: sharper than
    :func:`ce_rate_loss` by a factor T in the logits, so its gradients fade once the margin is a few spikes."""
    _check_output(spike_seq, labels, "ce_count_loss")
    return F.cross_entropy(spike_seq.float().sum(0), labels)


def ce_mem_loss(readout, labels: torch.Tensor) -> torch.Tensor:
    """Seed 004's loss: the cross-entropy of the output layer's membrane potential ``readout.mem [T, N, K]``
    as logits at every step, summed over the T steps (snnTorch's tutorial 5)."""
    if not hasattr(readout, "mem"):
        raise ValueError("ce_mem_loss: needs the output's membrane potentials, a fastspike.models.Readout (the "
                         "output of mlp-snn); this model returns spikes only")
    _check_output(readout.mem, labels, "ce_mem_loss")
    return snntorch_functional.mem_ce_loss()(readout.mem.float(), labels)


LOSSES = {"mse-rate": mse_rate_loss, "ce-step": ce_step_loss, "ce-rate": ce_rate_loss, "ce-count": ce_count_loss,
          "ce-mem": ce_mem_loss}
