"""The pure-torch reference backend ('torch'): one module per op family, the oracle every fused backend
and the benchmarks are tested against. :mod:`.neuron`: SpikingJelly's IF/LIF/PLIF; :mod:`.leaky`:
snnTorch's Leaky and Synaptic."""
from . import leaky, neuron

__all__ = ["leaky", "neuron"]
