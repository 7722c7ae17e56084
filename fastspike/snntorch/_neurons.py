"""``Leaky`` and ``Synaptic`` with snnTorch 1.0.0's constructors, defaults, call conventions and state_dict.

Per step, exactly as in snnTorch: ``spk, mem = lif(x, mem)`` and ``spk, syn, mem = syn_lif(x, syn, mem)``
(with ``init_hidden=True``: ``spk = lif(x)``, the state kept in the module; with ``output=True`` as well,
the states are returned too). Without a state argument the module's own (``self.mem``, ``self.syn``)
carries over, and a state whose shape differs from the input's is replaced by zeros, as snnTorch does.

Fused over time: ``spk_seq, mem_seq = lif.sequence(x_seq, mem=None)`` and
``spk_seq, syn_seq, mem_seq = syn_lif.sequence(x_seq, syn=None, mem=None)`` on time-major ``[T, N, *]``,
equal to the per-step loop; ``states='last'`` returns the last states ``[N, *]`` instead of every step's and
writes no per-step state. The module's state is the last step's afterwards, either way.

Parameters and buffers have snnTorch's names (``beta``, ``alpha``, ``threshold``, ``graded_spikes_factor``,
``reset_mechanism_val``; ``learn_*`` makes them ``nn.Parameter``s), so snnTorch checkpoints load. Update
equations: :mod:`fastspike.reference.leaky`. ``backend=`` as for :mod:`fastspike.neuron`.

Differences from snnTorch: fp16/bf16 inputs are computed with fp32 state (snnTorch keeps some states in
16 bits); ``inhibition`` and ``state_quant`` are not supported (an error names them); the class-wide
``reset_hidden``/``detach_hidden`` of snnTorch are :func:`fastspike.snntorch.utils.reset` on a model.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import backends
from . import multistep
from .multistep import run

__all__ = ["SpikingNeuron", "Leaky", "Synaptic"]


class SpikingNeuron(nn.Module):
    """What Leaky and Synaptic share: threshold, surrogate, reset mechanism, graded spikes, backend."""

    reset_dict = {"subtract": 0, "zero": 1, "none": 2}
    _synaptic = False

    def __init__(self, threshold=1.0, spike_grad=None, surrogate_disable=False, init_hidden=False, inhibition=False,
                 learn_threshold=False, reset_mechanism="subtract", state_quant=False, output=False,
                 graded_spikes_factor=1.0, learn_graded_spikes_factor=False, reset_delay=True, backend="auto"):
        super().__init__()
        owner = type(self).__name__
        if inhibition:
            raise ValueError(f"{owner}: inhibition=True is not supported by fastspike.snntorch (it couples the "
                             f"neurons of a layer, which a fused per-neuron kernel cannot); use snntorch's {owner}")
        if state_quant:
            raise ValueError(f"{owner}: state_quant is not supported by fastspike.snntorch; use snntorch's {owner}")
        for name, value in (("init_hidden", init_hidden), ("output", output), ("learn_threshold", learn_threshold),
                            ("learn_graded_spikes_factor", learn_graded_spikes_factor)):
            if not isinstance(value, bool):
                raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
        self._spec = multistep.make_spec(self._synaptic, reset_mechanism, reset_delay, spike_grad, surrogate_disable,
                                         owner)
        self.surrogate_disable = surrogate_disable
        self.init_hidden, self.inhibition, self.output, self.state_quant = init_hidden, False, output, False
        self._tensor("threshold", threshold, learn_threshold)
        self._tensor("graded_spikes_factor", graded_spikes_factor, learn_graded_spikes_factor)
        self.register_buffer("reset_mechanism_val", torch.as_tensor(self.reset_dict[reset_mechanism]))
        self._reset_mechanism = reset_mechanism
        self.backend = backend
        # A loaded snnTorch checkpoint carries its reset mechanism in reset_mechanism_val.
        self.register_load_state_dict_post_hook(lambda module, _: module._sync_reset_mechanism())

    def _tensor(self, name: str, value, learn: bool) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
            raise TypeError(f"{type(self).__name__}: {name} must be a number or a tensor, got {type(value).__name__}")
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if learn:
            setattr(self, name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    @property
    def spike_grad(self):
        """The surrogate (a :mod:`fastspike.snntorch.surrogate` object; snnTorch's own are converted)."""
        return self._spec.surrogate

    @spike_grad.setter
    def spike_grad(self, value) -> None:
        self._spec = multistep.make_spec(self._synaptic, self.reset_mechanism, self.reset_delay, value, False,
                                         type(self).__name__)

    @property
    def reset_mechanism(self) -> str:
        """'subtract', 'zero' or 'none'; setting it updates ``reset_mechanism_val`` as in snnTorch."""
        return self._reset_mechanism

    @reset_mechanism.setter
    def reset_mechanism(self, value: str) -> None:
        self._spec = multistep.make_spec(self._synaptic, value, self.reset_delay, self.spike_grad, False,
                                         type(self).__name__)
        self.reset_mechanism_val = torch.as_tensor(self.reset_dict[value], device=self.reset_mechanism_val.device)
        self._reset_mechanism = value

    def _sync_reset_mechanism(self) -> None:
        name = list(self.reset_dict)[int(self.reset_mechanism_val)]
        if name != self._reset_mechanism:
            self.reset_mechanism = name

    @property
    def reset_delay(self) -> bool:
        return self._spec.reset_delay

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        backends.canonical(value)
        self._backend = value

    @property
    def supported_backends(self) -> tuple:
        return backends.NAMES

    @staticmethod
    def detach(*args) -> None:
        """Detach the given state tensors in place (snnTorch's, for truncated BPTT)."""
        for state in args:
            state.detach_()

    def reset(self) -> None:
        """Forget the state, as after construction (:func:`fastspike.functional.reset_net` calls this)."""
        for name in ("syn", "mem"):
            if hasattr(self, name):
                setattr(self, name, torch.zeros(0, device=getattr(self, name).device))

    def _check_state_arg(self, given: bool) -> None:
        if self.init_hidden and given:
            raise TypeError(f"{type(self).__name__}: states should not be passed as arguments while "
                            f"init_hidden=True")

    @staticmethod
    def _usable(state: torch.Tensor, step_shape) -> Optional[torch.Tensor]:
        # snnTorch replaces a state of another shape by zeros; None is zeros to the kernels.
        return state if state.shape == step_shape else None

    def extra_repr(self) -> str:
        return (f"reset_mechanism={self.reset_mechanism!r}, reset_delay={self.reset_delay}, "
                f"spike_grad={self.spike_grad}, backend={self.backend!r}")


class Leaky(SpikingNeuron):
    """snnTorch's first-order leaky integrate-and-fire neuron: ``mem = beta * mem + x``, reset by
    subtraction (default), to zero or none, fired where ``mem - threshold > 0`` (strictly). ``beta`` is a
    number or a tensor (one value, or one per neuron of a step), clamped to [0, 1]. Arguments and defaults
    are snnTorch 1.0.0's, plus ``backend``."""

    def __init__(self, beta, threshold=1.0, spike_grad=None, surrogate_disable=False, init_hidden=False,
                 inhibition=False, learn_beta=False, learn_threshold=False, reset_mechanism="subtract",
                 state_quant=False, output=False, graded_spikes_factor=1.0, learn_graded_spikes_factor=False,
                 reset_delay=True, backend="auto"):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition, learn_threshold,
                         reset_mechanism, state_quant, output, graded_spikes_factor, learn_graded_spikes_factor,
                         reset_delay, backend)
        if not isinstance(learn_beta, bool):
            raise TypeError(f"Leaky: learn_beta must be True or False, got {learn_beta!r}")
        self._tensor("beta", beta, learn_beta)
        self.register_buffer("mem", torch.zeros(0), persistent=False)

    def _run(self, x_seq: torch.Tensor, store_seq: bool):
        return run(self._spec, x_seq, None, self._usable(self.mem, x_seq.shape[1:]), self.beta, None, self.threshold,
                   self.graded_spikes_factor, self._backend, store_seq, "Leaky")

    def forward(self, input_: torch.Tensor, mem: Optional[torch.Tensor] = None):
        """One step: ``input_ [N, *]`` -> ``(spk, mem)`` (``spk`` alone with ``init_hidden``)."""
        self._check_state_arg(mem is not None)
        if mem is not None:
            self.mem = mem
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"Leaky: input_ must be a torch.Tensor, got {type(input_).__name__}")
        spk_seq, _, self.mem, _, _ = self._run(input_.unsqueeze(0), False)
        spk = spk_seq[0]
        if self.output or not self.init_hidden:
            return spk, self.mem
        return spk

    def sequence(self, x_seq: torch.Tensor, mem: Optional[torch.Tensor] = None, *, states: str = "all"):
        """T steps in one fused op: ``x_seq [T, N, *]`` -> ``(spk_seq, mem_seq)`` (``states='last'``: the last
        ``mem [N, *]`` instead; ``spk_seq`` alone with ``init_hidden`` and not ``output``)."""
        self._check_state_arg(mem is not None)
        store = multistep._check_states(states, "Leaky.sequence")
        if mem is not None:
            self.mem = mem
        spk_seq, _, self.mem, _, mem_seq = self._run(x_seq, store)
        if self.init_hidden and not self.output:
            return spk_seq
        return spk_seq, (mem_seq if store else self.mem)

    def reset_mem(self) -> torch.Tensor:
        """Zero the state (keeping its shape), as snnTorch's."""
        self.mem = torch.zeros_like(self.mem)
        return self.mem

    def init_leaky(self) -> torch.Tensor:
        """Deprecated in snnTorch: :meth:`reset_mem`."""
        return self.reset_mem()


class Synaptic(SpikingNeuron):
    """snnTorch's second-order neuron: a synaptic current ``syn = alpha * syn + x`` feeds
    ``mem = beta * mem + syn``; reset, firing and options as :class:`Leaky` (no ``graded_spikes_factor``
    argument, as in snnTorch; its buffer is 1)."""

    _synaptic = True

    def __init__(self, alpha, beta, threshold=1.0, spike_grad=None, surrogate_disable=False, init_hidden=False,
                 inhibition=False, learn_alpha=False, learn_beta=False, learn_threshold=False,
                 reset_mechanism="subtract", state_quant=False, output=False, reset_delay=True, backend="auto"):
        super().__init__(threshold, spike_grad, surrogate_disable, init_hidden, inhibition, learn_threshold,
                         reset_mechanism, state_quant, output, 1.0, False, reset_delay, backend)
        for name, value in (("learn_alpha", learn_alpha), ("learn_beta", learn_beta)):
            if not isinstance(value, bool):
                raise TypeError(f"Synaptic: {name} must be True or False, got {value!r}")
        self._tensor("beta", beta, learn_beta)
        self._tensor("alpha", alpha, learn_alpha)
        self.register_buffer("syn", torch.zeros(0), persistent=False)
        self.register_buffer("mem", torch.zeros(0), persistent=False)

    def _run(self, x_seq: torch.Tensor, store_seq: bool):
        step = x_seq.shape[1:]
        return run(self._spec, x_seq, self._usable(self.syn, step), self._usable(self.mem, step), self.beta,
                   self.alpha, self.threshold, self.graded_spikes_factor, self._backend, store_seq, "Synaptic")

    def forward(self, input_: torch.Tensor, syn: Optional[torch.Tensor] = None, mem: Optional[torch.Tensor] = None):
        """One step: ``input_ [N, *]`` -> ``(spk, syn, mem)`` (``spk`` alone with ``init_hidden``)."""
        self._check_state_arg(syn is not None or mem is not None)
        if syn is not None:
            self.syn = syn
        if mem is not None:
            self.mem = mem
        if not isinstance(input_, torch.Tensor):
            raise TypeError(f"Synaptic: input_ must be a torch.Tensor, got {type(input_).__name__}")
        spk_seq, self.syn, self.mem, _, _ = self._run(input_.unsqueeze(0), False)
        spk = spk_seq[0]
        if self.output or not self.init_hidden:
            return spk, self.syn, self.mem
        return spk

    def sequence(self, x_seq: torch.Tensor, syn: Optional[torch.Tensor] = None, mem: Optional[torch.Tensor] = None, *,
                 states: str = "all"):
        """T steps in one fused op: ``x_seq [T, N, *]`` -> ``(spk_seq, syn_seq, mem_seq)`` (``states='last'``:
        the last ``syn``, ``mem`` instead; ``spk_seq`` alone with ``init_hidden`` and not ``output``)."""
        self._check_state_arg(syn is not None or mem is not None)
        store = multistep._check_states(states, "Synaptic.sequence")
        if syn is not None:
            self.syn = syn
        if mem is not None:
            self.mem = mem
        spk_seq, self.syn, self.mem, syn_seq, mem_seq = self._run(x_seq, store)
        if self.init_hidden and not self.output:
            return spk_seq
        return (spk_seq, syn_seq, mem_seq) if store else (spk_seq, self.syn, self.mem)

    def reset_mem(self):
        """Zero both states (keeping their shapes), as snnTorch's."""
        self.syn = torch.zeros_like(self.syn)
        self.mem = torch.zeros_like(self.mem)
        return self.syn, self.mem

    def init_synaptic(self):
        """Deprecated in snnTorch: :meth:`reset_mem`."""
        return self.reset_mem()
