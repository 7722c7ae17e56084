"""fastspike.snntorch: equivalence with snnTorch 1.0.0 on the CPU backends, its API, conversion, the op."""
import copy

import pytest
import torch
from torch import nn

import fastspike
import fastspike.snntorch as fs
from fastspike import backends, functional
from fastspike._contract import LEAKY_BACKWARD, LEAKY_FORWARD, LeakyParams
from helpers import assert_bitwise_equal, gpu_test
from kernel_checks import skip_unless_available
from leaky_checks import SURROGATES, LeakyChecks, inputs, make_pair, run_snntorch

snn = pytest.importorskip("snntorch")
import snntorch.functional as snn_functional  # noqa: E402
from snntorch import surrogate as snn_surrogate, utils as snn_utils  # noqa: E402


class TestTorch(LeakyChecks):
    backend = "torch"


@skip_unless_available("native", "cpu")
class TestNativeCPU(LeakyChecks):
    backend = "native"


@gpu_test(skip_unless_available("native", "cuda"))
class TestNativeCUDA(LeakyChecks):
    backend, device = "native", "cuda"


@gpu_test(skip_unless_available("triton", "cuda"))
class TestTritonCUDA(LeakyChecks):
    backend, device = "triton", "cuda"


def test_default_surrogate_is_atan_2():
    lif = fs.Leaky(beta=0.5)
    assert lif.spike_grad == fs.surrogate.atan(2.0) and lif.reset_mechanism == "subtract" and lif.reset_delay


def test_firing_is_strict():
    lif = fs.Leaky(beta=0.0, backend="torch")
    spk, mem = lif(torch.tensor([1.0, 1.0000001, 0.9999999]))
    assert spk.tolist() == [0.0, 1.0, 0.0]


def test_state_dict_is_snntorchs():
    for theirs, ours in ((snn.Leaky(beta=0.8, learn_beta=True), fs.Leaky(beta=0.8, learn_beta=True)),
                         (snn.Synaptic(alpha=0.7, beta=0.8, learn_threshold=True),
                          fs.Synaptic(alpha=0.7, beta=0.8, learn_threshold=True))):
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    theirs = snn.Leaky(beta=0.3, threshold=0.5, reset_mechanism="zero")
    ours = fs.Leaky(beta=0.9)
    ours.load_state_dict(theirs.state_dict())
    assert ours.reset_mechanism == "zero" and ours.beta.item() == theirs.beta.item()


def test_unsupported_options_are_named():
    with pytest.raises(ValueError, match="inhibition"):
        fs.Leaky(beta=0.5, inhibition=True)
    with pytest.raises(ValueError, match="state_quant"):
        fs.Synaptic(alpha=0.5, beta=0.5, state_quant=lambda x: x)
    with pytest.raises(ValueError, match="reset_mechanism"):
        fs.Leaky(beta=0.5, reset_mechanism="soft")
    with pytest.raises(TypeError, match="spike_grad"):
        fs.Leaky(beta=0.5, spike_grad=snn_surrogate.SSO())
    with pytest.raises(TypeError, match="init_hidden"):
        fs.Leaky(beta=0.5, init_hidden=True)(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="does not broadcast"):
        fs.Leaky(beta=torch.rand(3))(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="states must be"):
        fs.Leaky(beta=0.5).sequence(torch.zeros(3, 2), states="first")
    with pytest.raises(ValueError, match="unknown backend"):
        fs.Leaky(beta=0.5, backend="cuda_graph")


def test_snntorch_surrogates_are_converted():
    for name, params in SURROGATES:
        ours = fs.surrogate.convert(getattr(snn_surrogate, name)(**params))
        assert ours == getattr(fs.surrogate, name)(**params)
    assert fs.Leaky(beta=0.5, spike_grad=snn_surrogate.fast_sigmoid(slope=10)).spike_grad == \
        fs.surrogate.fast_sigmoid(10)


def test_call_conventions():
    x = torch.randn(2, 3)
    hidden = fs.Leaky(beta=0.5, init_hidden=True, backend="torch")
    spk = hidden(x)
    assert isinstance(spk, torch.Tensor) and hidden.mem.shape == x.shape
    spk, mem = fs.Leaky(beta=0.5, init_hidden=True, output=True, backend="torch")(x)
    assert mem.shape == x.shape
    spk_seq = hidden.sequence(torch.randn(4, 2, 3))
    assert isinstance(spk_seq, torch.Tensor) and spk_seq.shape == (4, 2, 3)
    syn = fs.Synaptic(alpha=0.5, beta=0.5, backend="torch")
    spk, s, m = syn(x)
    assert syn.reset_mem()[0].abs().sum() == 0 and syn.mem.shape == x.shape


def test_reset_and_utils_reset():
    lif = fs.Leaky(beta=0.9, backend="torch")
    x = torch.ones(3, 2, 4)
    first = lif.sequence(x)[1]
    net = nn.Sequential(nn.Identity(), lif)
    fs.utils.reset(net)
    assert_bitwise_equal(lif.sequence(x)[1], first, "after utils.reset")
    functional.reset_net(net)
    assert lif.mem.numel() == 0
    assert_bitwise_equal(lif.sequence(x)[1], first, "after reset_net")


def test_a_state_of_another_shape_is_replaced_by_zeros():
    theirs, ours = snn.Leaky(beta=0.6), fs.Leaky(beta=0.6, backend="torch")
    for n in (4, 3):
        x = torch.rand(n, 5) * 2
        assert_bitwise_equal(ours(x)[1], theirs(x)[1], f"batch {n}")


def test_from_snntorch_converts_in_place():
    model = nn.Sequential(nn.Linear(4, 6), snn.Leaky(beta=0.7, learn_beta=True, spike_grad=snn_surrogate.sigmoid(5),
                                                      init_hidden=True),
                          nn.Linear(6, 3), snn.Synaptic(alpha=0.6, beta=torch.rand(3), reset_mechanism="zero",
                                                        reset_delay=False, init_hidden=True, output=True))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    converted = fastspike.from_snntorch(model, backend="torch")
    assert converted is model and isinstance(model[1], fs.Leaky) and isinstance(model[3], fs.Synaptic)
    assert model[1].spike_grad == fs.surrogate.sigmoid(5) and isinstance(model[1].beta, nn.Parameter)
    assert model[3].reset_mechanism == "zero" and not model[3].reset_delay and model[3].output
    for k, v in model.state_dict().items():
        assert_bitwise_equal(v, reference[k], k)


def test_seed000_csnn_training_step_matches_snntorch():
    # snnTorch's convolutional tutorial (seed 000): same weights, one training step, ce_rate_loss.
    torch.manual_seed(0)
    sg = snn_surrogate.fast_sigmoid(slope=25)
    theirs = nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                           nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                           nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
                           snn.Leaky(beta=0.5, spike_grad=sg, init_hidden=True, output=True))
    ours = fastspike.from_snntorch(copy.deepcopy(theirs))
    data, targets = torch.rand(8, 1, 28, 28) * 3, torch.randint(0, 10, (8,))
    results = []
    for net, loss_fn, reset in ((theirs, snn_functional.ce_rate_loss(), snn_utils.reset),
                                (ours, fs.functional.ce_rate_loss(), fs.utils.reset)):
        reset(net)
        spk_rec = []
        for _ in range(12):
            spk, _ = net(data)
            spk_rec.append(spk)
        loss = loss_fn(torch.stack(spk_rec), targets)
        net.zero_grad()
        loss.backward()
        results.append((loss.detach(), [p.grad for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert_bitwise_equal(loss_b, loss_a, "loss")
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=0, atol=1e-5 * ga.abs().max().item())


def _op_args(x, **changes):
    step = x[0]
    p = LeakyParams(synaptic=True, reset="subtract", reset_delay=False, surrogate="atan", sg_alpha=2.0,
                    sg_a=3.14159, sg_b=1.0)
    named = dict(x_seq=x, syn_init=torch.rand_like(step), mem_init=torch.rand_like(step), beta=torch.tensor(0.8),
                 alpha=torch.rand_like(step), threshold=torch.tensor(1.0), gsf=torch.tensor(1.0), store_seq=True,
                 save=True, save_syn=True)
    named.update(changes)
    return LEAKY_FORWARD.pack(p, **named), p


@skip_unless_available("native", "cpu")
def test_native_leaky_opcheck():
    x = torch.randn(4, 2, 3)
    args, p = _op_args(x.requires_grad_())
    torch.library.opcheck(torch.ops.fastspike.leaky_forward.default, args)
    out = LEAKY_FORWARD.Out(*torch.ops.fastspike.leaky_forward.default(*args))
    a = LEAKY_FORWARD.unpack(args)
    bargs = LEAKY_BACKWARD.pack(
        p, grad_spk_seq=torch.randn(4, 2, 3), grad_syn_last=torch.randn(2, 3), grad_mem_last=torch.randn(2, 3),
        grad_syn_seq=None, grad_mem_seq=torch.randn(4, 2, 3), mem_seq=out.mem_seq.detach(),
        pre_seq=out.pre_seq.detach(), syn_seq=out.syn_seq.detach(), syn_init=a.syn_init, mem_init=a.mem_init,
        beta=a.beta, alpha=a.alpha, threshold=a.threshold, gsf=a.gsf, need_beta=True, need_alpha=True,
        need_threshold=False, need_gsf=True, grad_x_dtype=torch.float32)
    torch.library.opcheck(torch.ops.fastspike.leaky_backward.default, bargs)


@pytest.mark.parametrize("backend", [b for b in ("torch", "native") if backends.unavailable_reason(b, "cpu") is None])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    case = ("synaptic", "subtract", True, True, True, SURROGATES[1])
    _, ours = make_pair(case, (2, 5), backend)
    x = inputs((5, 2, 5), seed=8).requires_grad_()

    def step(x):
        spk, syn, mem = ours.sequence(x)
        return spk.sum() + mem.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    compiled.backward()
    grads = [p.grad.clone() for p in ours.parameters()] + [x.grad.clone()]
    ours.reset()
    ours.zero_grad()
    x.grad = None
    eager = step(x)
    eager.backward()
    assert_bitwise_equal(compiled.detach(), eager.detach(), "compiled output")
    for g, e in zip(grads, [p.grad for p in ours.parameters()] + [x.grad]):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_spikes_are_fp32_and_the_state_widens_for_fp64():
    theirs, ours = make_pair(("leaky", "subtract", True, False, False, SURROGATES[0]), (3,), "torch")
    x = inputs((4, 2, 3)).double()
    spk, mem = ours.sequence(x)
    ref_spk, ref_mem, _ = run_snntorch(theirs.double(), x, False)
    assert spk.dtype == ref_spk.dtype == torch.float32 and mem.dtype == torch.float64
    assert_bitwise_equal(mem, ref_mem.detach(), "fp64 mem")


@pytest.mark.parametrize("backend", [b for b in ("torch", "native") if backends.unavailable_reason(b, "cpu") is None])
@pytest.mark.parametrize("reset_delay", [True, False])
def test_surrogate_disable_matches_snntorch(backend, reset_delay):
    # No gradient through any spike: only the membrane path carries one.
    theirs = snn.Leaky(beta=0.8, surrogate_disable=True, reset_delay=reset_delay, learn_beta=True)
    ours = fs.Leaky(beta=0.8, surrogate_disable=True, reset_delay=reset_delay, learn_beta=True, backend=backend)
    x = inputs((6, 3, 5), seed=9)
    grads = []
    for net in (theirs, ours):
        xx = x.clone().requires_grad_()
        spk, mem = run_snntorch(net, xx, False)[:2]
        (spk.sum() + (mem * 0.5).sum()).backward()
        grads.append((spk.detach(), mem.detach(), xx.grad, net.beta.grad))
    for name, a, e in zip(("spikes", "mem", "grad x", "grad beta"), grads[1], grads[0]):
        if name.startswith("grad"):
            torch.testing.assert_close(a, e, rtol=1e-6, atol=0)
        else:
            assert_bitwise_equal(a, e, name)


@skip_unless_available("native", "cpu")
def test_parameter_gradients_do_not_depend_on_the_thread_count():
    # 5000 neurons: three CPU chunks, so two threads really split the work.
    case = ("synaptic", "subtract", True, False, True, SURROGATES[0])
    x = inputs((8, 2, 2500), seed=10)
    previous, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            _, ours = make_pair(case, (2, 2500), "native")
            spk, syn, mem = ours.sequence(x)
            (spk.sum() + mem.sum()).backward()
            results.append([p.grad.clone() for p in ours.parameters()])
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_bitwise_equal(a, b, "parameter gradient")
