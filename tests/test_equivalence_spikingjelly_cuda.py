"""fastspike against SpikingJelly 0.0.0.0.14's torch backend (training mode) run on the GPU, for each of
fastspike's backends that runs there (the reference, native, Triton).

On CUDA torch divides by tau as a product with the fp32 reciprocal, and fastspike follows torch on each
device, so the bits to match are SpikingJelly's on the same GPU. The criteria are those of
test_equivalence_spikingjelly.py, whose pairs, inputs and runner these tests reuse: spikes and membrane
potentials bit-identical in fp32 and fp64, gradients within 1e-5 of their scale.

SpikingJelly's charge and reset are TorchScript functions, which TorchScript optimises after profiling
runs (on a GPU it may fuse them into one generated kernel). Each comparison is with SpikingJelly's steady
state, the one its users train with: a twin of the neuron runs twice on the same inputs first, which also
keeps the result independent of the order the tests run in.
"""
import pytest
import torch

import test_equivalence_spikingjelly as cpu_suite
from helpers import assert_bitwise_equal, assert_grad_close
from kernel_checks import skip_unless_available

DEVICE = "cuda"
# Odd sizes: more neurons than one GPU block or program with a ragged tail, and a 4-D layer.
SHAPES = [(5, 3, 1031), (3, 2, 3, 5)]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(params=[pytest.param(b, marks=skip_unless_available(b, DEVICE)) for b in ("torch", "native", "triton")])
def backend(request, monkeypatch):
    """The fastspike backend the pairs of test_equivalence_spikingjelly are built with."""
    monkeypatch.setattr(cpu_suite, "BACKEND", request.param)
    return request.param


def _pair(*args, **kwargs):
    sj, fs = cpu_suite.make_pair(*args, **kwargs)
    return sj.to(DEVICE), fs.to(DEVICE)


def _inputs(shape, seed, **kwargs):
    return [x.to(DEVICE) for x in cpu_suite.make_inputs(shape, seed, **kwargs)]


def _steady(make_sj, inputs, step_mode):
    """A fresh SpikingJelly neuron from ``make_sj`` once two twins have run on ``inputs``."""
    for _ in range(2):
        cpu_suite.run(make_sj(), inputs, step_mode)
    return make_sj()


def assert_same(fs_out, sj_out, what=""):
    (fs_s, fs_vs, fs_v, fs_gx, _), (sj_s, sj_vs, sj_v, sj_gx, _) = fs_out, sj_out
    assert any(s.sum() > 0 for s in sj_s), "inputs never made the neuron fire: the test would be vacuous"
    assert fs_s[0].device.type == DEVICE
    for i, (a, b) in enumerate(zip(fs_s, sj_s)):
        assert_bitwise_equal(a, b, f"{what} spikes of call {i}")
    assert len(fs_vs) == len(sj_vs)
    for i, (a, b) in enumerate(zip(fs_vs, sj_vs)):
        assert_bitwise_equal(a, b, f"{what} v_seq of call {i}")
    assert_bitwise_equal(fs_v, sj_v, f"{what} final v")
    for i, (a, b) in enumerate(zip(fs_gx, sj_gx)):
        assert_grad_close(a, b, what=f"{what} grad x of call {i}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind,extra,v_reset,detach", cpu_suite.CASES)
def test_matches_spikingjelly_on_gpu(backend, kind, extra, v_reset, detach, step_mode, shape):
    inputs = _inputs(shape, seed=cpu_suite.CASES.index((kind, extra, v_reset, detach)))
    fs = _pair(kind, extra, v_reset, detach, step_mode)[1]
    sj = _steady(lambda: _pair(kind, extra, v_reset, detach, step_mode)[0], inputs, step_mode)
    sj_out, fs_out = cpu_suite.run(sj, inputs, step_mode), cpu_suite.run(fs, inputs, step_mode)
    assert_same(fs_out, sj_out, backend)
    if kind == "plif":
        inputs64 = [x.double() for x in inputs]
        sj64 = _steady(lambda: _pair(kind, extra, v_reset, detach, step_mode)[0].double(), inputs64, step_mode)
        cpu_suite.assert_plif_w_grad(fs_out[4], sj_out[4], sj64, inputs, step_mode)


@pytest.mark.parametrize("kind,extra,v_reset,detach", cpu_suite.CASES[::3])
def test_inference_forward_matches_spikingjelly_training_on_gpu(backend, kind, extra, v_reset, detach):
    """The inference forward (no input requires grad: a kernel that writes spikes only) gives the bits of
    SpikingJelly's training forward."""
    inputs = _inputs(SHAPES[0], seed=7)
    fs = _pair(kind, extra, v_reset, detach, "m", store_v_seq=False)[1]
    sj = _steady(lambda: _pair(kind, extra, v_reset, detach, "m", store_v_seq=False)[0], inputs, "m")
    expected = cpu_suite.run(sj, inputs, "m")
    fs.eval()
    with torch.no_grad():
        got = [fs(x) for x in inputs]
    for a, b in zip(got, expected[0]):
        assert_bitwise_equal(a, b, f"{backend} no_grad spikes")
    assert_bitwise_equal(fs.v, expected[2], f"{backend} no_grad final v")


@pytest.mark.parametrize("kind,extra", [("if", {}), ("lif", {"tau": 3.0, "decay_input": False}),
                                        ("plif", {"init_tau": 1.5, "decay_input": True})])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_fp64_matches_spikingjelly_on_gpu(backend, kind, extra, v_reset):
    inputs = _inputs(SHAPES[1], seed=3, dtype=torch.float64)
    fs = _pair(kind, extra, v_reset, False, "m")[1].double()
    sj = _steady(lambda: _pair(kind, extra, v_reset, False, "m")[0].double(), inputs, "m")
    (sj_s, _, sj_v, sj_gx, sj_gw), (fs_s, _, fs_v, fs_gx, fs_gw) = (cpu_suite.run(sj, inputs, "m"),
                                                                    cpu_suite.run(fs, inputs, "m"))
    for a, b in zip(fs_s, sj_s):
        assert_bitwise_equal(a, b, "fp64 spikes")
    assert_bitwise_equal(fs_v, sj_v, "fp64 v")
    for a, b in zip(fs_gx, sj_gx):
        assert_grad_close(a, b, rtol=1e-12, what="fp64 grad x")
    if kind == "plif":
        torch.testing.assert_close(fs_gw, sj_gw, rtol=1e-10, atol=0)
