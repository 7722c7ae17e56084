"""The fused multi-step snnTorch neuron ops: ``leaky_multistep`` and ``synaptic_multistep``.

Both take a time-major input ``x_seq [T, N, *]`` and run snnTorch 1.0.0's ``Leaky`` / ``Synaptic`` update
(equations in :mod:`fastspike.reference.leaky`) over all T steps in one op on the chosen backend
(:mod:`fastspike.backends`), equal bit for bit in fp32 to calling the snnTorch neuron once per step.
``states='all'`` returns every step's state ``[T, N, *]``; ``states='last'`` only the last ``[N, *]``, and
then no per-step state is written at all.

Dtypes: the state (and arithmetic) is fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 inputs or a fp64
initial state; spikes come back as snnTorch returns them, fp32 (fp64 only with a per-neuron fp64 graded
spikes factor). Gradients flow to x_seq, the initial states and every parameter tensor that requires
grad (beta and alpha through snnTorch's clamp to [0, 1]: zero outside it).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .. import backends
from .._spec import LEAKY_RESETS, LeakySpec, state_dtype
from . import surrogate as sg

Param = Union[float, torch.Tensor]
STATES = ("all", "last")


def make_spec(synaptic: bool, reset_mechanism: str, reset_delay: bool, spike_grad, surrogate_disable: bool,
              owner: str) -> LeakySpec:
    """Validate the options and build the :class:`~fastspike._spec.LeakySpec`."""
    if reset_mechanism not in LEAKY_RESETS:
        raise ValueError(f"{owner}: reset_mechanism must be set to either 'subtract', 'zero', or 'none', got "
                         f"{reset_mechanism!r}")
    for name, value in (("reset_delay", reset_delay), ("surrogate_disable", surrogate_disable)):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    surrogate = sg.NoSurrogate() if surrogate_disable else sg.convert(spike_grad, owner)
    return LeakySpec(synaptic=synaptic, reset=reset_mechanism, reset_delay=reset_delay, surrogate=surrogate)


def _param(value: Param, name: str, x_seq: torch.Tensor, state: torch.dtype, clamp: bool, owner: str):
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{owner}: {name} must be a number or a tensor, got {type(value).__name__}")
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if not t.is_floating_point():
        t = t.float()
    if t.device != x_seq.device:
        if t.numel() != 1:
            raise ValueError(f"{owner}: {name} is on {t.device} but the input is on {x_seq.device}")
        t = t.to(x_seq.device)
    step = x_seq.shape[1:]
    try:
        fits = torch.broadcast_shapes(t.shape, step) == step
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{owner}: {name} of shape {tuple(t.shape)} does not broadcast to one step of the input, "
                         f"{tuple(step)}")
    # snnTorch clamps in the parameter's dtype, then torch rounds it to the state's in the products.
    return (t.clamp(0, 1) if clamp else t).to(state)


def _state(value, name: str, x_seq: torch.Tensor, owner: str) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{owner}: {name} must be a floating-point tensor or None, got {type(value).__name__}")
    if value.device != x_seq.device:
        raise ValueError(f"{owner}: {name} is on {value.device} but the input is on {x_seq.device}")
    if value.shape != x_seq.shape[1:]:
        raise ValueError(f"{owner}: {name} has shape {tuple(value.shape)} but one step of the input has "
                         f"{tuple(x_seq.shape[1:])}")
    return value


def _spike_dtype(gsf: torch.Tensor) -> torch.dtype:
    # snnTorch: (mem - thr > 0).float() * graded_spikes_factor, by torch's promotion (a 0-dim factor does
    # not widen the fp32 spikes).
    return torch.float32 if gsf.dim() == 0 else torch.promote_types(torch.float32, gsf.dtype)


def run(spec: LeakySpec, x_seq: torch.Tensor, syn: Optional[torch.Tensor], mem: Optional[torch.Tensor],
        beta: Param, alpha: Optional[Param], threshold: Param, graded_spikes_factor: Param, backend: str,
        store_seq: bool, owner: str):
    """Check the inputs and run ``spec``; returns ``(spk_seq, syn_last, mem_last, syn_seq, mem_seq)``
    (syn entries None for Leaky, sequences None unless ``store_seq``)."""
    if not isinstance(x_seq, torch.Tensor) or not x_seq.is_floating_point():
        raise TypeError(f"{owner}: the input must be a floating-point tensor, got "
                        f"{type(x_seq).__name__ if not isinstance(x_seq, torch.Tensor) else x_seq.dtype}")
    if x_seq.dim() < 2 or x_seq.shape[0] == 0:
        raise ValueError(f"{owner}: a sequence must be time-major [T, N, *] with T > 0, got shape "
                         f"{tuple(x_seq.shape)}")
    syn = _state(syn, "syn", x_seq, owner) if spec.synaptic else None
    mem = _state(mem, "mem", x_seq, owner)
    state = state_dtype(x_seq.dtype)
    for t in (syn, mem):
        if t is not None:
            state = torch.promote_types(state, t.dtype)
    bc = _param(beta, "beta", x_seq, state, True, owner)
    ac = _param(alpha, "alpha", x_seq, state, True, owner) if spec.synaptic else None
    thr = _param(threshold, "threshold", x_seq, state, False, owner)
    gsf = _param(graded_spikes_factor, "graded_spikes_factor", x_seq, state, False, owner)
    impl = backends.multistep_impl(backend, x_seq.device, family="leaky")
    spk_seq, syn_last, mem_last, syn_seq, mem_seq = impl(
        spec, x_seq, None if syn is None else syn.to(state), None if mem is None else mem.to(state), bc, ac, thr, gsf,
        state, store_seq)
    gsf_raw = graded_spikes_factor if isinstance(graded_spikes_factor, torch.Tensor) else torch.as_tensor(1.0)
    spike_dtype = _spike_dtype(gsf_raw)
    if spk_seq.dtype != spike_dtype:
        spk_seq = spk_seq.to(spike_dtype)
    return spk_seq, syn_last, mem_last, syn_seq, mem_seq


def _check_states(states, owner: str) -> bool:
    if states not in STATES:
        raise ValueError(f"{owner}: states must be 'all' (every step's state) or 'last', got {states!r}")
    return states == "all"


def leaky_multistep(x_seq: torch.Tensor, mem: Optional[torch.Tensor] = None, *, beta: Param, threshold: Param = 1.0,
                    spike_grad=None, surrogate_disable: bool = False, reset_mechanism: str = "subtract",
                    reset_delay: bool = True, graded_spikes_factor: Param = 1.0, backend: str = "auto",
                    states: str = "all"):
    """snnTorch's ``Leaky`` over ``x_seq [T, N, *]`` from ``mem [N, *]`` (None: zeros).

    Returns ``(spk_seq, mem_seq [T, N, *])``, or ``(spk_seq, mem [N, *])`` with ``states='last'``. Options
    and defaults are snnTorch's (``spike_grad`` None is ``surrogate.atan()``).
    """
    spec = make_spec(False, reset_mechanism, reset_delay, spike_grad, surrogate_disable, "leaky_multistep")
    store = _check_states(states, "leaky_multistep")
    spk_seq, _, mem_last, _, mem_seq = run(spec, x_seq, None, mem, beta, None, threshold, graded_spikes_factor,
                                           backend, store, "leaky_multistep")
    return spk_seq, (mem_seq if store else mem_last)


def synaptic_multistep(x_seq: torch.Tensor, syn: Optional[torch.Tensor] = None, mem: Optional[torch.Tensor] = None, *,
                       alpha: Param, beta: Param, threshold: Param = 1.0, spike_grad=None,
                       surrogate_disable: bool = False, reset_mechanism: str = "subtract", reset_delay: bool = True,
                       graded_spikes_factor: Param = 1.0, backend: str = "auto", states: str = "all"):
    """snnTorch's ``Synaptic`` over ``x_seq [T, N, *]`` from ``syn``, ``mem [N, *]`` (None: zeros).

    Returns ``(spk_seq, syn_seq, mem_seq)`` (each ``[T, N, *]``), or the last ``syn``, ``mem`` with
    ``states='last'``.
    """
    spec = make_spec(True, reset_mechanism, reset_delay, spike_grad, surrogate_disable, "synaptic_multistep")
    store = _check_states(states, "synaptic_multistep")
    spk_seq, syn_last, mem_last, syn_seq, mem_seq = run(spec, x_seq, syn, mem, beta, alpha, threshold,
                                                        graded_spikes_factor, backend, store, "synaptic_multistep")
    return (spk_seq, syn_seq, mem_seq) if store else (spk_seq, syn_last, mem_last)
