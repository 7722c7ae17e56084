"""The reference backend against hand-derived results, and its low-precision contract."""
import math

import pytest
import torch

from fastspike import functional, surrogate
from helpers import assert_bitwise_equal, weights_like


def constant_input(c, T=12, n=3):
    return torch.full((T, n), c, dtype=torch.float32)


def spike_steps(spike_seq):
    """Time steps at which neuron 0 fired; all neurons see the same input, so all must agree."""
    assert (spike_seq == spike_seq[:, :1]).all()
    return spike_seq[:, 0].nonzero().flatten().tolist()


def test_if_hard_reset_constant_input():
    # 0.25 is exact in binary: v reaches exactly 1.0 = v_threshold every 4th step, and `>=` fires.
    s, v, v_seq = functional.if_multistep(constant_input(0.25), store_v_seq=True, backend="torch")
    assert spike_steps(s) == [3, 7, 11]
    expected_v = torch.tensor([0.25, 0.5, 0.75, 0.0] * 3)
    assert_bitwise_equal(v_seq[:, 1], expected_v, "v_seq")
    assert v.eq(0).all()


def test_if_soft_reset_counts_floor_of_integral():
    # Soft reset keeps the remainder: after t+1 steps the spike count is floor(c * (t + 1)).
    c = 0.375
    s, v = functional.if_multistep(constant_input(c, T=16), v_reset=None, backend="torch")
    counts = s[:, 0].cumsum(0)
    assert counts.tolist() == [math.floor(c * (t + 1)) for t in range(16)]
    assert v[0].item() == c * 16 - counts[-1].item()


@pytest.mark.parametrize("tau,c", [(2.0, 1.5), (4.0, 1.3), (3.0, 2.0)])
def test_lif_decay_input_first_spike_and_period(tau, c):
    # From v = 0 with hard reset to 0: v_n = c * (1 - (1 - 1/tau)^n); it fires at the first n with
    # v_n >= 1, and the reset to 0 repeats the same trajectory, so the period is that n.
    n = next(n for n in range(1, 100) if c * (1 - (1 - 1 / tau) ** n) >= 1)
    s, _ = functional.lif_multistep(constant_input(c, T=4 * n), tau=tau, backend="torch")
    assert spike_steps(s) == [n - 1 + k * n for k in range(4)]


def test_lif_no_decay_input_geometric_sum():
    # h = v (1 - 1/tau) + c: v_n = c (1 - a^n) / (1 - a), a = 0.5 for tau = 2 -> 0.6, 0.9, 1.05: fires at n = 3.
    s, _, v_seq = functional.lif_multistep(constant_input(0.6, T=6), tau=2.0, decay_input=False,
                                           store_v_seq=True, backend="torch")
    assert spike_steps(s) == [2, 5]
    torch.testing.assert_close(v_seq[:3, 0], torch.tensor([0.6, 0.9, 0.0]))


def test_plif_with_w_for_tau_4_follows_the_lif_closed_form():
    # sigmoid(-log 3) = 1/4: the same trajectory as LIF with tau = 4 (first spike at n = 6, see above).
    w = torch.tensor(-math.log(4.0 - 1.0))
    s, _ = functional.plif_multistep(constant_input(1.3, T=24), w, backend="torch")
    assert spike_steps(s) == [5, 11, 17, 23]


def test_two_step_gradient_by_hand():
    # IF, soft reset, detach_reset: h1 = x1, h2 = x1 - s1 + x2, so
    # d(s1 + s2)/dx1 = g'(h1 - 1) + g'(h2 - 1) and d(s1 + s2)/dx2 = g'(h2 - 1).
    sg = surrogate.ATan()
    x = torch.tensor([[1.3, 0.4], [0.2, 0.5]], requires_grad=True)
    s, _ = functional.if_multistep(x, v_reset=None, surrogate_function=sg, detach_reset=True, backend="torch")
    s.sum().backward()
    h1 = x.detach()[0]
    h2 = h1 - (h1 >= 1).float() + x.detach()[1]
    d = sg.derivative
    expected = torch.stack([d(h1 - 1) + d(h2 - 1), d(h2 - 1)])
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=0)


def test_hard_reset_gradient_through_reset_by_hand():
    # One LIF step (tau 2, decay_input, v_reset 0, not detached), loss = v_1:
    # v_1 = (1 - s) h, dv/dh = (1 - s) - h g'(h - 1), dh/dx = 1/2.
    sg = surrogate.Sigmoid()
    x = torch.tensor([[2.5, 1.0, 0.4]], requires_grad=True)
    _, v = functional.lif_multistep(x, tau=2.0, surrogate_function=sg, backend="torch")
    v.sum().backward()
    h = x.detach()[0] / 2
    expected = ((1 - (h >= 1).float()) - h * sg.derivative(h - 1)) / 2
    torch.testing.assert_close(x.grad[0], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op,kwargs", [("if", {"v_reset": None}), ("lif", {"tau": 3.0}),
                                       ("plif", {"decay_input": False})])
def test_low_precision_runs_the_fp32_computation(dtype, op, kwargs):
    """fp16/bf16 inputs: fp32 state and arithmetic, spikes in the input dtype. So spikes and v equal the
    fp32 run on the upcast input exactly, and grad x is the fp32 gradient rounded once to the input dtype."""
    x_low = (torch.randn(6, 5, 7) * 1.5 + 0.5).to(dtype)
    w = torch.tensor(0.3)
    results = {}
    for name, x in (("low", x_low.clone()), ("fp32", x_low.float())):
        x.requires_grad_()
        w_ = w.clone().requires_grad_()
        fn = getattr(functional, f"{op}_multistep")
        s, v, v_seq = fn(x, w_, store_v_seq=True, backend="torch", **kwargs) if op == "plif" else \
            fn(x, store_v_seq=True, backend="torch", **kwargs)
        # Loss weights representable in the low dtype, so both runs receive the same upstream gradient.
        weights = weights_like(s, 1).to(dtype).float()
        (s.float() * weights).sum().add((v * weights[0]).sum()).backward()
        results[name] = (s, v, v_seq, x.grad, w_.grad)
    (s_l, v_l, vs_l, gx_l, gw_l), (s_f, v_f, vs_f, gx_f, gw_f) = results["low"], results["fp32"]
    assert s_l.dtype == dtype and v_l.dtype == torch.float32 and vs_l.dtype == torch.float32
    assert_bitwise_equal(s_l, s_f.to(dtype), "spikes")
    assert_bitwise_equal(v_l, v_f, "v")
    assert_bitwise_equal(vs_l, vs_f, "v_seq")
    assert gx_l.dtype == dtype
    assert_bitwise_equal(gx_l, gx_f.to(dtype), "grad x")
    if op == "plif":
        assert_bitwise_equal(gw_l, gw_f, "grad w")


def test_no_grad_forward_keeps_nothing_for_backward():
    x = torch.randn(4, 3, requires_grad=True)
    with torch.no_grad():
        s, v = functional.lif_multistep(x, backend="torch")
    assert s.grad_fn is None and v.grad_fn is None
    s, v = functional.lif_multistep(x, backend="torch")
    assert s.grad_fn is not None and v.grad_fn is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_threshold_is_inclusive_to_the_last_ulp(dtype):
    # s = (h - v_threshold >= 0): exactly at the threshold fires, one ulp below does not.
    one = torch.tensor(1.0, dtype=dtype)
    below, above = torch.nextafter(one, torch.tensor(0.0, dtype=dtype)), torch.nextafter(one, 2 * one)
    x = torch.stack([one, below, above]).reshape(1, 3)
    s, v = functional.if_multistep(x, backend="torch")
    assert s.tolist() == [[1.0, 0.0, 1.0]]
    assert v.tolist() == [0.0, below.item(), 0.0]
