"""from_spikingjelly: a converted SpikingJelly model gives identical outputs and matching gradients."""
import copy

import pytest
import torch
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import layer as sj_layer
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

import fastspike
from fastspike import functional, neuron, surrogate
from helpers import assert_bitwise_equal, assert_grad_close


def sj_csnn(channels=4):
    """The seeds' CSNN topology (conv3x3-BN-IF-maxpool x2, Linear-IF, Linear-IF), shrunk for a CPU test."""
    sg = sj_surrogate.ATan()
    net = nn.Sequential(
        sj_layer.Conv2d(1, channels, 3, padding=1, bias=False), sj_layer.BatchNorm2d(channels),
        sj_neuron.IFNode(surrogate_function=sg), sj_layer.MaxPool2d(2),
        sj_layer.Conv2d(channels, channels, 3, padding=1, bias=False), sj_layer.BatchNorm2d(channels),
        sj_neuron.LIFNode(tau=3.0, decay_input=False, surrogate_function=sg), sj_layer.MaxPool2d(2),
        sj_layer.Flatten(), sj_layer.Linear(channels * 9, 16, bias=False),
        sj_neuron.ParametricLIFNode(surrogate_function=sg, v_threshold=0.5, v_reset=None),
        sj_layer.Linear(16, 10, bias=False), sj_neuron.IFNode(v_threshold=0.5, surrogate_function=sg),
    )
    with torch.no_grad():  # larger weights than the default init, so that the deep layers fire
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(4)
    return net


def test_converted_csnn_is_identical():
    torch.manual_seed(0)
    original = sj_csnn()
    sj_functional.set_step_mode(original, "m")
    converted = fastspike.from_spikingjelly(copy.deepcopy(original), backend="torch")
    kinds = [type(m) for m in converted if isinstance(m, neuron.BaseNode)]
    assert kinds == [neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode, neuron.IFNode]
    assert not any(type(m).__module__.startswith("spikingjelly.activation_based.neuron") for m in converted)
    x = torch.rand(4, 6, 1, 12, 12) * 2
    outputs = []
    for net in (original, converted):
        out = net(x)
        (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
        outputs.append((out, {n: p.grad for n, p in net.named_parameters()}))
    (out_sj, grads_sj), (out_fs, grads_fs) = outputs
    assert 0 < out_sj.mean() < 0.9, "the network must fire for the comparison to mean anything"
    assert_bitwise_equal(out_fs, out_sj, "CSNN output")
    assert grads_fs.keys() == grads_sj.keys()
    for name in grads_sj:
        if name.endswith(".w"):  # a cancelling sum: see assert_plif_w_grad in the equivalence tests
            torch.testing.assert_close(grads_fs[name], grads_sj[name], rtol=1e-4, atol=1e-7)
        else:
            assert_grad_close(grads_fs[name], grads_sj[name], rtol=1e-5, what=name)


def test_hyperparameters_and_plif_weight_carry_over():
    sj = nn.Sequential(
        sj_neuron.LIFNode(tau=3.5, decay_input=False, v_threshold=0.8, v_reset=None, detach_reset=True,
                          surrogate_function=sj_surrogate.Erf(alpha=1.5), step_mode="m", store_v_seq=True),
        sj_neuron.ParametricLIFNode(init_tau=5.0, decay_input=False, v_reset=-0.2,
                                    surrogate_function=sj_surrogate.PiecewiseQuadratic(alpha=0.5)))
    with torch.no_grad():
        sj[1].w.add_(0.25)
    sj.eval()
    sj_plif = sj[1]
    fs = fastspike.from_spikingjelly(sj, backend="cupy")
    assert fs is sj, "conversion is in place"
    lif, plif = fs[0], fs[1]
    assert (lif.tau, lif.decay_input, lif.v_threshold, lif.v_reset, lif.detach_reset) == (3.5, False, 0.8, None, True)
    assert lif.step_mode == "m" and lif.store_v_seq and lif.backend == "cupy" and not lif.training
    assert isinstance(lif.surrogate_function, surrogate.Erf) and lif.surrogate_function.alpha == 1.5
    assert isinstance(plif.surrogate_function, surrogate.PiecewiseQuadratic)
    assert plif.surrogate_function.alpha == 0.5 and plif.v_reset == -0.2 and not plif.decay_input
    assert plif.w.item() == sj_plif.w.item() and plif.w.requires_grad
    assert plif.w is not sj_plif.w


def test_a_bare_node_is_converted_and_returned():
    node = sj_neuron.IFNode(v_threshold=0.5)
    new = fastspike.from_spikingjelly(node)
    assert isinstance(new, neuron.IFNode) and new.v_threshold == 0.5


def test_unsupported_surrogate_is_rejected():
    model = nn.Sequential(sj_neuron.IFNode(surrogate_function=sj_surrogate.LeakyKReLU()))
    with pytest.raises(TypeError, match="no fastspike equivalent of surrogate .*LeakyKReLU"):
        fastspike.from_spikingjelly(model)


def test_fastspike_reset_net_resets_a_converted_model():
    model = fastspike.from_spikingjelly(nn.Sequential(sj_layer.Linear(3, 2), sj_neuron.LIFNode()))
    model(torch.rand(4, 3))
    assert isinstance(model[1].v, torch.Tensor)
    functional.reset_net(model)
    assert model[1].v == 0.0
