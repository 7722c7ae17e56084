"""fastspike.models: every registered model's shapes, gradients, topology and argument checks."""
import pytest
import torch
from torch import nn

import fastspike.snntorch as fs_snntorch
from fastspike import functional, layer, models, neuron

NEURONS = (neuron.BaseNode, fs_snntorch.SpikingNeuron)

IMAGE, FRAMES = (1, 28, 28), (2, 16, 16)


def _build(name, **kw):
    """``name`` at test size: T = 3, 4 channels where it has channels."""
    m = models.MODELS[name]
    kw = {**({"channels": 4} if m.channels else {}), **kw}
    if m.frames:
        return models.build(name, FRAMES, 10, frames_T=3, **kw)
    return models.build(name, IMAGE, 10, **({"T": 3} if m.spiking else {}), **kw)


def _input(name, n=4):
    g = torch.Generator().manual_seed(0)
    shape = (3, n, *FRAMES) if models.MODELS[name].frames else (n, *IMAGE)
    return torch.rand(shape, generator=g)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_forward_backward_shapes(name):
    torch.manual_seed(0)
    net = _build(name)
    out = net(_input(name))
    spiking = models.MODELS[name].spiking
    if isinstance(out, models.Readout):
        assert out.mem.shape == out.spikes.shape and out.mem.dtype == torch.float32
        out = out.spikes + out.mem
    elif spiking:
        assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert out.shape == ((3, 4, 10) if spiking else (4, 10))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    functional.reset_net(net)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # The first layer's gradient crosses every neuron layer (through the surrogates), so it must not vanish.
    assert grads[0].abs().sum() > 0
    assert all(isinstance(m.v, float) for m in net.modules() if isinstance(m, neuron.BaseNode))
    assert all(m.mem.numel() == 0 for m in net.modules() if isinstance(m, fs_snntorch.SpikingNeuron))


@pytest.mark.parametrize("snn, twin", [(n, m.twin) for n, m in models.MODELS.items() if m.twin])
def test_twins_have_the_same_layers(snn, twin):
    a, b = _build(snn), _build(twin)
    learnable = [p.shape for n, p in a.named_parameters() if not n.endswith(("beta", "threshold", "factor"))]
    assert learnable == [p.shape for p in b.parameters()]
    assert not any(isinstance(m, NEURONS) for m in b.modules())
    assert sum(isinstance(m, nn.ReLU) for m in b.modules()) == sum(isinstance(m, NEURONS) for m in a.modules()) - 1


def test_seed_topologies():
    c = models.csnn(T=4, channels=64)
    linears = [m for m in c.modules() if isinstance(m, layer.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 49, 64 * 16), (64 * 16, 10)]
    assert all(isinstance(m, neuron.IFNode) for m in c.modules() if isinstance(m, neuron.BaseNode))
    s = models.snntorch_csnn()
    assert s.T == 50 and [m.in_features for m in s.modules() if isinstance(m, layer.Linear)] == [1024]
    lif = [m for m in s.modules() if isinstance(m, fs_snntorch.Leaky)]
    assert len(lif) == 3 and all(m.beta.item() == 0.5 and m.spike_grad == fs_snntorch.surrogate.fast_sigmoid(25)
                                 and m.reset_mechanism == "subtract" for m in lif)
    assert models.MODELS["snntorch-csnn"].loss == "ce-step"  # snnTorch's ce_rate_loss
    f = models.fc_snn()
    assert f.T == 100 and f.encoder == "poisson"
    assert [(m.in_features, m.out_features) for m in f.modules() if isinstance(m, layer.Linear)] == [(784, 10)]
    p = models.mlp_snn()
    assert [(m.in_features, m.out_features) for m in p.modules() if isinstance(m, layer.Linear)] == \
        [(784, 1000), (1000, 10)]
    p_lif = [m for m in p.modules() if isinstance(m, fs_snntorch.Leaky)]
    assert len(p_lif) == 2 and all(m.beta.item() == torch.tensor(0.95).item() and m.spike_grad ==
                                   fs_snntorch.surrogate.atan() for m in p_lif)
    assert models.MODELS["mlp-snn"].loss == "ce-mem" and models.MODELS["mlp-snn"].twin == "mlp"
    assert not any(m.detach_reset for m in c.modules() if isinstance(m, neuron.BaseNode))  # SpikingJelly's default
    d = models.dvs_csnn(channels=8, frame_size=128)
    assert sum(isinstance(m, layer.Conv2d) for m in d.modules()) == 5  # 128 -> 4
    assert [m.in_features for m in d.modules() if isinstance(m, layer.Linear)] == [8 * 16]


@pytest.mark.parametrize("frame_size, blocks, side", [(128, 5, 4), (48, 4, 3), (32, 3, 4), (9, 1, 4), (4, 1, 2)])
def test_dvs_depth_pools_to_at_most_4x4(frame_size, blocks, side):
    d = models.dvs_csnn(channels=2, frame_size=frame_size)
    assert sum(isinstance(m, layer.Conv2d) for m in d.modules()) == blocks
    assert [m.in_features for m in d.modules() if isinstance(m, layer.Linear)] == [2 * side * side]
    assert d(torch.rand(2, 1, 2, frame_size, frame_size)).shape == (2, 1, 10)


def test_backend_and_step_mode_reach_every_neuron():
    net = models.build("csnn", IMAGE, 10, backend="torch")
    nodes = [m for m in net.modules() if isinstance(m, neuron.BaseNode)]
    assert len(nodes) == 4 and all(m.backend == "torch" and m.step_mode == "m" for m in nodes)


def test_spiking_classifier_encoders():
    torch.manual_seed(0)
    x = torch.rand(2, *IMAGE)
    net = models.csnn(T=5, channels=2, encoder="latency")
    assert net(x).shape == (5, 2, 10)
    with pytest.raises(ValueError, match="unknown encoder"):
        models.csnn(encoder="rank")
    with pytest.raises(ValueError, match="T must be a positive integer"):
        models.csnn(T=0)
    with pytest.raises(ValueError, match="do not pass T"):
        models.SpikingClassifier(nn.Identity(), T=4, encoder=None)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="resnet"), "unknown model 'resnet'"),
    (dict(name="fc-snn", channels=8), "has no channels argument"),
    (dict(name="cnn", T=4), "has no T argument"),
    (dict(name="dvs-cnn", encoder="poisson", frames_T=8), "has no encoder argument"),
    (dict(name="dvs-csnn"), "takes event frames"),
    (dict(name="csnn", frames_T=8), "takes static images"),
    (dict(name="dvs-csnn", T=4, frames_T=8), "runs over the 8 frames"),
    (dict(name="csnn", channels=0), "channels must be a positive integer"),
])
def test_build_rejects_bad_arguments(kwargs, match):
    in_shape = FRAMES if kwargs.get("frames_T") else IMAGE
    with pytest.raises(ValueError, match=match):
        models.build(kwargs.pop("name"), in_shape, 10, **kwargs)


def test_build_sizes_follow_the_input():
    net = models.build("csnn", (3, 32, 32), 7, channels=2)
    assert net(torch.rand(2, 3, 32, 32)).shape == (4, 2, 7)
    assert models.build("fc-snn", (1, 8, 12), 10, T=2)(torch.rand(2, 1, 8, 12)).shape == (2, 2, 10)
    with pytest.raises(ValueError, match="square"):
        models.build("csnn", (1, 28, 20), 10)
    with pytest.raises(ValueError, match="at least 12 x 12"):
        models.build("snntorch-cnn", (1, 10, 10), 10)
    assert models.build("cnn", (1, 4, 4), 10, channels=2)(torch.rand(2, 1, 4, 4)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 4 x 4"):
        models.build("cnn", (1, 3, 3), 10)
