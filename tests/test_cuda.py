"""Checks of the fused ops that do not depend on how they are spelled: ``torch.library.opcheck`` of every
fastspike op call the public API makes (recorded as it happens, whatever the ops' names and argument lists
are), and torch.compile of the native backend. They run on CUDA for both fused backends (``-m cuda``); the
opcheck also runs on CPU for native, which keeps the recorder itself tested where there is no GPU.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastspike import functional, neuron, surrogate
from helpers import assert_bitwise_equal, gpu_test
from kernel_checks import skip_unless_available


class RecordFastspikeOps(TorchDispatchMode):
    """Records ``(op, args, kwargs)`` of every ``fastspike::`` op dispatched while active. Autograd runs the
    backward with the same dispatch modes, so the backward ops are recorded too."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastspike":
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def api_calls(backend, device):
    """The fastspike op calls of inference and training forwards (IF, LIF, PLIF; scalar and tensor initial
    state, v_seq stored or not, hard and soft reset) and their backward passes."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 3, 37, generator=g) * 1.5 + 0.5).to(device)
    v0 = (torch.rand(3, 37, generator=g) * 0.5).to(device)
    w = torch.tensor(-0.4, device=device)
    with RecordFastspikeOps() as recorder:
        with torch.no_grad():
            functional.lif_multistep(x, backend=backend)
        xg, v0g, wg = (t.clone().requires_grad_() for t in (x, v0, w))
        outputs = [functional.lif_multistep(xg, v0g, tau=3.0, backend=backend, store_v_seq=True),
                   functional.if_multistep(xg, 0.1, v_reset=None, detach_reset=True, backend=backend,
                                           surrogate_function=surrogate.Sigmoid()),
                   functional.plif_multistep(xg, wg, v0g, decay_input=False, backend=backend)]
        loss = sum(o.double().sum() * (i + 1) for i, out in enumerate(outputs) for o in out)
        loss.backward()
    return recorder.calls


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


no_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("backend,device", [
    pytest.param("native", "cpu", marks=skip_unless_available("native", "cpu")),
    pytest.param("native", "cuda", marks=[pytest.mark.cuda, no_gpu, skip_unless_available("native", "cuda")]),
    pytest.param("triton", "cuda", marks=[pytest.mark.cuda, no_gpu, skip_unless_available("triton", "cuda")]),
])
def test_opcheck_of_the_calls_the_api_makes(backend, device):
    calls = api_calls(backend, device)
    names = {op.name() for op, _, _ in calls}
    assert len(names) >= 2 and any("backward" in n for n in names), f"expected forward and backward ops: {names}"
    for op, args, kwargs in calls:
        if "backward" in op.name():
            # Autograd calls it with gradients off; inputs such as v_init still carry requires_grad, which
            # opcheck would take for a request to differentiate the (first-order only) backward.
            args, kwargs = [_detached(a) for a in args], {k: _detached(v) for k, v in kwargs.items()}
        torch.library.opcheck(op, args, kwargs)


@gpu_test(skip_unless_available("native", "cuda"))
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_compile_native_matches_eager_bitwise(mode):
    # reduce-overhead replays the compiled graph as a CUDA graph from its third call on.
    net = torch.nn.Sequential(neuron.LIFNode(step_mode="m", backend="native", tau=3.0),
                              neuron.ParametricLIFNode(step_mode="m", backend="native", v_reset=None)).cuda()
    x = torch.randn(6, 4, 3000, device="cuda") * 1.5 + 1.0
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, mode=mode)
    results = []
    for run_net in (compiled, compiled, compiled, net):
        functional.reset_net(net)
        net.zero_grad()
        xg = x.detach().clone().requires_grad_()
        out = run_net(xg)
        (out.double() * torch.linspace(-1, 1, out.numel(), device="cuda", dtype=torch.float64)
         .view(out.shape)).sum().backward()
        results.append((out.detach().clone(), [xg.grad] + [p.grad.clone() for p in net.parameters()]))
    (out, grads), (ref, ref_grads) = results[-2], results[-1]
    assert_bitwise_equal(out, ref, "compiled output")
    for g, e in zip(grads, ref_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
