"""Convert a SpikingJelly or snnTorch model to fastspike neurons in place.

Neither library is imported here: their modules are recognised by their module path and class name, so
SpikingJelly 0.0.0.0.14 and 2.x and snnTorch models convert and fastspike depends on none of them.
"""
from __future__ import annotations

from torch import nn

from . import layer, neuron, surrogate
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


# SpikingJelly layer -> (the torch class it must derive from, fastspike's layer). Same torch base, same
# parameters and buffers: the converted module takes over the original's state as it is.
_LAYERS = {cls.__name__: (base, cls) for cls, base in (
    (layer.Conv2d, nn.Conv2d), (layer.BatchNorm2d, nn.BatchNorm2d), (layer.Linear, nn.Linear),
    (layer.MaxPool2d, nn.MaxPool2d), (layer.AvgPool2d, nn.AvgPool2d),
    (layer.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d), (layer.Flatten, nn.Flatten),
    (layer.SeqToANNContainer, nn.Sequential))}


def _convert_layer(old: nn.Module) -> nn.Module:
    """fastspike's layer of the same name holding ``old``'s parameters, buffers, hooks and options (the
    very tensors: an optimizer built on ``old`` keeps training it); ``old`` itself where there is none."""
    name = type(old).__name__
    if name == "Dropout" and hasattr(old, "p"):
        new = layer.Dropout(old.p, step_mode=old.step_mode).train(old.training)
        new.mask = old.mask
        return new
    base, cls = _LAYERS.get(name, (None, None))
    if cls is None or not isinstance(old, base):
        return old
    step_mode = getattr(old, "step_mode", None)
    new = cls.__new__(cls)
    # Fresh dicts (of parameters, buffers, submodules, hooks) holding the same values: old and new share
    # tensors, not containers.
    new.__dict__.update({k: v.copy() if isinstance(v, dict) else v for k, v in old.__dict__.items()
                         if k not in ("step_mode", "_step_mode")})
    if step_mode is not None and cls is not layer.SeqToANNContainer:
        new.step_mode = step_mode
    return new


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


def _convert(module: nn.Module, backend: str) -> nn.Module:
    """``module`` with its SpikingJelly descendants converted, children first (a converted container
    takes over its already converted children), then the module itself."""
    for name, child in list(module.named_children()):
        new = _convert(child, backend)
        if new is not child:
            setattr(module, name, new)
    if not _is_spikingjelly(module):
        return module
    if type(module).__name__ in _NODES:
        return _convert_node(module, backend)
    return _convert_layer(module)


def from_spikingjelly(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace SpikingJelly's neurons and layers in ``model`` by fastspike's.

    Neurons (``IFNode``/``LIFNode``/``ParametricLIFNode``): hyperparameters (v_threshold, v_reset, tau,
    decay_input, detach_reset, step_mode, store_v_seq, the surrogate and its alpha) carry over and PLIF's
    ``w`` is copied; the new neurons start reset and use ``backend``. Layers (``Conv2d``, ``BatchNorm2d``,
    ``Linear``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``, ``Dropout``,
    ``SeqToANNContainer``): fastspike's layer of the same name takes over the original's parameters and
    buffers (the same tensors, so state_dicts load either way and an existing optimizer still applies),
    options and step mode; then a spike input is kept as bits for backward (:mod:`fastspike.layer`).
    Other modules are kept. ``model`` is modified in place and returned; if ``model`` is itself a
    converted module its replacement is returned. An unsupported surrogate raises ``TypeError``.
    """
    return _convert(model, backend)


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
