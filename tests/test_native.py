"""The native backend (fastspike._C: C++/OpenMP CPU kernels, CUDA kernels) against the reference.

CPU tests run wherever the extension is built; CI sets FASTSPIKE_REQUIRE_NATIVE=1 so a failed build fails
the run instead of skipping. CUDA tests need a GPU.
"""
import os

import pytest
import torch

from fastspike import backends, functional, native, surrogate
from kernel_checks import (DTYPES, CpuKernelChecks, CudaKernelChecks, assert_matches_reference, case_id,
                           grid, inputs, run, skip_unless_available)
from helpers import gpu_test

cpu_only = skip_unless_available("native", "cpu")
cuda_only = gpu_test(skip_unless_available("native", "cuda"))
CASES = grid()


def test_native_is_built_when_required():
    if os.environ.get("FASTSPIKE_REQUIRE_NATIVE") != "1":
        pytest.skip("set FASTSPIKE_REQUIRE_NATIVE=1 to require the extension")
    assert native.unavailable_reason("cpu") is None


@cpu_only
class TestNativeCPU(CpuKernelChecks):
    backend, forward_op, backward_op = "native", "neuron_forward", "neuron_backward"


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


def test_stale_build_is_reported(monkeypatch, fresh_backend_cache):
    if native.unavailable_reason("cpu") is not None:
        pytest.skip("extension not built")
    monkeypatch.setattr(native, "_STATE", None)
    monkeypatch.setattr(native, "source_hash", lambda path: "0123456789abcdef")
    monkeypatch.setattr(native, "_register", lambda: None)  # already registered at import
    reason = native.unavailable_reason("cpu")
    assert reason is not None and "stale" in reason and "pip install" in reason
    with pytest.raises(backends.BackendUnavailableError, match="stale"):
        functional.lif_multistep(torch.randn(2, 3), backend="native")


@cuda_only
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_grid(case, dtype):
    for shape in ((7, 3, 1001), (2, 4, 64, 9, 9)):
        x, v_init, w = inputs(shape, dtype, "cuda", seed=len(shape))
        assert_matches_reference("native", case, x, v_init, w)


@cuda_only
class TestNativeCUDA(CudaKernelChecks):
    backend = "native"
