"""Functional multi-step neuron ops and network utilities (SpikingJelly's ``functional``, same names).

The neuron ops take a time-major input ``x_seq [T, N, *]`` and an initial membrane potential ``v_init``
(a number, or a tensor ``[N, *]``), run the neuron over all T steps with the chosen backend
(:mod:`fastspike.backends`) and return ``(spike_seq, v_last)``, or ``(spike_seq, v_last, v_seq)`` when
``store_v_seq``. ``spike_seq`` has x_seq's shape and dtype; ``v_last [N, *]`` and ``v_seq [T, N, *]``
(the post-reset potential after every step) are fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs or a
fp64 ``v_init``. ``spike_seq`` carries the spike mark of :mod:`fastspike._bits`, so the fastspike layer it
feeds keeps it as bits for backward.
Gradients flow to ``x_seq``, a tensor ``v_init`` and PLIF's ``w``. The update equations are in
:mod:`fastspike.reference`.
"""
from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
from torch import nn

from . import backends
from ._bits import mark
from ._seq import multi_step_forward, seq_to_ann_forward
from ._spec import NeuronSpec, check_inputs, check_plif_weight, make_spec
from .layer import SeqToANNContainer
from .surrogate import Sigmoid, SurrogateFunctionBase

__all__ = [
    "if_multistep", "lif_multistep", "plif_multistep", "neuron_multistep", "reset_net", "set_step_mode",
    "set_backend", "detach_net", "set_memory_mode", "seq_to_ann_forward", "multi_step_forward",
]

State = Union[float, torch.Tensor]


def neuron_multistep(spec: NeuronSpec, x_seq: torch.Tensor, v_init: State = 0.0,
                     w: Optional[torch.Tensor] = None, backend: str = "auto", store_v_seq: bool = False,
                     owner: str = "neuron_multistep", x_name: str = "x_seq", v_name: str = "v_init"):
    """Run a validated :class:`~fastspike._spec.NeuronSpec` over ``x_seq``; see the module docstring.

    ``owner``, ``x_name`` and ``v_name`` only name the caller and its arguments in error messages.
    """
    check_inputs(x_seq, v_init, owner, x_name, v_name)
    if spec.kind == "plif":
        check_plif_weight(w, x_seq, owner)
    impl = backends.multistep_impl(backend, x_seq.device)
    spike_seq, v_last, v_seq = impl(spec, x_seq, v_init, w, store_v_seq)
    spike_seq = mark(spike_seq)
    return (spike_seq, v_last, v_seq) if store_v_seq else (spike_seq, v_last)


def if_multistep(x_seq: torch.Tensor, v_init: State = 0.0, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, surrogate_function: Optional[SurrogateFunctionBase] = None,
                 detach_reset: bool = False, backend: str = "auto", store_v_seq: bool = False):
    """Integrate-and-fire over ``x_seq [T, N, *]``: ``h = v + x``; surrogate default ``Sigmoid()``."""
    spec = make_spec("if", v_threshold=v_threshold, v_reset=v_reset,
                     surrogate_function=surrogate_function or Sigmoid(), detach_reset=detach_reset,
                     owner="if_multistep")
    return neuron_multistep(spec, x_seq, v_init, None, backend, store_v_seq, "if_multistep")


def lif_multistep(x_seq: torch.Tensor, v_init: State = 0.0, tau: float = 2.0, decay_input: bool = True,
                  v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                  surrogate_function: Optional[SurrogateFunctionBase] = None, detach_reset: bool = False,
                  backend: str = "auto", store_v_seq: bool = False):
    """Leaky integrate-and-fire over ``x_seq [T, N, *]``, time constant ``tau > 0`` (default 2).

    ``decay_input``: ``h = v + (x - (v - v_reset)) / tau``; otherwise ``h = v - (v - v_reset) / tau + x``.
    """
    spec = make_spec("lif", v_threshold=v_threshold, v_reset=v_reset,
                     surrogate_function=surrogate_function or Sigmoid(), detach_reset=detach_reset, tau=tau,
                     decay_input=decay_input, owner="lif_multistep")
    return neuron_multistep(spec, x_seq, v_init, None, backend, store_v_seq, "lif_multistep")


def plif_multistep(x_seq: torch.Tensor, w: torch.Tensor, v_init: State = 0.0, decay_input: bool = True,
                   v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                   surrogate_function: Optional[SurrogateFunctionBase] = None, detach_reset: bool = False,
                   backend: str = "auto", store_v_seq: bool = False):
    """Parametric LIF over ``x_seq [T, N, *]``: LIF with ``1/tau = sigmoid(w)``, ``w`` a learnable scalar."""
    spec = make_spec("plif", v_threshold=v_threshold, v_reset=v_reset,
                     surrogate_function=surrogate_function or Sigmoid(), detach_reset=detach_reset,
                     decay_input=decay_input, owner="plif_multistep")
    return neuron_multistep(spec, x_seq, v_init, w, backend, store_v_seq, "plif_multistep")


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful module of ``net`` (anything with a ``reset()`` method)."""
    for m in net.modules():
        if hasattr(m, "reset"):
            m.reset()


def _modules_outside_seq_containers(net: nn.Module) -> Iterable[nn.Module]:
    """Modules of ``net`` not wrapped in a SeqToANNContainer (which always runs its content single-step)."""
    inside = {id(m) for c in net.modules() if isinstance(c, SeqToANNContainer) for m in c.modules()
              if m is not c}
    return (m for m in net.modules() if id(m) not in inside)


def set_step_mode(net: nn.Module, step_mode: str) -> None:
    """Set ``step_mode`` ('s' single step ``[N, *]``, 'm' multi-step ``[T, N, *]``) on every module having one."""
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
    for m in _modules_outside_seq_containers(net):
        if hasattr(m, "step_mode"):
            m.step_mode = step_mode


def set_backend(net: nn.Module, backend: str, instance=(nn.Module,)) -> None:
    """Set ``backend`` on every module of type ``instance`` that has one (see :mod:`fastspike.backends`).

    Every module is checked first, so a module that refuses the backend leaves the whole net unchanged.
    """
    backends.canonical(backend)
    targets = [m for m in net.modules() if isinstance(m, instance) and hasattr(m, "backend")]
    for m in targets:
        if backend not in getattr(m, "supported_backends", (backend,)):
            raise ValueError(f"set_backend: {type(m).__name__} does not support backend {backend!r} "
                             f"(it supports {m.supported_backends}); nothing was changed")
    for m in targets:
        m.backend = backend


def set_memory_mode(net: nn.Module, mode: str) -> None:
    """What ``net`` keeps for backward: ``'default'`` (spike inputs of its layers as bits, nothing
    recomputed), ``'recompute'`` (each Conv/Linear(-BN)-neuron block of its ``nn.Sequential``s keeps only
    its input and runs its forward again in backward, gradients bit-identical on CPU) or ``'plain'`` (what
    torch's autograd keeps). Set on every submodule; details and what is not covered:
    :mod:`fastspike._recompute`."""
    from ._recompute import set_memory_mode as _set
    _set(net, mode)


def detach_net(net: nn.Module) -> None:
    """Detach every stateful module's state from the autograd graph (truncated BPTT)."""
    for m in net.modules():
        if hasattr(m, "detach"):
            m.detach()
