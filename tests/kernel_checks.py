"""A fused backend against the reference backend: the checks test_native.py and test_triton.py share.

The oracle is ``backend='torch'`` (fastspike.reference), itself bit-identical to SpikingJelly. A backend
must give bit-identical spikes, v_last and v_seq (fp32, fp64; fp16/bf16 too, since they compute in fp32
like the reference), gradients of x_seq and v_init within 1e-5 of their scale (fp16/bf16 grad_x within one
rounding of the input dtype), and PLIF's grad_w within 1e-5 relative.
"""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from fastspike import functional, layer, neuron, surrogate
from fastspike._contract import NEURON_BACKWARD, NEURON_FORWARD, NeuronParams
from helpers import assert_bitwise_equal, assert_grad_close, weights_like

SURROGATES = [surrogate.Sigmoid(), surrogate.ATan(), surrogate.PiecewiseQuadratic(), surrogate.PiecewiseExp(),
              surrogate.SoftSign(), surrogate.SuperSpike(), surrogate.Erf(), surrogate.FastSigmoid()]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Odd sizes: a single neuron, N not a multiple of any vector width, and N over two CPU chunks (2048
# neurons each) plus a partial third.
SHAPES = [(5, 3, 7), (3, 2, 3, 5), (1, 1), (3, 4099)]


def grid():
    """(kind, v_reset, decay_input, detach_reset, surrogate): every reset/decay/detach combination of every
    kind, with the surrogates rotated through the cases so each appears with each kind."""
    cases = []
    for i, (kind, v_reset, decay, detach) in enumerate(itertools.product(
            ("if", "lif", "plif"), (0.0, -0.3, None), (True, False), (False, True))):
        if kind == "if" and not decay:
            continue
        cases.append((kind, v_reset, decay, detach, SURROGATES[i % len(SURROGATES)]))
    return cases


def case_id(case) -> str:
    kind, v_reset, decay, detach, sg = case
    return f"{kind}-vr{v_reset}-{'decay' if decay else 'nodecay'}-{'detach' if detach else 'attach'}-{sg.name}"


def call(backend, case, x, v0, w0, store_v_seq=True):
    """The functional op of ``case`` on these inputs: (spike_seq, v_last[, v_seq])."""
    kind, v_reset, decay, detach, sg = case
    common = dict(v_threshold=0.7 if v_reset == -0.3 else 1.0, v_reset=v_reset, surrogate_function=sg,
                  detach_reset=detach, backend=backend, store_v_seq=store_v_seq)
    if kind == "if":
        return functional.if_multistep(x, v0, **common)
    if kind == "lif":
        return functional.lif_multistep(x, v0, tau=3.0, decay_input=decay, **common)
    return functional.plif_multistep(x, w0, v0, decay_input=decay, **common)


def run(backend, case, x_seq, v_init, w, store_v_seq=True):
    """Forward then backward of a weighted loss on every output; returns outputs and gradients."""
    x = x_seq.detach().clone().requires_grad_()
    v0 = v_init.detach().clone().requires_grad_() if isinstance(v_init, torch.Tensor) else v_init
    w0 = w.detach().clone().requires_grad_() if w is not None else None
    out = call(backend, case, x, v0, w0, store_v_seq)
    loss = sum((o.double() * weights_like(o, seed)).sum() for seed, o in enumerate(out))
    loss.backward()
    grads = (x.grad, v0.grad if isinstance(v0, torch.Tensor) else None, w0.grad if w0 is not None else None)
    return tuple(o.detach() for o in out), grads


def inputs(shape, dtype, device, seed=0, tensor_v_init=True):
    g = torch.Generator().manual_seed(seed)
    # Mean 0.5, sd 1.5: most neurons fire at some steps and not at others.
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype).to(device)
    state = torch.float64 if dtype == torch.float64 else torch.float32
    v_init = (torch.rand(shape[1:], generator=g, dtype=torch.float64) * 0.8).to(state).to(device) \
        if tensor_v_init else 0.25
    w = torch.tensor(-0.4, device=device)
    return x, v_init, w


def assert_matches_reference(backend, case, x_seq, v_init, w, store_v_seq=True):
    """The checks of the module docstring for one case."""
    outs, grads = run(backend, case, x_seq, v_init, w, store_v_seq)
    ref_outs, ref_grads = run("torch", case, x_seq, v_init, w, store_v_seq)
    for name, a, e in zip(("spike_seq", "v_last", "v_seq"), outs, ref_outs):
        assert_bitwise_equal(a, e, f"{backend} {name}")
    low = x_seq.dtype in (torch.float16, torch.bfloat16)
    # One rounding of the input dtype: the reference rounds the same fp32 gradient once, the kernel too,
    # but their fp32 values may differ in the last bits, which can move a rounding boundary.
    rtol_x = torch.finfo(x_seq.dtype).eps if low else 1e-5
    assert_grad_close(grads[0], ref_grads[0], rtol_x, f"{backend} grad x_seq")
    if isinstance(v_init, torch.Tensor):
        assert_grad_close(grads[1], ref_grads[1], 1e-5, f"{backend} grad v_init")
    if case[0] == "plif":
        # grad_w sums terms that cancel, so the fp32 reference itself is off by more than 1e-5 relative at
        # times: judge both against the fp64 reference, allowing the kernel twice the reference's error.
        v64 = v_init.double() if isinstance(v_init, torch.Tensor) else v_init
        exact = run("torch", case, x_seq.double(), v64, w.double(), store_v_seq)[1][2].item()
        err, ref_err = abs(grads[2].item() - exact), abs(ref_grads[2].item() - exact)
        assert err <= max(2 * ref_err, 1e-5 * abs(exact), 1e-7), \
            f"{backend} grad w {grads[2].item()} vs fp64 {exact} (fp32 reference {ref_grads[2].item()})"


def poisoned_empty(monkeypatch):
    """Make every uninitialised allocation NaN (Python and C++ alike), so an output element a kernel
    forgets to write shows up as a mismatch against the reference."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    return lambda: torch.use_deterministic_algorithms(previous)


def neuron_params(**changes) -> NeuronParams:
    """A LIF record (tau 2, hard reset to 0, ATan) with ``changes``; the surrogate's constants follow its name."""
    sg = {"atan": surrogate.ATan(), "sigmoid": surrogate.Sigmoid()}.get(changes.get("surrogate", "atan"))
    name, alpha, a, b = sg.kernel_spec if sg is not None else (changes["surrogate"], 1.0, 1.0, 1.0)
    base = NeuronParams(kind="lif", v_threshold=1.0, v_reset=0.0, tau=2.0, decay_input=True, detach_reset=False,
                        surrogate=name, sg_alpha=alpha, sg_a=a, sg_b=b)
    return dataclasses.replace(base, **changes)


def forward_args(x_seq, v_init=None, k=None, v_init_value=0.0, store_v_seq=False, save_h=False, **params):
    """The arguments of a neuron forward op call, by name."""
    return NEURON_FORWARD.pack(neuron_params(**params), x_seq=x_seq, v_init=v_init, k=k, v_init_value=v_init_value,
                               store_v_seq=store_v_seq, save_h=save_h)


def backward_args(grad_spike_seq, grad_v_last, grad_v_seq, h_seq, v_init=None, k=None, v_init_value=0.0, x_seq=None,
                  need_grad_k=False, **params):
    """The arguments of a neuron backward op call, by name."""
    return NEURON_BACKWARD.pack(neuron_params(**params), grad_spike_seq=grad_spike_seq, grad_v_last=grad_v_last,
                                grad_v_seq=grad_v_seq, h_seq=h_seq, x_seq=x_seq, v_init=v_init, k=k,
                                v_init_value=v_init_value, need_grad_k=need_grad_k)


def skip_unless_available(backend, device_type):
    from fastspike import backends
    reason = backends.unavailable_reason(backend, device_type)
    return pytest.mark.skipif(reason is not None, reason=f"{backend} on {device_type}: {reason}")


class CpuKernelChecks:
    """The checks every fused backend passes on CPU tensors. A test module subclasses this as ``Test...``
    with ``backend`` set, the ops' names and a skip mark for when the backend cannot run."""

    backend = ""
    forward_op = ""
    backward_op = ""

    @pytest.mark.parametrize("case", grid(), ids=case_id)
    @pytest.mark.parametrize("shape", SHAPES, ids=str)
    def test_grid_fp32(self, case, shape):
        x, v_init, w = inputs(shape, torch.float32, "cpu", seed=len(shape))
        assert_matches_reference(self.backend, case, x, v_init, w)

    @pytest.mark.parametrize("case", grid()[::3], ids=case_id)
    @pytest.mark.parametrize("dtype", DTYPES[1:], ids=str)
    def test_dtypes(self, case, dtype):
        x, v_init, w = inputs((6, 2, 37), dtype, "cpu", seed=3, tensor_v_init=dtype != torch.float16)
        assert_matches_reference(self.backend, case, x, v_init, w)

    @pytest.mark.parametrize("case", grid()[::2], ids=case_id)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_without_v_seq(self, case, dtype):
        # Without v_seq (the common case) the CPU kernels run several steps per pass: T = 11 is two passes
        # of four and a tail of three.
        x, v_init, w = inputs((11, 2, 37), dtype, "cpu", seed=9)
        assert_matches_reference(self.backend, case, x, v_init, w, store_v_seq=False)

    @pytest.mark.parametrize("case", grid()[::5], ids=case_id)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
    def test_without_v_seq_over_chunks(self, case, dtype):
        # Several CPU chunks (N = 4099), two passes of four steps and a tail; then the inference forward,
        # which saves nothing for backward.
        x, v_init, w = inputs((9, 4099), dtype, "cpu", seed=10)
        assert_matches_reference(self.backend, case, x, v_init, w, store_v_seq=False)
        with torch.no_grad():
            outs, refs = (call(b, case, x, v_init, w, store_v_seq=False) for b in (self.backend, "torch"))
        for name, a, e in zip(("spike_seq", "v_last"), outs, refs):
            assert_bitwise_equal(a, e, f"{self.backend} no_grad {name}")

    @pytest.mark.parametrize("case", grid()[::4], ids=case_id)
    def test_scalar_v_init_no_v_seq(self, case):
        x, _, w = inputs((5, 3, 11), torch.float32, "cpu", seed=5)
        assert_matches_reference(self.backend, case, x, -0.2, w, store_v_seq=False)

    @pytest.mark.parametrize("case", grid()[1::5], ids=case_id)
    def test_outputs_fully_written(self, case, monkeypatch):
        restore = poisoned_empty(monkeypatch)
        try:
            x, v_init, w = inputs((3, 2, 5, 7), torch.float32, "cpu", seed=7)
            assert torch.empty(4).isnan().all()
            assert_matches_reference(self.backend, case, x, v_init, w)
        finally:
            restore()

    def test_empty_input(self):
        x = torch.randn(3, 0, 4, requires_grad=True)
        w = torch.tensor(0.1, requires_grad=True)
        spikes, v_last = functional.plif_multistep(x, w, backend=self.backend)
        assert spikes.shape == (3, 0, 4) and v_last.shape == (0, 4)
        (spikes.sum() + v_last.sum()).backward()
        assert x.grad.shape == (3, 0, 4) and w.grad.item() == 0.0

    @pytest.mark.parametrize("w_value", [-5.0, -120.0])
    def test_plif_small_k_gradient(self, w_value):
        # grad_w reads the saved x, so a small k (~7e-3) costs no accuracy, and a k that rounds to 0 gives 0
        # (the reference's value: grad_k k (1 - k)).
        x, v_init, _ = inputs((6, 2, 300), torch.float32, "cpu", seed=13)
        case = ("plif", 0.0, True, False, surrogate.ATan())
        w = torch.tensor(w_value)
        if w_value > -100:
            assert_matches_reference(self.backend, case, x, v_init, w)
        else:
            grad_w = run(self.backend, case, x, v_init, w)[1][2]
            assert grad_w.item() == run("torch", case, x, v_init, w)[1][2].item() == 0.0

    @pytest.mark.parametrize("w_dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_plif_low_precision_w(self, w_dtype):
        # k = sigmoid(w) and 1 - k are rounded to w's dtype as in the reference, so outputs are identical;
        # autograd hands dL/dk over in w's dtype before sigmoid's backward, which rounds again: grad_w may
        # be two roundings of w's dtype away from the reference's single one.
        x, v_init, _ = inputs((5, 2, 33), torch.float32, "cpu", seed=17)
        for case in (("plif", 0.0, False, False, surrogate.ATan()), ("plif", -0.3, True, False, surrogate.Erf())):
            w = torch.tensor(-0.4, dtype=w_dtype)
            outs, grads = run(self.backend, case, x, v_init, w)
            ref_outs, ref_grads = run("torch", case, x, v_init, w)
            for name, a, e in zip(("spike_seq", "v_last", "v_seq"), outs, ref_outs):
                assert_bitwise_equal(a, e, f"{self.backend} {name}")
            assert_grad_close(grads[0], ref_grads[0], 1e-5, f"{self.backend} grad x_seq")
            assert grads[2].dtype == w_dtype
            torch.testing.assert_close(grads[2], ref_grads[2], rtol=2 * torch.finfo(w_dtype).eps, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_16bit_loads_and_stores_round_as_torch(self, dtype):
        # Every 16-bit pattern as input, over four steps (one pass of the CPU's multi-step loop); any input
        # not widened exactly changes v.
        x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).reshape(4, -1)
        outs = functional.if_multistep(x, 0.0, v_reset=None, store_v_seq=True, backend=self.backend)
        refs = functional.if_multistep(x, 0.0, v_reset=None, store_v_seq=True, backend="torch")
        for name, a, e in zip(("spike_seq", "v_last", "v_seq"), outs, refs):
            assert_bitwise_equal(a, e, f"{self.backend} {name}")
        # With a detached soft reset and no spike gradient, grad_x is grad_v_last rounded to the input dtype:
        # fp32 bits of every exponent, and exact halfway cases of that dtype's rounding.
        g = torch.Generator().manual_seed(5)
        bits = torch.randint(-2 ** 31, 2 ** 31, (3, 12000), generator=g, dtype=torch.int64).to(torch.int32)
        half = 0x1000 if dtype == torch.float16 else 0x8000
        bits[1] = (bits[1] & -2 * half) | half
        # fp16's subnormal range and the normals just above it: exponents 2^-27 .. 2^-12.
        bits[2] = (bits[2] & -0x7F800001) | (torch.randint(100, 116, (12000,), generator=g, dtype=torch.int32) << 23)
        grad = bits.view(torch.float32).reshape(-1)
        x = torch.zeros((4, grad.numel()), dtype=dtype, requires_grad=True)
        _, v_last = functional.if_multistep(x, 0.0, v_reset=None, detach_reset=True, backend=self.backend)
        v_last.backward(grad)
        # Compared bit for bit, except NaN payloads (torch's tensor conversion and c10's scalar one differ)
        # and the sign of zeros (0 * surrogate + -0 is +0).
        expected = grad.to(dtype).expand(4, -1)
        nan, zero = expected.isnan(), expected == 0
        assert torch.equal(x.grad.isnan(), nan) and (x.grad[zero] == 0).all()
        exact = ~nan & ~zero
        assert torch.equal(x.grad[exact].view(torch.int16), expected[exact].view(torch.int16)), \
            f"{self.backend} grad x_seq: {(x.grad[exact] != expected[exact]).sum().item()} values rounded otherwise"

    def test_channels_last_runs_without_copy(self):
        conv_out = torch.randn(4 * 2, 3, 5, 6).to(memory_format=torch.channels_last) + 0.5
        x = conv_out.view(4, 2, 3, 5, 6)
        spikes, v_last = functional.lif_multistep(x, tau=3.0, backend=self.backend)
        ref_spikes, ref_v = functional.lif_multistep(x, tau=3.0, backend="torch")
        assert_bitwise_equal(spikes, ref_spikes, "spikes")
        assert_bitwise_equal(v_last, ref_v, "v_last")
        assert spikes.stride() == x.stride()  # outputs keep the input's layout: no copy was made
        case = ("plif", None, True, False, surrogate.Sigmoid())
        assert_matches_reference(self.backend, case, x, 0.0, torch.tensor(-0.4))

    def test_non_dense_and_time_inner_inputs(self):
        base = torch.randn(6, 4, 10) + 0.5
        for x in (base[:, :, ::2], base.transpose(0, 1)):
            case = ("lif", 0.0, True, False, surrogate.ATan())
            assert_matches_reference(self.backend, case, x, 0.0, None, store_v_seq=True)

    def test_compile_fullgraph_matches_eager(self):
        torch._dynamo.reset()
        net = torch.nn.Sequential(layer.Linear(6, 8), neuron.LIFNode(step_mode="m", backend=self.backend),
                                  layer.Linear(8, 3), neuron.ParametricLIFNode(step_mode="m", backend=self.backend))
        functional.set_step_mode(net, "m")
        x = torch.randn(4, 2, 6)
        out = torch.compile(net, fullgraph=True, backend="aot_eager")(x)
        out.sum().backward()
        grads = [p.grad.clone() for p in net.parameters()]
        functional.reset_net(net)
        net.zero_grad()
        ref = net(x)
        ref.sum().backward()
        assert_bitwise_equal(out, ref, "compiled output")
        for g, p in zip(grads, net.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-7)

    def test_double_backward_raises(self):
        x = torch.randn(3, 4, requires_grad=True)
        spikes, v = functional.lif_multistep(x, backend=self.backend)
        with pytest.raises(RuntimeError, match="first-order"):
            torch.autograd.grad(v.sum(), x, create_graph=True)

    def test_opcheck(self):
        forward = getattr(torch.ops.fastspike, self.forward_op).default
        backward = getattr(torch.ops.fastspike, self.backward_op).default
        x = torch.randn(3, 2, 5) + 0.5
        k = torch.tensor(0.4)
        for kind, v_init, kk in (("lif", None, None), ("plif", torch.rand(2, 5), k), ("if", torch.rand(2, 5), None)):
            for save_h in (False, True):
                torch.library.opcheck(forward, forward_args(x.clone().requires_grad_(save_h), v_init, kk, 0.1,
                                                            store_v_seq=True, save_h=save_h, kind=kind))
            for grad_v_last, decay in ((torch.randn(2, 5), False), (None, True)):
                torch.library.opcheck(backward, backward_args(
                    torch.randn(3, 2, 5), grad_v_last, torch.randn(3, 2, 5), torch.randn(3, 2, 5), v_init, kk, 0.1,
                    x_seq=x, need_grad_k=kk is not None, kind=kind, v_reset=None, decay_input=decay,
                    detach_reset=True, surrogate="sigmoid"))

    def test_direct_op_call_checks_inputs(self):
        op = getattr(torch.ops.fastspike, self.forward_op).default
        x = torch.randn(4, 3, 6)
        with pytest.raises(RuntimeError, match="dense with the time dimension outermost"):
            op(*forward_args(x[:, :, ::2]))
        with pytest.raises(RuntimeError, match="unknown surrogate"):
            op(*forward_args(x, surrogate="relu"))
        with pytest.raises(RuntimeError, match="unknown neuron kind"):
            op(*forward_args(x, kind="alif"))
        with pytest.raises(RuntimeError, match="PLIF needs k"):
            op(*forward_args(x, kind="plif"))
        with pytest.raises(RuntimeError, match="Half|float16"):
            op(*forward_args(x, torch.zeros(3, 6, dtype=torch.float16)))
        with pytest.raises(RuntimeError, match="same memory order"):
            op(*forward_args(x, torch.zeros(6, 3).t()))
        with pytest.raises(RuntimeError, match="save_h=True"):
            getattr(torch.ops.fastspike, self.backward_op).default(*backward_args(x, x[0], None, torch.empty(0)))

    def test_inference_forward_writes_spikes_only(self):
        op = getattr(torch.ops.fastspike, self.forward_op).default
        x = torch.randn(3, 2, 5)
        spikes, v_last, v_seq, h_seq = op(*forward_args(x))
        assert v_seq.numel() == 0 and h_seq.numel() == 0 and spikes.shape == x.shape and v_last.shape == x[0].shape


class CudaKernelChecks:
    """The checks every fused backend passes on a GPU; subclassed like :class:`CpuKernelChecks`."""

    backend = ""

    @pytest.mark.parametrize("case", grid()[::3], ids=case_id)
    def test_cuda_outputs_fully_written_and_channels_last(self, case, monkeypatch):
        restore = poisoned_empty(monkeypatch)
        try:
            x = (torch.randn(4 * 8, 16, 7, 9, device="cuda").to(memory_format=torch.channels_last) + 0.5)
            x = x.view(4, 8, 16, 7, 9)
            w = torch.tensor(-0.4, device="cuda")
            assert_matches_reference(self.backend, case, x, 0.0, w)
            assert_matches_reference(self.backend, case, x[:, :, :, :, 1:], 0.0, w)
        finally:
            restore()

    def test_cuda_graph_capture(self):
        x = torch.randn(4, 64, 100, device="cuda")
        static_x = x.clone()
        node = neuron.LIFNode(step_mode="m", backend=self.backend)
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

    def test_cuda_more_than_2_to_31_elements(self):
        if torch.cuda.get_device_properties(0).total_memory < 40e9:
            pytest.skip("needs about 20 GB")
        x = torch.full((2, 2 ** 30 + 8), 0.6, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            spikes, v = functional.lif_multistep(x, tau=1.5, backend=self.backend)
        ref_last = functional.lif_multistep(x[:, -3:].float(), tau=1.5, backend="torch")
        assert_bitwise_equal(spikes[:, -3:].float(), ref_last[0], "tail spikes")
        assert_bitwise_equal(v[-3:], ref_last[1], "tail v")
