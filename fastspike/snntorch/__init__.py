"""snnTorch's neuron API on fastspike's fused kernels: switch a model by its import.

    import fastspike.snntorch as snn           # was: import snntorch as snn
    from fastspike.snntorch import surrogate, utils
    import fastspike.snntorch.functional as SF

``Leaky`` and ``Synaptic`` take snnTorch 1.0.0's arguments, defaults and call conventions and are
bit-identical to it in fp32, per step; ``.sequence(x_seq)`` runs all T steps of a time-major
``[T, N, *]`` input in one fused op (:mod:`._neurons`). Or convert a built snnTorch model in place with
:func:`fastspike.from_snntorch`.
"""
from . import functional, surrogate, utils
from ._neurons import Leaky, SpikingNeuron, Synaptic
from .multistep import leaky_multistep, synaptic_multistep

__all__ = ["Leaky", "Synaptic", "SpikingNeuron", "surrogate", "functional", "utils", "leaky_multistep",
           "synaptic_multistep"]
