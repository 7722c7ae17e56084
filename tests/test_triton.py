"""The Triton backend (fastspike.triton_kernels) against the reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors, which needs TRITON_INTERPRET=1 before
the kernels are defined. Other test modules expect backend='triton' to be unavailable on CPU, so the
variable must not leak into their process: test_interpreter_suite re-runs this module in a child process
with it set, and a run that already has it (that child, or `TRITON_INTERPRET=1 pytest tests/test_triton.py`)
runs the interpreter tests directly. CUDA tests need a GPU and run compiled, never interpreted.
"""
import os
import subprocess
import sys

import pytest
import torch

import fastspike
from fastspike import backends, functional, neuron, surrogate, triton_kernels
from fastspike._contract import NEURON_BACKWARD, NEURON_FORWARD
from helpers import assert_bitwise_equal, gpu_test, run_under_triton_interpreter
from kernel_checks import (DTYPES, CpuKernelChecks, CudaKernelChecks, assert_matches_reference, case_id,
                           forward_args, grid, inputs, run)
from leaky_checks import LeakyChecks

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CASES = grid()
interpreted = pytest.mark.skipif(
    not INTERPRET or triton_kernels.unavailable_reason("cpu") is not None,
    reason="interpreter tests run in test_interpreter_suite's child process (TRITON_INTERPRET=1)")
cuda_only = gpu_test(pytest.mark.skipif(
    INTERPRET or not torch.cuda.is_available() or triton_kernels.unavailable_reason("cuda") is not None,
    reason="needs a CUDA GPU, Triton, and no TRITON_INTERPRET"))


def test_interpreter_suite():
    run_under_triton_interpreter(__file__)


def test_cpu_without_interpreter_is_unavailable_with_a_remedy(fresh_backend_cache):
    if INTERPRET:
        pytest.skip("the interpreter is on in this process")
    reason = backends.unavailable_reason("triton", "cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason
    with pytest.raises(fastspike.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        functional.lif_multistep(torch.randn(2, 3), backend="triton")


def test_op_schemas_are_the_contract():
    if triton_kernels._load()[1] is not None:
        pytest.skip(triton_kernels._load()[1])
    for sig in (NEURON_FORWARD, NEURON_BACKWARD):
        schema = getattr(torch.ops.fastspike, f"triton_{sig.name}").default._schema
        assert str(schema) == f"fastspike::triton_{sig.name}{sig.schema}"


def test_importing_fastspike_does_not_import_triton():
    code = "import sys, fastspike; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@interpreted
class TestTritonInterpreted(CpuKernelChecks):
    backend, forward_op, backward_op = "triton", "triton_neuron_forward", "triton_neuron_backward"


@interpreted
class TestTritonLeakyInterpreted(LeakyChecks):
    # Small shapes: the interpreter runs a program per block of neurons in Python; the last one still
    # spans three programs of the 128-neuron blocks.
    backend, shapes = "triton", [(4, 3, 5), (3, 2, 2, 3), (2, 1, 1), (2, 2, 150)]


@interpreted
def test_interpreter_plif_grad_w_is_reproducible():
    x, v_init, w = inputs((4, 3, 1500), torch.float32, "cpu", seed=11)  # 36 programs of 128 neurons
    case = ("plif", 0.0, True, False, surrogate.ATan())
    results = [run("triton", case, x, v_init, w)[1][2].item() for _ in range(2)]
    assert results[0] == results[1]


@interpreted
def test_interpreter_float64_runs_on_the_reference():
    x, v_init, w = inputs((4, 2, 9), torch.float32, "cpu", seed=2)
    v64 = v_init.double()
    case = ("lif", 0.0, False, False, surrogate.Sigmoid())
    assert_matches_reference("triton", case, x, v64, None)
    spikes, v_last = functional.lif_multistep(x, v64, backend="triton")
    assert spikes.dtype == torch.float32 and v_last.dtype == torch.float64
    with pytest.raises(RuntimeError, match="float16, bfloat16 or float32 x_seq"):
        torch.ops.fastspike.triton_neuron_forward(*forward_args(x.double()))


def _cuda_inputs_match(case, shape, dtype):
    x, v_init, w = inputs(shape, dtype, "cuda", seed=len(shape))
    assert_matches_reference("triton", case, x, v_init, w)


@cuda_only
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_grid(case, dtype):
    # Narrow blocks with a ragged tail; wide blocks (N >= 2^18) with a ragged tail.
    for shape in ((7, 3, 1001), (2, 4, 64, 9, 9), (3, 2, 131101)):
        _cuda_inputs_match(case, shape, dtype)


@cuda_only
def test_cuda_plif_grad_w_is_reproducible():
    x, v_init, w = inputs((4, 64, 9000), torch.float32, "cuda", seed=11)
    case = ("plif", 0.0, True, False, surrogate.ATan())
    results = [run("triton", case, x, v_init, w)[1][2].item() for _ in range(3)]
    assert results[0] == results[1] == results[2]


@cuda_only
def test_cuda_new_T_does_not_recompile():
    from fastspike.triton_kernels import neuron as kernels

    def forward_backward(t):
        x = torch.randn(t, 4096, device="cuda", requires_grad=True)
        with torch.no_grad():
            functional.lif_multistep(x, backend="triton")
        functional.lif_multistep(x, backend="triton")[0].sum().backward()

    forward_backward(3)
    caches = [kernel.device_caches[torch.cuda.current_device()][0]
              for kernel in (kernels._neuron_fwd_kernel, kernels._neuron_bwd_kernel)]
    before = [len(cache) for cache in caches]
    for t in (1, 5, 17, 64):
        forward_backward(t)
    assert [len(cache) for cache in caches] == before


def _compiled_and_eager(net, x, mode):
    """Output and gradients of ``net`` compiled with fullgraph=True (a graph break fails), then eager."""
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, mode=mode)
    results = []
    for run_net in (compiled, compiled, compiled, net):  # reduce-overhead records a CUDA graph on a later call
        functional.reset_net(net)
        net.zero_grad()
        xg = x.detach().clone().requires_grad_()
        out = run_net(xg)
        (out.double() * torch.linspace(-1, 1, out.numel(), device=out.device, dtype=torch.float64)
         .view(out.shape)).sum().backward()
        results.append((out.detach().clone(), [xg.grad] + [p.grad.clone() for p in net.parameters()]))
    return results[-2], results[-1]


@cuda_only
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_compile_neurons_match_eager_bitwise(mode):
    net = torch.nn.Sequential(neuron.LIFNode(step_mode="m", backend="triton", tau=3.0),
                              neuron.ParametricLIFNode(step_mode="m", backend="triton", v_reset=None)).cuda()
    x = torch.randn(6, 4, 3000, device="cuda") * 1.5 + 1.0
    (out, grads), (ref, ref_grads) = _compiled_and_eager(net, x, mode)
    assert_bitwise_equal(out, ref, "compiled output")
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@cuda_only
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_compile_csnn_fullgraph(mode):
    # Inductor may compute conv/bn differently from eager, so only closeness is asserted here.
    net = torch.nn.Sequential(
        fastspike.layer.Conv2d(3, 8, 3, padding=1), fastspike.layer.BatchNorm2d(8),
        neuron.LIFNode(step_mode="m", backend="triton", tau=3.0), fastspike.layer.Flatten(),
        fastspike.layer.Linear(8 * 6 * 6, 5), neuron.ParametricLIFNode(step_mode="m", backend="triton")).cuda()
    functional.set_step_mode(net, "m")
    x = torch.randn(4, 2, 3, 6, 6, device="cuda")
    (out, grads), (ref, ref_grads) = _compiled_and_eager(net, x, mode)
    assert (out != ref).float().mean() < 0.01
    assert all(torch.isfinite(g).all() for g in grads)


@cuda_only
class TestTritonCUDA(CudaKernelChecks):
    backend = "triton"
