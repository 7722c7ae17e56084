"""fastspike: fused spiking-neuron kernels for PyTorch with SpikingJelly's API.

Switch a SpikingJelly model by changing its import::

    from fastspike import neuron, surrogate, functional, layer

or convert a built one with :func:`from_spikingjelly`. Tensors are time-major ``[T, N, *]`` in multi-step
mode. Backends and their selection: :mod:`fastspike.backends`.
"""
from . import backends, functional, layer, neuron, surrogate
from .backends import BackendUnavailableError
from .convert import from_spikingjelly

__version__ = "0.1.0"

__all__ = ["backends", "functional", "layer", "neuron", "surrogate", "from_spikingjelly",
           "BackendUnavailableError", "__version__"]
