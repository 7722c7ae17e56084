"""Timers and memory probes for the worker.

- CUDA: ``triton.testing.do_bench`` (it flushes L2 between calls and synchronises), median with p20/p80;
  without Triton, CUDA events around each call, same statistics.
- CPU: consecutive calls after warm-up, median with p20/p80, within a time budget per measurement, a
  disturbed series retaken; glibc's malloc thresholds are pinned first (:func:`pin_malloc_thresholds`).
- Memory: peak CUDA allocation of one call above what was allocated before it, and the bytes of the
  distinct storages autograd saves for backward during a forward pass.

Every timer returns ``{"ms", "p20_ms", "p80_ms", "samples"}`` (``samples`` None where do_bench hides it).
"""
from __future__ import annotations

import ctypes
import statistics
import time
import weakref
from typing import Callable, Dict, Optional

import torch


def pin_malloc_thresholds() -> bool:
    """Fix glibc's adaptive mmap/trim thresholds (32 MiB / 256 MiB) for this process.

    Left adaptive, glibc raises the mmap threshold as multi-megabyte tensors are freed, and timings of the
    same code flip between two modes milliseconds apart (page faults on fresh mappings, or not). Pinned,
    every provider sees the same allocator. Returns False where the C library has no ``mallopt``.
    """
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        return False


def summarize(times_ms) -> Dict[str, Optional[float]]:
    """Median, 20th and 80th percentile of a non-empty list of times in ms."""
    times = sorted(times_ms)
    if len(times) == 1:
        return {"ms": times[0], "p20_ms": times[0], "p80_ms": times[0], "samples": 1}
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return {"ms": statistics.median(times), "p20_ms": deciles[1], "p80_ms": deciles[7], "samples": len(times)}


def bench_cpu(fn: Callable[[], object], warmup: int = 3, repeats: int = 30, budget_s: float = 2.0,
              min_repeats: int = 5, retakes: int = 2) -> dict:
    """Time ``fn`` on CPU: ``warmup`` untimed calls, then up to ``repeats`` timed calls, stopping early once
    ``budget_s`` seconds of timed calls have passed but never before ``min_repeats`` calls.

    A series whose p20-p80 spread exceeds half its median was disturbed (another process took the cores
    for part of it); it is retaken up to ``retakes`` times and the series with the lowest median is kept,
    since interference only ever adds time.
    """
    for _ in range(warmup):
        fn()
    best = None
    for _ in range(1 + retakes):
        times = []
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < min_repeats or time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        result = summarize(times)
        if best is None or result["ms"] < best["ms"]:
            best = result
        if result["p80_ms"] - result["p20_ms"] <= 0.5 * result["ms"]:
            break
    return best


def bench_cuda(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> dict:
    """Time ``fn`` on the current CUDA device with ``triton.testing.do_bench`` (``warmup_ms``/``rep_ms`` of
    calls), or with CUDA events around each of ~``rep_ms`` worth of calls where Triton is missing."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return _bench_cuda_events(fn, warmup_ms, rep_ms)
    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return {"ms": median, "p20_ms": p20, "p80_ms": p80, "samples": None}


def _bench_cuda_events(fn, warmup_ms, rep_ms) -> dict:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    estimate_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate_ms))):
        fn()
    times = []
    for _ in range(max(5, min(1000, int(rep_ms / estimate_ms)))):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return summarize(times)


def bench(fn: Callable[[], object], device: torch.device, options: Optional[dict] = None) -> dict:
    """``bench_cuda`` or ``bench_cpu`` by ``device``; ``options`` are that timer's keyword arguments
    (unknown ones are ignored, so one run's options can carry both timers' settings)."""
    options = options or {}
    if device.type == "cuda":
        return bench_cuda(fn, **{k: v for k, v in options.items() if k in ("warmup_ms", "rep_ms")})
    return bench_cpu(fn, **{k: v for k, v in options.items()
                            if k in ("warmup", "repeats", "budget_s", "min_repeats", "retakes")})


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak CUDA memory allocated during one call of ``fn`` above what was allocated before it (inputs and
    the module's state excluded); None on CPU, where PyTorch keeps no such counter."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def saved_for_backward(forward: Callable[[], torch.Tensor]):
    """Run ``forward()`` (with autograd recording) and return ``(output, bytes)``: the summed size of the
    distinct storages that the output's graph holds for backward, counted once however many tensors view
    them. Tensors saved by graph pieces the forward discarded are not counted (they are gone by then). The
    input itself counts when it is saved: a network would otherwise free it after the neuron."""
    out, storages = saved_storages(forward)
    return out, sum(storages.values())


def saved_storages(forward: Callable[[], torch.Tensor]):
    """``(output, {(device type, data pointer): bytes})`` of the storages :func:`saved_for_backward` counts."""
    saved = []

    def pack(t: torch.Tensor):
        saved.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    storages = {}
    for ref in saved:
        t = ref()
        if t is not None:
            storage = t.untyped_storage()
            storages[(storage.device.type, storage.data_ptr())] = storage.nbytes()
    return out, storages
