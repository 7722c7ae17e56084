"""PNG plots of a run's rows (matplotlib, imported only here and only when plotting).

- ``speedup_vs_spikingjelly.png``: each fastspike backend over the fastest SpikingJelly provider of each
  layer shape, forward and forward+backward, headline configuration (LIF, hard reset, fp32 when measured).
- ``time_vs_T.png``: every provider's time over the T sweep, with the copy of the ideal bytes as the floor.
- ``memory.png``: the memory suite's bytes saved and time per step (:mod:`.memory_report`).
"""
from __future__ import annotations

import os
from typing import List, Sequence

from . import memory_report
from .report import _config_title, _configs, _Index, _neuron_providers, _shapes, copy_equivalent_ms, speedup


def plot(rows: Sequence[dict], out_dir: str) -> List[str]:
    """Write the plots of ``rows`` into ``out_dir``; returns the files written, none when matplotlib is
    missing or there is nothing to plot."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = list(rows)
    memory = memory_report.plot(rows, out_dir, plt)
    configs = _configs(rows)
    if not configs:
        return memory
    idx, written = _Index(rows), list(memory)
    config = configs[0]
    ours = [p for p in _neuron_providers(idx, rows, config) if not idx.peer.get(p, True)]
    sj = [p for p in idx.providers if p.startswith("sj")]
    shapes = _shapes(rows, config)
    modes = ("forward", "forward+backward")

    def best_sj(shape, mode):
        times = [t for t in (idx.ms(q, config, shape, mode) for q in sj) if t]
        return min(times) if times else None

    if sj and any(best_sj(s, m) for _, s in shapes for m in modes):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        width = 0.8 / max(1, len(ours))
        for ax, mode in zip(axes, modes):
            for i, p in enumerate(ours):
                values = [speedup(best_sj(s, mode), idx.ms(p, config, s, mode)) or 0 for _, s in shapes]
                ax.bar([k + i * width for k in range(len(shapes))], values, width, label=p)
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_xticks([k + width * (len(ours) - 1) / 2 for k in range(len(shapes))])
            ax.set_xticklabels([f"{lb}\n[{s.replace('x', ',')}]" for lb, s in shapes], fontsize=7, rotation=20)
            ax.set_title(f"{mode}, {_config_title(config)}")
            ax.set_yscale("log")
        axes[0].set_ylabel("speedup over fastest SpikingJelly provider")
        axes[0].legend()
        fig.tight_layout()
        written.append(os.path.join(out_dir, "speedup_vs_spikingjelly.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    sweep_configs = [c for c in configs if _shapes(rows, c, sweep=True)]
    if sweep_configs:
        config = sweep_configs[0]
        sweep = sorted(_shapes(rows, config, sweep=True), key=lambda ls: int(ls[1].split("x")[0]))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        steps = [int(s.split("x")[0]) for _, s in sweep]
        for ax, mode in zip(axes, modes):
            for p in _neuron_providers(idx, rows, config):
                points = [(t, idx.ms(p, config, s, mode)) for t, (_, s) in zip(steps, sweep)]
                points = [(t, ms) for t, ms in points if ms]
                if points:
                    ax.plot(*zip(*points), marker="o", label=p)
            copies = [(t, idx.copy[(s, config[2])]["ms"]) for t, (_, s) in zip(steps, sweep)
                      if idx.copy.get((s, config[2]), {}).get("status") == "ok"]
            if copies:
                ax.plot([t for t, _ in copies], [copy_equivalent_ms(ms, mode) for _, ms in copies], "k--",
                        label="copy of the ideal bytes")
            ax.set_xscale("log", base=2)
            ax.set_xticks(steps, [str(t) for t in steps])
            ax.set_yscale("log")
            ax.set_xlabel(f"T (shape [T,{','.join(sweep[0][1].split('x')[1:])}])")
            ax.set_ylabel("ms")
            ax.set_title(f"{mode}, {_config_title(config)}")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        written.append(os.path.join(out_dir, "time_vs_T.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
