"""torch.compile(fullgraph=True) on every documented state pattern, bit for bit against eager.

The patterns are those README documents for a neuron's state: carried over calls, reset_net between them,
a batch size that changes (with and without dynamic=True), ``node.v`` assigned (truncated BPTT), train then
eval, and torch.autocast. Each runs for IF, LIF and PLIF on every fused backend on CPU: torch and native
here, Triton in a child process under its interpreter (TRITON_INTERPRET=1 must be set before the kernels
are defined, and must not leak into the other modules). Spikes, v and every gradient must equal eager's
bits. The Triton interpreter and Inductor's C++ code are slow on two cores, so the matrix compiles with
``aot_eager`` (Dynamo and AOTAutograd, the places where state handling can fail, with fake tensors); one
pattern per backend also goes through Inductor. The torch reference's gradients are held to 1e-6 of their
scale instead of bits (see _check).
"""
import os

import pytest
import torch
from torch import nn

from fastspike import functional, neuron, surrogate
from helpers import assert_bitwise_equal, assert_grad_close, run_under_triton_interpreter

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BACKENDS = ["triton"] if INTERPRET else ["torch", "native"]
MAKERS = {
    "if": lambda backend: neuron.IFNode(step_mode="m", backend=backend, surrogate_function=surrogate.ATan()),
    "lif": lambda backend: neuron.LIFNode(tau=3.0, step_mode="m", backend=backend,
                                          surrogate_function=surrogate.Sigmoid()),
    "plif": lambda backend: neuron.ParametricLIFNode(init_tau=2.5, v_reset=None, step_mode="m", backend=backend,
                                                     surrogate_function=surrogate.PiecewiseQuadratic()),
}


def _seq(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 1.5 + 0.6


def _loss(out, seed):
    g = torch.Generator().manual_seed(seed)
    return (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64)).sum()


def _leaves(net, xs):
    return [x.grad for x in xs] + [p.grad for p in net.parameters()]


def carried(net, run):
    # No reset between the calls: the second starts from the first's v, a tensor with a graph.
    xs = [_seq(3, 2, 5, seed=s).requires_grad_() for s in (1, 2)]
    outs = [run(x) for x in xs]
    node = net[-1]
    (sum(_loss(o, i) for i, o in enumerate(outs)) + node.v.sum()).backward()
    return outs + [node.v.detach()], _leaves(net, xs)


def _calls_with_reset(net, run, batch_sizes):
    values, grads = [], []
    for s, n in enumerate(batch_sizes):
        x = _seq(3, n, 5, seed=s).requires_grad_()
        out = run(x)
        _loss(out, s).backward()
        values += [out, net[-1].v.detach()]
        grads.append(x.grad)
        functional.reset_net(net)
    return values, grads + _leaves(net, [])


def reset_between(net, run):
    return _calls_with_reset(net, run, (2, 2))


def batch_change(net, run):
    return _calls_with_reset(net, run, (2, 3, 4))


def truncated_bptt(net, run):
    # One sequence in chunks; the state is detached between them, so each chunk backpropagates alone.
    values, grads = [], []
    x = _seq(6, 2, 5, seed=4)
    for i, chunk in enumerate(x.split(2)):
        chunk = chunk.clone().requires_grad_()
        out = run(chunk)
        _loss(out, i).backward()
        node = net[-1]
        node.v = node.v.detach()
        values += [out, node.v]
        grads.append(chunk.grad)
    return values, grads + _leaves(net, [])


def train_then_eval(net, run):
    x = _seq(3, 2, 5, seed=5).requires_grad_()
    out = run(x)
    _loss(out, 0).backward()
    grads = [x.grad] + _leaves(net, [])
    functional.reset_net(net)
    net.eval()
    with torch.no_grad():
        values = [out, run(_seq(3, 2, 5, seed=6)), net[-1].v]
    net.train()
    return values, grads


def autocast_bf16(net, run):
    # A Linear in front gives the neuron bf16 inputs under autocast; its state stays fp32.
    x = _seq(3, 2, 5, seed=7).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(x)
    assert out.dtype == torch.bfloat16 and net[-1].v.dtype == torch.float32
    _loss(out, 0).backward()
    return [out, net[-1].v.detach()], [x.grad] + _leaves(net, [])


PATTERNS = {f.__name__: f for f in (carried, reset_between, batch_change, truncated_bptt, train_then_eval,
                                    autocast_bf16)}


def _build(kind, backend, with_linear):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 5)] if with_linear else []
    return nn.Sequential(*layers, MAKERS[kind](backend))


def _check(kind, backend, pattern, compile_backend="aot_eager", dynamic=None):
    with_linear = pattern == "autocast_bf16"
    torch._dynamo.reset()
    eager_net = _build(kind, backend, with_linear)
    values, grads = PATTERNS[pattern](eager_net, eager_net)
    net = _build(kind, backend, with_linear)
    got_values, got_grads = PATTERNS[pattern](net, torch.compile(net, fullgraph=True, backend=compile_backend,
                                                                 dynamic=dynamic))
    what = f"{kind}/{backend}/{pattern}"
    assert len(got_values) == len(values) and len(got_grads) == len(grads)
    for i, (a, e) in enumerate(zip(got_values, values)):
        assert_bitwise_equal(a.detach(), e.detach(), f"{what} value {i}")
    for i, (a, e) in enumerate(zip(got_grads, grads)):
        assert (a is None) == (e is None), f"{what} gradient {i}: one side has none"
        if e is None:
            continue
        if backend == "torch":
            # The reference is plain torch ops, so AOTAutograd traces its backward and may sum a tensor's
            # gradient contributions in another order than eager's engine (one rounding); the fused
            # backends' ops are opaque to it and must match bit for bit.
            assert_grad_close(a, e, rtol=1e-6, what=f"{what} gradient {i}")
        else:
            assert_bitwise_equal(a, e, f"{what} gradient {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(MAKERS))
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_compiled_state_pattern_matches_eager_bitwise(pattern, kind, backend):
    _check(kind, backend, pattern)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_change_with_dynamic_shapes(backend):
    for kind in MAKERS:
        _check(kind, backend, "batch_change", dynamic=True)


@pytest.mark.skipif(INTERPRET, reason="Inductor does not compile Triton kernels for CPU tensors")
@pytest.mark.parametrize("backend", BACKENDS)
def test_inductor_with_carried_state(backend):
    # Inductor's own code for the loss could round differently from eager; the neurons' outputs and
    # gradients of x cannot (the loss weights are constants and the neuron ops are opaque to it).
    _check("lif", backend, "carried", compile_backend="inductor")


def test_triton_interpreter_matrix():
    run_under_triton_interpreter(__file__)
