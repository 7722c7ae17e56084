"""snnTorch's ``functional`` losses on output spikes ``[T, N, classes]`` (and membrane potentials).

``ce_rate_loss()`` returns a callable ``loss_fn(spk_out, targets)``, as snnTorch's does: the cross-entropy
of each step's spikes as logits, accumulated over the T steps and divided by T (snnTorch 1.0.0's
expression order, so the loss is the same number). ``ce_count_loss()``: the cross-entropy of the spike
counts. ``mem_ce_loss()``: seed 004's loss (snnTorch's tutorial 5), the cross-entropy of every step's
membrane potential, summed over the steps. Population codes and class weights are not supported.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ce_rate_loss", "ce_count_loss", "mem_ce_loss"]


def _check(out: torch.Tensor, targets: torch.Tensor, owner: str) -> None:
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise ValueError(f"{owner}: expected time-major outputs [T, N, classes], got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if targets.shape != out.shape[1:2]:
        raise ValueError(f"{owner}: targets must have shape [N] = [{out.shape[1]}], got {tuple(targets.shape)}")


class ce_rate_loss:
    """Cross-entropy of each step's spikes, summed over time and divided by T (snnTorch's)."""

    def __init__(self, population_code: bool = False, num_classes: bool = False, reduction: str = "mean",
                 weight=None):
        if population_code or weight is not None:
            raise ValueError("ce_rate_loss: population_code and weight are not supported by fastspike.snntorch")
        self.reduction = reduction
        self.__name__ = "ce_rate_loss"

    def __call__(self, spk_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(spk_out, targets, "ce_rate_loss")
        log_p_y = nn.LogSoftmax(dim=-1)(spk_out)
        loss_fn = nn.NLLLoss(reduction=self.reduction)
        loss = torch.zeros((spk_out.size(1)) if self.reduction == "none" else (1), dtype=torch.float,
                           device=spk_out.device)
        for step in range(spk_out.size(0)):
            loss += loss_fn(log_p_y[step], targets)
        return loss / spk_out.size(0)


class ce_count_loss:
    """Cross-entropy of the spike counts over time (snnTorch's)."""

    def __init__(self, population_code: bool = False, num_classes: bool = False, reduction: str = "mean",
                 weight=None):
        if population_code or weight is not None:
            raise ValueError("ce_count_loss: population_code and weight are not supported by fastspike.snntorch")
        self.reduction = reduction
        self.__name__ = "ce_count_loss"

    def __call__(self, spk_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(spk_out, targets, "ce_count_loss")
        log_p_y = nn.LogSoftmax(dim=-1)(spk_out.sum(0))
        return nn.NLLLoss(reduction=self.reduction)(log_p_y, targets)


class mem_ce_loss:
    """Seed 004's loss: ``sum over t of CrossEntropyLoss(mem[t], targets)`` on the output layer's membrane
    potential ``mem [T, N, classes]`` (snnTorch's tutorial 5)."""

    def __init__(self, reduction: str = "mean"):
        self.reduction = reduction
        self.__name__ = "mem_ce_loss"

    def __call__(self, mem_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check(mem_out, targets, "mem_ce_loss")
        loss_fn = nn.CrossEntropyLoss(reduction=self.reduction)
        loss = torch.zeros((), dtype=torch.float, device=mem_out.device)
        for step in range(mem_out.size(0)):
            loss += loss_fn(mem_out[step], targets)
        return loss
