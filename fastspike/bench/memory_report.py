"""The memory suite's tables and plot (rows from :mod:`.memory`)."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

MIB = 2 ** 20
_METHOD = (
    "Per training step (forward, MSE of the firing rate, backward, SGD, reset). `saved` counts the distinct "
    "storages autograd keeps for backward through saved-tensor hooks, parameters included (the issue's "
    "measure); `activations` leaves out the model's parameters and buffers, which exist anyway; `in use "
    "after forward` is what the allocator holds after the forward minus before it (CPU: glibc's count, "
    "which also sees what hooks cannot: checkpoint closures, references kept by autograd Functions). "
    "`x SJ` divides by SpikingJelly 0.0.0.0.14's figure of the same column; `x default` divides a "
    "provider's step time by its own default mode's, both timed in alternation in one process. `grads` "
    "says whether the recompute mode's gradients are bit-identical to the default mode's on the same "
    "weights and input.")


def memory_rows(rows) -> List[dict]:
    return [r for r in rows if r["suite"] == "memory"]


def _mib(v) -> str:
    return "-" if v is None else f"{v / MIB:.3g}" if v < 100 * MIB else f"{v / MIB:.0f}"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}x"


def _ok(rows, provider, mode) -> Optional[dict]:
    return next((r for r in rows if r["provider"] == provider and r["mode"] == mode and r["status"] == "ok"), None)


def table(rows: Sequence[dict]) -> List[str]:
    """One model's rows: a line per provider and mode."""
    peak = any(r.get("peak_mem_bytes") is not None for r in rows)
    sj = _ok(rows, "sj014-torch", "default") or {}
    header = ["provider", "mode", "saved MiB", "x SJ", "activations MiB", "x SJ", "in use after forward MiB",
              "ms/step", "x default", "grads = default"] + (["CUDA peak MiB"] if peak else [])
    body = []
    for r in rows:
        if r["status"] != "ok":
            continue
        default = _ok(rows, r["provider"], "default") or {}
        same = r.get("same_grads")
        cells = [r["provider"], r["mode"] + (" (memopt)" if r["family"] == "sj2" and r["mode"] == "recompute" else ""),
                 _mib(r.get("saved_bytes")), _ratio(r.get("saved_bytes"), sj.get("saved_bytes")),
                 _mib(r.get("saved_activation_bytes")),
                 _ratio(r.get("saved_activation_bytes"), sj.get("saved_activation_bytes")),
                 _mib(r.get("retained_bytes")), f"{r['ms']:.1f}", _ratio(r["ms"], default.get("ms")),
                 "-" if same is None else ("yes" if same in (True, "True") else "**no**")]
        body.append(cells + ([_mib(r.get("peak_mem_bytes"))] if peak else []))
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in body]


def markdown(rows) -> List[str]:
    """The '## Memory per training step' section, or nothing without memory rows."""
    mine = memory_rows(rows)
    if not mine:
        return []
    out = ["", "## Memory per training step", "", _METHOD]
    for label in dict.fromkeys(r["label"] for r in mine):
        model = [r for r in mine if r["label"] == label]
        t, b = model[0]["shape"].split("x")[:2]
        notes = sorted({f"{r['provider']}: {r['note']}" for r in model if r.get("note")})
        if any(r["family"] == "sj2" and r["mode"] == "recompute" and r["status"] == "ok" for r in model):
            notes.append("sj2-auto recompute: memopt's checkpoints (torch.utils.checkpoint, non-reentrant) keep "
                         "their inputs in closures that saved-tensor hooks never see, so its `saved` columns "
                         "undercount; compare it on `in use after forward`")
        out += ["", f"### {label}, T={t}, B={b}", ""] + table(model)
        out += [""] + [f"- {n}" for n in notes] if notes else []
    return out


def plot(rows, out_dir: str, plt) -> List[str]:
    """``memory.png``: per provider and mode, MiB saved (hooks) beside MiB in use after the forward, and ms
    per step; one column per model."""
    mine = [r for r in memory_rows(rows) if r["status"] == "ok"]
    if not mine:
        return []
    labels = list(dict.fromkeys(r["label"] for r in mine))
    fig, axes = plt.subplots(2, len(labels), figsize=(6 * len(labels), 7), squeeze=False)
    for k, label in enumerate(labels):
        model = [r for r in mine if r["label"] == label]
        names = [f"{r['provider']}\n{r['mode']}" for r in model]
        colors = ["tab:blue" if r["family"] == "fastspike" else "tab:gray" for r in model]
        at = range(len(model))
        axes[0][k].bar([i - 0.2 for i in at], [r["saved_bytes"] / MIB for r in model], 0.4, color=colors,
                       label="saved for backward (hooks)")
        axes[0][k].bar([i + 0.2 for i in at], [(r.get("retained_bytes") or 0) / MIB for r in model], 0.4,
                       color=colors, alpha=0.45, hatch="//", label="in use after forward")
        axes[0][k].set_xticks(list(at), names)
        axes[0][k].set_title(f"{label}: memory kept for backward")
        axes[0][k].set_ylabel("MiB")
        axes[0][k].legend(fontsize=7)
        axes[1][k].bar(names, [r["ms"] for r in model], color=colors)
        axes[1][k].set_title(f"{label}: training step")
        axes[1][k].set_ylabel("ms")
        for ax in axes[:, k]:
            ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "memory.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
