"""snnTorch's surrogate gradients (``snntorch.surrogate``), with its names, parameters and defaults.

A surrogate here is called as snnTorch's are, on ``mem - threshold``: the forward is the strict Heaviside
step ``(x > 0)`` (a potential exactly at the threshold does not fire), the backward multiplies the incoming
gradient by ``derivative(x)``:

=======================================  ============================================================
constructor (snnTorch's defaults)        ``derivative(x)``
=======================================  ============================================================
``atan(alpha=2.0)``                      ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``
``fast_sigmoid(slope=25)``               ``1 / (slope * |x| + 1) ** 2``
``sigmoid(slope=25)``                    ``slope * exp(-slope * x) / (exp(-slope * x) + 1) ** 2``
``straight_through_estimator()``         ``1``
``triangular(threshold=1)``              ``threshold`` for ``x < 0``, ``-threshold`` for ``x >= 0``
``heaviside()``                          ``1`` for ``x > 0``, else ``0``
``spike_rate_escape(beta=1, slope=25)``  ``slope * exp(-beta * |x - 1|)``
``SFS(slope=25, B=1)``                   ``1 / (slope * |x| + 1) ** 2`` for ``x > B``, else ``0``
=======================================  ============================================================

These are snnTorch's formulas as its backward evaluates them (snnTorch's ``sigmoid`` gives NaN where
``exp(-slope * x)`` overflows, and so does this one). Each object also has :attr:`Surrogate.kernel_spec`, the
name and constants the fused kernels take (table in :mod:`fastspike._contract`). snnTorch's stochastic
(``SSO``, ``LSO``) and ``custom_surrogate`` gradients have no fused equivalent and are not provided.
"""
from __future__ import annotations

import math

import torch

from ..surrogate import SurrogateSpike

__all__ = ["Surrogate", "atan", "fast_sigmoid", "sigmoid", "straight_through_estimator", "triangular", "heaviside",
           "spike_rate_escape", "SFS", "ATan", "FastSigmoid", "Sigmoid", "StraightThroughEstimator", "Triangular",
           "Heaviside", "SpikeRateEscape", "SparseFastSigmoid"]


def spike(x: torch.Tensor) -> torch.Tensor:
    """snnTorch's firing ``(x > 0)`` in x's dtype."""
    return (x > 0).to(x.dtype)


def _number(owner: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    return float(value)


class Surrogate:
    """Base class: a spike function with a surrogate gradient. Subclasses set ``name`` (the kernels'),
    ``_params`` (their argument names) and implement :meth:`derivative` and :meth:`_kernel_constants`."""

    name = ""
    _params: tuple = ()
    fire = staticmethod(spike)

    def __init__(self, *values):
        for param, value in zip(self._params, values):
            setattr(self, param, _number(type(self).__name__, param, value))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return SurrogateSpike.apply(x, self)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad_input(self, grad_spike: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dL/dx = dL/dspike * derivative(x)``: snnTorch multiplies in every surrogate's backward."""
        return grad_spike * self.derivative(x)

    def _kernel_constants(self) -> tuple:
        return 1.0, 1.0, 1.0

    @property
    def kernel_spec(self) -> tuple:
        """``(name, alpha, a, b)`` for the fused kernels."""
        return (self.name, *self._kernel_constants())

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.kernel_spec == other.kernel_spec

    def __hash__(self) -> int:
        return hash(self.kernel_spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{p}={getattr(self, p)}' for p in self._params)})"


class ATan(Surrogate):
    name, _params = "atan", ("alpha",)

    def derivative(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x).pow(2))

    def _kernel_constants(self):
        return self.alpha, math.pi / 2 * self.alpha, self.alpha / 2


class FastSigmoid(Surrogate):
    name, _params = "fast_sigmoid", ("slope",)

    def derivative(self, x):
        return 1 / (self.slope * torch.abs(x) + 1.0) ** 2

    def _kernel_constants(self):
        return self.slope, self.slope, self.slope


class Sigmoid(Surrogate):
    name, _params = "sigmoid_exp", ("slope",)

    def derivative(self, x):
        e = torch.exp(-self.slope * x)
        return self.slope * e / ((e + 1) ** 2)

    def _kernel_constants(self):
        return self.slope, -self.slope, self.slope


class StraightThroughEstimator(Surrogate):
    name = "straight_through"

    def derivative(self, x):
        return torch.ones_like(x)


class Triangular(Surrogate):
    name, _params = "triangular", ("threshold",)

    def derivative(self, x):
        return torch.where(x >= 0, -self.threshold, self.threshold).to(x.dtype)

    def _kernel_constants(self):
        return self.threshold, self.threshold, self.threshold


class Heaviside(Surrogate):
    name = "heaviside"

    def derivative(self, x):
        return spike(x)


class SpikeRateEscape(Surrogate):
    name, _params = "spike_rate_escape", ("beta", "slope")

    def derivative(self, x):
        return self.slope * torch.exp(-self.beta * torch.abs(x - 1))

    def _kernel_constants(self):
        return self.slope, -self.beta, self.slope


class SparseFastSigmoid(Surrogate):
    name, _params = "sparse_fast_sigmoid", ("slope", "B")

    def derivative(self, x):
        return 1 / (self.slope * torch.abs(x) + 1.0) ** 2 * (x > self.B).to(x.dtype)

    def _kernel_constants(self):
        return self.slope, self.slope, self.B


class NoSurrogate(Surrogate):
    """``surrogate_disable=True``: the spike passes no gradient at all (snnTorch's ``_surrogate_bypass``)."""

    name = "none"

    def derivative(self, x):
        return torch.zeros_like(x)


def atan(alpha: float = 2.0) -> ATan:
    """ArcTan surrogate gradient (snnTorch's default spike_grad)."""
    return ATan(alpha)


def fast_sigmoid(slope: float = 25) -> FastSigmoid:
    """Fast sigmoid surrogate gradient."""
    return FastSigmoid(slope)


def sigmoid(slope: float = 25) -> Sigmoid:
    """Sigmoid surrogate gradient."""
    return Sigmoid(slope)


def straight_through_estimator() -> StraightThroughEstimator:
    """Straight-through estimator: the gradient passes unchanged."""
    return StraightThroughEstimator()


def triangular(threshold: float = 1) -> Triangular:
    """Triangular surrogate gradient (snnTorch's sign convention)."""
    return Triangular(threshold)


def heaviside() -> Heaviside:
    """Heaviside: the gradient passes where the neuron fired."""
    return Heaviside()


def spike_rate_escape(beta: float = 1, slope: float = 25) -> SpikeRateEscape:
    """Spike rate escape (Boltzmann) surrogate gradient."""
    return SpikeRateEscape(beta, slope)


def SFS(slope: float = 25, B: float = 1) -> SparseFastSigmoid:
    """Sparse fast sigmoid: the fast sigmoid above ``B``, 0 below."""
    return SparseFastSigmoid(slope, B)


# snnTorch's surrogate constructors return closures ``<name>.<locals>.inner``; their free variables are the
# constructor's arguments.
_SNNTORCH = {"atan": atan, "fast_sigmoid": fast_sigmoid, "sigmoid": sigmoid,
             "straight_through_estimator": straight_through_estimator, "triangular": triangular,
             "heaviside": heaviside, "spike_rate_escape": spike_rate_escape, "SFS": SFS}


def convert(spike_grad, owner: str = "fastspike.snntorch") -> Surrogate:
    """``spike_grad`` as a :class:`Surrogate`: None is ``atan()`` (snnTorch's default), one of these is kept,
    and one made by snnTorch's own ``snntorch.surrogate`` constructors is converted with its parameters."""
    if spike_grad is None:
        return atan()
    if isinstance(spike_grad, Surrogate):
        return spike_grad
    code = getattr(spike_grad, "__code__", None)
    module, qualname = getattr(spike_grad, "__module__", ""), getattr(spike_grad, "__qualname__", "")
    make = _SNNTORCH.get(qualname[:-len(".<locals>.inner")]) if qualname.endswith(".<locals>.inner") else None
    if module == "snntorch.surrogate" and make is not None and code is not None:
        values = dict(zip(code.co_freevars, (c.cell_contents for c in spike_grad.__closure__ or ())))
        return make(**values)
    raise TypeError(f"{owner}: spike_grad must be a fastspike.snntorch.surrogate (or snntorch.surrogate) "
                    f"{', '.join(_SNNTORCH)}, got {spike_grad!r}; stochastic and custom surrogates have no fused "
                    f"equivalent")
