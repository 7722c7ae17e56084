"""Surrogate gradients: a Heaviside step forward, a smooth derivative backward.

Calling a surrogate ``sg(x)`` returns ``(x >= 0)`` in ``x``'s dtype; its backward multiplies the incoming
gradient by ``sg.derivative(x)`` (:meth:`SurrogateFunctionBase.grad_input`; PiecewiseQuadratic, a mask in
SpikingJelly, fills that product with 0 outside its window). Neurons call it on ``h - v_threshold``.

The derivatives follow SpikingJelly's ``activation_based.surrogate`` (same defaults, same formulas; 0.0.0.0.14
for all but :class:`SuperSpike`, which only SpikingJelly 2.0 has) and, for :class:`FastSigmoid`, snnTorch's
``surrogate.fast_sigmoid``:

============================  =========  ==================================================
class                         default    derivative ``g'(x)``
============================  =========  ==================================================
``Sigmoid(alpha)``            4.0        ``alpha * s * (1 - s)``, ``s = sigmoid(alpha * x)``
``ATan(alpha)``               2.0        ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``
``PiecewiseQuadratic(alpha)`` 1.0        ``alpha - alpha**2 * |x|`` for ``|x| <= 1/alpha``, else 0
``PiecewiseExp(alpha)``       1.0        ``alpha / 2 * exp(-alpha * |x|)``
``SoftSign(alpha)``           2.0        ``1 / (2 * alpha * (1 / alpha + |x|) ** 2)``
``SuperSpike(alpha)``         1.0        ``alpha / (|x| + 1) ** 2``
``Erf(alpha)``                2.0        ``alpha / sqrt(pi) * exp(-(alpha * x) ** 2)``
``FastSigmoid(slope)``        25.0       ``1 / (slope * |x| + 1) ** 2``
============================  =========  ==================================================

Every surrogate is identified by ``(name, alpha)`` (:attr:`SurrogateFunctionBase.spec`); a fused kernel
gets :attr:`SurrogateFunctionBase.kernel_spec`, its name in :data:`fastspike._contract.SURROGATES` with
the constants of its formula, computed here next to the formula.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SurrogateFunctionBase", "Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign",
    "SuperSpike", "Erf", "FastSigmoid", "heaviside",
]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """``(x >= 0)`` in ``x``'s dtype: 1 where a neuron fires, 0 elsewhere."""
    return (x >= 0).to(x)


class SurrogateSpike(torch.autograd.Function):
    """``surrogate.fire(x)`` forward, ``surrogate.grad_input(grad, x)`` backward: the spike function of
    both APIs' surrogate objects (SpikingJelly's fire at ``x >= 0``, snnTorch's at ``x > 0``)."""

    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return surrogate.fire(x)

    @staticmethod
    def backward(ctx, grad_spike):
        (x,) = ctx.saved_tensors
        return ctx.surrogate.grad_input(grad_spike, x), None


class SurrogateFunctionBase(nn.Module):
    """Base class: subclasses set :attr:`name` and implement :meth:`derivative`.

    ``alpha`` must be a finite positive number (it sets the width of the surrogate window). ``spiking`` is
    accepted for SpikingJelly compatibility; only ``True`` (the Heaviside forward) is supported.
    """

    name: str = ""
    fire = staticmethod(heaviside)

    def __init__(self, alpha: float, spiking: bool = True):
        super().__init__()
        if spiking is not True:
            raise ValueError(f"{type(self).__name__}: only spiking=True is supported (the Heaviside forward); "
                             f"got spiking={spiking!r}")
        self.spiking = True
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"{type(self).__name__}: alpha must be a number, got {type(alpha).__name__}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"{type(self).__name__}: alpha must be finite and > 0, got {alpha}")
        self.alpha = float(alpha)

    @property
    def spec(self) -> tuple[str, float]:
        """``(name, alpha)``: what identifies this surrogate to a fused kernel."""
        return self.name, self.alpha

    @property
    def kernel_spec(self) -> tuple[str, float, float, float]:
        """``(name, alpha, a, b)``: the kernels' formula and constants (table in :mod:`fastspike._contract`)."""
        a, b = self._kernel_constants()
        return self.name, self.alpha, a, b

    def _kernel_constants(self) -> tuple[float, float]:
        """``(a, b)`` of the kernels' formula; those that use alpha alone leave them at alpha."""
        return self.alpha, self.alpha

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative ``g'(x)``, elementwise, in ``x``'s dtype."""
        raise NotImplementedError

    def grad_input(self, grad_spike: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``dL/dx`` from ``dL/dspike``: ``grad_spike * g'(x)``, or, for a surrogate that SpikingJelly
        writes as a mask, that product filled with 0 where the mask holds (then an Inf or NaN ``grad_spike``
        there gives 0, as in SpikingJelly)."""
        return grad_spike * self.derivative(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SurrogateSpike.apply(x, self)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Sigmoid(SurrogateFunctionBase):
    name = "sigmoid"

    def __init__(self, alpha: float = 4.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def derivative(self, x):
        s = (x * self.alpha).sigmoid()
        return (1.0 - s) * s * self.alpha


class ATan(SurrogateFunctionBase):
    name = "atan"

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def _kernel_constants(self):
        return math.pi / 2 * self.alpha, self.alpha / 2

    def derivative(self, x):
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x).square())


class PiecewiseQuadratic(SurrogateFunctionBase):
    name = "piecewise_quadratic"

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def _kernel_constants(self):
        return self.alpha ** 2, 1 / self.alpha

    def derivative(self, x):
        x_abs = x.abs()
        return (-self.alpha ** 2 * x_abs + self.alpha).masked_fill(x_abs > 1 / self.alpha, 0)

    def grad_input(self, grad_spike, x):
        x_abs = x.abs()
        return (grad_spike * (-self.alpha ** 2 * x_abs + self.alpha)).masked_fill(x_abs > 1 / self.alpha, 0)


class PiecewiseExp(SurrogateFunctionBase):
    name = "piecewise_exp"

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def _kernel_constants(self):
        return -self.alpha, self.alpha / 2

    def derivative(self, x):
        return self.alpha / 2 * (-self.alpha * x.abs()).exp()


class SoftSign(SurrogateFunctionBase):
    name = "soft_sign"

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def _kernel_constants(self):
        return 1 / self.alpha, 2 * self.alpha

    def derivative(self, x):
        return 1 / (2 * self.alpha * (1 / self.alpha + x.abs()).square())


class SuperSpike(SurrogateFunctionBase):
    name = "super_spike"

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def derivative(self, x):
        return self.alpha / (x.abs() + 1.0).square()


class Erf(SurrogateFunctionBase):
    name = "erf"

    def __init__(self, alpha: float = 2.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    def _kernel_constants(self):
        return self.alpha, self.alpha / math.sqrt(math.pi)

    def derivative(self, x):
        return (-(x * self.alpha).square()).exp() * (self.alpha / math.sqrt(math.pi))


class FastSigmoid(SurrogateFunctionBase):
    """snnTorch's fast sigmoid; ``slope`` is stored as :attr:`alpha`."""

    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0, spiking: bool = True):
        super().__init__(slope, spiking)

    @property
    def slope(self) -> float:
        return self.alpha

    def derivative(self, x):
        return 1 / (self.alpha * x.abs() + 1.0).square()

    def extra_repr(self) -> str:
        return f"slope={self.alpha}"
