"""fastspike: fused spiking-neuron kernels for PyTorch with SpikingJelly's and snnTorch's APIs.

Switch a SpikingJelly model by changing its import::

    from fastspike import neuron, surrogate, functional, layer

an snnTorch model with ``import fastspike.snntorch as snn``, or convert a built one with
:func:`from_spikingjelly` / :func:`from_snntorch`. Tensors are time-major ``[T, N, *]`` in multi-step
mode. Backends and their selection: :mod:`fastspike.backends`.
"""
from . import backends, functional, layer, neuron, snntorch, surrogate
from .backends import BackendUnavailableError
from .convert import from_snntorch, from_spikingjelly

__version__ = "0.1.0"

__all__ = ["backends", "functional", "layer", "neuron", "snntorch", "surrogate", "from_spikingjelly", "from_snntorch",
           "BackendUnavailableError", "__version__"]
