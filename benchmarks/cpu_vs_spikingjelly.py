"""Time fastspike's CPU backends (the reference 'torch' and, when built, the fused 'native' kernels) against
SpikingJelly 0.0.0.0.14's torch backend, side by side.

One process, same inputs, CPU: a multi-step IF and LIF layer (tau 2, hard reset to 0, ATan surrogate),
in each of ``--dtypes`` (fp16/bf16: fastspike keeps fp32 state, SpikingJelly computes in the input dtype),
forward under no_grad and forward+backward, each the median of ``--repeats`` runs after warm-up;
"copy" is ``x.clone()`` of the same input, the floor of a forward that reads x and writes spikes.
Writes ``OUT.csv`` (one row per measurement, with machine, versions, commit and time) and ``OUT.md``.

    python benchmarks/cpu_vs_spikingjelly.py --out benchmarks/results/cpu_native
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import torch

import fastspike
from fastspike import neuron, surrogate
from fastspike.bench.timing import pin_malloc_thresholds

with warnings.catch_warnings():  # SpikingJelly 0.0.0.0.14 uses the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    import spikingjelly
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate


def time_ms(fn, repeats: int, warmup: int = 10):
    """(p20, median, p80) of ``repeats`` consecutive calls after ``warmup`` calls, in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10)
    return q[1], statistics.median(times), q[7]


def providers(kind: str):
    """name -> module factory: every fastspike backend available on CPU, then SpikingJelly's torch backend."""
    options = {"IF": {}, "LIF": {"tau": 2.0}}[kind]
    node, sj_node = getattr(neuron, f"{kind}Node"), getattr(sj_neuron, f"{kind}Node")
    made = {f"fastspike {b}": functools.partial(node, surrogate_function=surrogate.ATan(), step_mode="m",
                                                backend=b, **options)
            for b in fastspike.backends.BACKENDS
            if fastspike.backends.unavailable_reason(b, "cpu") is None}
    made["SpikingJelly 0.0.0.0.14 torch"] = functools.partial(
        sj_node, surrogate_function=sj_surrogate.ATan(), step_mode="m", backend="torch", **options)
    return made


def measure(shape, kind, dtype, repeats):
    x = (torch.randn(shape) * 1.5 + 0.5).to(dtype)
    grad = torch.randn(shape).to(dtype)
    fns = {("copy", "forward"): lambda: x.clone()}
    for name, make in providers(kind).items():
        node = make()

        def forward(node=node):
            with torch.no_grad():
                node(x)
            node.reset()

        def forward_backward(node=node):
            node(x.detach().requires_grad_()).backward(grad)
            node.reset()

        fns[(name, "forward")] = forward
        fns[(name, "forward+backward")] = forward_backward
    return [(name, mode, *time_ms(fn, repeats)) for (name, mode), fn in fns.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="8,32,64,16,16", help="time-major shape T,N,... (default 8,32,64,16,16)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtypes", default="float32", help="comma-separated torch dtypes (default float32)")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pinned = pin_malloc_thresholds()
    shape = tuple(int(s) for s in args.shape.split(","))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    meta = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
            "torch": torch.__version__, "fastspike": fastspike.__version__,
            "spikingjelly": getattr(spikingjelly, "__version__", "0.0.0.0.14"), "malloc_pinned": pinned,
            "commit": commit,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    dtypes = args.dtypes.split(",")
    for name in dtypes:
        if not isinstance(getattr(torch, name, None), torch.dtype):
            parser.error(f"--dtypes: {name!r} is not a torch dtype")
    records = []
    for dtype in dtypes:
        for kind in ("LIF", "IF"):
            for provider, mode, p20, ms, p80 in measure(shape, kind, getattr(torch, dtype), args.repeats):
                records.append({"neuron": kind, "shape": "x".join(map(str, shape)), "dtype": dtype, "device": "cpu",
                                "provider": provider, "mode": mode, "ms": round(ms, 4), "p20_ms": round(p20, 4),
                                "p80_ms": round(p80, 4), **meta})
                print(f"{dtype:8s} {kind:4s} {provider:32s} {mode:17s} {ms:9.3f} ms (p20 {p20:.3f}, p80 {p80:.3f})",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    with open(out.with_suffix(".md"), "w") as f:
        f.write(f"# fastspike vs SpikingJelly 0.0.0.0.14 torch, CPU, `{records[0]['shape']}`\n\n")
        f.write(f"{meta['machine']}, {args.threads} threads, torch {meta['torch']}, commit {commit}, "
                f"{meta['time']}. Median of {args.repeats} consecutive runs per cell after 10 warm-up runs, ms "
                f"(p20/p80 in the CSV); glibc malloc thresholds pinned: {pinned}.\n\n")
        sj = "SpikingJelly 0.0.0.0.14 torch"
        f.write("| dtype | neuron | provider | forward (no_grad) | forward+backward | forward / copy | speed-up over "
                "SJ torch, forward / forward+backward |\n")
        f.write("|---|---|---|---|---|---|---|\n")
        for dtype in dtypes:
            for kind in ("LIF", "IF"):
                rows = {(r["provider"], r["mode"]): r["ms"] for r in records
                        if r["neuron"] == kind and r["dtype"] == dtype}
                copy_ms = rows[("copy", "forward")]
                f.write(f"| {dtype} | {kind} | copy | {copy_ms:.3f} | - | 1.00 | - |\n")
                sj_fwd, sj_fb = rows[(sj, "forward")], rows[(sj, "forward+backward")]
                for provider in providers(kind):
                    fwd, fb = rows[(provider, "forward")], rows[(provider, "forward+backward")]
                    f.write(f"| {dtype} | {kind} | {provider} | {fwd:.3f} | {fb:.3f} | {fwd / copy_ms:.1f} | "
                            f"{sj_fwd / fwd:.1f}x / {sj_fb / fb:.1f}x |\n")
        f.write(f"\nCommand: `python benchmarks/cpu_vs_spikingjelly.py --shape {args.shape} --dtypes {args.dtypes} "
                f"--repeats {args.repeats} --threads {args.threads} --out {args.out}`\n")


if __name__ == "__main__":
    main()
