"""Spiking neuron modules with SpikingJelly's ``activation_based.neuron`` API.

``step_mode='s'`` takes one step ``x [N, *]`` per call; ``step_mode='m'`` takes a time-major sequence
``x_seq [T, N, *]``. Either way the membrane potential ``self.v`` carries over between calls until
:meth:`BaseNode.reset` (or :func:`fastspike.functional.reset_net`): it is a float (``v_reset``, or 0 for
the soft reset) until the first call, then a tensor ``[N, *]`` (fp32 for fp16/bf16/fp32 inputs). It may be
assigned, e.g. ``node.v = node.v.detach()`` for truncated BPTT. With ``store_v_seq=True`` a multi-step call
also keeps every step's post-reset potential in ``self.v_seq [T, N, *]``.

Results do not depend on ``train()``/``eval()``: both run the same computation, bit-identical to
SpikingJelly 0.0.0.0.14's torch backend in training mode (fp32). Update equations: :mod:`fastspike.reference`.

NaN and Inf inputs are not checked (that would cost a pass over the data); they propagate exactly as in
SpikingJelly: a NaN input never fires and makes that neuron's ``v`` NaN until reset; ``+inf`` fires, then
the hard reset's ``(1 - s) * h`` is ``0 * inf = NaN`` (the soft reset keeps ``+inf``); ``-inf`` never fires
and the next charge step turns it into NaN.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from . import backends
from .reference import neuron as reference
from ._bits import mark
from ._spec import StepModeMixin, make_spec
from .functional import neuron_multistep
from .surrogate import Sigmoid, SurrogateFunctionBase

__all__ = ["BaseNode", "IFNode", "LIFNode", "ParametricLIFNode"]

_HYPERPARAMETERS = frozenset(
    {"v_threshold", "v_reset", "surrogate_function", "detach_reset", "tau", "decay_input"})
# SpikingJelly's per-step hooks: where any of them is overridden, the fused op would ignore it, so it must run.
_STEP_HOOKS = ("neuronal_charge", "neuronal_fire", "neuronal_reset", "single_step_forward", "v_float_to_tensor")


class BaseNode(StepModeMixin, nn.Module):
    """Shared state handling of IF/LIF/PLIF; subclasses set ``_kind`` and add their hyperparameters.

    Custom neurons subclass this (or IF/LIF/PLIF) as in SpikingJelly, overriding ``neuronal_charge(x)``
    (which updates ``self.v``), ``neuronal_fire()``, ``neuronal_reset(spike)``, ``single_step_forward`` or
    ``v_float_to_tensor``, and may keep extra state with :meth:`register_memory`. A neuron with any hook
    overridden (by a subclass, a mixin, or assignment to the class or the instance) runs SpikingJelly's
    per-step loop with its hooks and autograd, on backend 'torch'; otherwise the fused op runs.

    Args:
        v_threshold: firing threshold (default 1.0).
        v_reset: potential after a spike (hard reset, default 0.0); ``None`` selects the soft reset,
            which subtracts ``v_threshold`` instead.
        surrogate_function: a :mod:`fastspike.surrogate` object (default ``Sigmoid()``, alpha 4).
        detach_reset: exclude the reset from the backward pass (default False).
        step_mode: 's' (single step) or 'm' (multi-step).
        backend: 'auto', 'torch', 'triton', 'native' (aliases 'cupy', 'cuda'); see :mod:`fastspike.backends`.
        store_v_seq: keep ``v_seq`` after multi-step calls (default False).
    """

    _kind = ""
    _extra_hyperparameters: tuple = ()

    def __init__(self, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 surrogate_function: Optional[SurrogateFunctionBase] = None, detach_reset: bool = False,
                 step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False, **extra):
        super().__init__()
        self._spec_cache = None
        self._memory_defaults = {}
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.surrogate_function = Sigmoid() if surrogate_function is None else surrogate_function
        self.detach_reset = detach_reset
        for name in self._extra_hyperparameters:
            setattr(self, name, extra.pop(name))
        if extra:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(extra)}")
        self.step_mode = step_mode
        self.backend = backend
        if not isinstance(store_v_seq, bool):
            raise TypeError(f"{type(self).__name__}: store_v_seq must be True or False, got {store_v_seq!r}")
        self.store_v_seq = store_v_seq
        self.v_seq = None
        self.v = self._v_rest
        if not self._per_step():
            if not self._kind:
                raise TypeError(f"{type(self).__name__}: a subclass of BaseNode must implement "
                                f"neuronal_charge(x), or derive from IFNode, LIFNode or ParametricLIFNode")
            # Build the spec now so a bad hyperparameter fails at construction, not at the first forward.
            self.spec

    def __setattr__(self, name, value):
        if name in _HYPERPARAMETERS:
            self.__dict__["_spec_cache"] = None
        super().__setattr__(name, value)

    @property
    def _v_rest(self) -> float:
        return 0.0 if self.v_reset is None else float(self.v_reset)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str):
        backends.canonical(value)
        if value not in self.supported_backends:
            raise ValueError(f"{type(self).__name__} overrides SpikingJelly's per-step hooks and runs on "
                             f"backend 'torch' only, got {value!r}")
        self._backend = value

    @property
    def spec(self):
        """The validated :class:`~fastspike._spec.NeuronSpec` of the current hyperparameters."""
        if self._spec_cache is None:
            self._spec_cache = make_spec(
                self._kind, v_threshold=self.v_threshold, v_reset=self.v_reset,
                surrogate_function=self.surrogate_function, detach_reset=self.detach_reset,
                owner=type(self).__name__, **{n: getattr(self, n) for n in self._extra_hyperparameters})
        return self._spec_cache

    def _plif_weight(self) -> Optional[torch.Tensor]:
        return None

    def _per_step(self) -> bool:
        """Whether a SpikingJelly hook is overridden, so the per-step loop must run instead of the fused op.

        Decided at each call by identity with BaseNode's own functions, so overrides from mixins, wrapped
        methods, and hooks assigned to the class or to this instance after construction all count.
        """
        cls, own = type(self), self.__dict__
        return any(hook in own or getattr(cls, hook) is not _BASE_HOOKS[hook] for hook in _STEP_HOOKS)

    @property
    def supported_backends(self) -> tuple:
        """Backend names this neuron accepts (neurons with overridden hooks run on 'torch' only)."""
        return ("auto", "torch") + tuple(backends.ALIASES) if self._per_step() else backends.NAMES

    def register_memory(self, name: str, value) -> None:
        """SpikingJelly's API for extra state: ``self.<name>`` starts as ``value``, and :meth:`reset`
        restores a copy of it; tensors in it follow ``.to()`` and :meth:`detach` like ``v``."""
        if hasattr(self, name):
            raise AttributeError(f"{type(self).__name__}: {name!r} is already an attribute")
        self._memory_defaults[name] = copy.deepcopy(value)
        setattr(self, name, value)

    def named_memories(self):
        """``(name, value)`` of the state: ``v``, ``v_seq`` when stored, and registered memories."""
        yield "v", self.v
        if self.store_v_seq:
            yield "v_seq", self.v_seq
        for name in self._memory_defaults:
            yield name, getattr(self, name)

    def memories(self):
        for _, value in self.named_memories():
            yield value

    def v_float_to_tensor(self, x: torch.Tensor) -> None:
        """Turn a float state into a tensor shaped like ``x`` (SpikingJelly's hook, used by the per-step loop)."""
        if not isinstance(self.v, torch.Tensor):
            self.v = torch.full_like(x.data, self.v)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        """``self.v = h``: one charge step (equations in :mod:`fastspike.reference`)."""
        if not self._kind:
            raise NotImplementedError(f"{type(self).__name__} must implement neuronal_charge(x)")
        w = self._plif_weight()
        self.v = reference.charge(self.spec, self.v, x, None if w is None else w.sigmoid())

    def neuronal_fire(self) -> torch.Tensor:
        """Spikes ``surrogate_function(v - v_threshold)``."""
        return self.surrogate_function(self.v - self.v_threshold)

    def neuronal_reset(self, spike: torch.Tensor) -> None:
        """Hard or soft reset of ``self.v`` after ``spike`` (detached first when ``detach_reset``)."""
        spike = spike.detach() if self.detach_reset else spike
        self.v = reference.reset(self.v, spike, self.v_threshold, self.v_reset)

    def _run(self, x_seq: torch.Tensor, store_v_seq: bool, x_name: str):
        return neuron_multistep(self.spec, x_seq, self.v, self._plif_weight(), self._backend, store_v_seq,
                                owner=type(self).__name__, x_name=x_name, v_name="stored state v")

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """One step: ``x [N, *]`` -> spikes ``[N, *]``; updates ``self.v``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1:
            raise ValueError(f"{type(self).__name__}: single-step input x must be [N, *], got a scalar")
        if self._per_step():
            backends.resolve(self._backend, x.device, allowed=("torch",))
            self.v_float_to_tensor(x)
            self.neuronal_charge(x)
            spike = self.neuronal_fire()
            self.neuronal_reset(spike)
            return spike
        spike_seq, self.v = self._run(x.unsqueeze(0), False, "x")
        return mark(spike_seq[0])

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """T steps: ``x_seq [T, N, *]`` -> spikes ``[T, N, *]``; updates ``self.v`` (and ``self.v_seq``)."""
        if self._per_step():
            spikes, v_seq = [], []
            for x in x_seq:
                spikes.append(self.single_step_forward(x))
                v_seq.append(self.v)
            if self.store_v_seq:
                self.v_seq = torch.stack(v_seq)
            return torch.stack(spikes)
        if self.store_v_seq:
            spike_seq, self.v, self.v_seq = self._run(x_seq, True, "x_seq")
        else:
            spike_seq, self.v = self._run(x_seq, False, "x_seq")
        return spike_seq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._step_mode == "m":
            return self.multi_step_forward(x)
        return self.single_step_forward(x)

    def _state_names(self):
        return ("v", "v_seq", *self._memory_defaults)

    def reset(self) -> None:
        """Forget the state: ``v`` back to its resting value (a float), ``v_seq`` to None, registered
        memories to their initial values."""
        self.v = self._v_rest
        self.v_seq = None
        for name, value in self._memory_defaults.items():
            setattr(self, name, copy.deepcopy(value))

    def detach(self) -> None:
        """Cut the state out of the autograd graph (truncated BPTT)."""
        for name in self._state_names():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.detach())

    def _apply(self, fn, *args, **kwargs):
        # The state is not a buffer (it must stay a plain float until the first call), so move it by hand.
        for name in self._state_names():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, fn(value))
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, backend={self.backend}")


_BASE_HOOKS = {hook: BaseNode.__dict__[hook] for hook in _STEP_HOOKS}


class IFNode(BaseNode):
    """Integrate-and-fire: ``h = v + x``, then fire and reset (see :class:`BaseNode` for the arguments)."""

    _kind = "if"


class LIFNode(BaseNode):
    """Leaky integrate-and-fire with time constant ``tau > 0`` (default 2.0).

    ``decay_input=True`` (default): ``h = v + (x - (v - v_reset)) / tau``; otherwise
    ``h = v - (v - v_reset) / tau + x`` (``v_reset`` read as 0 for the soft reset). Other arguments:
    :class:`BaseNode`.
    """

    _kind = "lif"
    _extra_hyperparameters = ("tau", "decay_input")

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, surrogate_function: Optional[SurrogateFunctionBase] = None,
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto",
                 store_v_seq: bool = False):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq,
                         tau=tau, decay_input=decay_input)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}"


class ParametricLIFNode(BaseNode):
    """LIF with a learnable time constant: ``1/tau = sigmoid(w)``, ``w`` initialised to
    ``-log(init_tau - 1)`` (``init_tau > 1``, default 2.0). ``decay_input`` and the charge as in
    :class:`LIFNode` with ``1/tau`` replaced by ``sigmoid(w)``. Other arguments: :class:`BaseNode`.
    """

    _kind = "plif"
    _extra_hyperparameters = ("decay_input",)

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, surrogate_function: Optional[SurrogateFunctionBase] = None,
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto",
                 store_v_seq: bool = False):
        if isinstance(init_tau, bool) or not isinstance(init_tau, (int, float)):
            raise TypeError(f"ParametricLIFNode: init_tau must be a number, got {type(init_tau).__name__}")
        if not (math.isfinite(init_tau) and init_tau > 1):
            raise ValueError(f"ParametricLIFNode: init_tau must be finite and > 1, got {init_tau}")
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq,
                         decay_input=decay_input)
        self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))

    def _plif_weight(self) -> torch.Tensor:
        return self.w

    @property
    def tau(self) -> float:
        """The current time constant ``1 / sigmoid(w)``."""
        with torch.no_grad():
            return float(1.0 / self.w.sigmoid())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}"
