"""The native backend (fastspike._C: C++/OpenMP CPU kernels, CUDA kernels) against the reference.

CPU tests run wherever the extension is built; CI sets FASTSPIKE_REQUIRE_NATIVE=1 so a failed build fails
the run instead of skipping. CUDA tests need a GPU.
"""
import os

import pytest
import torch

import fastspike
from fastspike import backends, functional, native, neuron, surrogate
from helpers import assert_bitwise_equal
from kernel_checks import (DTYPES, SHAPES, assert_matches_reference, case_id, grid, inputs, poisoned_empty,
                           run, skip_unless_available)

cpu_only = skip_unless_available("native", "cpu")
cuda_only = skip_unless_available("native", "cuda")
CASES = grid()


def test_native_is_built_when_required():
    if os.environ.get("FASTSPIKE_REQUIRE_NATIVE") != "1":
        pytest.skip("set FASTSPIKE_REQUIRE_NATIVE=1 to require the extension")
    assert native.unavailable_reason("cpu") is None


@cpu_only
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cpu_grid_fp32(case, shape):
    x, v_init, w = inputs(shape, torch.float32, "cpu", seed=len(shape))
    assert_matches_reference("native", case, x, v_init, w)


@cpu_only
@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
def test_cpu_dtypes(case, dtype):
    x, v_init, w = inputs((6, 2, 37), dtype, "cpu", seed=3, tensor_v_init=dtype != torch.float16)
    assert_matches_reference("native", case, x, v_init, w)


@cpu_only
@pytest.mark.parametrize("case", CASES[::4], ids=case_id)
def test_cpu_scalar_v_init_no_v_seq(case):
    x, _, w = inputs((5, 3, 11), torch.float32, "cpu", seed=5)
    assert_matches_reference("native", case, x, -0.2, w, store_v_seq=False)


@cpu_only
@pytest.mark.parametrize("case", CASES[1::5], ids=case_id)
def test_cpu_outputs_fully_written(case, monkeypatch):
    restore = poisoned_empty(monkeypatch)
    try:
        x, v_init, w = inputs((3, 2, 5, 7), torch.float32, "cpu", seed=7)
        assert torch.empty(4).isnan().all()
        assert_matches_reference("native", case, x, v_init, w)
    finally:
        restore()


@cpu_only
def test_channels_last_runs_without_copy():
    conv_out = torch.randn(4 * 2, 3, 5, 6).to(memory_format=torch.channels_last) + 0.5
    x = conv_out.view(4, 2, 3, 5, 6)
    spikes, v_last = functional.lif_multistep(x, backend="native")
    ref_spikes, ref_v = functional.lif_multistep(x, backend="torch")
    assert_bitwise_equal(spikes, ref_spikes, "spikes")
    assert_bitwise_equal(v_last, ref_v, "v_last")
    assert spikes.stride() == x.stride()  # outputs keep the input's layout: no copy was made


@cpu_only
def test_non_dense_and_time_inner_inputs():
    base = torch.randn(6, 4, 10) + 0.5
    for x in (base[:, :, ::2], base.transpose(0, 1)):
        x = x.detach().requires_grad_()
        case = ("lif", 0.0, True, False, surrogate.ATan())
        assert_matches_reference("native", case, x, 0.0, None, store_v_seq=True)


@cpu_only
def test_plif_grad_w_is_reproducible_across_thread_counts():
    # T = 32 makes every 2048-neuron chunk its own task, so 2 threads really split the work.
    x, v_init, w = inputs((32, 3, 1500), torch.float32, "cpu", seed=11)
    case = ("plif", 0.0, True, False, surrogate.ATan())
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            results.append(run("native", case, x, v_init, w)[1][2])
    finally:
        torch.set_num_threads(previous)
    assert results[0].item() == results[1].item() == results[2].item()


@cpu_only
def test_empty_input():
    x = torch.randn(3, 0, 4, requires_grad=True)
    w = torch.tensor(0.1, requires_grad=True)
    spikes, v_last = functional.plif_multistep(x, w, backend="native")
    assert spikes.shape == (3, 0, 4) and v_last.shape == (0, 4)
    (spikes.sum() + v_last.sum()).backward()
    assert x.grad.shape == (3, 0, 4) and w.grad.item() == 0.0


@cpu_only
@pytest.mark.parametrize("w_value", [-5.0, -120.0])
def test_plif_small_k_gradient(w_value):
    # grad_w recovers x - v from (h - v) / k; at k ~ 7e-3 that is still accurate, and a k that rounds to 0
    # gives 0 (the reference's value), not 0/0.
    x, v_init, _ = inputs((6, 2, 300), torch.float32, "cpu", seed=13)
    case = ("plif", 0.0, True, False, surrogate.ATan())
    w = torch.tensor(w_value)
    if w_value > -100:
        assert_matches_reference("native", case, x, v_init, w)
    else:
        grad_w = run("native", case, x, v_init, w)[1][2]
        assert grad_w.item() == run("torch", case, x, v_init, w)[1][2].item() == 0.0


def test_runs_on_compares_compute_capability_with_the_build():
    assert native.runs_on("80_90ptx", 8, 6) and native.runs_on("80_90ptx", 12, 0)
    assert not native.runs_on("80_90ptx", 7, 5) and not native.runs_on("80_90", 10, 0)
    assert native.runs_on("75_80", 7, 5)


@cpu_only
def test_fp64_stored_state_widens_fp32_input():
    x, _, _ = inputs((4, 2, 9), torch.float32, "cpu", seed=2)
    v64 = torch.rand(2, 9, dtype=torch.float64)
    case = ("lif", 0.0, False, False, surrogate.Sigmoid())
    assert_matches_reference("native", case, x, v64, None)
    spikes, v_last = functional.lif_multistep(x, v64, backend="native")
    assert spikes.dtype == torch.float32 and v_last.dtype == torch.float64


@cpu_only
def test_opcheck():
    x = torch.randn(3, 2, 5) + 0.5
    k = torch.tensor(0.4)
    for kind, v_init, kk in (("lif", None, None), ("plif", torch.rand(2, 5), k), ("if", torch.rand(2, 5), None)):
        for save_h in (False, True):
            args = (x.clone().requires_grad_(save_h), v_init, 0.1, kk, kind, 1.0, 0.0, 2.0, True, False, "atan", 2.0,
                    True, save_h)
            torch.library.opcheck(torch.ops.fastspike.neuron_forward.default, args)
        h = torch.randn(3, 2, 5)
        bargs = (torch.randn(3, 2, 5), torch.randn(2, 5), torch.randn(3, 2, 5), h, v_init, 0.1, kk, kind, 1.0,
                 None, 2.0, False, True, "sigmoid", 4.0)
        torch.library.opcheck(torch.ops.fastspike.neuron_backward.default, bargs)


@cpu_only
def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    net = torch.nn.Sequential(fastspike.layer.Linear(6, 8), neuron.LIFNode(step_mode="m", backend="native"),
                              fastspike.layer.Linear(8, 3), neuron.ParametricLIFNode(step_mode="m", backend="native"))
    fastspike.functional.set_step_mode(net, "m")
    x = torch.randn(4, 2, 6)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    functional.reset_net(net)
    net.zero_grad()
    ref = net(x)
    ref.sum().backward()
    assert_bitwise_equal(out, ref, "compiled output")
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-7)


@cpu_only
def test_double_backward_raises():
    x = torch.randn(3, 4, requires_grad=True)
    spikes, v = functional.lif_multistep(x, backend="native")
    with pytest.raises(RuntimeError, match="first-order"):
        torch.autograd.grad(v.sum(), x, create_graph=True)


def test_direct_op_call_checks_layout():
    if native.unavailable_reason("cpu") is not None:
        pytest.skip("extension not built")
    x = torch.randn(4, 3, 6)[:, :, ::2]
    with pytest.raises(RuntimeError, match="dense with the time dimension outermost"):
        torch.ops.fastspike.neuron_forward(x, None, 0.0, None, "lif", 1.0, 0.0, 2.0, True, False, "atan", 2.0,
                                           False, False)
    with pytest.raises(RuntimeError, match="unknown surrogate"):
        torch.ops.fastspike.neuron_forward(x.contiguous(), None, 0.0, None, "lif", 1.0, 0.0, 2.0, True, False,
                                           "relu", 2.0, False, False)


def test_stale_build_is_reported(monkeypatch):
    if native.unavailable_reason("cpu") is not None:
        pytest.skip("extension not built")
    monkeypatch.setattr(native, "_STATE", None)
    monkeypatch.setattr(native, "source_hash", lambda path: "0123456789abcdef")
    monkeypatch.setattr(native, "_register", lambda: None)  # already registered at import
    reason = native.unavailable_reason("cpu")
    assert reason is not None and "stale" in reason and "pip install" in reason
    backends._RESOLVED.clear()
    try:
        with pytest.raises(backends.BackendUnavailableError, match="stale"):
            functional.lif_multistep(torch.randn(2, 3), backend="native")
    finally:
        backends._RESOLVED.clear()


@cuda_only
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_grid(case, dtype):
    for shape in ((7, 3, 1001), (2, 4, 64, 9, 9)):
        x, v_init, w = inputs(shape, dtype, "cuda", seed=len(shape))
        assert_matches_reference("native", case, x, v_init, w)


@cuda_only
@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
def test_cuda_outputs_fully_written_and_channels_last(case, monkeypatch):
    restore = poisoned_empty(monkeypatch)
    try:
        x = (torch.randn(4 * 8, 16, 7, 9, device="cuda").to(memory_format=torch.channels_last) + 0.5)
        x = x.view(4, 8, 16, 7, 9)
        assert_matches_reference("native", case, x, 0.0, torch.tensor(-0.4, device="cuda"))
        assert_matches_reference("native", case, x[:, :, :, :, 1:], 0.0, torch.tensor(-0.4, device="cuda"))
    finally:
        restore()


@cuda_only
def test_cuda_graph_capture():
    x = torch.randn(4, 64, 100, device="cuda")
    static_x = x.clone()
    node = neuron.LIFNode(step_mode="m", backend="native")
    with torch.no_grad():
        node(static_x)
        node.reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = node(static_x)
        node.reset()
        static_x.copy_(x * 2)
        graph.replay()
        ref, _ = functional.lif_multistep(x * 2, backend="torch")
    assert_bitwise_equal(out, ref, "graph replay")


@cuda_only
def test_cuda_more_than_2_to_31_elements():
    if torch.cuda.get_device_properties(0).total_memory < 40e9:
        pytest.skip("needs about 20 GB")
    x = torch.full((2, 2 ** 30 + 8), 0.6, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        spikes, v = functional.lif_multistep(x, tau=1.5, backend="native")
    ref_last = functional.lif_multistep(x[:, -3:].float(), tau=1.5, backend="torch")
    assert_bitwise_equal(spikes[:, -3:].float(), ref_last[0], "tail spikes")
    assert_bitwise_equal(v[-3:], ref_last[1], "tail v")
