"""Neuron hyperparameters and argument checks shared by every backend.

A :class:`NeuronSpec` is the complete, validated description of one neuron family instance; backends
receive it together with the tensors and never re-check it. All checks raise ``TypeError`` (wrong type)
or ``ValueError`` (wrong value) naming the offending argument.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from .surrogate import SurrogateFunctionBase

KINDS = ("if", "lif", "plif")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class NeuronSpec:
    """What a multi-step neuron op computes, apart from its tensors.

    kind: 'if', 'lif' or 'plif'. v_reset None selects the soft reset (subtract ``v_threshold``).
    tau is used by 'lif' only; decay_input by 'lif' and 'plif' (whose 1/tau is ``sigmoid(w)``, a tensor).
    """

    kind: str
    v_threshold: float
    v_reset: Optional[float]
    surrogate: SurrogateFunctionBase
    detach_reset: bool
    tau: Optional[float] = None
    decay_input: bool = True

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def reset_is_zero(self) -> bool:
        """SpikingJelly uses a shorter charge expression when v_reset is None or 0; so must we, bit for bit."""
        return self.v_reset is None or self.v_reset == 0.0


def _finite_float(name: str, value, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    return value


def _flag(name: str, value, owner: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def make_spec(kind: str, *, v_threshold=1.0, v_reset=0.0, surrogate_function=None, detach_reset=False,
              tau=None, decay_input=True, owner: str = "fastspike") -> NeuronSpec:
    """Validate hyperparameters and build a :class:`NeuronSpec` (``owner`` names the caller in errors)."""
    if kind not in KINDS:
        raise ValueError(f"{owner}: unknown neuron kind {kind!r}; expected one of {KINDS}")
    if not isinstance(surrogate_function, SurrogateFunctionBase):
        raise TypeError(
            f"{owner}: surrogate_function must be a fastspike.surrogate object (e.g. surrogate.ATan()), got "
            f"{type(surrogate_function).__name__}; fastspike.from_spikingjelly converts SpikingJelly's")
    if type(surrogate_function).forward is not SurrogateFunctionBase.forward:
        raise TypeError(f"{owner}: {type(surrogate_function).__name__} overrides forward(); the neuron ops "
                        f"fire where h - v_threshold >= 0 and take only derivative() from the surrogate")
    v_threshold = _finite_float("v_threshold", v_threshold, owner)
    if v_reset is not None:
        v_reset = _finite_float("v_reset", v_reset, owner)
    if kind == "lif":
        tau = _finite_float("tau", tau, owner)
        if tau <= 0:
            raise ValueError(f"{owner}: tau must be > 0, got {tau}")
    else:
        tau = None
    return NeuronSpec(kind=kind, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate_function,
                      detach_reset=_flag("detach_reset", detach_reset, owner), tau=tau,
                      decay_input=_flag("decay_input", decay_input, owner))


LEAKY_RESETS = ("subtract", "zero", "none")


@dataclass(frozen=True)
class LeakySpec:
    """What an snnTorch neuron op computes, apart from its tensors: ``Leaky`` (``synaptic`` False) or
    ``Synaptic``; ``reset`` is snnTorch's reset_mechanism, ``reset_delay`` its option of that name, and
    ``surrogate`` a :class:`fastspike.snntorch.surrogate.Surrogate`."""

    synaptic: bool
    reset: str
    reset_delay: bool
    surrogate: object


class StepModeMixin:
    """A ``step_mode`` attribute ('s': one step ``[N, *]`` per call, 'm': ``[T, N, *]``), checked on assignment."""

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str):
        if value not in ("s", "m"):
            raise ValueError(f"{type(self).__name__}: step_mode must be 's' or 'm', got {value!r}")
        self._step_mode = value


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Membrane state and arithmetic dtype: fp32 for fp16/bf16/fp32 inputs, fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def check_inputs(x_seq, v_init: Union[float, torch.Tensor], owner: str, x_name: str = "x_seq",
                 v_name: str = "v_init") -> None:
    """Check ``x_seq`` ``[T, N, *]`` and ``v_init`` (a number, or a tensor ``[N, *]`` on x_seq's device).

    ``x_name``/``v_name`` are the names the caller's user knows these by, used in the messages.
    """
    if not isinstance(x_seq, torch.Tensor):
        raise TypeError(f"{owner}: {x_name} must be a torch.Tensor, got {type(x_seq).__name__}")
    if x_seq.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{owner}: {x_name} must be float16, bfloat16, float32 or float64, got {x_seq.dtype}")
    if x_seq.dim() < 2:
        raise ValueError(f"{owner}: {x_name} must be time-major [T, N, *] (at least 2 dims), "
                         f"got shape {tuple(x_seq.shape)}")
    if x_seq.shape[0] == 0:
        raise ValueError(f"{owner}: {x_name} has T = 0 time steps")
    if isinstance(v_init, torch.Tensor):
        if not v_init.is_floating_point():
            raise TypeError(f"{owner}: {v_name} must be a floating-point tensor, got {v_init.dtype}")
        if v_init.device != x_seq.device:
            raise ValueError(f"{owner}: {v_name} is on {v_init.device} but {x_name} is on {x_seq.device}")
        if v_init.shape != x_seq.shape[1:]:
            raise ValueError(
                f"{owner}: {v_name} has shape {tuple(v_init.shape)} but one time step of {x_name} has shape "
                f"{tuple(x_seq.shape[1:])}; a neuron's stored state must be cleared with "
                f"functional.reset_net(net) (or node.reset()) before an input of another shape, e.g. a "
                f"smaller last batch")
    elif isinstance(v_init, bool) or not isinstance(v_init, (int, float)):
        raise TypeError(f"{owner}: {v_name} must be a number or a tensor, got {type(v_init).__name__}")


def check_plif_weight(w, x_seq: torch.Tensor, owner: str) -> None:
    """``w`` must be a one-element floating tensor on x_seq's device (PLIF's 1/tau = sigmoid(w))."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{owner}: w must be a torch.Tensor (a learnable scalar), got {type(w).__name__}")
    if not w.is_floating_point() or w.numel() != 1:
        raise ValueError(f"{owner}: w must be a one-element floating tensor, got shape {tuple(w.shape)} "
                         f"dtype {w.dtype}")
    if w.device != x_seq.device:
        raise ValueError(f"{owner}: w is on {w.device} but x_seq is on {x_seq.device}")
