"""``fastspike bench``: measure fastspike's backends against SpikingJelly, snnTorch and torch.compile.

    fastspike bench --device cpu --quick --out DIR      # a few minutes on a CPU-only machine
    fastspike bench --device cuda --out DIR --sj014 /tmp/sj014 --sj200 /tmp/sj200 --snntorch /tmp/snn
    fastspike bench --device cuda --grid acceptance ... # what benchmarks/gpu_check.sh judges
    fastspike bench --device cpu --grid memory --sj200 /tmp/sj200 --out DIR   # bytes kept for backward

Writes ``DIR/results.csv`` (one row per measurement), ``DIR/results.md`` (tables), PNG plots and
``DIR/logs/`` (the workers' stderr). ``--from-csv`` rebuilds the markdown and plots from a CSV.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import List, Optional

import torch

from . import providers as prov
from . import plots as plotting
from . import report, runner, suite

GRIDS = ("full", "quick", "acceptance", "snntorch", "memory")
# The compiled loop is left out of --quick and --grid acceptance on CPU unless --providers is given:
# compiling it once per configuration takes up to two minutes there, several times the rest of the run.
_CPU_COMPILE_SKIP = ("left out of --quick and --grid acceptance on CPU (compiling the unrolled loop takes tens of "
                     "seconds per configuration there): pass --providers, e.g. fastspike,peers,compile, to include it")


def _csv_list(text: Optional[str]) -> Optional[List[str]]:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    text = "time fastspike's backends against SpikingJelly, snnTorch and torch.compile; CSV, tables, plots"
    p = subparsers.add_parser("bench", help=text, description=text)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="default: cuda when available")
    p.add_argument("--grid", choices=GRIDS, default="full",
                   help="full: every kind, reset, dtype and shape, a T sweep and the CSNN (default); quick: see "
                        "--quick; acceptance: the grid and providers benchmarks/gpu_check.sh judges (4 layer "
                        "shapes, LIF and IF, hard reset, fp32 and bf16 on the first shape; tiny shapes on CPU); "
                        "snntorch: snnTorch's Leaky at the seed-000 CSNN's layer shapes (B=128, T=50), "
                        "fastspike.snntorch's fused sequence against snnTorch's per-step loop; memory: a training "
                        "step of the seeds' CSNN (T=4, B=8, C=32) and a SEW-ResNet-style stack in the default and "
                        "recompute memory modes (SpikingJelly 2's memopt), bytes saved for backward, time per "
                        "step, a plot")
    p.add_argument("--quick", action="store_true",
                   help="--grid quick: LIF and IF, hard reset, fp32, small shapes on CPU (the layer shapes on CUDA)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument("--providers", help="comma-separated ids or families (default all but, with --quick on CPU, "
                                       "compile; with --grid acceptance: "
                                       + ",".join(suite.ACCEPTANCE_PROVIDERS) + ", on CPU with "
                                       + ",".join(suite.ACCEPTANCE_CPU_STANDINS) + " and without compile): "
                                       + ", ".join(q.id for q in prov.registry()) + "; fastspike, sj014, sj2, peers")
    p.add_argument("--kinds", help="comma-separated of " + ", ".join(suite.KINDS))
    p.add_argument("--resets", help="comma-separated of " + ", ".join(suite.RESETS))
    p.add_argument("--dtypes", help="comma-separated of " + ", ".join(suite.DTYPES))
    p.add_argument("--shapes", help="layer shapes replacing the default ones, ';'-separated, e.g. '4,128,2048;"
                                    "100,128,10'")
    p.add_argument("--no-t-sweep", action="store_true", help="skip the time-vs-T shapes")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end CSNN training step")
    p.add_argument("--sj014", metavar="PATH", help="directory holding spikingjelly 0.0.0.0.14 (default: this "
                                                   "environment's, when it is 0.0.0.0.14)")
    p.add_argument("--sj200", metavar="PATH", help="directory holding spikingjelly 2.x (+ loguru) (default: this "
                                                   "environment's, when it is 2.x)")
    p.add_argument("--snntorch", metavar="PATH", help="directory holding snntorch (default: this environment's)")
    p.add_argument("--threads", type=int, help="CPU threads per worker (default: torch's default)")
    p.add_argument("--rep-ms", type=float, help="CUDA: do_bench's rep window per measurement (default 100)")
    p.add_argument("--budget-s", type=float, help="CPU: seconds of timed calls per measurement (default 2)")
    p.add_argument("--time-limit-s", type=float, help="stop measuring after this many seconds: what is left gets "
                                                      "'skipped' rows, and the results are written as usual")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="a line per unit instead of a progress bar")
    p.add_argument("--list-providers", action="store_true", help="print every provider's status and exit")
    p.add_argument("--from-csv", metavar="CSV[,CSV...]", help="rebuild results.csv (merged), results.md and the "
                                                              "plots in --out from these CSVs")
    p.add_argument("--headline", action="store_true", help="with --from-csv: print the README headline table "
                                                           "instead of writing files")


def _grid(args) -> str:
    return "quick" if args.quick else args.grid


def build_config(args) -> suite.Config:
    """The grid for ``args`` (--grid, --quick), narrowed or replaced by --kinds/--resets/--dtypes/--shapes."""
    grid = _grid(args)
    if grid == "full":
        config = suite.full_config()
    elif grid == "quick":
        config = suite.quick_config(args.device)
    elif grid == "snntorch":
        config = suite.snntorch_config(args.device)
    elif grid == "memory":
        config = suite.memory_config(args.device)
    else:
        config = suite.acceptance_config(args.device)
    for name, valid in (("kinds", suite.KINDS), ("resets", suite.RESETS), ("dtypes", suite.DTYPES)):
        chosen = _csv_list(getattr(args, name))
        if chosen is not None:
            bad = [c for c in chosen if c not in valid]
            if bad or not chosen:
                raise ValueError(f"--{name}: {', '.join(bad) or 'empty'} not in {', '.join(valid)}")
            setattr(config, name, tuple(chosen))
    config.also = tuple((d, label) for d, label in config.also if args.dtypes is None or d in config.dtypes)
    if args.shapes:
        texts = [s for s in args.shapes.split(";") if s.strip()]
        config.shapes = {f"shape {i + 1}": suite.parse_shape(text) for i, text in enumerate(texts)}
        config.also = ()
    if args.no_t_sweep:
        config.t_sweep = ()
    if args.no_e2e:
        config.e2e = None
    if args.rep_ms is not None:
        config.timing["rep_ms"] = args.rep_ms
    if args.budget_s is not None:
        config.timing["budget_s"] = args.budget_s
    return config


def _paths(args) -> dict:
    return {"sj014": args.sj014, "sj2": args.sj200, "snntorch": args.snntorch}


def _command() -> str:
    # `fastspike bench ...` has the subcommand first; `python -m fastspike.bench ...` has none.
    argv = sys.argv[1:]
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    return "fastspike bench " + " ".join(shlex.quote(a) for a in argv)


def write_outputs(rows, out: str, notes=(), plots: bool = True) -> None:
    """results.csv, the plots, then results.md (which links the plots) in ``out``."""
    os.makedirs(out, exist_ok=True)
    report.derive(rows)
    report.write_csv(rows, os.path.join(out, "results.csv"))
    written = plotting.plot(rows, out) if plots else []
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(report.markdown(rows, notes, written))


def run(args) -> int:
    """Run ``fastspike bench`` for parsed ``args``; returns the exit status (0 even when providers were
    skipped or failed: those are rows of the results, not failures of the run)."""
    if args.from_csv:
        sources = _csv_list(args.from_csv)
        rows = [row for path in sources for row in report.read_csv(path)]
        if args.headline:
            print(report.headline_snippet(rows, os.path.join(args.out, "results.md")), end="")
            return 0
        write_outputs(rows, args.out, [f"Tables rebuilt from {', '.join(sources)} by `{_command()}`"],
                      plots=not args.no_plots)
        print(f"wrote {args.out}/results.md from {', '.join(sources)}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastspike bench: --device cuda, but PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    names = _csv_list(args.providers)
    if names is None and _grid(args) == "acceptance":
        names = list(suite.acceptance_providers(args.device))
    elif names is None and _grid(args) == "snntorch":
        names = list(suite.SNNTORCH_PROVIDERS)
    elif names is None and _grid(args) == "memory":
        names = list(suite.MEMORY_PROVIDERS[args.device])
    try:
        config = build_config(args)
        chosen = prov.select(names, prov.registry())
    except ValueError as err:
        print(f"fastspike bench: {err}", file=sys.stderr)
        return 2
    locations = prov.locate_all(_paths(args))
    if args.list_providers:
        for p in chosen:
            loc = locations[p.family]
            reason = prov.static_skip_reason(p, loc, args.device)
            where = loc.path or "this environment"
            print(f"{p.id:12s} {'skip: ' + reason if reason else 'ready'} ({p.about}; {where}"
                  f"{', ' + loc.version if loc.version else ''})")
        return 0
    if args.device == "cpu" and _grid(args) == "full" and not args.shapes:
        print("fastspike bench: the full grid on CPU takes hours; --quick is the CPU set", file=sys.stderr)
    skip = {}
    if _grid(args) in ("quick", "acceptance") and args.device == "cpu" and args.providers is None:
        skip["compile"] = _CPU_COMPILE_SKIP
    jobs = suite.jobs(config)
    rows = runner.run(chosen, jobs, locations, args.device, os.path.join(args.out, "logs"), threads=args.threads,
                      timing=config.timing, skip=skip, progress=not args.no_progress, time_limit_s=args.time_limit_s)
    command = _command()
    for row in rows:
        row["command"] = command
    notes = [f"{f} from {loc.path}" for f, loc in locations.items() if loc.path]
    if any(r["family"] == "sj014" and r["status"] == "ok" for r in rows):
        notes.append("SpikingJelly 0.0.0.0.14 workers alias `numpy.int = int` (its cupy backend uses "
                     "numpy.int, which numpy 2 removed)")
    if _grid(args) == "quick":
        notes.append("--quick: a reduced grid" + (" with scaled-down shapes (`/4`: a quarter of the batch)"
                                                   if args.device == "cpu" else ""))
    elif _grid(args) == "acceptance":
        notes.append("--grid acceptance: the grid benchmarks/gpu_check.sh judges" +
                     (" (tiny shapes: a CPU rehearsal, not a measurement to quote)" if args.device == "cpu" else ""))
    write_outputs(rows, args.out, notes, plots=not args.no_plots)
    bad = sum(r["status"] == "error" for r in rows)
    print(f"{len(rows)} rows ({bad} errors) -> {os.path.join(args.out, 'results.csv')}, results.md")
    print("\n".join(report.headline(rows)))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastspike bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
