"""The networks of the seed experiments, on fastspike's layers and neurons, with their non-spiking twins.

A spiking model is a :class:`SpikingClassifier`: an encoder (:mod:`fastspike.encoding`) turns the static
input ``x [N, C, H, W]`` into a time-major sequence ``[T, N, C, H, W]``, and a multi-step network maps it
to output spikes ``[T, N, classes]``; with ``encoder=None`` the input already is such a sequence (event
frames). A twin is a plain ``nn.Sequential``, same layers with ``nn.ReLU`` in place of the neurons and no
activation after the last layer: ``x [N, C, H, W] -> logits [N, classes]``.

======================  ===============================================================================
``csnn`` / ``cnn``      seed 002 and SpikingJelly's Fashion-MNIST tutorial: [conv3x3-BN-IF-maxpool2] x 2,
                        Linear(C*(H/4)*(W/4) -> C*16)-IF, Linear(-> classes)-IF; ATan surrogate
``snntorch-csnn`` /     seed 000 (snnTorch's convolutional tutorial): conv5x5(12)-maxpool2-Leaky,
``snntorch-cnn``        conv5x5(64)-maxpool2-Leaky, Linear(1024 -> classes)-Leaky; T = 50, ce-step loss
``fc-snn``              seed 002: Linear(784 -> 10, no bias)-LIF(tau 2), Poisson input, T = 100
``mlp-snn`` / ``mlp``   seed 004: Linear(784 -> 1000)-Leaky, Linear(1000 -> 10)-Leaky, beta 0.95; T = 25,
                        ce-mem loss
``dvs-csnn`` /          seed 001 (CIFAR10-DVS): [conv3x3-BN-IF-maxpool2] until the frame is 4 x 4 or
``dvs-cnn``             smaller (at least one block), Linear(-> classes)-IF, T = 8 frames; the twin sees
                        the frames summed
======================  ===============================================================================

The snnTorch models (``snntorch-csnn``, ``mlp-snn``) use :class:`fastspike.snntorch.Leaky`, bit-identical to
snnTorch's, each as a multi-step layer that runs its fused ``sequence``; ``mlp-snn`` reads its loss from
the output layer's membrane potentials (seed 004, snnTorch's tutorial 5), so it returns a :class:`Readout`
``(spikes, mem)``, both ``[T, N, classes]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch import nn

from . import encoding, functional, layer, neuron, surrogate
from . import snntorch as fs_snntorch

__all__ = ["SpikingClassifier", "Readout", "LeakySequence", "csnn", "cnn", "snntorch_csnn", "snntorch_cnn", "fc_snn",
           "mlp_snn", "mlp",
           "dvs_csnn", "dvs_cnn", "ModelInfo", "MODELS", "build"]


class SpikingClassifier(nn.Module):
    """``encoder`` then a multi-step ``net``: ``x [N, *] -> spikes [T, N, classes]``.

    ``encoder`` is a name in :data:`fastspike.encoding.ENCODERS` applied with ``T`` steps, or None when
    ``x`` already is a sequence ``[T, N, *]`` (then ``T`` is the input's length and ``self.T`` is None).
    Call :func:`fastspike.functional.reset_net` after each batch: the neurons keep their state.
    """

    def __init__(self, net: nn.Module, T: Optional[int] = None, encoder: Optional[str] = "direct"):
        super().__init__()
        if encoder is not None:
            if encoder not in encoding.ENCODERS:
                raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(encoding.ENCODERS)} "
                                 f"or None for sequence input")
            if isinstance(T, bool) or not isinstance(T, int) or T < 1:
                raise ValueError(f"T must be a positive integer, got {T!r}")
        elif T is not None:
            raise ValueError("encoder=None takes sequences [T, N, *] whose length is T; do not pass T")
        functional.set_step_mode(net, "m")
        self.net, self.T, self.encoder = net, T, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x if self.encoder is None else encoding.encode(x, self.T, self.encoder)
        return self.net(x_seq)

    def extra_repr(self) -> str:
        return f"T={self.T}, encoder={self.encoder!r}"


class Readout(NamedTuple):
    """The output of a model read out from its last layer's membrane potentials: ``spikes`` and ``mem``,
    both ``[T, N, classes]``."""

    spikes: torch.Tensor
    mem: torch.Tensor


class LeakySequence(nn.Module):
    """A :mod:`fastspike.snntorch` neuron as a multi-step layer: ``[T, N, *] -> spikes [T, N, *]`` in one
    fused call; with ``readout`` it returns :class:`Readout` ``(spikes, mem_seq)``. Its state carries
    over until :func:`fastspike.functional.reset_net`, like the neurons of :mod:`fastspike.neuron`."""

    def __init__(self, neuron: fs_snntorch.SpikingNeuron, readout: bool = False):
        super().__init__()
        self.neuron, self.readout = neuron, readout

    def forward(self, x_seq: torch.Tensor):
        if self.readout:
            return Readout(*self.neuron.sequence(x_seq))
        return self.neuron.sequence(x_seq, states="last")[0]


def _parts(spiking: bool, make_node: Callable[[], nn.Module]):
    """Step mode and activation factory: a neuron for the SNN, ReLU for the twin."""
    return ("m", make_node) if spiking else ("s", nn.ReLU)


def _csnn_net(spiking, channels, classes, in_channels, image_size, backend):
    sm, act = _parts(spiking, lambda: neuron.IFNode(surrogate_function=surrogate.ATan(), backend=backend))
    s = image_size // 4
    if s < 1:
        raise ValueError(f"csnn needs images of at least 4 x 4 (two 2 x 2 poolings), got {image_size}")
    blocks = []
    for c_in in (in_channels, channels):
        blocks += [layer.Conv2d(c_in, channels, 3, padding=1, bias=False, step_mode=sm),
                   layer.BatchNorm2d(channels, step_mode=sm), act(), layer.MaxPool2d(2, 2, step_mode=sm)]
    return nn.Sequential(
        *blocks, layer.Flatten(step_mode=sm), layer.Linear(channels * s * s, channels * 16, bias=False, step_mode=sm),
        act(), layer.Linear(channels * 16, classes, bias=False, step_mode=sm), *([act()] if spiking else []))


def csnn(T: int = 4, channels: int = 128, classes: int = 10, in_channels: int = 1, image_size: int = 28,
         encoder: str = "direct", backend: str = "auto") -> SpikingClassifier:
    """Seed 002's CSNN (SpikingJelly's Fashion-MNIST tutorial): ``[N, in_channels, S, S] -> [T, N, classes]``.

    IF neurons (hard reset to 0, threshold 1, ATan surrogate); the tutorial uses channels 128, seed 002 64.
    """
    return SpikingClassifier(_csnn_net(True, channels, classes, in_channels, image_size, backend), T, encoder)


def cnn(channels: int = 128, classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Sequential:
    """The CNN twin of :func:`csnn`: ``[N, in_channels, S, S] -> logits [N, classes]``."""
    return _csnn_net(False, channels, classes, in_channels, image_size, "auto")


def _snntorch_size(image_size: int) -> int:
    s = ((image_size - 4) // 2 - 4) // 2
    if s < 1:
        raise ValueError(f"snntorch-csnn needs images of at least 12 x 12, got {image_size}")
    return s


def _snntorch_net(spiking, classes, in_channels, image_size, backend):
    sm, act = _parts(spiking, lambda: LeakySequence(fs_snntorch.Leaky(
        beta=0.5, spike_grad=fs_snntorch.surrogate.fast_sigmoid(slope=25), backend=backend)))
    s = _snntorch_size(image_size)
    return nn.Sequential(
        layer.Conv2d(in_channels, 12, 5, step_mode=sm), layer.MaxPool2d(2, step_mode=sm), act(),
        layer.Conv2d(12, 64, 5, step_mode=sm), layer.MaxPool2d(2, step_mode=sm), act(),
        layer.Flatten(step_mode=sm), layer.Linear(64 * s * s, classes, step_mode=sm), *([act()] if spiking else []))


def snntorch_csnn(T: int = 50, classes: int = 10, in_channels: int = 1, image_size: int = 28,
                  encoder: str = "direct", backend: str = "auto") -> SpikingClassifier:
    """Seed 000's snnTorch CSNN: ``[N, in_channels, S, S] -> [T, N, classes]``; snnTorch's ``Leaky(beta=0.5)``
    with the fast-sigmoid surrogate (slope 25), as in its convolutional tutorial."""
    return SpikingClassifier(_snntorch_net(True, classes, in_channels, image_size, backend), T, encoder)


def snntorch_cnn(classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Sequential:
    """The ANN twin of :func:`snntorch_csnn`: ``[N, in_channels, S, S] -> logits [N, classes]``."""
    return _snntorch_net(False, classes, in_channels, image_size, "auto")


def fc_snn(T: int = 100, classes: int = 10, in_features: int = 784, tau: float = 2.0, encoder: str = "poisson",
           backend: str = "auto") -> SpikingClassifier:
    """Seed 002's single-layer SNN: ``[N, *] -> [T, N, classes]``, Linear(in_features -> classes, no bias)
    then LIF(tau, ATan surrogate); ``prod(*)`` must be ``in_features``."""
    return SpikingClassifier(nn.Sequential(
        layer.Flatten(), layer.Linear(in_features, classes, bias=False),
        neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan(), backend=backend)), T, encoder)


def mlp_snn(T: int = 25, classes: int = 10, in_features: int = 784, hidden: int = 1000, beta: float = 0.95,
            encoder: str = "direct", backend: str = "auto") -> SpikingClassifier:
    """Seed 004's 784-1000-10 SNN (snnTorch's tutorial 5): ``[N, *] -> Readout`` of the output layer's
    spikes and membrane potentials ``[T, N, classes]``; snnTorch's ``Leaky(beta)`` with its defaults."""
    if not 0 <= beta <= 1:
        raise ValueError(f"mlp_snn: beta must be in [0, 1], got {beta}")

    def node(readout=False):
        return LeakySequence(fs_snntorch.Leaky(beta=beta, backend=backend), readout)
    return SpikingClassifier(nn.Sequential(
        layer.Flatten(), layer.Linear(in_features, hidden), node(), layer.Linear(hidden, classes), node(True)),
        T, encoder)


def mlp(classes: int = 10, in_features: int = 784, hidden: int = 1000) -> nn.Sequential:
    """The ANN twin of :func:`mlp_snn`: ``[N, *] -> logits [N, classes]``."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class _SumOverTime(nn.Module):
    """``[T, N, *] -> [N, *]``: integrates event frames into one image for a non-spiking network."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return x_seq.sum(0)


def _dvs_net(spiking, channels, classes, in_channels, frame_size, backend):
    sm, act = _parts(spiking, lambda: neuron.IFNode(backend=backend))
    blocks, c_in, s = [], in_channels, frame_size
    while not blocks or s > 4:  # each block's pooling halves the side, rounding down
        blocks += [layer.Conv2d(c_in, channels, 3, padding=1, bias=False, step_mode=sm),
                   layer.BatchNorm2d(channels, step_mode=sm), act(), layer.MaxPool2d(2, 2, step_mode=sm)]
        c_in, s = channels, s // 2
    head = [layer.Flatten(step_mode=sm), layer.Linear(channels * s * s, classes, step_mode=sm)]
    return nn.Sequential(*blocks, *head, act()) if spiking else nn.Sequential(_SumOverTime(), *blocks, *head)


def dvs_csnn(channels: int = 128, classes: int = 10, in_channels: int = 2, frame_size: int = 128,
             backend: str = "auto") -> SpikingClassifier:
    """Seed 001's CIFAR10-DVS CSNN: event frames ``[T, N, in_channels, S, S] -> [T, N, classes]``.

    IF neurons with SpikingJelly's defaults (threshold 1, hard reset to 0, sigmoid surrogate); the seed
    ran T = 8 frames. The seed's report lists no layer sizes: the depth here pools S down to 4 x 4 or
    smaller, with at least one block (S = 128: 5 blocks, 4 x 4; S = 48: 4 blocks, 3 x 3).
    """
    if frame_size < 2:
        raise ValueError(f"dvs_csnn: frame_size must be at least 2, got {frame_size}")
    return SpikingClassifier(_dvs_net(True, channels, classes, in_channels, frame_size, backend), None, None)


def dvs_cnn(channels: int = 128, classes: int = 10, in_channels: int = 2, frame_size: int = 128) -> nn.Sequential:
    """The CNN twin of :func:`dvs_csnn`: frames ``[T, N, in_channels, S, S]`` summed over T -> logits."""
    if frame_size < 2:
        raise ValueError(f"dvs_cnn: frame_size must be at least 2, got {frame_size}")
    return _dvs_net(False, channels, classes, in_channels, frame_size, "auto")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model and the training defaults ``fastspike train`` uses for it.

    ``T``/``channels``/``encoder`` are None where the model has no such argument (``T`` too for models
    whose T comes from the event frames); ``loss`` is a key of :data:`fastspike.encoding.LOSSES` for
    spiking models and ``'ce'`` (cross-entropy on logits) for twins; ``twin`` names the non-spiking twin.
    """

    about: str
    spiking: bool
    frames: bool
    loss: str
    opt: str
    lr: float
    T: Optional[int] = None
    channels: Optional[int] = None
    encoder: Optional[str] = None
    twin: Optional[str] = None


# Defaults are those of the digits main job (tuned for a 2-core CPU), not the seeds' GPU settings, which
# docs/training.md gives as explicit options.
MODELS = {
    "csnn": ModelInfo("seed 002 / SpikingJelly Fashion-MNIST CSNN (IF)", True, False, "mse-rate", "adam", 1e-3,
                      T=4, channels=32, encoder="direct", twin="cnn"),
    "cnn": ModelInfo("CNN twin of csnn (ReLU)", False, False, "ce", "adam", 1e-3, channels=32),
    "snntorch-csnn": ModelInfo("seed 000 snnTorch CSNN (snnTorch Leaky)", True, False, "ce-step", "adam", 1e-2, T=50,
                               encoder="direct", twin="snntorch-cnn"),
    "snntorch-cnn": ModelInfo("ANN twin of snntorch-csnn (ReLU)", False, False, "ce", "adam", 1e-2),
    "fc-snn": ModelInfo("seed 002 single-layer SNN 784-10 (LIF, Poisson input)", True, False, "mse-rate", "adam",
                        1e-3, T=100, encoder="poisson"),
    "mlp-snn": ModelInfo("seed 004 SNN 784-1000-10 (snnTorch Leaky)", True, False, "ce-mem", "adam", 5e-4, T=25,
                         encoder="direct", twin="mlp"),
    "mlp": ModelInfo("ANN twin of mlp-snn (ReLU)", False, False, "ce", "adam", 5e-4),
    "dvs-csnn": ModelInfo("seed 001 CIFAR10-DVS CSNN (IF), T from the frames", True, True, "mse-rate", "sgd",
                          5e-2, channels=64, twin="dvs-cnn"),
    "dvs-cnn": ModelInfo("CNN twin of dvs-csnn (frames summed)", False, True, "ce", "sgd", 5e-2, channels=64),
}


def build(name: str, in_shape: tuple, classes: int, T: Optional[int] = None, channels: Optional[int] = None,
          encoder: Optional[str] = None, backend: str = "auto", frames_T: Optional[int] = None) -> nn.Module:
    """Build the registered model ``name`` for inputs whose one step is ``in_shape`` ``(C, H, W)``.

    None for ``T``, ``channels`` or ``encoder`` takes the model's default (:data:`MODELS`); passing one
    the model has no use for is an error. ``frames_T`` is the length of event-frame inputs (frame models
    only; ``T``, if given, must equal it). ``backend`` goes to every neuron; twins have none.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    m = MODELS[name]
    if m.frames != (frames_T is not None):
        want = "event frames (--dataset cifar10-dvs)" if m.frames else "static images (not cifar10-dvs)"
        raise ValueError(f"model {name!r} takes {want}")
    accepts = {"T": m.spiking, "channels": m.channels is not None, "encoder": m.encoder is not None}
    for arg, value in (("T", T), ("channels", channels), ("encoder", encoder)):
        if value is not None and not accepts[arg]:
            raise ValueError(f"model {name!r} has no {arg} argument")
    if m.frames and T is not None and T != frames_T:
        raise ValueError(f"model {name!r} runs over the {frames_T} frames of each sample; got T={T}")
    channels = m.channels if channels is None else channels
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    T, encoder = (m.T if T is None else T), (encoder or m.encoder)
    c, h, w = in_shape
    if name in ("fc-snn", "mlp-snn"):
        make = fc_snn if name == "fc-snn" else mlp_snn
        return make(T, classes, c * h * w, encoder=encoder, backend=backend)
    if name == "mlp":
        return mlp(classes, c * h * w)
    if h != w:
        raise ValueError(f"model {name!r} takes square inputs, got {h} x {w}")
    return {
        "csnn": lambda: csnn(T, channels, classes, c, h, encoder, backend),
        "cnn": lambda: cnn(channels, classes, c, h),
        "snntorch-csnn": lambda: snntorch_csnn(T, classes, c, h, encoder, backend),
        "snntorch-cnn": lambda: snntorch_cnn(classes, c, h),
        "dvs-csnn": lambda: dvs_csnn(channels, classes, c, h, backend),
        "dvs-cnn": lambda: dvs_cnn(channels, classes, c, h),
    }[name]()
