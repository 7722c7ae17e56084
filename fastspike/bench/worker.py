"""The measuring process: ``python -m fastspike.bench.worker`` with a JSON request on stdin.

Request: ``{"device": "cpu"|"cuda", "threads": int|null, "timing": {...}, "units": [{"provider": {...},
"job": {...}}, ...]}`` (:class:`~.providers.Provider` and :class:`~.suite.Job` as dicts). For each unit it
prints ``@@START <index>`` and then one ``@@ROW <json>`` line per mode of the job, on the real stdout;
everything libraries print goes to stderr, so stray output cannot corrupt the stream. A unit that cannot
run yields 'skipped' rows, one that raises yields 'error' rows with the exception; the runner turns a
crash of the whole process into error rows for the unit in progress and restarts the rest.

Neurons are built with threshold 1, ``v_reset`` 0 (hard) or None (soft), the ATan surrogate (alpha 2),
``tau`` 2 (LIF) or ``init_tau`` 2 (PLIF), multi-step, in training mode, parameters fp32 whatever the input
dtype; the 'leaky' kind is snnTorch's Leaky (beta 0.5, reset to zero or by subtraction), run by
``fastspike.snntorch.Leaky.sequence`` and by snnTorch's own per-step loop. Inputs are ``x ~ N(0.5, 1.5)``
of the job's shape and dtype, the same for every provider.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import sys
import traceback
import warnings
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from . import timing
from .providers import Provider
from .suite import Job

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TAU, V_THRESHOLD, ATAN_ALPHA = 2.0, 1.0, 2.0


def base_row(provider: Provider, job: Job, mode: str) -> dict:
    return {"suite": job.suite, "label": job.label, "provider": provider.id, "family": provider.family,
            "kind": job.kind, "reset": job.reset, "dtype": job.dtype, "shape": "x".join(map(str, job.shape)),
            "mode": mode}


def skip_rows(provider: Provider, job: Job, status: str, reason: str) -> List[dict]:
    """One row per mode of ``job`` with ``status`` ('skipped' or 'error') and ``reason``."""
    return [dict(base_row(provider, job, mode), status=status, reason=reason) for mode in job.modes]


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


# ----------------------------------------------------------------------------------------- providers
def _library(family: str):
    """(neuron, surrogate, layer, functional) modules of a fastspike-API family."""
    if family == "fastspike":
        from fastspike import functional, layer, neuron, surrogate
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from spikingjelly.activation_based import functional, layer, neuron, surrogate
    return neuron, surrogate, layer, functional


def _node_options(provider: Provider) -> dict:
    # SpikingJelly 0.0.0.0.14 checks the backend against the step mode at construction: pass both.
    options = {"step_mode": "m"}
    if provider.family in ("fastspike", "sj014"):
        options["backend"] = provider.variant
    return options


def unavailable_reason(provider: Provider, job: Job, device: torch.device) -> Optional[str]:
    """Why ``provider`` cannot run ``job`` here (found by importing its packages), or None."""
    if provider.family == "fastspike":
        from fastspike import backends
        return backends.unavailable_reason(provider.variant, device.type)
    if provider.family == "sj014" and provider.variant == "cupy":
        if device.type != "cuda":
            return "needs a CUDA device"
        try:
            import cupy  # noqa: F401
        except ImportError as err:
            return f"cupy is not installed ({err})"
    if provider.cuda_only and device.type != "cuda":
        return "needs a CUDA device"
    return None


def provider_version(provider: Provider) -> str:
    """The measured package's version, as this process imports it."""
    name = {"fastspike": "fastspike", "sj014": "spikingjelly", "sj2": "spikingjelly",
            "snntorch": "snntorch"}.get(provider.family, "torch")
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _ATanSpike(torch.autograd.Function):
    """Heaviside forward, ATan surrogate backward ``alpha/2 / (1 + (pi/2 alpha z)^2)``: compile-friendly."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (ATAN_ALPHA / 2) / (1 + (math.pi / 2 * ATAN_ALPHA * z).square())


def reference_loop(x: torch.Tensor, w: Optional[torch.Tensor], kind: str, hard: bool) -> torch.Tensor:
    """The neuron as a plain per-step loop over ``x [T, N, *]`` (fp32 state, decay_input, v_reset 0),
    spikes in ``x``'s dtype: what ``torch.compile`` is given to fuse."""
    v = torch.zeros_like(x[0], dtype=torch.float32)
    spikes = []
    for t in range(x.shape[0]):
        xt = x[t].float()
        if kind == "if":
            h = v + xt
        elif kind == "lif":
            h = v + (xt - v) / TAU
        else:
            h = v + (xt - v) * torch.sigmoid(w)
        s = _ATanSpike.apply(h - V_THRESHOLD)
        v = (1.0 - s) * h if hard else h - s * V_THRESHOLD
        spikes.append(s)
    return torch.stack(spikes).to(x.dtype)


def build_neuron(provider: Provider, kind: str, reset: str, device: torch.device
                 ) -> Tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[], None], List[torch.Tensor]]:
    """``(forward(x) -> spikes, reset(), trainable parameters)`` of ``provider``'s neuron layer."""
    hard = reset == "hard"
    family = provider.family
    if kind == "leaky" and family == "fastspike":
        import fastspike.snntorch as fs
        leaky = fs.Leaky(beta=1.0 - 1.0 / TAU, threshold=V_THRESHOLD, spike_grad=fs.surrogate.atan(ATAN_ALPHA),
                         reset_mechanism="zero" if hard else "subtract", backend=provider.variant).to(device)
        return (lambda x: leaky.sequence(x, states="last")[0]), leaky.reset, []
    if family in ("fastspike", "sj014", "sj2"):
        neuron, surrogate, _, _ = _library(family)
        cls = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}[kind]
        hyper = {"lif": {"tau": TAU}, "plif": {"init_tau": TAU}}.get(kind, {})
        node = cls(v_threshold=V_THRESHOLD, v_reset=0.0 if hard else None,
                   surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), **hyper, **_node_options(provider))
        node = node.to(device)
        return node, node.reset, [p for p in node.parameters() if p.requires_grad]
    if family == "snntorch":
        import snntorch
        from snntorch import surrogate as snn_surrogate
        leaky = snntorch.Leaky(beta=1.0 if kind == "if" else 1.0 - 1.0 / TAU, threshold=V_THRESHOLD,
                               spike_grad=snn_surrogate.atan(alpha=ATAN_ALPHA), learn_beta=kind == "plif",
                               reset_mechanism="zero" if hard else "subtract").to(device)

        def loop(x):
            mem = leaky.init_leaky()
            spikes = []
            for t in range(x.shape[0]):
                s, mem = leaky(x[t], mem)
                spikes.append(s)
            return torch.stack(spikes)

        return loop, lambda: None, [p for p in leaky.parameters() if p.requires_grad]
    if family == "compile":
        # A fresh cache per layer: recompiles would otherwise hit dynamo's limit and fall back to eager.
        torch._dynamo.reset()
        w = nn.Parameter(torch.zeros((), device=device)) if kind == "plif" else None  # sigmoid(0) = 1/tau
        compiled = torch.compile(lambda x, w: reference_loop(x, w, kind, hard), dynamic=False)
        return (lambda x: compiled(x, w)), lambda: None, [w] if w is not None else []
    raise ValueError(f"no neuron builder for family {family!r}")


def build_csnn(provider: Provider, channels: int, device: torch.device):
    """``(net, reset_net)``: the seeds' CSNN (conv3x3-BN-IF-maxpool x2, Linear(C*49 -> C*16)-IF,
    Linear(-> 10)-IF) for ``[T, B, 1, 28, 28]`` inputs from ``provider``'s layers and IF neurons."""
    if provider.family not in ("fastspike", "sj014", "sj2"):
        raise ValueError(f"no CSNN builder for family {provider.family!r}")
    neuron, surrogate, layer, functional = _library(provider.family)
    c = channels

    def node():
        return neuron.IFNode(surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), **_node_options(provider))

    net = nn.Sequential(
        layer.Conv2d(1, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), node(), layer.MaxPool2d(2),
        layer.Conv2d(c, c, 3, padding=1, bias=False), layer.BatchNorm2d(c), node(), layer.MaxPool2d(2),
        layer.Flatten(), layer.Linear(c * 49, c * 16, bias=False), node(),
        layer.Linear(c * 16, 10, bias=False), node())
    functional.set_step_mode(net, "m")
    return net.to(device), lambda: functional.reset_net(net)


# ----------------------------------------------------------------------------------------- measuring
def _inputs(shape, dtype: str, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) * 1.5 + 0.5
    grad = torch.randn(shape, generator=gen)
    return x.to(device=device, dtype=DTYPES[dtype]), grad.to(device=device, dtype=DTYPES[dtype])


def measure_copy(provider: Provider, job: Job, device: torch.device, options: dict) -> Iterator[dict]:
    x, _ = _inputs(job.shape, job.dtype, device)
    yield dict(base_row(provider, job, "copy"), status="ok", **timing.bench(x.clone, device, options),
               peak_mem_bytes=timing.peak_memory_bytes(x.clone, device))


def measure_neuron(provider: Provider, job: Job, device: torch.device, options: dict) -> Iterator[dict]:
    """Rows for 'forward' (under no_grad) and 'forward+backward' (gradients of x and of the neuron's
    parameters for a fixed gradient of the spikes); the neuron is reset after every call."""
    x, grad = _inputs(job.shape, job.dtype, device)
    node, reset, params = build_neuron(provider, job.kind, job.reset, device)
    xg = x.detach().requires_grad_()

    def forward():
        with torch.no_grad():
            out = node(x)
        reset()
        return out

    def run_backward(out):
        torch.autograd.grad(out, [xg] + params, grad if out.dtype == grad.dtype else grad.to(out.dtype))
        reset()

    def forward_backward():
        run_backward(node(xg))

    rate = forward().float().mean().item()
    for mode, fn in (("forward", forward), ("forward+backward", forward_backward)):
        row = base_row(provider, job, mode)
        try:
            row.update(status="ok", spike_rate=rate, **timing.bench(fn, device, options))
            row["peak_mem_bytes"] = timing.peak_memory_bytes(fn, device)
            if mode == "forward+backward":
                row["saved_bytes"] = _saved_bytes(lambda: node(xg), run_backward)
        except Exception as err:  # one failing mode must not hide the other's result
            row.update(status="error", reason=_error_text(err))
            _recover(device)
        yield row


def _saved_bytes(forward, backward) -> Optional[int]:
    try:
        out, saved = timing.saved_for_backward(forward)
    except Exception:  # e.g. a compiled graph that refuses saved-tensor hooks: the column stays empty
        return None
    backward(out)
    return saved


def measure_e2e(provider: Provider, job: Job, device: torch.device, options: dict) -> Iterator[dict]:
    """One 'train_step' row: forward of ``[T, B, 1, 28, 28]`` images, MSE of the firing rate against one-hot
    labels, backward, SGD step, reset; 'amp' autocasts to fp16 (CUDA, with a GradScaler) or bf16 (CPU)."""
    steps, batch = job.shape[0], job.shape[1]
    torch.manual_seed(0)
    net, reset_net = build_csnn(provider, job.channels, device)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(job.shape[1:], generator=gen).to(device)
    x = images.unsqueeze(0).expand(steps, *images.shape)
    target = nn.functional.one_hot(torch.randint(0, 10, (batch,), generator=gen), 10).float().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    amp = job.dtype == "amp"
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def step():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            rate = net(x).mean(0)
        loss = nn.functional.mse_loss(rate.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        reset_net()

    step()
    row = dict(base_row(provider, job, "train_step"), status="ok", **timing.bench(step, device, options))
    row["items_per_s"] = batch / (row["ms"] / 1e3)
    row["peak_mem_bytes"] = timing.peak_memory_bytes(step, device)
    yield row


def measure_memory(provider: Provider, job: Job, device: torch.device, options: dict) -> Iterator[dict]:
    from . import memory
    return memory.measure(provider, job, device, options, base_row)


MEASURES = {"copy": measure_copy, "neuron": measure_neuron, "e2e": measure_e2e, "memory": measure_memory}


def _recover(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_unit(provider: Provider, job: Job, device: torch.device, options: dict) -> List[dict]:
    """All rows of one (provider, job): 'ok' rows, or 'skipped'/'error' rows with the reason. Never raises
    (except on KeyboardInterrupt)."""
    version = provider_version(provider)
    try:
        reason = unavailable_reason(provider, job, device)
        if reason is not None:
            rows = skip_rows(provider, job, "skipped", reason)
        else:
            rows = list(MEASURES[job.suite](provider, job, device, options))
    except Exception as err:
        traceback.print_exc()
        rows = skip_rows(provider, job, "error", _error_text(err))
        _recover(device)
    # Other processes on the machine distort CPU timings: the 1-minute load average says how much.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for row in rows:
        row.update(provider_version=version, device_name=device_name(device), load1=load)
    return rows


@functools.lru_cache(maxsize=None)
def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo (the platform's processor elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def setup(request: dict) -> torch.device:
    """Process-wide settings before any provider is imported: threads, allocator, warnings, and
    ``numpy.int`` where SpikingJelly 0.0.0.0.14 runs."""
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    timing.pin_malloc_thresholds()
    warnings.simplefilter("ignore")  # SpikingJelly 0.0.0.0.14 warns about torch.jit.script on every import
    if any(unit["provider"]["family"] == "sj014" for unit in request["units"]):
        try:
            import numpy
            if not hasattr(numpy, "int"):
                # SpikingJelly 0.0.0.0.14's cupy backend uses numpy.int, removed in numpy 2.
                numpy.int = int
        except ImportError:
            pass
    return torch.device(request["device"])


def _cuda_usable(device: torch.device) -> bool:
    """False once a kernel fault (illegal address, device assert) has poisoned this process's CUDA context."""
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
        return True
    except RuntimeError:
        return False


def main() -> None:
    request = json.load(sys.stdin)
    out, sys.stdout = sys.stdout, sys.stderr
    device = setup(request)
    for index, unit in enumerate(request["units"]):
        print(f"@@START {index}", file=out, flush=True)
        provider, job = Provider.from_dict(unit["provider"]), Job.from_dict(unit["job"])
        rows = run_unit(provider, job, device, request.get("timing") or {})
        for row in rows:
            print("@@ROW " + json.dumps(row), file=out, flush=True)
        if device.type == "cuda" and any(r["status"] == "error" for r in rows) and not _cuda_usable(device):
            # Every later unit would fail in this context: exit, and the runner starts a fresh worker.
            print(f"CUDA context unusable after {provider.id} {job}; exiting for a fresh worker", file=sys.stderr)
            sys.exit(70)


if __name__ == "__main__":
    main()
