"""Spikes kept as bits for backward: packing, the layers that use it, and where it must not happen."""

import pytest
import torch
from torch import nn

from fastspike import _bits, functional, layer, neuron
from helpers import assert_bitwise_equal


def spikes(*shape, p=0.5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).to(dtype)


def saved_dtypes(fn):
    """The dtypes of everything autograd saves while ``fn()`` runs, and ``fn()``'s result."""
    seen = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.dtype) or t, lambda t: t):
        out = fn()
    return seen, out


# ----------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("numpy_path", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_pack_round_trips_on_odd_sizes(monkeypatch, numpy_path, dtype):
    monkeypatch.setattr(_bits, "_numpy_path", lambda t: numpy_path)
    for shape in [(1,), (7,), (9,), (3, 5, 7), (2, 3, 5, 5), (0, 4), (4, 3, 1, 13)]:
        t = spikes(*shape, dtype=dtype, seed=sum(shape))
        bits, meta = _bits.pack(t)
        assert bits.dtype == torch.uint8 and bits.numel() == (t.numel() + 7) // 8
        back = _bits.unpack(bits, meta)
        assert_bitwise_equal(back, t, f"{shape} {dtype}")
        assert back.stride() == t.stride()
    cl = spikes(4, 6, 5, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    back = _bits.unpack(*_bits.pack(cl))
    assert back.stride() == cl.stride() and torch.equal(back, cl)


def test_numpy_and_torch_packing_agree_byte_for_byte(monkeypatch):
    t = spikes(3, 7, 11, seed=4)
    fast = _bits.pack(t)[0]
    monkeypatch.setattr(_bits, "_numpy_path", lambda t: False)
    assert torch.equal(_bits.pack(t)[0], fast)
    assert int(fast[0]) == sum(int(t.reshape(-1)[i]) << i for i in range(8))


# ----------------------------------------------------------------------------------------- layers
def _compare_layer(make, x, mode_a="default", mode_b="plain"):
    """Outputs and gradients (input and parameters) of ``make()`` on marked ``x`` in two memory modes."""
    results = []
    for mode in (mode_a, mode_b):
        torch.manual_seed(0)
        m = make()
        functional.set_memory_mode(m, mode)
        xg = _bits.mark(x.clone().requires_grad_())
        dtypes, out = saved_dtypes(lambda: m(xg))
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out, [xg.grad] + [p.grad for p in m.parameters()], dtypes))
    (oa, ga, da), (ob, gb, db) = results
    assert_bitwise_equal(oa, ob, "output")
    for a, b in zip(ga, gb):
        assert_bitwise_equal(a, b, "gradient")
    return da, db


@pytest.mark.parametrize("make,shape", [
    (lambda: layer.Conv2d(3, 4, 3, padding=1, step_mode="m"), (2, 5, 3, 7, 7)),
    (lambda: layer.Conv2d(4, 6, 3, stride=2, groups=2, bias=False), (5, 4, 9, 8)),
    (lambda: layer.Linear(7, 3, step_mode="m"), (2, 5, 7)),
    (lambda: layer.Linear(9, 4, bias=False), (6, 9)),
    (lambda: layer.AvgPool2d(3, stride=2, padding=1, step_mode="m"), (2, 3, 4, 9, 9)),
    (lambda: layer.SeqToANNContainer(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (2, 5, 3, 7, 7)),
])
def test_spike_inputs_are_kept_as_bits_and_gradients_are_unchanged(make, shape):
    packed, plain = _compare_layer(make, spikes(*shape))
    assert torch.float32 in plain and torch.uint8 not in plain
    assert torch.uint8 in packed or not packed  # AvgPool keeps nothing at all
    assert packed.count(torch.float32) < plain.count(torch.float32)


def test_channels_last_conv_and_autocast_linear_are_exact():
    x = spikes(5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    packed, _ = _compare_layer(lambda: nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(3, 4, 3))),
                               x.unsqueeze(0))
    assert torch.uint8 in packed

    def _autocast(m, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(t).float()

    results = []
    for mode in ("default", "plain"):
        torch.manual_seed(0)
        lin = layer.Linear(6, 3, step_mode="m")
        functional.set_memory_mode(lin, mode)
        xg = _bits.mark(spikes(2, 4, 6).requires_grad_())
        out = _autocast(lin, xg)
        out.sum().backward()
        results.append((out, xg.grad, lin.weight.grad))
    for a, b in zip(*results):
        assert_bitwise_equal(a, b, "autocast linear")


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil", [
    (2, 2, 0, 1, False), (3, 2, 1, 1, False), (3, 1, 1, 1, True), (2, 1, 0, 2, False), (3, 3, 1, 1, True)])
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_max_pool_backward_equals_torch_ties_included(kernel, stride, padding, dilation, ceil, p):
    # p = 0.9 gives windows with several ones (ties), p = 0 windows of zeros only (all tied).
    x = spikes(2, 3, 4, 11, 10, p=p, seed=kernel * 7 + stride)
    packed, plain = _compare_layer(
        lambda: layer.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil, step_mode="m"), x)
    assert torch.int64 in plain and torch.int64 not in packed and packed == [torch.uint8]


def test_max_pool_of_spikes_is_marked_and_feeds_a_packed_conv():
    net = nn.Sequential(neuron.IFNode(step_mode="m"), layer.MaxPool2d(2, step_mode="m"),
                        layer.Conv2d(2, 3, 3, step_mode="m"))
    dtypes, out = saved_dtypes(lambda: net(torch.randn(2, 3, 2, 8, 8, requires_grad=True) + 1))
    assert dtypes.count(torch.uint8) == 2 and torch.int64 not in dtypes


def test_a_non_spike_input_is_never_packed():
    conv = layer.Conv2d(2, 3, 3, step_mode="m")
    binary_but_unmarked = spikes(2, 3, 2, 6, 6).requires_grad_()
    dtypes, _ = saved_dtypes(lambda: conv(binary_but_unmarked))
    assert torch.uint8 not in dtypes
    node = neuron.IFNode(step_mode="m")
    s = node(torch.randn(2, 3, 2, 6, 6, requires_grad=True) + 1)
    assert _bits.is_spikes(s)
    s2 = s * 1.0
    assert not _bits.is_spikes(s2), "a new tensor from any other op carries no mark"
    s.mul_(2)  # changed in place after the neuron: no longer 0/1, the mark is void
    dtypes, _ = saved_dtypes(lambda: conv(s))
    assert torch.uint8 not in dtypes
    drop = layer.Dropout(0.5, step_mode="m")
    dtypes, _ = saved_dtypes(lambda: conv(drop(node(torch.randn(2, 3, 2, 6, 6, requires_grad=True)))))
    assert torch.uint8 not in dtypes


def test_a_parameter_changed_in_place_before_backward_is_an_error():
    lin = layer.Linear(5, 3)
    out = lin(_bits.mark(spikes(4, 5)))
    with torch.no_grad():
        lin.weight.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_set_memory_mode_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode must be one of"):
        functional.set_memory_mode(nn.Sequential(), "lean")
