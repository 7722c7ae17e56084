"""Convert a SpikingJelly or snnTorch model to fastspike neurons in place.

Neither library is imported here: their modules are recognised by their module path and class name, so
SpikingJelly 0.0.0.0.14 and 2.x and snnTorch models convert and fastspike depends on none of them.
"""
from __future__ import annotations

from torch import nn

from . import neuron, surrogate
from . import snntorch as fs_snntorch

_NODES = {"IFNode": neuron.IFNode, "LIFNode": neuron.LIFNode, "ParametricLIFNode": neuron.ParametricLIFNode}
_SURROGATES = {cls.__name__: cls for cls in (
    surrogate.Sigmoid, surrogate.ATan, surrogate.PiecewiseQuadratic, surrogate.PiecewiseExp, surrogate.SoftSign,
    surrogate.SuperSpike, surrogate.Erf)}


def _is_spikingjelly(obj) -> bool:
    return type(obj).__module__.startswith("spikingjelly.")


def _convert_surrogate(sg) -> surrogate.SurrogateFunctionBase:
    if isinstance(sg, surrogate.SurrogateFunctionBase):
        return sg
    cls = _SURROGATES.get(type(sg).__name__) if _is_spikingjelly(sg) else None
    if cls is None or not getattr(sg, "spiking", True):
        raise TypeError(f"from_spikingjelly: no fastspike equivalent of surrogate {type(sg).__module__}."
                        f"{type(sg).__name__}; supported: {', '.join(_SURROGATES)} (spiking mode)")
    return cls(float(sg.alpha))


def _convert_node(node: nn.Module, backend: str) -> nn.Module:
    name = type(node).__name__
    common = dict(v_threshold=node.v_threshold, v_reset=node.v_reset,
                  surrogate_function=_convert_surrogate(node.surrogate_function),
                  detach_reset=node.detach_reset, step_mode=node.step_mode, backend=backend,
                  store_v_seq=getattr(node, "store_v_seq", False))
    if name == "IFNode":
        new = neuron.IFNode(**common)
    elif name == "LIFNode":
        new = neuron.LIFNode(tau=node.tau, decay_input=node.decay_input, **common)
    else:
        new = neuron.ParametricLIFNode(decay_input=node.decay_input, **common)
        new.w = nn.Parameter(node.w.detach().clone(), requires_grad=node.w.requires_grad)
    return new.train(node.training)


def from_spikingjelly(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every SpikingJelly ``IFNode``/``LIFNode``/``ParametricLIFNode`` in ``model`` by fastspike's.

    Hyperparameters (v_threshold, v_reset, tau, decay_input, detach_reset, step_mode, store_v_seq, the
    surrogate and its alpha) carry over and PLIF's ``w`` is copied; the new neurons start reset and use
    ``backend``. Other modules, SpikingJelly layers included, are kept. ``model`` is modified in place and
    returned; if ``model`` is itself a neuron its replacement is returned. An unsupported surrogate raises
    ``TypeError``.
    """
    if _is_spikingjelly(model) and type(model).__name__ in _NODES:
        return _convert_node(model, backend)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _is_spikingjelly(child) and type(child).__name__ in _NODES:
                setattr(parent, child_name, _convert_node(child, backend))
    return model


_SNNTORCH = {"Leaky": fs_snntorch.Leaky, "Synaptic": fs_snntorch.Synaptic}


def _is_snntorch_neuron(obj) -> bool:
    return type(obj).__module__.startswith("snntorch.") and type(obj).__name__ in _SNNTORCH


def _convert_snntorch(node: nn.Module, backend: str) -> nn.Module:
    name = type(node).__name__
    if getattr(node, "inhibition", False) or getattr(node, "state_quant", False):
        raise TypeError(f"from_snntorch: {name} with inhibition or state_quant has no fastspike equivalent")
    kwargs = dict(threshold=1.0, spike_grad=None if node.surrogate_disable else node.spike_grad,
                  surrogate_disable=node.surrogate_disable, init_hidden=node.init_hidden, output=node.output,
                  reset_mechanism=node.reset_mechanism, reset_delay=node.reset_delay, backend=backend)
    new = fs_snntorch.Synaptic(0.0, 0.0, **kwargs) if name == "Synaptic" else fs_snntorch.Leaky(0.0, **kwargs)
    # Parameters stay parameters (with their requires_grad), buffers stay buffers: the state_dicts match.
    for attr in ("beta", "alpha", "threshold", "graded_spikes_factor"):
        if not hasattr(node, attr) or not hasattr(new, attr):
            continue
        value = getattr(node, attr)
        delattr(new, attr)
        if isinstance(value, nn.Parameter):
            setattr(new, attr, nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad))
        else:
            new.register_buffer(attr, value.detach().clone())
    return new.train(node.training)


def from_snntorch(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace every snnTorch ``Leaky``/``Synaptic`` in ``model`` by :mod:`fastspike.snntorch`'s.

    Options carry over (threshold, beta, alpha, graded spikes factor as parameters or buffers like the
    original, the surrogate and its parameters, reset mechanism and delay, init_hidden, output); the new
    neurons start reset and use ``backend``. ``model`` is modified in place and returned; if it is itself a
    neuron its replacement is returned. Unsupported options or surrogates raise ``TypeError``.
    """
    if _is_snntorch_neuron(model):
        return _convert_snntorch(model, backend)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _is_snntorch_neuron(child):
                setattr(parent, child_name, _convert_snntorch(child, backend))
    return model
