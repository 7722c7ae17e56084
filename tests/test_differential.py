"""A seeded randomized differential test: fastspike's IF/LIF/PLIF against SpikingJelly 0.0.0.0.14's torch
backend and against an fp64 run, on every fused backend available on CPU.

Each configuration is drawn from one seed: neuron kind, tau (log-uniform up to 1e4), decay_input,
threshold, reset (hard to 0 or to another value, or soft), detach_reset, surrogate and its alpha, a time-major
shape with odd sizes (T up to 1001), a contiguous or strided layout, the dtype, a float or tensor initial
state, whether v_seq is stored, and, for about a third of them, extreme inputs: +-Inf, NaN, huge, subnormal
and signed zeros mixed into x.

The oracle is SpikingJelly in the same dtype (fp32, fp64), or in fp32 on the same values for fp16/bf16
inputs (fastspike's state and arithmetic are fp32 there). Spikes and v must equal it bit for bit. Every
gradient (x, the initial state, PLIF's w) must have the same NaN and Inf positions; its finite values must
be within 1e-5 of the gradient's scale (plus the output dtype's rounding), or, where SpikingJelly's own
result is the one far from the fp64 run, no farther from fp64 than twice SpikingJelly's distance.

Triton runs a subset of small configurations in a child process under its interpreter (TRITON_INTERPRET=1
must not leak into the other modules).
"""
import math
import os
import random
from typing import NamedTuple, Optional

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from fastspike import backends, neuron, surrogate
from helpers import assert_bitwise_equal, run_under_triton_interpreter

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
N_CONFIGS = 300
N_TRITON_CONFIGS = 40
SURROGATES = {"Sigmoid": 4.0, "ATan": 2.0, "PiecewiseQuadratic": 1.0, "PiecewiseExp": 1.0, "SoftSign": 2.0,
              "Erf": 2.0}
SPECIALS = [math.inf, -math.inf, math.nan, 1e30, -1e30, 3e38, -3e38, 1e-40, -1e-40, 0.0, -0.0, 1e6, -1e6]
DTYPES = [torch.float32] * 7 + [torch.float64, torch.float16, torch.bfloat16]
CLASSES = {"if": "IFNode", "lif": "LIFNode", "plif": "ParametricLIFNode"}


class Config(NamedTuple):
    seed: int
    kind: str
    tau: float
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]
    detach_reset: bool
    surrogate: str
    alpha: float
    shape: tuple
    dtype: torch.dtype
    strided: bool
    extreme: bool
    tensor_state: bool
    store_v_seq: bool


def draw(seed: int) -> Config:
    rng = random.Random(seed)
    t = rng.choice([1, 2, 3, 5, 8, 17, 33]) if rng.random() < 0.95 else rng.choice([257, 1001])
    dims = [rng.choice([1, 2, 3, 5, 7, 9]) for _ in range(rng.randint(1, 3))]
    if t > 100:
        dims = dims[:1]
    name = rng.choice(list(SURROGATES))
    return Config(
        seed=seed, kind=rng.choice(list(CLASSES)), tau=float(10 ** rng.uniform(math.log10(1.1), 4)),
        decay_input=rng.random() < 0.6, v_threshold=round(rng.uniform(0.2, 2.0), 3),
        v_reset=rng.choice([0.0, 0.0, round(rng.uniform(-1.0, 0.1), 3), None]), detach_reset=rng.random() < 0.3,
        surrogate=name, alpha=SURROGATES[name] * rng.choice([1.0, 1.0, 0.5, 3.0]), shape=(t, *dims),
        dtype=rng.choice(DTYPES), strided=rng.random() < 0.3, extreme=rng.random() < 0.35,
        tensor_state=rng.random() < 0.5, store_v_seq=rng.random() < 0.5)


def make_inputs(c: Config):
    """x [T, N, *] (strided when asked), the initial state (float or tensor), and the loss weights, all fp64
    values that the run's dtype represents exactly."""
    g = torch.Generator().manual_seed(c.seed)
    low = c.dtype if c.dtype != torch.float64 else torch.float32
    base = torch.randn((*c.shape[:-1], 2 * c.shape[-1]) if c.strided else c.shape, generator=g,
                       dtype=torch.float64) * 1.5 + 0.6 * c.v_threshold
    if c.extreme:
        flat = base.view(-1)
        pick = torch.rand(flat.shape, generator=g) < 0.15
        choice = torch.randint(len(SPECIALS), flat.shape, generator=g)
        flat[pick] = torch.tensor(SPECIALS, dtype=torch.float64)[choice[pick]]
    x = base.to(low).double()
    x = x[..., ::2] if c.strided else x
    v0 = (torch.randn(c.shape[1:], generator=g, dtype=torch.float64) * 0.5).to(low).double() \
        if c.tensor_state else 0.0
    weights = [torch.randn(c.shape, generator=g, dtype=torch.float64).to(low).double() for _ in range(2)]
    weights.append(torch.randn(c.shape[1:], generator=g, dtype=torch.float64).to(low).double())
    return x, v0, weights


def build(c: Config, lib: str, backend: str = "torch"):
    mod, sg_mod = (sj_neuron, sj_surrogate) if lib == "sj" else (neuron, surrogate)
    kw = dict(v_threshold=c.v_threshold, v_reset=c.v_reset, detach_reset=c.detach_reset, step_mode="m",
              store_v_seq=c.store_v_seq, surrogate_function=getattr(sg_mod, c.surrogate)(alpha=c.alpha))
    if c.kind == "lif":
        kw.update(tau=c.tau, decay_input=c.decay_input)
    elif c.kind == "plif":
        kw.update(init_tau=c.tau, decay_input=c.decay_input)
    if lib == "fs":
        kw["backend"] = backend
    return getattr(mod, CLASSES[c.kind])(**kw)


def run(node, c: Config, inputs, dtype):
    """Spikes, v_seq (or None), v_last, then the gradients of x, the initial state (or None) and w (or None)."""
    x64, v0, weights = inputs
    node = node.to(torch.float64) if dtype == torch.float64 else node
    x = x64.to(dtype).requires_grad_()
    v_init = None
    if isinstance(v0, torch.Tensor):
        v_init = v0.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
        node.v = v_init
    s = node(x)
    v_seq = node.v_seq if c.store_v_seq else None
    loss = (s.double() * weights[0]).sum() + (node.v.double() * weights[2]).sum()
    if v_seq is not None:
        loss = loss + (v_seq.double() * weights[1]).sum()
    loss.backward()
    w = getattr(node, "w", None)
    return [s.detach(), None if v_seq is None else v_seq.detach(), node.v.detach(), x.grad,
            None if v_init is None else v_init.grad, None if w is None else w.grad]


def assert_grad_matches(a, e, r, rounding, what):
    """``a`` ours, ``e`` SpikingJelly's, ``r`` the fp64 run's; see the module docstring for the rule."""
    assert a.shape == e.shape, what
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN positions differ"
    assert torch.equal(a.isposinf(), e.isposinf()) and torch.equal(a.isneginf(), e.isneginf()), \
        f"{what}: Inf positions differ"
    a, e, r = a.double(), e.double(), r.double()
    both = a.isfinite() & e.isfinite()
    a, e, r = a[both], e[both], r[both]
    if a.numel() == 0:
        return
    scale = e.abs().max().item()
    diff = (a - e).abs()
    if bool((diff <= 1e-5 * scale + rounding * e.abs()).all()):
        return
    exact = r.isfinite()
    ours, theirs = (a - r)[exact].abs().max().item(), (e - r)[exact].abs().max().item()
    assert bool(exact.all()) and ours <= 2 * theirs + 1e-5 * scale, \
        f"{what}: max |ours - sj| {diff.max().item():.3e} (scale {scale:.3e}); from fp64: ours {ours:.3e}, " \
        f"SpikingJelly {theirs:.3e}"


def check(c: Config, backend: str):
    inputs = make_inputs(c)
    oracle_dtype = torch.float32 if c.dtype in (torch.float16, torch.bfloat16) else c.dtype
    ours = run(build(c, "fs", backend), c, inputs, c.dtype)
    sj = run(build(c, "sj"), c, inputs, oracle_dtype)
    exact = run(build(c, "sj"), c, inputs, torch.float64)
    what = f"{backend} {c}"
    assert_bitwise_equal(ours[0], sj[0].to(c.dtype), f"spikes, {what}")
    for i, name in ((1, "v_seq"), (2, "v")):
        assert (ours[i] is None) == (sj[i] is None), f"{name}, {what}"
        if sj[i] is not None:
            assert_bitwise_equal(ours[i], sj[i], f"{name}, {what}")
    rounding = 0.0 if c.dtype == oracle_dtype else torch.finfo(c.dtype).eps
    for i, name in ((3, "grad x"), (4, "grad v_init"), (5, "grad w")):
        assert (ours[i] is None) == (sj[i] is None), f"{name}, {what}"
        if sj[i] is not None:
            expected = sj[i].to(c.dtype) if name == "grad x" else sj[i]
            assert_grad_matches(ours[i], expected, exact[i], rounding, f"{name}, {what}")


def _small(c: Config) -> bool:
    return c.shape[0] <= 17 and math.prod(c.shape) <= 400


CONFIGS = [draw(seed) for seed in range(N_CONFIGS)]
if INTERPRET:
    CONFIGS = [c for c in CONFIGS if _small(c)][:N_TRITON_CONFIGS]
BACKENDS = ["triton"] if INTERPRET else [b for b in ("torch", "native") if backends.unavailable_reason(
    b, "cpu") is None or os.environ.get("FASTSPIKE_REQUIRE_NATIVE") == "1"]


def test_the_draw_covers_the_space():
    configs = [draw(seed) for seed in range(N_CONFIGS)]
    for field, values in (("kind", CLASSES), ("surrogate", SURROGATES), ("dtype", set(DTYPES))):
        assert {getattr(c, field) for c in configs} == set(values), field
    for flag in ("decay_input", "detach_reset", "strided", "extreme", "tensor_state", "store_v_seq"):
        assert {getattr(c, flag) for c in configs} == {False, True}, flag
    assert {c.v_reset is None for c in configs} == {False, True}
    assert max(c.shape[0] for c in configs) == 1001 and max(c.tau for c in configs) > 5000


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"seed{c.seed}")
def test_matches_spikingjelly_and_fp64(config, backend):
    check(config, backend)


def test_triton_interpreter_subset():
    run_under_triton_interpreter(__file__)
