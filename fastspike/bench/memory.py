"""The memory suite (``fastspike bench --grid memory``): what one training step keeps for backward.

Models, time-major ``[T, B, 1, 28, 28]`` inputs (a batch of images repeated over T, as the seeds do):

- ``csnn``: the seeds' CSNN, conv3x3-BN-IF-maxpool x2, Linear(C*49 -> C*16)-IF, Linear(-> 10)-IF.
- ``sew``: a small SEW-ResNet-style stack: conv3x3-BN-IF stem, a SEW basic block (two conv3x3-BN-IF, the
  block's input added to its output: SEW's ADD), maxpool, another block, maxpool, Linear(C*49 -> 10)-IF.

Each family builds them from its own layers: SpikingJelly 0.0.0.0.14's, SpikingJelly 2.x's, and for
fastspike SpikingJelly 0.0.0.0.14's converted by :func:`fastspike.from_spikingjelly` where that version is
importable in the worker (fastspike's own layers otherwise; the row's ``note`` says which).

Modes: 'default' (as shipped) and 'recompute': fastspike's ``set_memory_mode(net, 'recompute')``;
SpikingJelly 2.x's ``memopt.optimize_memory(level=1, checkpoint_budget='memory', compress=True)`` over
segments conv-BN-IF(-maxpool) and Linear-IF of the CSNN and the stem and blocks of the SEW stack (level 1
is the one that runs on CPU); SpikingJelly 0.0.0.0.14 has no such mode.

Per mode a row gives the median time of a training step (forward, MSE of the firing rate against one-hot
labels, backward, SGD, reset; the modes of one provider timed in alternation), the bytes saved for
backward (distinct storages through saved-tensor hooks, with and without the model's parameters and
buffers), the bytes still allocated after the forward (CPU: glibc's in-use count; CUDA: the allocator's;
it also sees what hooks cannot, such as what a checkpoint keeps in closures), the CUDA peak of a step, and
for 'recompute' whether its gradients are bit-identical to 'default' on the same weights and input.
"""
from __future__ import annotations

import ctypes
import gc
import time
import warnings
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from . import timing
from .providers import Provider
from .suite import Job

ATAN_ALPHA = 2.0


def _sj014_layers():
    """SpikingJelly 0.0.0.0.14's (neuron, surrogate, layer) modules when importable here, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import spikingjelly
            from spikingjelly.activation_based import layer, neuron, surrogate
    except ImportError:
        return None
    import importlib.metadata
    try:
        version = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        version = getattr(spikingjelly, "__version__", "")
    return (neuron, surrogate, layer) if version.startswith("0.") else None


def _library(family: str):
    if family == "fastspike":
        source = _sj014_layers()
        if source is not None:
            return source, "SpikingJelly 0.0.0.0.14 layers converted by fastspike.from_spikingjelly"
        from fastspike import layer, neuron, surrogate
        return (neuron, surrogate, layer), "fastspike layers"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from spikingjelly.activation_based import layer, neuron, surrogate
    return (neuron, surrogate, layer), ""


class Segment(nn.Sequential):
    """A group of layers SpikingJelly 2.x's memopt checkpoints as one (the target type it is given)."""


class SEWBlock(nn.Module):
    """SEW basic block with ADD: ``body(x) + x``, body = conv3x3-BN-IF-conv3x3-BN-IF."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


def build(model: str, family: str, channels: int, backend: Optional[str]):
    """``(net, note)``: ``model`` ('csnn' or 'sew') from ``family``'s layers, multi-step, with conv-BN-IF
    stages grouped in :class:`Segment` (a grouping that changes nothing but what memopt may target)."""
    (neuron, surrogate, layer), note = _library(family)
    c = channels
    options = {"step_mode": "m"}
    if family == "sj014" or (family == "fastspike" and note == "fastspike layers"):
        options["backend"] = backend
    elif family == "fastspike":
        options["backend"] = "torch"  # SpikingJelly 0.0.0.0.14's own, until from_spikingjelly converts it

    def node():
        return neuron.IFNode(surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), **options)

    def conv_bn(cin, cout):
        return [layer.Conv2d(cin, cout, 3, padding=1, bias=False, step_mode="m"),
                layer.BatchNorm2d(cout, step_mode="m"), node()]

    def pool():
        return layer.MaxPool2d(2, step_mode="m")

    if model == "csnn":
        net = nn.Sequential(
            Segment(*conv_bn(1, c), pool()), Segment(*conv_bn(c, c), pool()), layer.Flatten(step_mode="m"),
            Segment(layer.Linear(c * 49, c * 16, bias=False, step_mode="m"), node()),
            Segment(layer.Linear(c * 16, 10, bias=False, step_mode="m"), node()))
    elif model == "sew":
        net = nn.Sequential(
            Segment(*conv_bn(1, c)), SEWBlock(nn.Sequential(*conv_bn(c, c), *conv_bn(c, c))), pool(),
            SEWBlock(nn.Sequential(*conv_bn(c, c), *conv_bn(c, c))), pool(), layer.Flatten(step_mode="m"),
            Segment(layer.Linear(c * 49, 10, bias=False, step_mode="m"), node()))
    else:
        raise ValueError(f"no memory-suite model {model!r}")
    if family == "fastspike":
        import fastspike
        net = fastspike.from_spikingjelly(net, backend=backend or "auto")
    return net, note


def _flat(net: nn.Sequential) -> nn.Sequential:
    """The same modules without :class:`Segment` grouping (fastspike finds its blocks in a flat Sequential)."""
    mods = []
    for m in net:
        mods += list(m) if isinstance(m, Segment) else [m]
    return nn.Sequential(*mods)


def _reset_fn(family: str) -> Callable[[nn.Module], None]:
    if family == "fastspike":
        from fastspike import functional
    else:
        from spikingjelly.activation_based import functional
    return functional.reset_net


def prepare(provider: Provider, job: Job, mode: str, device: torch.device, x: torch.Tensor):
    """The model of ``job`` for ``provider`` in ``mode`` (same weights for every mode), and its note."""
    torch.manual_seed(0)
    net, note = build(job.kind, provider.family, job.channels, provider.variant)
    if provider.family == "fastspike":
        net = _flat(net)
        from fastspike import functional
        functional.set_memory_mode(net, mode)
    net = net.to(device)
    if provider.family == "sj2" and mode == "recompute":
        from spikingjelly.activation_based import memopt
        memopt.optimize_memory(net, (Segment, SEWBlock), lambda m: m(x), level=1, checkpoint_budget="memory",
                               compress=True)
        _reset_fn(provider.family)(net)
        note = "memopt level 1 over the conv-BN-IF(-maxpool), Linear-IF segments and SEW blocks"
    return net, note


def _in_use_bytes(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def _step_fn(net, x, target, opt, reset) -> Callable[[], None]:
    def step():
        rate = net(x).mean(0)
        loss = nn.functional.mse_loss(rate.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        reset(net)
    return step


def _probe(net, x, target, device, reset):
    """(saved bytes, saved bytes without parameters and buffers, bytes in use after the forward, grads)."""
    own = {t.untyped_storage().data_ptr() for t in list(net.parameters()) + list(net.buffers())}
    gc.collect()
    before = _in_use_bytes(device)
    out, storages = timing.saved_storages(lambda: net(x))
    after = _in_use_bytes(device)
    nn.functional.mse_loss(out.mean(0).float(), target).backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)
    reset(net)
    activations = sum(n for (kind, ptr), n in storages.items() if ptr not in own)
    retained = None if before is None or after is None else after - before
    return sum(storages.values()), activations, retained, grads


def _interleaved(steps: dict, device: torch.device, options: dict) -> dict:
    """Per mode, the timer's result dict: CUDA times each mode in turn; CPU alternates the modes call by
    call, so a disturbance on the machine lands on all of them alike."""
    if device.type == "cuda":
        return {mode: timing.bench(fn, device, options) for mode, fn in steps.items()}
    repeats, budget = int(options.get("repeats", 30)), float(options.get("budget_s", 2.0)) * len(steps)
    for fn in steps.values():
        for _ in range(int(options.get("warmup", 3))):
            fn()
    times = {mode: [] for mode in steps}
    start = time.perf_counter()
    while min(len(v) for v in times.values()) < repeats and (
            min(len(v) for v in times.values()) < int(options.get("min_repeats", 5))
            or time.perf_counter() - start < budget):
        for mode, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[mode].append((time.perf_counter() - t0) * 1e3)
    return {mode: timing.summarize(v) for mode, v in times.items()}


def measure(provider: Provider, job: Job, device: torch.device, options: dict, base_row) -> Iterator[dict]:
    """Rows for 'default' and 'recompute' of ``job`` (suite 'memory')."""
    steps_t, batch = job.shape[0], job.shape[1]
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(job.shape[1:], generator=gen).to(device)
    x = images.unsqueeze(0).expand(steps_t, *images.shape)
    target = nn.functional.one_hot(torch.randint(0, 10, (batch,), generator=gen), 10).float().to(device)
    modes = ["default"] + (["recompute"] if provider.family in ("fastspike", "sj2") else [])
    rows, steps, grads = {}, {}, {}
    reset = _reset_fn(provider.family)
    for mode in modes:
        net, note = prepare(provider, job, mode, device, x)
        saved, activations, retained, grads[mode] = _probe(net, x, target, device, reset)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        steps[mode] = _step_fn(net, x, target, opt, reset)
        rows[mode] = dict(base_row(provider, job, mode), status="ok", saved_bytes=saved,
                          saved_activation_bytes=activations, retained_bytes=retained, note=note)
    if "recompute" in rows:
        rows["recompute"]["same_grads"] = len(grads["default"]) == len(grads["recompute"]) and all(
            torch.equal(a, b) for a, b in zip(grads["default"], grads["recompute"]))
    for mode, result in _interleaved(steps, device, options).items():
        rows[mode].update(result)
        rows[mode]["items_per_s"] = batch / (result["ms"] / 1e3)
        rows[mode]["peak_mem_bytes"] = timing.peak_memory_bytes(steps[mode], device)
    for mode in modes:
        yield rows[mode]
    if "recompute" not in rows:
        yield dict(base_row(provider, job, "recompute"), status="skipped",
                   reason="SpikingJelly 0.0.0.0.14 has no recomputation mode")
