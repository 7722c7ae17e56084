"""Results: roofline arithmetic, ``results.csv`` and ``results.md`` (plots: :mod:`.plots`).

Roofline (NOTES §2): a fused neuron kernel ideally moves 8 B per element in an fp32 inference forward (read
x, write spikes: one copy of x) and 24 B in training forward+backward (3 copies); fp16/bf16 halve both.
``copy_ms`` is the measured ``x.clone()`` time scaled to those bytes, ``gbps`` the ideal bytes over the
measured time, ``x_copy`` the time over ``copy_ms`` (1.0 is the floor). Speedups are peer time / time.
"""
from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from typing import List, Optional, Sequence

from . import memory_report
from .suite import DTYPES, KINDS, RESETS, SWEEP_LABEL

COLUMNS = ("suite", "label", "provider", "family", "provider_version", "kind", "reset", "dtype", "shape", "T",
           "numel", "mode", "status", "reason", "ms", "p20_ms", "p80_ms", "samples", "spike_rate",
           "peak_mem_bytes", "saved_bytes", "saved_activation_bytes", "retained_bytes", "same_grads", "note",
           "ideal_bytes", "copy_ms", "gbps", "x_copy", "items_per_s", "load1",
           "device", "device_name", "threads", "torch", "triton", "fastspike", "commit", "timestamp", "command")
_FLOATS = {"ms", "p20_ms", "p80_ms", "spike_rate", "copy_ms", "gbps", "x_copy", "items_per_s", "load1"}
_INTS = {"T", "numel", "samples", "peak_mem_bytes", "saved_bytes", "saved_activation_bytes", "retained_bytes",
         "ideal_bytes", "threads"}
ELEMENT_SIZE = {"fp32": 4, "fp16": 2, "bf16": 2}


# ------------------------------------------------------------------------------------------ arithmetic
def ideal_bytes(numel: int, dtype: str, mode: str) -> int:
    """Bytes an ideal fused kernel moves: 2 tensor passes for 'forward'/'copy', 6 for 'forward+backward'."""
    return numel * ELEMENT_SIZE[dtype] * (6 if mode == "forward+backward" else 2)


def copy_equivalent_ms(clone_ms: float, mode: str) -> float:
    """Time of copies moving the ideal bytes of ``mode``, from one ``x.clone()`` time."""
    return clone_ms * (3 if mode == "forward+backward" else 1)


def gbps(nbytes: float, ms: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes per second)."""
    return nbytes / (ms * 1e-3) / 1e9


def speedup(peer_ms: Optional[float], ms: Optional[float]) -> Optional[float]:
    """How many times faster than the peer (> 1: faster); None if either time is missing."""
    return peer_ms / ms if peer_ms and ms else None


def derive(rows: List[dict]) -> List[dict]:
    """Fill ``T``, ``numel`` and, for 'ok' copy and neuron rows with a copy of the same (shape, dtype),
    ``ideal_bytes``, ``copy_ms``, ``gbps`` and ``x_copy``. Modifies and returns ``rows``."""
    clone = {(r["shape"], r["dtype"]): r["ms"] for r in rows if r["suite"] == "copy" and r["status"] == "ok"}
    for r in rows:
        dims = [int(d) for d in str(r["shape"]).split("x")]
        r["T"], r["numel"] = dims[0], math.prod(dims)
        if r["suite"] not in ("copy", "neuron") or r["status"] != "ok" or r["dtype"] not in ELEMENT_SIZE:
            continue
        r["ideal_bytes"] = ideal_bytes(r["numel"], r["dtype"], r["mode"])
        r["gbps"] = gbps(r["ideal_bytes"], r["ms"])
        base = clone.get((r["shape"], r["dtype"]))
        if base:
            r["copy_ms"] = copy_equivalent_ms(base, r["mode"])
            r["x_copy"] = r["ms"] / r["copy_ms"]
    return rows


# ------------------------------------------------------------------------------------------ CSV
def write_csv(rows: Sequence[dict], path: str) -> None:
    """One line per row, :data:`COLUMNS` in order (missing values empty)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})


def read_csv(path: str) -> List[dict]:
    """Rows of a ``write_csv`` file with numbers parsed back and empty cells as None."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                if v == "":
                    row[k] = None
                elif k in _FLOATS:
                    row[k] = float(v)
                elif k in _INTS:
                    row[k] = int(v)
                else:
                    row[k] = v
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ markdown
def fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 1000 else f"{v:.3g}")


def fmt_x(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x")


def _num(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.3g}")


def _mb(v) -> str:
    return "-" if v is None else _num(v / 2**20)


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def _shape_cell(label: str, shape: str) -> str:
    return f"{label} `[{shape.replace('x', ',')}]`" if label else f"`[{shape.replace('x', ',')}]`"


def _configs(rows) -> List[tuple]:
    present = {(r["kind"], r["reset"], r["dtype"]) for r in rows if r["suite"] == "neuron"}
    order = lambda c: (KINDS.index(c[0]) if c[0] in KINDS else 9, RESETS.index(c[1]) if c[1] in RESETS else 9,
                       DTYPES.index(c[2]) if c[2] in DTYPES else 9)
    # LIF, hard reset, fp32 first: the headline configuration.
    return sorted(present, key=lambda c: (c != ("lif", "hard", "fp32"), order(c)))


class _Index:
    """Rows by (provider, kind, reset, dtype, shape, mode), plus the providers and shapes in row order."""

    def __init__(self, rows):
        self.rows = {(r["provider"], r["kind"], r["reset"], r["dtype"], r["shape"], r["mode"]): r for r in rows}
        self.providers = list(dict.fromkeys(r["provider"] for r in rows))
        self.peer = {r["provider"]: r["family"] not in ("copy", "fastspike") for r in rows}
        self.copy = {(r["shape"], r["dtype"]): r for r in rows if r["suite"] == "copy"}

    def get(self, provider, config, shape, mode) -> Optional[dict]:
        return self.rows.get((provider, *config, shape, mode))

    def ms(self, provider, config, shape, mode) -> Optional[float]:
        r = self.get(provider, config, shape, mode)
        return r["ms"] if r is not None and r["status"] == "ok" else None

    def cell(self, provider, config, shape, mode) -> str:
        r = self.get(provider, config, shape, mode)
        if r is None:
            return "-"
        return fmt_ms(r["ms"]) if r["status"] == "ok" else {"skipped": "skip", "error": "**error**"}[r["status"]]


def _shapes(rows, config, sweep=False) -> List[tuple]:
    """(label, shape) of ``config``'s neuron rows in row order: the layer shapes, or with ``sweep`` every
    shape sharing ``[N, ...]`` with a 'T sweep' job (a layer shape on the sweep joins it)."""
    mine = [r for r in rows if r["suite"] == "neuron" and (r["kind"], r["reset"], r["dtype"]) == config]
    if not sweep:
        return list(dict.fromkeys((r["label"], r["shape"]) for r in mine if r["label"] != SWEEP_LABEL))
    tails = {r["shape"].split("x", 1)[1] for r in mine if r["label"] == SWEEP_LABEL}
    return list(dict.fromkeys((r["label"], r["shape"]) for r in mine if r["shape"].split("x", 1)[1] in tails))


def _neuron_providers(idx: _Index, rows, config) -> List[str]:
    """Providers that ran (or failed) on ``config``; only-skipped ones are left to the skip table."""
    used = {r["provider"] for r in rows if r["suite"] == "neuron" and r["status"] != "skipped"
            and (r["kind"], r["reset"], r["dtype"]) == config}
    return [p for p in idx.providers if p in used]


def timing_table(rows, config, sweep=False) -> List[str]:
    """Shapes x providers, cells 'forward / forward+backward' ms, a copy column first."""
    idx = _Index(rows)
    providers = _neuron_providers(idx, rows, config)
    body = []
    for label, shape in _shapes(rows, config, sweep):
        copy = idx.copy.get((shape, config[2]))
        cells = [_shape_cell(label if not sweep else "", shape),
                 fmt_ms(copy["ms"]) if copy and copy["status"] == "ok" else "-"]
        cells += [f"{idx.cell(p, config, shape, 'forward')} / {idx.cell(p, config, shape, 'forward+backward')}"
                  for p in providers]
        body.append(cells)
    return _table(["shape", "copy"] + providers, body)


def roofline_table(rows, config) -> List[str]:
    """Per shape and fastspike backend: ms, GB/s and x copy of both modes, then the speedup over each peer
    (forward / forward+backward)."""
    idx = _Index(rows)
    providers = _neuron_providers(idx, rows, config)
    ours = [p for p in providers if not idx.peer.get(p, True)]
    peers = [p for p in providers if idx.peer.get(p) and any(
        idx.ms(p, config, s, m) for _, s in _shapes(rows, config) for m in ("forward", "forward+backward"))]
    body = []
    for label, shape in _shapes(rows, config):
        for p in ours:
            fwd, fb = idx.get(p, config, shape, "forward"), idx.get(p, config, shape, "forward+backward")
            if not any(r is not None and r["status"] == "ok" for r in (fwd, fb)):
                continue
            cells = [_shape_cell(label, shape), p]
            for r in (fwd, fb):
                ok = r is not None and r["status"] == "ok"
                cells += [fmt_ms(r["ms"]) if ok else "-", _num(r.get("gbps")) if ok else "-",
                          fmt_x(r.get("x_copy")) if ok else "-"]
            for q in peers:
                cells.append(" / ".join(fmt_x(speedup(idx.ms(q, config, shape, m), idx.ms(p, config, shape, m)))
                                        for m in ("forward", "forward+backward")))
            body.append(cells)
    header = ["shape", "backend", "fwd ms", "fwd GB/s", "fwd / copy", "f+b ms", "f+b GB/s", "f+b / copy"]
    return _table(header + [f"vs {q}" for q in peers], body)


def _has_peak(rows) -> bool:
    return any(r.get("peak_mem_bytes") is not None for r in rows if r["suite"] == "neuron")


def memory_table(rows, config) -> List[str]:
    """Forward+backward: MB saved for backward, and '/ peak MB' above the inputs where measured (CUDA)."""
    idx, peak = _Index(rows), _has_peak(rows)
    providers = [p for p in _neuron_providers(idx, rows, config)
                 if any(idx.ms(p, config, s, "forward+backward") for _, s in _shapes(rows, config))]
    body = []
    for label, shape in _shapes(rows, config):
        cells = [_shape_cell(label, shape)]
        for p in providers:
            r = idx.get(p, config, shape, "forward+backward")
            if r is None or r["status"] != "ok":
                cells.append("-")
            else:
                cells.append(_mb(r.get("saved_bytes")) + (f" / {_mb(r.get('peak_mem_bytes'))}" if peak else ""))
        body.append(cells)
    return _table(["shape"] + providers, body)


def e2e_table(rows) -> List[str]:
    """Providers x precision: ms per training step, images/s, peak MB (CUDA)."""
    e2e = [r for r in rows if r["suite"] == "e2e"]
    precisions = list(dict.fromkeys(r["dtype"] for r in e2e))
    columns = ("ms/step", "img/s", "peak MB") if any(r.get("peak_mem_bytes") is not None for r in e2e) else (
        "ms/step", "img/s")
    body = []
    for p in dict.fromkeys(r["provider"] for r in e2e if r["status"] != "skipped"):
        cells = [p]
        for precision in precisions:
            r = next((r for r in e2e if r["provider"] == p and r["dtype"] == precision), None)
            if r is None or r["status"] != "ok":
                cells += [r["status"] if r else "-"] + ["-"] * (len(columns) - 1)
            else:
                cells += [fmt_ms(r["ms"]), _num(r["items_per_s"]), _mb(r.get("peak_mem_bytes"))][:len(columns)]
        body.append(cells)
    return _table(["provider"] + [f"{p} {c}" for p in precisions for c in columns], body)


def _config_title(config) -> str:
    kind, reset, dtype = config
    return f"{kind.upper()}, {reset} reset, {dtype}"


def headline(rows) -> List[str]:
    """The README table: LIF, hard reset, fp32 (or the first configuration measured)."""
    configs = _configs(rows)
    return timing_table(rows, configs[0]) if configs else []


def headline_snippet(rows, source: str) -> str:
    """The headline table with a line naming the machine, date, commit and ``source`` (the full results),
    ready to paste into the README."""
    rows = list(rows)
    if not rows:
        return ""
    first, configs = rows[0], _configs(rows)
    title = _config_title(configs[0]) if configs else ""
    return "\n".join([f"{title}, median ms, forward (no_grad) / forward+backward, on {first.get('device_name')} "
                      f"({first.get('device')}), torch {first.get('torch')}, commit {first.get('commit')}, "
                      f"{str(first.get('timestamp'))[:10]}; all tables: {source}.", ""] + headline(rows)) + "\n"


def markdown(rows: Sequence[dict], notes: Sequence[str] = (), plots: Sequence[str] = ()) -> str:
    """The whole ``results.md``: context (command, machine, versions, commit, date, from the rows' metadata
    columns), headline, timing, roofline, memory, time vs T, end-to-end, and every skip/error reason."""
    rows = list(rows)
    first = rows[0] if rows else {}
    command = first.get("command") or "?"
    versions = {}
    for r in rows:
        if r.get("provider_version") and r["family"] not in ("copy", "fastspike") and r["status"] != "skipped":
            versions.setdefault(r["provider"], r["provider_version"])
    out = [f"# fastspike benchmark: {first.get('device_name', '?')}", "",
           f"- Command: `{command}`",
           f"- Machine: {first.get('device_name', '?')} ({first.get('device', '?')}, {first.get('threads', '?')} "
           f"CPU threads); torch {first.get('torch')}, triton {first.get('triton')}, fastspike "
           f"{first.get('fastspike')}, commit {first.get('commit')}, {first.get('timestamp')} (UTC)",
           "- Peers: " + (", ".join(f"{p} {v}" for p, v in versions.items()) or "none measured"),
           "- Times are medians in ms (p20/p80 in results.csv): `triton.testing.do_bench` on CUDA, consecutive "
           "calls after warm-up on CPU (glibc malloc thresholds pinned)."]
    if any(r["suite"] == "neuron" for r in rows):
        out += ["- Neuron tables: cells read `forward (no_grad) / forward+backward`; 'copy' is `x.clone()` of the "
                "same tensor; neurons are reset after every call.",
                "- Neurons: threshold 1, v_reset 0 (hard) or soft reset, ATan surrogate (alpha 2), tau 2, "
                "time-major `[T, N, ...]`, inputs N(0.5, 1.5). snnTorch `Leaky` is the nearest equivalent "
                "(beta = 1 - 1/tau, no input scaling, its own reset timing): same work, not the same numbers; in the "
                "LEAKY tables both run snnTorch's Leaky (fastspike.snntorch's fused sequence, snnTorch's per-step "
                "loop): the same numbers."]
    loads = [r["load1"] for r in rows if r.get("load1") is not None]
    if loads:
        out.append(f"- 1-minute load average while measuring: {min(loads):.2f} to {max(loads):.2f} (a load above "
                   f"the thread count means other processes shared the cores and inflated times)")
    out += [f"- {n}" for n in notes]
    configs = _configs(rows)
    if configs:
        out += ["", f"## Headline: {_config_title(configs[0])}", ""] + headline(rows)
        out += ["", "## Neuron layer timing, ms (forward / forward+backward)"]
        for config in configs:
            out += ["", f"### {_config_title(config)}", ""] + timing_table(rows, config)
        out += ["", "## Roofline and speedups",
                "", "Ideal bytes per element: 8 (fp32 forward) and 24 (fp32 forward+backward), half for "
                    "fp16/bf16. `/ copy` is the time over copies of those bytes (1.00x is the floor); "
                    "`vs P` is P's time over the backend's (forward / forward+backward; > 1: fastspike is "
                    "faster)."]
        for config in configs:
            out += ["", f"### {_config_title(config)}", ""] + roofline_table(rows, config)
        out += ["", "## Memory, forward+backward: MB saved for backward" +
                (" / peak MB allocated above the inputs" if _has_peak(rows) else " (peak memory: CUDA only)")]
        for config in configs:
            out += ["", f"### {_config_title(config)}", ""] + memory_table(rows, config)
        sweep = [c for c in configs if _shapes(rows, c, sweep=True)]
        if sweep:
            out += ["", f"## Time vs T: {_config_title(sweep[0])}, ms", ""] + timing_table(rows, sweep[0], True)
    if any(r["suite"] == "e2e" for r in rows):
        e2e = next(r for r in rows if r["suite"] == "e2e")
        t, b = e2e["shape"].split("x")[:2]
        out += ["", f"## End-to-end: {e2e['label']} training step, T={t}, B={b}", "",
                "conv3x3-BN-IF-maxpool x2, Linear-IF, Linear-IF; MSE of the firing rate, SGD. 'amp' autocasts "
                "to fp16 with a GradScaler on CUDA, bf16 on CPU.", ""] + e2e_table(rows)
    out += memory_report.markdown(rows)
    problems = defaultdict(int)
    for r in rows:
        if r["status"] != "ok":
            problems[(r["provider"], r["status"], r["reason"] or "")] += 1
    if problems:
        out += ["", "## Skipped and failed measurements", ""]
        out += _table(["provider", "status", "rows", "reason"],
                      [[p, s, str(n), reason.replace("|", "\\|")] for (p, s, reason), n in problems.items()])
    if plots:
        out += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(out) + "\n"
