"""Convert a SpikingJelly model to fastspike neurons in place.

SpikingJelly is never imported here: its modules are recognised by their module path and class name, so
both 0.0.0.0.14 and 2.x models convert and fastspike does not depend on either.
"""
from __future__ import annotations

from torch import nn

from . import neuron, surrogate

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
