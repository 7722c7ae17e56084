"""Module API: state, step modes, utilities, layers and backend selection."""
import functools
import logging
import types

import pytest
import torch
from torch import nn

import fastspike
from fastspike import backends, functional, layer, native, neuron, surrogate
from helpers import assert_bitwise_equal, assert_grad_close

NODES = [
    lambda **kw: neuron.IFNode(**kw),
    lambda **kw: neuron.LIFNode(tau=3.0, **kw),
    lambda **kw: neuron.ParametricLIFNode(init_tau=2.5, decay_input=False, **kw),
]


def rand_seq(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 1.5 + 0.5


@pytest.mark.parametrize("make", NODES)
def test_state_carries_over_calls(make):
    x = rand_seq(6, 4, 5)
    whole = make(step_mode="m")
    split = make(step_mode="m")
    s_whole = whole(x)
    s_split = torch.cat([split(x[:2]), split(x[2:])])
    assert_bitwise_equal(s_split, s_whole, "spikes")
    assert_bitwise_equal(split.v, whole.v, "v")


@pytest.mark.parametrize("make", NODES)
def test_single_step_equals_multi_step_including_gradients(make):
    x = rand_seq(5, 3, 4, seed=1)
    results = []
    for mode in ("s", "m"):
        node = make(step_mode=mode, surrogate_function=surrogate.PiecewiseExp())
        xg = x.clone().requires_grad_()
        s = torch.stack([node(xt) for xt in xg]) if mode == "s" else node(xg)
        (s * torch.arange(s.numel()).reshape(s.shape).cos()).sum().add(node.v.sum()).backward()
        results.append((s, node.v, xg.grad))
    (s1, v1, g1), (s2, v2, g2) = results
    assert_bitwise_equal(s1, s2, "spikes")
    assert_bitwise_equal(v1, v2, "v")
    assert_grad_close(g1, g2, what="grad x")


def test_store_v_seq_and_reset():
    node = neuron.LIFNode(step_mode="m", store_v_seq=True, v_reset=None)
    assert node.v == 0.0 and node.v_seq is None
    x = rand_seq(4, 2, 3)
    node(x)
    assert node.v_seq.shape == (4, 2, 3) and node.v.shape == (2, 3)
    assert_bitwise_equal(node.v_seq[-1], node.v, "v_seq[-1]")
    node.reset()
    assert node.v == 0.0 and isinstance(node.v, float) and node.v_seq is None
    hard = neuron.IFNode(v_reset=-0.5)
    assert hard.v == -0.5
    hard(x[0])
    hard.reset()
    assert hard.v == -0.5


def test_assigned_state_is_used():
    node = neuron.IFNode(step_mode="m")
    node.v = torch.full((2, 3), 0.9)
    s = node(torch.full((1, 2, 3), 0.1))
    assert s.eq(1).all(), "0.9 + 0.1 reaches the threshold only if the assigned state was used"


def test_truncated_bptt_by_detaching_state():
    node = neuron.LIFNode(step_mode="m")
    x1, x2 = rand_seq(3, 4, 5).requires_grad_(), rand_seq(3, 4, 5, seed=2).requires_grad_()
    node(x1)
    node.v = node.v.detach()
    node(x2).sum().add(node.v.sum()).backward()
    assert x1.grad is None and x2.grad is not None
    node(x1)
    functional.detach_net(nn.Sequential(node))
    assert not node.v.requires_grad


def test_module_moves_state_with_to():
    node = neuron.LIFNode(step_mode="m")
    node(rand_seq(2, 3))
    node.double()
    assert node.v.dtype == torch.float64
    assert node(rand_seq(2, 3).double()).dtype == torch.float64


def test_plif_weight_learns_and_reports_tau():
    node = neuron.ParametricLIFNode(init_tau=4.0, step_mode="m")
    assert abs(node.tau - 4.0) < 1e-5
    assert [n for n, _ in node.named_parameters()] == ["w"]
    node(rand_seq(4, 8, 3)).sum().backward()
    assert node.w.grad is not None and node.w.grad.abs() > 0


def test_reset_net_set_step_mode_and_set_backend():
    net = nn.Sequential(layer.Linear(3, 4), neuron.IFNode(), layer.Dropout(0.5), neuron.LIFNode(),
                        layer.SeqToANNContainer(layer.Linear(4, 2)))
    functional.set_step_mode(net, "m")
    assert net[0].step_mode == net[1].step_mode == net[3].step_mode == "m"
    assert net[4][0].step_mode == "s", "modules inside a SeqToANNContainer stay single-step"
    out = net(rand_seq(5, 2, 3))
    assert out.shape == (5, 2, 2)
    assert isinstance(net[1].v, torch.Tensor) and net[2].mask is not None
    functional.reset_net(net)
    assert net[1].v == 0.0 and net[3].v == 0.0 and net[2].mask is None
    functional.set_backend(net, "torch")
    assert net[1].backend == net[3].backend == "torch"
    with pytest.raises(ValueError, match="step_mode"):
        functional.set_step_mode(net, "x")


def test_auto_backend_prefers_native_on_cpu_and_logs_once(caplog, fresh_backend_cache):
    expected = "native" if native.unavailable_reason("cpu") is None else "torch"
    with caplog.at_level(logging.INFO, logger="fastspike"):
        for _ in range(3):
            neuron.LIFNode(step_mode="m")(rand_seq(2, 3))
    messages = [r.getMessage() for r in caplog.records if r.name == "fastspike"]
    assert len(messages) == 1 and f"'{expected}'" in messages[0], messages
    assert backends.resolve("auto", torch.device("cpu")) == expected


def test_auto_falls_back_to_torch_and_says_why_when_native_is_missing(caplog, monkeypatch, fresh_backend_cache):
    monkeypatch.setattr(native, "_load", lambda: (None, "fastspike._C is not built: reinstall"))
    with caplog.at_level(logging.INFO, logger="fastspike"):
        neuron.LIFNode(step_mode="m")(rand_seq(2, 3))
    messages = [r.getMessage() for r in caplog.records if r.name == "fastspike"]
    assert len(messages) == 1 and "'torch'" in messages[0] and "not built" in messages[0], messages
    node = neuron.LIFNode(step_mode="m", backend="native")
    with pytest.raises(fastspike.BackendUnavailableError, match="not built: reinstall.*backend='auto'"):
        node(rand_seq(2, 3))


def test_explicit_unavailable_backend_raises_with_a_remedy():
    unavailable = [b for b in ("triton", "native") if backends.unavailable_reason(b, "cpu") is not None]
    if not unavailable:
        pytest.skip("every backend runs on CPU here")
    for name in unavailable:
        node = neuron.LIFNode(step_mode="m", backend=name)
        with pytest.raises(fastspike.BackendUnavailableError, match="backend='auto'"):
            node(rand_seq(2, 3))


def test_backend_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv(backends.ENV_VAR, "triton")
    with pytest.raises(fastspike.BackendUnavailableError, match=backends.ENV_VAR):
        functional.if_multistep(rand_seq(2, 3))
    functional.if_multistep(rand_seq(2, 3), backend="torch")
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    assert backends.resolve("auto", torch.device("cpu")) == "torch"
    monkeypatch.setenv(backends.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        functional.if_multistep(rand_seq(2, 3))


def test_aliases_map_to_native():
    assert backends.canonical("cupy") == backends.canonical("cuda") == "native"
    assert backends.canonical("auto") == "auto"


@pytest.mark.parametrize("alias", ["cupy", "cuda"])
def test_spikingjelly_backend_names_fall_back_and_say_why(alias, caplog, fresh_backend_cache):
    """SpikingJelly code passing backend='cupy' runs unchanged: native if available, else auto's choice."""
    node = neuron.LIFNode(step_mode="m", backend=alias)
    reference = neuron.LIFNode(step_mode="m", backend="torch")
    x = rand_seq(3, 4, 5)
    with caplog.at_level(logging.INFO, logger="fastspike"):
        assert_bitwise_equal(node(x), reference(x), "spikes")
        node(x)
    messages = [r.getMessage() for r in caplog.records if r.name == "fastspike"]
    if native.unavailable_reason("cpu") is None:
        assert messages == [] and backends.resolve(alias, torch.device("cpu")) == "native"
    else:
        assert len(messages) == 1 and f"backend={alias!r}" in messages[0] and "native" in messages[0], messages


def test_custom_neurons_reject_compiled_backends_and_base_node_is_abstract():
    Custom = type("Custom", (neuron.IFNode,), {"neuronal_fire": lambda self: (self.v >= 0.5).float()})
    assert Custom(backend="cupy").supported_backends == ("auto", "torch", "cupy", "cuda")
    with pytest.raises(ValueError, match="backend 'torch' only"):
        Custom(backend="triton")
    with pytest.raises(TypeError, match="must implement neuronal_charge"):
        neuron.BaseNode()
    assert "triton" in neuron.LIFNode().supported_backends


def test_hooks_from_a_mixin_are_detected():
    class FireHalf:
        def neuronal_fire(self):
            return self.surrogate_function(self.v - 0.5)

    Mixed = type("Mixed", (FireHalf, neuron.IFNode), {})
    Plain = type("Plain", (neuron.IFNode,), {"extra_repr": lambda self: "plain"})
    assert Mixed()._per_step() and not Plain()._per_step()
    node = Mixed(step_mode="m")
    assert node(torch.full((1, 2), 0.6)).eq(1).all(), "the mixin's threshold of 0.5 must be used"


def test_hooks_assigned_after_construction_or_wrapped_are_run():
    def fire_half(self):
        return self.surrogate_function(self.v - 0.5)

    x = torch.full((1, 2), 0.6)
    patched = neuron.IFNode(step_mode="m")
    patched.neuronal_fire = types.MethodType(fire_half, patched)
    assert patched(x).eq(1).all()
    Late = type("Late", (neuron.IFNode,), {})
    node = Late(step_mode="m")
    Late.neuronal_fire = fire_half
    assert node(x).eq(1).all()
    calls = []

    @functools.wraps(neuron.BaseNode.neuronal_charge)
    def counted(self, x):
        calls.append(1)
        return neuron.BaseNode.neuronal_charge(self, x)

    Wrapped = type("Wrapped", (neuron.LIFNode,), {"neuronal_charge": counted})
    Wrapped(step_mode="m")(torch.rand(3, 2))
    assert len(calls) == 3


def test_register_memory_is_reset_moved_and_listed():
    class Adaptive(neuron.IFNode):
        def __init__(self):
            super().__init__(step_mode="m")
            self.register_memory("a", 0.0)

        def neuronal_fire(self):
            spike = self.surrogate_function(self.v - self.v_threshold - self.a)
            self.a = self.a * 0.9 + spike
            return spike

    node = Adaptive()
    node(torch.full((4, 3), 0.8))
    assert isinstance(node.a, torch.Tensor) and node.a.max() > 0
    assert [name for name, _ in node.named_memories()] == ["v", "a"]
    node.double()
    assert node.a.dtype == torch.float64
    node.reset()
    assert node.a == 0.0 and node.v == 0.0
    with pytest.raises(AttributeError, match="already an attribute"):
        node.register_memory("v_threshold", 1.0)


def test_per_step_neurons_honour_explicit_backend_requests(monkeypatch):
    Custom = type("Custom", (neuron.IFNode,), {"neuronal_fire": lambda self: (self.v >= 1).float()})
    node = Custom(step_mode="m")
    node(rand_seq(2, 3))
    monkeypatch.setenv(backends.ENV_VAR, "triton")
    with pytest.raises(ValueError, match="FASTSPIKE_BACKEND='triton': not supported by this module"):
        node(rand_seq(2, 3))
    monkeypatch.setenv(backends.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="FASTSPIKE_BACKEND='gpu': unknown backend"):
        neuron.IFNode(step_mode="m")(rand_seq(2, 3))


def test_set_backend_changes_nothing_when_one_module_refuses():
    Custom = type("Custom", (neuron.IFNode,), {"neuronal_fire": lambda self: (self.v >= 1).float()})
    net = nn.Sequential(neuron.LIFNode(), Custom())
    with pytest.raises(ValueError, match="Custom"):
        functional.set_backend(net, "native")
    assert net[0].backend == net[1].backend == "auto"


def test_double_backward_raises_instead_of_a_wrong_result():
    w = torch.randn(5, 5, requires_grad=True)
    x = torch.randn(3, 4, 5)
    s, _ = functional.lif_multistep(x @ w, surrogate_function=surrogate.Sigmoid(), backend="torch")
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad((s ** 2).sum(), w, create_graph=True)
    # A gradient penalty, where the incoming gradient itself does not require grad, must raise too.
    xg = x.clone().requires_grad_()
    s, _ = functional.lif_multistep(xg, backend="torch")
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(s.sum(), xg, create_graph=True)
    (g,) = torch.autograd.grad(functional.lif_multistep(xg, backend="torch")[0].sum(), xg)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("make,shape", [
    (lambda: layer.Conv2d(3, 4, 3, padding=1), (2, 5, 3, 7, 7)),
    (lambda: layer.MaxPool2d(2), (2, 5, 3, 7, 7)),
    (lambda: layer.AvgPool2d(2), (2, 5, 3, 7, 7)),
    (lambda: layer.AdaptiveAvgPool2d(1), (2, 5, 3, 7, 7)),
    (lambda: layer.Linear(7, 3), (2, 5, 7)),
    (lambda: layer.Flatten(), (2, 5, 3, 2, 2)),
])
def test_stateless_layers_apply_per_step(make, shape):
    single = make()
    multi = make()
    multi.load_state_dict(single.state_dict())
    multi.step_mode = "m"
    x = rand_seq(*shape)
    expected = torch.stack([single(x_t) for x_t in x])
    torch.testing.assert_close(multi(x), expected, rtol=1e-6, atol=1e-6)
    assert "step_mode=m" in repr(multi)


def test_batchnorm_multi_step_normalises_over_time_and_batch():
    bn = layer.BatchNorm2d(3, step_mode="m")
    x = rand_seq(4, 2, 3, 5, 5) * 3 + 1
    y = bn(x)
    torch.testing.assert_close(y.mean(dim=(0, 1, 3, 4)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 1, 3, 4), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_dropout_shares_one_mask_over_time_until_reset():
    torch.manual_seed(0)
    drop = layer.Dropout(0.4, step_mode="m")
    x = torch.ones(6, 50, 8)
    y = drop(x)
    assert (y == y[0]).all(), "every time step must use the same mask"
    assert y.unique().tolist() == [0.0, torch.tensor(1 / 0.6).item()]
    assert (drop(x) == y).all(), "the mask persists across calls until reset"
    drop.reset()
    assert not (drop(x) == y).all()
    drop.eval()
    assert drop(x) is x
    single = layer.Dropout(0.4)
    first = single(torch.ones(50, 8))
    assert (single(torch.ones(50, 8)) == first).all()


def test_step_mode_by_position_and_linear_over_extra_dims():
    lin = layer.Linear(7, 3, True, "m")
    conv = layer.Conv2d(3, 4, 3, 1, 1, 1, 1, False, "zeros", "m")
    assert lin.step_mode == conv.step_mode == "m" and conv.bias is None
    x = rand_seq(2, 5, 6, 7)  # [T, B, tokens, features]
    torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))


def test_functional_forward_helpers_take_module_lists():
    mods = [nn.Linear(4, 3), nn.ReLU()]
    x = rand_seq(3, 2, 4)
    expected = torch.relu(mods[0](x))
    for arg in (mods, tuple(mods), nn.Sequential(*mods)):
        torch.testing.assert_close(functional.seq_to_ann_forward(x, arg), expected)
        torch.testing.assert_close(functional.multi_step_forward(x, arg), expected)


def test_seq_to_ann_container():
    inner = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    container = layer.SeqToANNContainer(*inner)
    x = rand_seq(3, 4, 2, 6, 6)
    expected = inner(x.flatten(0, 1)).reshape(3, 4, 3, 4, 4)
    torch.testing.assert_close(container(x), expected)


def test_csnn_trains():
    """A small CSNN built only from fastspike modules learns a separable toy task."""
    torch.manual_seed(0)
    sg = surrogate.ATan()
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4), neuron.IFNode(surrogate_function=sg),
        layer.MaxPool2d(2), layer.Flatten(), layer.Linear(4 * 4 * 4, 2), neuron.LIFNode(surrogate_function=sg))
    functional.set_step_mode(net, "m")
    images = torch.rand(32, 1, 8, 8)
    labels = (images[:, 0, :4].mean((1, 2)) > images[:, 0, 4:].mean((1, 2))).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        rate = net(images.unsqueeze(0).repeat(4, 1, 1, 1, 1)).mean(0)
        loss = nn.functional.mse_loss(rate, nn.functional.one_hot(labels, 2).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(net)
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("make", NODES[1:])
def test_torch_compile_fullgraph_matches_eager(make):
    x = rand_seq(4, 8, 16, seed=3)
    results = []
    for compiled in (True, False):
        backends._RESOLVED.clear()  # resolve the backend inside the compiled region first
        node = make(step_mode="m", surrogate_function=surrogate.ATan())
        run = torch.compile(node, fullgraph=True) if compiled else node
        xg = x.clone().requires_grad_()
        s = run(xg)
        (s * x.sin()).sum().add(node.v.sum()).backward()
        results.append((s, node.v, xg.grad, getattr(node, "w", None)))
    (s_c, v_c, g_c, w_c), (s_e, v_e, g_e, w_e) = results
    assert_bitwise_equal(s_c, s_e, "compiled spikes")
    assert_bitwise_equal(v_c.detach(), v_e.detach(), "compiled v")
    assert_grad_close(g_c, g_e, what="compiled grad x")
    if w_e is not None:
        torch.testing.assert_close(w_c.grad, w_e.grad, rtol=1e-5, atol=0)


def test_auto_choice_is_logged_even_when_first_resolved_under_compile(caplog, fresh_backend_cache):
    node = neuron.IFNode(step_mode="m")
    torch.compile(node, fullgraph=True)(rand_seq(2, 3))
    with caplog.at_level(logging.INFO, logger="fastspike"):
        neuron.IFNode(step_mode="m")(rand_seq(2, 3))
    expected = backends.resolve("auto", torch.device("cpu"))
    assert any(f"uses '{expected}'" in r.getMessage() for r in caplog.records if r.name == "fastspike")
