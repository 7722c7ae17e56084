"""``fastspike compare``: the seeds' table, an SNN against its non-spiking twin on the same data.

Both models are trained by :func:`fastspike.train.run` with the same dataset, split, frame size, epochs,
batch size, seed, device and channels, each in its own subfolder of the output folder; ``--opt``/``--lr``
apply to both when given, else each takes its registered default. ``--T``, ``--encoder``, ``--loss`` and
``--backend`` apply to the SNN only. The table (printed, and saved as ``compare.md``) gives each model's
best and final test accuracy (fractions) and the median time of one training step on a batch, which for
the SNN covers all T time steps.
"""
from __future__ import annotations

import argparse
import os

import torch

from . import __version__, models, train

__all__ = ["run", "TWINS", "markdown_table"]

TWINS = {name: m.twin for name, m in models.MODELS.items() if m.twin}


def markdown_table(rows: list, args) -> str:
    """The comparison as markdown; ``rows`` are ``(model name, metrics of fastspike train)``."""
    lines = [f"## {rows[0][0]} vs {rows[1][0]} on {args.dataset}", "",
             "| model | kind | parameters | T | best test acc | final test acc | train step (ms) | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        cfg = m["config"]
        kind = "SNN" if models.MODELS[name].spiking else "ANN"
        lines.append(f"| {name} | {kind} | {m['parameters']:,} | {cfg['T'] or '-'} | {m['best_test_acc']:.4f} | "
                     f"{m['final_test_acc']:.4f} | {m['step_ms']:.2f} | {m['epochs_done']} |")
    (snn, snn_m), (_, ann_m) = rows
    lines += ["", f"Accuracies are fractions of the test set. Train step: median wall time of forward, loss, "
                  f"backward and optimizer step on one batch of {args.batch_size} samples; the {snn} step "
                  f"takes {snn_m['step_ms'] / ann_m['step_ms']:.1f}x the ANN's. Device {snn_m['device']}, "
                  f"fastspike {__version__}, torch {torch.__version__}, seed {args.seed}.", ""]
    return "\n".join(lines)


def run(args) -> str:
    """Train ``args.model`` and its twin, print the table and save it to ``args.out/compare.md``."""
    if args.model not in TWINS:
        raise train.TrainError(f"--model {args.model!r} has no non-spiking twin; choose one of "
                               f"{', '.join(TWINS)}")
    rows = []
    for name in (args.model, TWINS[args.model]):
        spiking = models.MODELS[name].spiking
        sub = argparse.Namespace(**{
            **vars(args), "model": name, "out": os.path.join(args.out, name),
            "T": args.T if spiking else None, "encoder": args.encoder if spiking else None,
            "loss": args.loss if spiking else None})
        rows.append((name, train.run(sub)[1]))
    table = markdown_table(rows, args)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n" + table)
        with open(os.path.join(args.out, "compare.md"), "w") as f:
            f.write(table)
    return table
