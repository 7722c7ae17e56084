"""fastspike against SpikingJelly 0.0.0.0.14's torch backend (training mode), for the reference backend and
the native kernels when they are built (every test runs once per backend).

Forward spikes and membrane potentials must be bit-identical in fp32 (and fp64); gradients of the inputs
within 1e-5 of their scale. Every case runs two calls so the carried-over state is covered too.
"""
import itertools
import sys

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from fastspike import backends, functional, neuron, surrogate
from helpers import assert_bitwise_equal, assert_grad_close, weights_like

SHAPES = [(5, 3, 7), (3, 2, 3, 5)]
BACKEND = "torch"


@pytest.fixture(autouse=True, params=[b for b in ("torch", "native") if backends.unavailable_reason(b, "cpu") is None])
def backend(request, monkeypatch):
    """The fastspike backend the neurons of this module are built with."""
    monkeypatch.setattr(sys.modules[__name__], "BACKEND", request.param)
    return request.param


def _cases():
    for v_reset, detach in itertools.product((0.0, -0.3, None), (False, True)):
        yield "if", {}, v_reset, detach
        for decay in (True, False):
            for tau in (2.0, 3.0):
                yield "lif", {"tau": tau, "decay_input": decay}, v_reset, detach
                yield "plif", {"init_tau": tau, "decay_input": decay}, v_reset, detach


CASES = list(_cases())
_CLASSES = {"if": ("IFNode", "IFNode"), "lif": ("LIFNode", "LIFNode"), "plif": ("ParametricLIFNode",) * 2}


def make_pair(kind, extra, v_reset, detach, step_mode, sj_sg=None, fs_sg=None, store_v_seq=None):
    """The same neuron built once with SpikingJelly and once with fastspike (not through the converter)."""
    store = step_mode == "m" if store_v_seq is None else store_v_seq
    # A threshold other than 1 whenever v_reset != 0, so both constants are exercised.
    common = dict(v_threshold=0.7 if v_reset == -0.3 else 1.0, v_reset=v_reset, detach_reset=detach,
                  step_mode=step_mode, store_v_seq=store)
    sj = getattr(sj_neuron, _CLASSES[kind][0])(surrogate_function=sj_sg or sj_surrogate.ATan(), **common, **extra)
    fs = getattr(neuron, _CLASSES[kind][1])(surrogate_function=fs_sg or surrogate.ATan(), backend=BACKEND,
                                             **common, **extra)
    return sj, fs


def make_inputs(shape, seed, calls=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # Mean 0.5, sd 1.5: most neurons fire at some steps and not at others.
    return [(torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype) for _ in range(calls)]


def run(node, inputs, step_mode):
    """Feed each sequence through ``node`` (carrying state), backprop a weighted loss, return everything."""
    xs = [x.clone().requires_grad_() for x in inputs]
    spikes, v_seqs = [], []
    for x in xs:
        if step_mode == "m":
            spikes.append(node(x))
            if node.store_v_seq:
                v_seqs.append(node.v_seq)
        else:
            spikes.append(torch.stack([node(x_t) for x_t in x]))
    loss = sum((s * weights_like(s, i)).sum() for i, s in enumerate(spikes))
    loss = loss + sum((v * weights_like(v, 10 + i)).sum() for i, v in enumerate(v_seqs))
    loss = loss + (node.v * weights_like(node.v, 99)).sum()
    loss.backward()
    w_grad = node.w.grad.clone() if hasattr(node, "w") else None
    return spikes, v_seqs, node.v.detach(), [x.grad for x in xs], w_grad


def assert_plif_w_grad(fs_grad, sj_grad, sj_node_fp64, inputs, step_mode):
    """PLIF's dL/dw sums many terms that cancel, so fp32 noise is large relative to the result: require
    ours to be at most 2x as far from the fp64 value as SpikingJelly's own fp32 result (+1e-5 relative)."""
    exact = run(sj_node_fp64, [x.double() for x in inputs], step_mode)[4]
    err, sj_err = (fs_grad.double() - exact).abs().item(), (sj_grad.double() - exact).abs().item()
    assert err <= 2 * sj_err + 1e-5 * exact.abs().item(), (fs_grad, sj_grad, exact)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind,extra,v_reset,detach", CASES)
def test_matches_spikingjelly(kind, extra, v_reset, detach, step_mode, shape):
    sj, fs = make_pair(kind, extra, v_reset, detach, step_mode)
    inputs = make_inputs(shape, seed=CASES.index((kind, extra, v_reset, detach)))
    sj_out, fs_out = run(sj, inputs, step_mode), run(fs, inputs, step_mode)
    (sj_s, sj_vs, sj_v, sj_gx, sj_gw), (fs_s, fs_vs, fs_v, fs_gx, fs_gw) = sj_out, fs_out
    assert any(s.sum() > 0 for s in sj_s), "inputs never made the neuron fire: the test would be vacuous"
    for i, (a, b) in enumerate(zip(fs_s, sj_s)):
        assert_bitwise_equal(a, b, f"spikes of call {i}")
    assert len(fs_vs) == len(sj_vs)
    for i, (a, b) in enumerate(zip(fs_vs, sj_vs)):
        assert_bitwise_equal(a, b, f"v_seq of call {i}")
    assert_bitwise_equal(fs_v, sj_v, "final v")
    for i, (a, b) in enumerate(zip(fs_gx, sj_gx)):
        assert_grad_close(a, b, what=f"grad x of call {i}")
    if kind == "plif":
        sj64 = make_pair(kind, extra, v_reset, detach, step_mode)[0].double()
        assert_plif_w_grad(fs_gw, sj_gw, sj64, inputs, step_mode)


@pytest.mark.parametrize("kind,extra,v_reset,detach", CASES[::3])
def test_eval_mode_and_no_grad_match_training(kind, extra, v_reset, detach):
    """fastspike's eval mode runs the training computation (SpikingJelly's eval path uses other
    expressions), and a no-grad forward gives the same bits as a forward that records a graph."""
    sj, fs = make_pair(kind, extra, v_reset, detach, "m")
    inputs = make_inputs(SHAPES[0], seed=7)
    expected = run(sj, inputs, "m")
    fs.eval()
    with torch.no_grad():
        got = [fs(x) for x in inputs]
    for a, b in zip(got, expected[0]):
        assert_bitwise_equal(a, b, "eval spikes")
    assert_bitwise_equal(fs.v, expected[2], "eval final v")


@pytest.mark.parametrize("kind,extra", [("if", {}), ("lif", {"tau": 3.0, "decay_input": False}),
                                        ("plif", {"init_tau": 1.5, "decay_input": True})])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_fp64_matches_spikingjelly(kind, extra, v_reset):
    sj, fs = make_pair(kind, extra, v_reset, False, "m")
    sj, fs = sj.double(), fs.double()
    inputs = make_inputs(SHAPES[1], seed=3, dtype=torch.float64)
    (sj_s, _, sj_v, sj_gx, sj_gw), (fs_s, _, fs_v, fs_gx, fs_gw) = run(sj, inputs, "m"), run(fs, inputs, "m")
    for a, b in zip(fs_s, sj_s):
        assert_bitwise_equal(a, b, "fp64 spikes")
    assert_bitwise_equal(fs_v, sj_v, "fp64 v")
    for a, b in zip(fs_gx, sj_gx):
        assert_grad_close(a, b, rtol=1e-12, what="fp64 grad x")
    if kind == "plif":
        torch.testing.assert_close(fs_gw, sj_gw, rtol=1e-10, atol=0)


SURROGATE_PAIRS = [
    (sj_surrogate.Sigmoid(), surrogate.Sigmoid()),
    (sj_surrogate.Sigmoid(alpha=2.5), surrogate.Sigmoid(alpha=2.5)),
    (sj_surrogate.ATan(alpha=3.0), surrogate.ATan(alpha=3.0)),
    (sj_surrogate.PiecewiseQuadratic(), surrogate.PiecewiseQuadratic()),
    (sj_surrogate.PiecewiseExp(), surrogate.PiecewiseExp()),
    (sj_surrogate.SoftSign(), surrogate.SoftSign()),
    (sj_surrogate.Erf(), surrogate.Erf()),
]


@pytest.mark.parametrize("sj_sg,fs_sg", SURROGATE_PAIRS, ids=lambda sg: repr(sg))
@pytest.mark.parametrize("kind", ["if", "lif"])
def test_surrogate_gradients_match_spikingjelly(sj_sg, fs_sg, kind):
    extra = {"tau": 2.0, "decay_input": True} if kind == "lif" else {}
    sj, fs = make_pair(kind, extra, 0.0, False, "m", sj_sg=sj_sg, fs_sg=fs_sg)
    inputs = make_inputs((6, 4, 9), seed=11)
    (sj_s, _, _, sj_gx, _), (fs_s, _, _, fs_gx, _) = run(sj, inputs, "m"), run(fs, inputs, "m")
    for a, b in zip(fs_s, sj_s):
        assert_bitwise_equal(a, b, "spikes")
    for a, b in zip(fs_gx, sj_gx):
        assert_grad_close(a, b, what=f"grad x with {fs_sg!r}")


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_nan_and_inf_propagate_like_spikingjelly(v_reset):
    sj, fs = make_pair("lif", {"tau": 2.0, "decay_input": True}, v_reset, False, "m")
    x = make_inputs((4, 2, 5), seed=5, calls=1)[0]
    x[0, 0, 0], x[1, 0, 1], x[0, 1, 2], x[2, 1, 3] = float("nan"), float("inf"), float("-inf"), float("inf")
    with torch.no_grad():
        expected, got = sj(x), fs(x)
    assert_bitwise_equal(got, expected, "spikes with NaN/Inf")
    assert_bitwise_equal(fs.v, sj.v, "v with NaN/Inf")
    assert torch.isnan(fs.v[0, 0]) and got[:, 0, 0].sum() == 0, "a NaN input must never fire and stick in v"


@pytest.mark.parametrize("kind,extra,v_reset,detach", CASES[1::4])
def test_initial_state_gradient_matches_spikingjelly(kind, extra, v_reset, detach):
    """An explicit initial membrane potential receives the same gradient (module state and functional op)."""
    sj, fs = make_pair(kind, extra, v_reset, detach, "m", store_v_seq=False)
    x = make_inputs(SHAPES[0], seed=21, calls=1)[0]
    v0 = torch.rand(SHAPES[0][1:], generator=torch.Generator().manual_seed(4))
    grads = []
    for node in (sj, fs):
        node.v = v0.clone().requires_grad_()
        v_init = node.v
        s = node(x)
        (s * weights_like(s, 0)).sum().add((node.v * weights_like(node.v, 1)).sum()).backward()
        grads.append(v_init.grad)
    assert_grad_close(grads[1], grads[0], what="grad v_init")
    if kind == "lif":
        v_init = v0.clone().requires_grad_()
        s, v = functional.lif_multistep(x, v_init, v_threshold=fs.v_threshold, v_reset=v_reset, detach_reset=detach,
                                        surrogate_function=surrogate.ATan(), backend=BACKEND, **extra)
        (s * weights_like(s, 0)).sum().add((v * weights_like(v, 1)).sum()).backward()
        assert_grad_close(v_init.grad, grads[0], what="functional grad v_init")


@pytest.mark.parametrize("kind,extra", [("if", {}), ("lif", {"tau": 1.7, "decay_input": False}),
                                        ("plif", {"init_tau": 10.0, "decay_input": False})])
@pytest.mark.parametrize("v_threshold,v_reset", [(0.5, 0.4), (-0.2, -1.0), (2.3, None)])
@pytest.mark.parametrize("layout", ["transposed", "channels_last"])
def test_more_constants_and_non_contiguous_inputs(kind, extra, v_threshold, v_reset, layout):
    common = dict(v_threshold=v_threshold, v_reset=v_reset, step_mode="m", store_v_seq=True)
    cls = _CLASSES[kind][0]
    sj = getattr(sj_neuron, cls)(surrogate_function=sj_surrogate.Sigmoid(), **common, **extra)
    fs = getattr(neuron, cls)(surrogate_function=surrogate.Sigmoid(), backend=BACKEND, **common, **extra)
    base = make_inputs((3, 2, 5, 4, 3), seed=8, dtype=torch.float32)
    if layout == "transposed":
        inputs = [x.transpose(1, 3) for x in base]
    else:
        inputs = [x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (3, 2)) for x in base]
    assert not inputs[0].is_contiguous()
    (sj_s, sj_vs, sj_v, sj_gx, _), (fs_s, fs_vs, fs_v, fs_gx, _) = run(sj, inputs, "m"), run(fs, inputs, "m")
    for a, b in zip(fs_s + fs_vs, sj_s + sj_vs):
        assert_bitwise_equal(a, b, "spikes / v_seq")
    assert_bitwise_equal(fs_v, sj_v, "final v")
    for a, b in zip(fs_gx, sj_gx):
        assert_grad_close(a, b, what="grad x")


@pytest.mark.parametrize("kind,extra,v_reset,detach", CASES[2::5])
def test_mixed_single_and_multi_step_calls(kind, extra, v_reset, detach):
    sj, fs = make_pair(kind, extra, v_reset, detach, "m", store_v_seq=True)
    x = make_inputs((4, 3, 5), seed=13, calls=1)[0]
    outputs = []
    for node in (sj, fs):
        node.step_mode = "s"
        first = torch.stack([node(x_t) for x_t in x[:2]])
        assert node.v_seq is None, "single-step calls do not store v_seq (as in SpikingJelly)"
        node.step_mode = "m"
        outputs.append((first, node(x[2:]), node.v_seq, node.v))
    for a, b in zip(outputs[1], outputs[0]):
        assert_bitwise_equal(a, b, "mixed-mode outputs")


def test_widened_state_widens_the_computation():
    """A fp64 state (module.double() mid-sequence) with fp32 input computes in fp64, as SpikingJelly does."""
    sj, fs = make_pair("lif", {"tau": 3.0, "decay_input": True}, 0.0, False, "m")
    x1, x2 = make_inputs((3, 2, 5), seed=2)
    for node in (sj, fs):
        node(x1)
        node.double()
    s_sj, s_fs = sj(x2), fs(x2)
    assert fs.v.dtype == torch.float64
    assert_bitwise_equal(fs.v, sj.v, "v")
    assert_bitwise_equal(s_fs, s_sj.float(), "spikes (in the input dtype)")


def _charge_quadratic(self, x):
    # A quadratic charge written the way a SpikingJelly user would, used by both libraries' subclasses.
    self.v = self.v + (x + 0.2 * self.v * self.v - self.v) / self.tau


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_custom_subclass_hooks_run_like_spikingjelly(step_mode):
    """A subclass overriding neuronal_charge must not be silently replaced by the fused op."""
    SJQuad = type("SJQuad", (sj_neuron.LIFNode,), {"neuronal_charge": _charge_quadratic})
    FSQuad = type("FSQuad", (neuron.LIFNode,), {"neuronal_charge": _charge_quadratic})

    def fire_half(self):
        return self.surrogate_function(self.v - 0.5 * self.v_threshold)

    SJBase = type("SJBase", (sj_neuron.BaseNode,), {"neuronal_charge": _charge_quadratic, "tau": 2.0,
                                                   "neuronal_fire": fire_half})
    FSBase = type("FSBase", (neuron.BaseNode,), {"neuronal_charge": _charge_quadratic, "tau": 2.0,
                                                "neuronal_fire": fire_half})
    assert FSQuad()._per_step() and FSBase()._per_step() and not neuron.LIFNode()._per_step()
    for sj_cls, fs_cls in ((SJQuad, FSQuad), (SJBase, FSBase)):
        common = dict(step_mode=step_mode, store_v_seq=step_mode == "m")
        sj = sj_cls(surrogate_function=sj_surrogate.ATan(), **common)
        fs = fs_cls(surrogate_function=surrogate.ATan(), **common)
        inputs = make_inputs((5, 3, 4), seed=17)
        sj_s, sj_vs, sj_v, sj_gx, _ = run(sj, inputs, step_mode)
        fs_s, fs_vs, fs_v, fs_gx, _ = run(fs, inputs, step_mode)
        for a, b in zip(fs_s + fs_vs, sj_s + sj_vs):
            assert_bitwise_equal(a, b, f"{fs_cls.__name__} spikes / v_seq")
        assert_bitwise_equal(fs_v, sj_v, f"{fs_cls.__name__} v")
        for a, b in zip(fs_gx, sj_gx):
            assert_grad_close(a, b, what=f"{fs_cls.__name__} grad x")
