"""Surrogate functions: Heaviside forward, and each derivative checked against autograd of the smooth
primitive it is the derivative of (an oracle independent of the hand-written formulas)."""
import math

import pytest
import torch

from fastspike import surrogate

PRIMITIVES = [
    (surrogate.Sigmoid(), lambda x, a: torch.sigmoid(a * x)),
    (surrogate.Sigmoid(alpha=1.5), lambda x, a: torch.sigmoid(a * x)),
    (surrogate.ATan(), lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi + 0.5),
    (surrogate.PiecewiseQuadratic(), lambda x, a: torch.where(
        x > 1 / a, torch.ones_like(x), torch.where(x < -1 / a, torch.zeros_like(x),
                                                   -a * a / 2 * x * x.abs() + a * x + 0.5))),
    (surrogate.PiecewiseQuadratic(alpha=2.0), lambda x, a: torch.where(
        x > 1 / a, torch.ones_like(x), torch.where(x < -1 / a, torch.zeros_like(x),
                                                   -a * a / 2 * x * x.abs() + a * x + 0.5))),
    (surrogate.PiecewiseExp(), lambda x, a: torch.where(x < 0, torch.exp(a * x) / 2, 1 - torch.exp(-a * x) / 2)),
    (surrogate.SoftSign(), lambda x, a: (torch.nn.functional.softsign(a * x) + 1) / 2),
    (surrogate.SuperSpike(), lambda x, a: a * x / (1 + x.abs())),
    (surrogate.Erf(), lambda x, a: torch.special.erfc(-a * x) / 2),
    (surrogate.FastSigmoid(), lambda x, a: x / (1 + a * x.abs())),
]


@pytest.mark.parametrize("sg,primitive", PRIMITIVES, ids=lambda v: repr(v) if isinstance(v, torch.nn.Module) else "")
def test_derivative_is_the_derivative_of_the_primitive(sg, primitive):
    # An offset keeps the grid off the kinks at 0 and +-1/alpha, where one-sided derivatives differ.
    x = (torch.linspace(-3, 3, 601, dtype=torch.float64) + 0.0037).requires_grad_()
    (grad,) = torch.autograd.grad(primitive(x, sg.alpha).sum(), x)
    torch.testing.assert_close(sg.derivative(x.detach()), grad, rtol=1e-10, atol=1e-12)
    assert grad.abs().max() > 0.05


@pytest.mark.parametrize("sg", [p[0] for p in PRIMITIVES], ids=repr)
def test_call_is_heaviside_with_surrogate_backward(sg):
    x = torch.tensor([-2.0, -1e-7, -0.0, 0.0, 1e-7, 3.0], requires_grad=True)
    y = sg(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    g = torch.arange(1.0, 7.0)
    y.backward(g)
    torch.testing.assert_close(x.grad, g * sg.derivative(x.detach()))


def test_defaults_and_spec():
    defaults = {surrogate.Sigmoid: 4.0, surrogate.ATan: 2.0, surrogate.PiecewiseQuadratic: 1.0,
                surrogate.PiecewiseExp: 1.0, surrogate.SoftSign: 2.0, surrogate.SuperSpike: 1.0,
                surrogate.Erf: 2.0, surrogate.FastSigmoid: 25.0}
    names = set()
    for cls, alpha in defaults.items():
        sg = cls()
        assert sg.alpha == alpha and sg.spec == (sg.name, alpha)
        names.add(sg.name)
    assert len(names) == len(defaults), "kernel names must be distinct"
    assert surrogate.FastSigmoid(slope=10).slope == 10.0


@pytest.mark.parametrize("alpha,error", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                         (float("inf"), ValueError), ("2", TypeError), (True, TypeError)])
def test_bad_alpha_is_rejected(alpha, error):
    with pytest.raises(error, match="alpha"):
        surrogate.ATan(alpha)


def test_spiking_keyword_is_accepted_only_as_true():
    assert surrogate.ATan(alpha=2.0, spiking=True).spiking
    with pytest.raises(ValueError, match="only spiking=True"):
        surrogate.Sigmoid(spiking=False)
