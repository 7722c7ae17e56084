"""Bad input raises a clear TypeError/ValueError naming the argument, never a silent wrong result."""
import math

import pytest
import torch

from fastspike import functional, layer, neuron, surrogate


class Shifted(surrogate.ATan):
    def forward(self, x):
        return (x >= 0.3).to(x)


@pytest.mark.parametrize("make,match", [
    (lambda: neuron.LIFNode(tau=0.0), "tau must be > 0"),
    (lambda: neuron.LIFNode(tau=-2.0), "tau must be > 0"),
    (lambda: neuron.LIFNode(tau=math.nan), "tau must be finite"),
    (lambda: neuron.LIFNode(tau="2"), "tau must be a number"),
    (lambda: neuron.IFNode(v_threshold=math.nan), "v_threshold must be finite"),
    (lambda: neuron.IFNode(v_threshold=math.inf), "v_threshold must be finite"),
    (lambda: neuron.IFNode(v_reset=math.nan), "v_reset must be finite"),
    (lambda: neuron.ParametricLIFNode(init_tau=1.0), "init_tau must be finite and > 1"),
    (lambda: neuron.ParametricLIFNode(init_tau=math.nan), "init_tau must be finite and > 1"),
    (lambda: neuron.IFNode(step_mode="x"), "step_mode must be 's' or 'm'"),
    (lambda: neuron.IFNode(backend="gpu"), "unknown backend 'gpu'"),
    (lambda: neuron.LIFNode(decay_input=1), "decay_input must be True or False"),
    (lambda: neuron.IFNode(detach_reset="no"), "detach_reset must be True or False"),
    (lambda: neuron.IFNode(store_v_seq=1), "store_v_seq must be True or False"),
    (lambda: neuron.IFNode(surrogate_function=torch.sigmoid), "surrogate_function must be a fastspike.surrogate"),
    (lambda: neuron.IFNode(surrogate_function=Shifted()), "Shifted overrides forward"),
    (lambda: layer.Dropout(1.0), "p must be a number in"),
    (lambda: layer.Linear(3, 4, step_mode="t"), "step_mode must be 's' or 'm'"),
])
def test_bad_hyperparameters_fail_at_construction(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_hyperparameter_changed_later_is_validated_at_the_next_call():
    node = neuron.LIFNode(step_mode="m")
    node(torch.zeros(2, 3))
    node.tau = -1.0
    with pytest.raises(ValueError, match="LIFNode: tau must be > 0"):
        node(torch.zeros(2, 3))


@pytest.mark.parametrize("x,error,match", [
    (torch.zeros(5), ValueError, r"x_seq must be time-major \[T, N, \*\]"),
    (torch.zeros(0, 3), ValueError, "T = 0"),
    (torch.zeros(3, 4, dtype=torch.int64), TypeError, "x_seq must be float16, bfloat16, float32 or float64"),
    (torch.zeros(3, 4, dtype=torch.bool), TypeError, "x_seq must be float16"),
    ([[0.0, 1.0]], TypeError, "x_seq must be a torch.Tensor"),
])
def test_bad_multi_step_input(x, error, match):
    with pytest.raises(error, match=match):
        neuron.LIFNode(step_mode="m")(x)
    with pytest.raises(error, match=match):
        functional.lif_multistep(x)


def test_bad_single_step_input():
    with pytest.raises(ValueError, match="single-step input x must be"):
        neuron.IFNode()(torch.tensor(1.0))
    with pytest.raises(TypeError, match="x must be float16"):
        neuron.IFNode()(torch.ones(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        neuron.IFNode()(1.0)


def test_stored_state_of_another_shape_is_rejected():
    node = neuron.LIFNode(step_mode="m")
    node(torch.rand(4, 8, 3))
    with pytest.raises(ValueError, match=r"stored state v has shape \(8, 3\).*reset_net"):
        node(torch.rand(4, 5, 3))
    node.reset()
    assert node(torch.rand(4, 5, 3)).shape == (4, 5, 3)


def test_state_on_another_device_is_rejected():
    node = neuron.IFNode(step_mode="m")
    node(torch.rand(2, 3))
    with pytest.raises(ValueError, match="stored state v is on cpu but x_seq is on meta"):
        node(torch.rand(2, 3, device="meta"))
    with pytest.raises(ValueError, match="v_init is on meta"):
        functional.if_multistep(torch.rand(2, 3), torch.zeros(3, device="meta"))


@pytest.mark.parametrize("v_init,error,match", [
    (torch.zeros(4), ValueError, r"v_init has shape \(4,\)"),
    (torch.zeros(3, dtype=torch.int32), TypeError, "v_init must be a floating-point tensor"),
    ("0", TypeError, "v_init must be a number or a tensor"),
])
def test_bad_v_init(v_init, error, match):
    with pytest.raises(error, match=match):
        functional.if_multistep(torch.rand(2, 3), v_init)


@pytest.mark.parametrize("w,error,match", [
    (0.5, TypeError, "w must be a torch.Tensor"),
    (torch.zeros(2), ValueError, "w must be a one-element floating tensor"),
    (torch.zeros((), dtype=torch.int64), ValueError, "w must be a one-element floating tensor"),
    (torch.zeros((), device="meta"), ValueError, "w is on meta"),
])
def test_bad_plif_weight(w, error, match):
    with pytest.raises(error, match=match):
        functional.plif_multistep(torch.rand(2, 3), w)


def test_functional_hyperparameters_are_checked():
    with pytest.raises(ValueError, match="lif_multistep: tau must be > 0"):
        functional.lif_multistep(torch.rand(2, 3), tau=0)
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        functional.if_multistep(torch.rand(2, 3), backend="bogus")
    with pytest.raises(TypeError, match="surrogate_function"):
        functional.if_multistep(torch.rand(2, 3), surrogate_function="atan")


@pytest.mark.parametrize("make,x", [
    (lambda: layer.Conv2d(3, 4, 3, step_mode="m"), torch.rand(2, 3, 8, 8)),
    (lambda: layer.MaxPool2d(2, step_mode="m"), torch.rand(3, 8, 8)),
    (lambda: layer.Linear(3, 4, step_mode="m"), torch.rand(2, 3)),
])
def test_multi_step_layer_rejects_input_without_time_axis(make, x):
    with pytest.raises(ValueError, match=r"multi-step input must have (\d|at least \d) dims"):
        make()(x)


def test_dropout_mask_of_another_shape_is_rejected():
    drop = layer.Dropout(0.5, step_mode="m")
    drop(torch.ones(2, 4, 3))
    with pytest.raises(ValueError, match="reset_net"):
        drop(torch.ones(2, 5, 3))

