"""What a benchmark run measures: shapes, neuron variants, dtypes, and the jobs built from them.

A :class:`Job` is one input configuration; every selected provider measures every job it can. Shapes
are time-major ``[T, N, *]``. The full grid (``--device cuda``) is the issue's; ``--quick`` is a few
scaled-down shapes sized so a whole CPU run, subprocess start-ups included, takes a few minutes on 2 cores;
``--grid acceptance`` is what ``benchmarks/gpu_check.sh`` judges against the targets (a tiny variant on CPU).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

# "leaky" is snnTorch's Leaky (fastspike.snntorch); the others SpikingJelly's neurons.
KINDS = ("if", "lif", "plif", "leaky")
RESETS = ("hard", "soft")
DTYPES = ("fp32", "fp16", "bf16")
NEURON_MODES = ("forward", "forward+backward")
# The end-to-end CSNN runs in fp32 and under autocast (fp16 on CUDA, bf16 on CPU).
E2E_PRECISIONS = ("fp32", "amp")

# The seeds' CSNN layers at B=128, T=4, C=128, a DVS layer, a long sequence and the T=100 single-layer nets.
FULL_SHAPES: Dict[str, Tuple[int, ...]] = {
    "CSNN conv1": (4, 128, 128, 28, 28),
    "CSNN conv2": (4, 128, 128, 14, 14),
    "CSNN fc": (4, 128, 2048),
    "DVS": (8, 32, 128, 32, 32),
    "long T": (64, 64, 4096),
    "T=100 out": (100, 128, 10),
    "T=100 hidden": (100, 128, 784),
}
# Same families at roughly 1-3 M elements: the SpikingJelly torch backend needs ~0.1 s per forward+backward
# there on 2 cores, which keeps the quick run at a few minutes.
QUICK_SHAPES: Dict[str, Tuple[int, ...]] = {
    "CSNN conv2 /4": (4, 32, 128, 14, 14),
    "CSNN fc": (4, 128, 2048),
    "T=100 out": (100, 128, 10),
    "T=100 hidden /4": (100, 32, 784),
}
# snnTorch's Leaky at the seed-000 CSNN's three neuron layers (its convolutional tutorial: B = 128, T = 50).
SNNTORCH_SHAPES: Dict[str, Tuple[int, ...]] = {
    "snnTorch CSNN conv1": (50, 128, 12, 12, 12),
    "snnTorch CSNN conv2": (50, 128, 64, 4, 4),
    "snnTorch CSNN fc": (50, 128, 10),
}
SNNTORCH_PROVIDERS = ("copy", "fs-native", "fs-triton", "snntorch")
# The acceptance grid of benchmarks/gpu_check.sh: four layer shapes of NOTES.md's H100 table, LIF and IF with
# hard reset, fp32, and bf16 on the first shape; for the CPU rehearsal, which proves the plumbing in well
# under a minute, the same T at up to 16 K elements.
ACCEPTANCE_SHAPES: Dict[str, Tuple[int, ...]] = {
    "CSNN conv1": (4, 128, 128, 28, 28),
    "DVS": (8, 32, 128, 32, 32),
    "long T": (64, 64, 4096),
    "T=100 out": (100, 128, 10),
}
ACCEPTANCE_TINY_SHAPES: Dict[str, Tuple[int, ...]] = {
    "CSNN conv1 tiny": (4, 2, 8, 14, 14),
    "DVS tiny": (8, 2, 4, 8, 8),
    "long T tiny": (64, 2, 64),
    "T=100 out tiny": (100, 4, 10),
}
ACCEPTANCE_PROVIDERS = ("copy", "fs-native", "fs-triton", "sj2-triton", "sj014-cupy", "compile")
# sj2-triton and sj014-cupy need CUDA: on CPU the peers' CPU paths stand in, so the rehearsal still runs
# a worker from each peer folder.
ACCEPTANCE_CPU_STANDINS = ("sj014-torch", "sj2-auto")
# Shapes [T, N, ...] of one N, ... over T: the time-vs-T plot.
SWEEP_LABEL = "T sweep"
FULL_T_SWEEP = tuple((t, 64, 4096) for t in (4, 8, 16, 32, 64, 128))
QUICK_T_SWEEP = tuple((t, 16, 1024) for t in (4, 16, 64))
# The memory suite (fastspike.bench.memory): (model, label, input [T, B, 1, 28, 28], conv width). The CSNN
# is the T=4, B=8, C=32; the SEW stack has the same input at C=16.
MEMORY_MODELS = (("csnn", "CSNN C=32", (4, 8, 1, 28, 28), 32), ("sew", "SEW-ResNet-style C=16", (4, 8, 1, 28, 28), 16))
MEMORY_MODES = ("default", "recompute")
MEMORY_PROVIDERS = {"cpu": ("fs-native", "sj014-torch", "sj2-auto"),
                    "cuda": ("fs-native", "fs-triton", "sj014-torch", "sj014-cupy", "sj2-auto")}


@dataclass(frozen=True)
class Job:
    """One input configuration.

    ``suite`` is 'neuron' (one neuron layer: modes 'forward' under no_grad and 'forward+backward'),
    'copy' (``x.clone()`` of the same tensor: mode 'copy'), 'e2e' (one CSNN training step: mode
    'train_step'; ``dtype`` is 'fp32' or 'amp', ``shape`` is the input ``[T, B, 1, 28, 28]`` and
    ``channels`` the conv width) or 'memory' (a training step of model ``kind`` in modes 'default' and
    'recompute': :mod:`.memory`). ``label`` names the shape in tables.
    """

    suite: str
    kind: str
    reset: str
    dtype: str
    shape: Tuple[int, ...]
    label: str = ""
    channels: int = 0

    @property
    def modes(self) -> Tuple[str, ...]:
        return {"neuron": NEURON_MODES, "copy": ("copy",), "e2e": ("train_step",), "memory": MEMORY_MODES}[self.suite]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        return cls(**{**d, "shape": tuple(d["shape"])})


@dataclass
class Config:
    """A run's grid. ``also`` adds ``(dtype, shape label)`` pairs for every kind and reset (a dtype measured
    on some shapes only); ``t_sweep`` shapes run for the first kind/reset/dtype only (LIF, hard, fp32 by
    default) and feed the time-vs-T plot; ``e2e`` is ``(B, T, C)`` of the CSNN, or None to skip it;
    ``memory`` the memory suite's models (:data:`MEMORY_MODELS` entries)."""

    shapes: Dict[str, Tuple[int, ...]]
    kinds: Sequence[str] = ("lif", "if", "plif")
    resets: Sequence[str] = RESETS
    dtypes: Sequence[str] = DTYPES
    also: Sequence[Tuple[str, str]] = ()
    t_sweep: Sequence[Tuple[int, ...]] = ()
    e2e: Tuple[int, int, int] = None
    e2e_precisions: Sequence[str] = E2E_PRECISIONS
    timing: dict = field(default_factory=dict)
    memory: Sequence[tuple] = ()


def full_config() -> Config:
    """The issue's whole grid, for CUDA: 7 shapes x IF/LIF/PLIF x hard/soft x fp32/fp16/bf16, the T sweep
    and the seeds' CSNN (B=128, T=4, C=128)."""
    return Config(shapes=dict(FULL_SHAPES), t_sweep=FULL_T_SWEEP, e2e=(128, 4, 128))


def quick_config(device: str) -> Config:
    """A few minutes on a 2-core CPU: 4 scaled shapes, LIF and IF, hard reset, fp32, a 3-point T sweep and
    a narrow CSNN (B=16, T=4, C=16). On CUDA the same grid with the issue's layer shapes."""
    shapes = dict(QUICK_SHAPES) if device == "cpu" else dict(FULL_SHAPES)
    e2e = (16, 4, 16) if device == "cpu" else (128, 4, 128)
    return Config(shapes=shapes, kinds=("lif", "if"), resets=("hard",), dtypes=("fp32",),
                  t_sweep=QUICK_T_SWEEP if device == "cpu" else FULL_T_SWEEP, e2e=e2e,
                  timing={"budget_s": 1.0, "repeats": 30} if device == "cpu" else {"rep_ms": 50})


def snntorch_config(device: str) -> Config:
    """The snnTorch family: Leaky (reset by subtraction, fp32) at the seed-000 CSNN's layer shapes,
    fastspike's fused ``sequence`` against snnTorch's per-step loop."""
    return Config(shapes=dict(SNNTORCH_SHAPES), kinds=("leaky",), resets=("soft",), dtypes=("fp32",),
                  timing={"budget_s": 1.0, "repeats": 30} if device == "cpu" else {"rep_ms": 50})


def acceptance_providers(device: str) -> Tuple[str, ...]:
    """The providers of the acceptance grid on ``device``."""
    return ACCEPTANCE_PROVIDERS + (ACCEPTANCE_CPU_STANDINS if device == "cpu" else ())


def acceptance_config(device: str) -> Config:
    """The grid ``benchmarks/gpu_check.sh`` judges: :data:`ACCEPTANCE_SHAPES` (on CPU the tiny ones), LIF and
    IF with hard reset, fp32, and bf16 on the first shape; no T sweep, no end-to-end step."""
    shapes = dict(ACCEPTANCE_SHAPES if device == "cuda" else ACCEPTANCE_TINY_SHAPES)
    return Config(shapes=shapes, kinds=("lif", "if"), resets=("hard",), dtypes=("fp32",),
                  also=(("bf16", next(iter(shapes))),),
                  timing={} if device == "cuda" else {"budget_s": 0.1, "repeats": 20})


def memory_config(device: str) -> Config:
    """The memory report: the seeds' CSNN and a SEW-ResNet-style stack, a training step in each memory mode."""
    return Config(shapes={}, kinds=(), e2e=None, memory=MEMORY_MODELS,
                  timing={"budget_s": 2.0, "repeats": 20} if device == "cpu" else {"rep_ms": 100})


def parse_shape(text: str) -> Tuple[int, ...]:
    """'4,128,2048' or '4x128x2048' -> (4, 128, 2048); at least [T, N], all positive."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ValueError(f"bad shape {text!r}: expected comma-separated integers such as 4,128,2048") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"bad shape {text!r}: need at least [T, N], all positive")
    return shape


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def jobs(config: Config) -> List[Job]:
    """Every job of ``config``, without duplicates: one 'copy' job per (shape, dtype), then the neuron
    jobs (kind x reset x dtype x shape, the ``also`` pairs, and the T sweep), then the end-to-end jobs."""
    neuron, copies = [], []
    seen = set()

    def add(kind, reset, dtype, shape, label):
        shape = tuple(shape)
        if (kind, reset, dtype, shape) in seen:
            return
        seen.add((kind, reset, dtype, shape))
        neuron.append(Job("neuron", kind, reset, dtype, shape, label))
        if ("copy", dtype, shape) not in seen:
            seen.add(("copy", dtype, shape))
            copies.append(Job("copy", "", "", dtype, shape, label))

    for dtype in config.dtypes:
        for kind in config.kinds:
            for reset in config.resets:
                for label, shape in config.shapes.items():
                    add(kind, reset, dtype, shape, label)
    for dtype, label in config.also:
        for kind in config.kinds:
            for reset in config.resets:
                add(kind, reset, dtype, config.shapes[label], label)
    if config.kinds and config.resets and config.dtypes:
        for shape in config.t_sweep:
            add(config.kinds[0], config.resets[0], config.dtypes[0], shape, SWEEP_LABEL)
    e2e = []
    if config.e2e is not None:
        batch, steps, channels = config.e2e
        for precision in config.e2e_precisions:
            e2e.append(Job("e2e", "if", "hard", precision, (steps, batch, 1, 28, 28), f"CSNN C={channels}",
                           channels))
    memory = [Job("memory", model, "hard", "fp32", shape, label, channels)
              for model, label, shape, channels in config.memory]
    return copies + neuron + e2e + memory
