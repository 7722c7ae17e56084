"""The two Python steps of benchmarks/gpu_check.sh: the launch check, and the verdict against the targets.

    python benchmarks/gpu_acceptance.py check --device cuda [--detail FILE]
    python benchmarks/gpu_acceptance.py summary --device cuda --csv results.csv --junit pytest.xml \\
        --steps steps.tsv --out summary.md [--verdict FILE]

Targets, for each fastspike backend (fs-native, fs-triton) on every configuration (shape, kind, dtype) of
the acceptance grid: forward at most 1.15x the time of one copy of the input, forward+backward at most 3.2x
(NOTES.md section 2: the ideal is 1.0x and 3.0x), at least 1.7x faster than SpikingJelly 2.0's Triton
kernels (sj2-triton) in both modes; and every test of ``pytest -m cuda`` passed, the bit-identity checks
among them. What is missing, skipped, or failed on the peer's side is n/a with its reason, never a pass; an
error of our own backend is a fail. The CPU rehearsal shows the ratios without judging them.

The summary reads files only and imports nothing outside the standard library, so it reports even when the
build or the install failed.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

PASS, FAIL, NA = "PASS", "FAIL", "n/a"
JUDGED = ("fs-native", "fs-triton")
PEER = "sj2-triton"


@dataclass(frozen=True)
class Target:
    title: str
    mode: str
    against: str  # 'copy': our ms / copy ms <= limit; 'peer': peer ms / our ms >= limit
    limit: float


TARGETS = (
    Target("forward <= 1.15x copy", "forward", "copy", 1.15),
    Target("forward+backward <= 3.2x copy", "forward+backward", "copy", 3.2),
    Target(f"forward >= 1.7x {PEER}", "forward", "peer", 1.7),
    Target(f"forward+backward >= 1.7x {PEER}", "forward+backward", "peer", 1.7),
)
# What passing each test module of `pytest -m cuda` shows; a module not listed is shown by its name.
TEST_GROUPS = {
    "test_native": "native CUDA kernels = reference bit for bit, CUDA-graph capture",
    "test_triton": "Triton CUDA kernels = reference bit for bit, torch.compile, CUDA-graph capture",
    "test_equivalence_spikingjelly_cuda": "= SpikingJelly 0.0.0.0.14's torch backend on the GPU, bit for bit",
    "test_cuda": "opcheck of the ops as the API calls them, torch.compile of native",
}


@dataclass(frozen=True)
class Cell:
    """A verdict (PASS, FAIL or n/a), its ``text`` (a ratio, counts) and ``note``: the reason behind an n/a
    or an error, printed once as a footnote however many cells share it."""

    verdict: str
    text: str = ""
    note: str = ""
    value: Optional[float] = None


class Notes:
    """Footnotes: each distinct reason gets a number on first use."""

    def __init__(self):
        self.numbers: Dict[str, int] = {}

    def mark(self, note: str) -> str:
        return f" [{self.numbers.setdefault(note, len(self.numbers) + 1)}]" if note else ""

    def lines(self) -> List[str]:
        return [f"[{n}] {note}  " for note, n in self.numbers.items()]


def render(cell: Cell, notes: Notes, judged: bool = True) -> str:
    """A cell as markdown; with ``judged`` False (the rehearsal) a ratio shows without its verdict."""
    if cell.verdict == NA:
        parts = ["n/a:" if cell.text else "n/a", cell.text]
    else:
        parts = [f"**{cell.verdict}**" if judged else "", cell.text]
    return " ".join(p for p in parts if p) + notes.mark(cell.note)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _clean(text: Optional[str]) -> str:
    return " ".join((text or "no reason given").split()).replace("|", "/")


# ------------------------------------------------------------------------------------------ bench targets
def read_rows(path: str) -> List[dict]:
    """The bench CSV's rows, ``ms`` as a float (None when empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["ms"] = float(r["ms"]) if r.get("ms") else None
    return rows


def configurations(rows) -> List[Tuple[str, str, str, str]]:
    """(shape, kind, reset, dtype) of every neuron job, in row order."""
    return list(dict.fromkeys((r["shape"], r["kind"], r["reset"], r["dtype"]) for r in rows if r["suite"] == "neuron"))


def config_text(config) -> str:
    shape, kind, reset, dtype = config
    return f"{kind.upper()} {dtype} [{shape.replace('x', ',')}]"


def judge_cell(target: Target, ours: Optional[dict], copy: Optional[dict], peer: Optional[dict]) -> Cell:
    """One backend on one configuration against ``target``, from its row and the copy and peer rows."""
    if ours is None:
        return Cell(NA, note="not measured")
    if ours["status"] == "error":
        return Cell(FAIL, "error", f"{ours['provider']} error: {_clean(ours.get('reason'))}")
    if ours["status"] != "ok" or ours["ms"] is None:
        return Cell(NA, note=f"{ours['provider']} skipped: {_clean(ours.get('reason'))}")
    base, name = (copy, "copy") if target.against == "copy" else (peer, PEER)
    if base is None:
        return Cell(NA, note=f"{name} not measured")
    if base["status"] != "ok" or base["ms"] is None:
        return Cell(NA, note=f"{name} {base['status']}: {_clean(base.get('reason'))}")
    value = ours["ms"] / base["ms"] if target.against == "copy" else base["ms"] / ours["ms"]
    met = value <= target.limit if target.against == "copy" else value >= target.limit
    return Cell(PASS if met else FAIL, f"{value:.2f}x", value=value)


def judge_bench(rows: Sequence[dict]) -> List[Tuple[str, tuple, List[Cell]]]:
    """(backend, configuration, a cell per target) for every judged backend and configuration."""
    index = {(r["provider"], r["shape"], r["kind"], r["reset"], r["dtype"], r["mode"]): r for r in rows}
    copies = {(r["shape"], r["dtype"]): r for r in rows if r["suite"] == "copy"}
    out = []
    for backend in JUDGED:
        for config in configurations(rows):
            shape, dtype = config[0], config[3]
            cells = [judge_cell(t, index.get((backend, *config, t.mode)), copies.get((shape, dtype)),
                                index.get((PEER, *config, t.mode))) for t in TARGETS]
            out.append((backend, config, cells))
    return out


def aggregate(cells: Sequence[Tuple[tuple, Cell]], judged: bool = True) -> Cell:
    """One backend's cells of one target: PASS only when every one passes; FAIL when any fails (naming up
    to three); otherwise n/a. Unjudged (the rehearsal), the range of the ratios measured."""
    if not cells:
        return Cell(NA, note="nothing measured")
    failed = [(c, cell) for c, cell in cells if cell.verdict == FAIL]
    na = [cell for _, cell in cells if cell.verdict == NA]
    values = [cell.value for _, cell in cells if cell.value is not None]
    if not judged:
        if not values:
            return Cell(NA, f"{len(na)} of {len(cells)}", na[0].note)
        return Cell(PASS, f"{min(values):.2f}x to {max(values):.2f}x over {len(values)} of {len(cells)}",
                    na[0].note if na else "")
    if failed:
        shown = "; ".join(f"{cell.text} on {config_text(c)}" for c, cell in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        return Cell(FAIL, f"{len(failed)} of {len(cells)}: {shown}{more}",
                    next((cell.note for _, cell in failed if cell.note), ""))
    if na:
        return Cell(NA, f"{len(na)} of {len(cells)}", na[0].note)
    return Cell(PASS, f"{len(cells)} of {len(cells)}")


# ------------------------------------------------------------------------------------------ tests
@dataclass(frozen=True)
class Case:
    module: str
    name: str
    outcome: str  # passed, failed, error, skipped
    message: str


def _module(classname: str, name: str) -> str:
    for part in (classname or name).split("."):
        if part.startswith("test_"):
            return part
    return classname or name


def read_junit(path: str) -> List[Case]:
    """Every testcase of a pytest ``--junitxml`` report."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = child.get("message") or child.text or ""
                break
        cases.append(Case(_module(tc.get("classname", ""), tc.get("name", "")), tc.get("name", ""), outcome,
                          message))
    return cases


def judge_tests(cases: Sequence[Case], rehearsal: bool) -> List[Tuple[str, Cell]]:
    """(title, cell) per test module. On the GPU a module passes when all its tests passed (a skip is n/a);
    in the rehearsal all are expected to be collected and skipped, and one that ran is marked wrongly."""
    groups: Dict[str, List[Case]] = {}
    for case in cases:
        groups.setdefault(case.module, []).append(case)
    out = []
    for module, mine in groups.items():
        title = f"{TEST_GROUPS.get(module, module)} ({module}.py)"
        bad = [c for c in mine if c.outcome in ("failed", "error")]
        ran = [c for c in mine if c.outcome == "passed"]
        skipped = [c for c in mine if c.outcome == "skipped"]
        if bad:
            names = ", ".join(c.name for c in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            cell = Cell(FAIL, f"{len(bad)} of {len(mine)} failed: {names}", _clean(bad[0].message))
        elif rehearsal and ran:
            cell = Cell(FAIL, f"{len(ran)} of {len(mine)} ran without a GPU: {', '.join(c.name for c in ran[:3])}",
                        "a test marked cuda must need a GPU")
        elif rehearsal:
            cell = Cell(NA, f"rehearsal: {len(mine)} collected, all skipped", _clean(skipped[0].message))
        elif skipped:
            cell = Cell(NA, f"{len(skipped)} of {len(mine)} skipped", _clean(skipped[0].message))
        else:
            cell = Cell(PASS, f"{len(mine)} passed")
        out.append((title, cell))
    return out


def tests_verdict(cases: Optional[List[Case]], problem: str, rehearsal: bool
                  ) -> Tuple[Cell, List[Tuple[str, Cell]]]:
    """The overall cell of ``pytest -m cuda`` and the cells per module."""
    if cases is None:
        return Cell(FAIL, note=problem), []
    if not cases:
        return Cell(FAIL, note="no test was collected with -m cuda"), []
    groups = judge_tests(cases, rehearsal)
    verdicts = {cell.verdict for _, cell in groups}
    if FAIL in verdicts:
        return Cell(FAIL, "see Tests"), groups
    if rehearsal:
        text = f"rehearsal: {len(cases)} tests collected in {_count(len(groups), 'module')}, all skipped"
        return Cell(NA, text), groups
    if NA in verdicts:
        return Cell(NA, "some were skipped on the GPU: see Tests"), groups
    return Cell(PASS, f"{len(cases)} tests in {_count(len(groups), 'module')}"), groups


# ------------------------------------------------------------------------------------------ summary
def read_steps(path: str) -> List[Tuple[str, str, str, str]]:
    """(name, status, seconds, detail) of each step gpu_check.sh has run."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple((line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]) for line in f if line.strip()]


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def summarize(device: str, rows: Optional[List[dict]], rows_problem: str, cases: Optional[List[Case]],
              cases_problem: str, steps) -> Tuple[str, str]:
    """(verdict, markdown). The verdict is PASS, FAIL or INCOMPLETE on the GPU, where every step, every
    target of each backend and the tests decide; REHEARSAL OK or REHEARSAL FAILED on CPU, where the steps and
    the tests' marking do. ``rows``/``cases`` are None when their file is missing, ``*_problem`` says why."""
    judged = device == "cuda"
    notes = Notes()
    verdicts = [PASS if status == "ok" else FAIL for _, status, _, _ in steps]

    if rows is None:
        totals = {(t.title, b): Cell(FAIL if judged else NA, note=rows_problem) for t in TARGETS for b in JUDGED}
        cells = []
    else:
        cells = judge_bench(rows)
        totals = {(t.title, b): aggregate([(config, cs[i]) for backend, config, cs in cells if backend == b], judged)
                  for i, t in enumerate(TARGETS) for b in JUDGED}
    if judged:
        verdicts += [cell.verdict for cell in totals.values()]
    tests, groups = tests_verdict(cases, cases_problem, not judged)
    tests_step = next((status for name, status, _, _ in steps if name == "tests"), "ok")
    if tests_step != "ok" and tests.verdict != FAIL:
        # An interrupted run still writes its report, with the test in progress as if it had passed.
        tests = Cell(FAIL, f"the tests step {tests_step}: the report is incomplete")
    verdicts.append(PASS if not judged and tests.verdict == NA else tests.verdict)
    if judged:
        verdict = FAIL if FAIL in verdicts else "INCOMPLETE" if NA in verdicts else PASS
    else:
        verdict = "REHEARSAL FAILED" if FAIL in verdicts else "REHEARSAL OK"

    first = rows[0] if rows else {}
    lines = [f"# fastspike GPU acceptance ({device}): {verdict}", ""]
    if first:
        lines.append(f"- Machine: {first.get('device_name')}; torch {first.get('torch')}, triton "
                     f"{first.get('triton')}, fastspike {first.get('fastspike')}, commit {first.get('commit')}, "
                     f"{first.get('timestamp')} (UTC)")
    if not judged:
        lines.append("- CPU rehearsal: the plumbing on a tiny grid. Ratios are shown, not judged: the targets are "
                     "for the H200.")
    lines += [f"- Ratios: our time over one `x.clone()` of the same tensor (ideal: 1.0x forward, 3.0x "
              f"forward+backward), and {PEER}'s time over ours (> 1: fastspike is faster). n/a is never a pass.",
              "", "## Steps", ""]
    lines += _table(["step", "status", "s", "detail"], [[name, status if status == "ok" else f"**{status}**",
                                                          seconds, " ".join(detail.split()).replace("|", "/")]
                                                         for name, status, seconds, detail in steps])
    lines += ["", "## Targets", ""]
    lines += _table(["target"] + list(JUDGED),
                    [[t.title] + [render(totals[t.title, b], notes, judged) for b in JUDGED] for t in TARGETS])
    lines += ["", f"Bit-identity held (every `pytest -m cuda` test passed): {render(tests, notes)}"]
    if groups:
        lines += ["", "## Tests (pytest -m cuda)", ""]
        lines += _table(["what", "result"], [[title, render(cell, notes)] for title, cell in groups])
    if cells:
        lines += ["", "## Per configuration", ""]
        lines += _table(["backend", "configuration"] + [t.title for t in TARGETS],
                        [[backend, config_text(config)] + [render(c, notes, judged) for c in cs]
                         for backend, config, cs in cells])
    if notes.numbers:
        lines += ["", "## Notes", ""] + notes.lines()
    return verdict, "\n".join(lines) + "\n"


def summary_main(args) -> int:
    rows, rows_problem = None, ""
    if os.path.exists(args.csv):
        rows = read_rows(args.csv)
    else:
        rows_problem = "no bench results (see the bench step)"
    cases, cases_problem = None, ""
    if os.path.exists(args.junit):
        try:
            cases = read_junit(args.junit)
        except ET.ParseError as err:
            cases_problem = f"unreadable pytest report ({err})"
    else:
        cases_problem = "no pytest report (see the tests step)"
    verdict, text = summarize(args.device, rows, rows_problem, cases, cases_problem, read_steps(args.steps))
    with open(args.out, "w") as f:
        f.write(text)
    if args.verdict:
        with open(args.verdict, "w") as f:
            f.write(verdict + "\n")
    return 0


# ------------------------------------------------------------------------------------------ launch check
def check_main(args) -> int:
    """fastspike._C is importable (on CUDA: with its CUDA kernels), and the fused kernels launch on
    ``--device``: forward and backward of a LIF layer, spikes and v bit-identical to the torch reference.
    Native must run on both devices, Triton on CUDA (on CPU it needs the interpreter: reported, not failed).
    A one-line verdict is appended to ``--detail``."""
    import torch

    import fastspike
    from fastspike import functional

    device = args.device
    problems, seen = [], []
    try:
        import fastspike._C as C
        print(f"fastspike {fastspike.__version__} from {os.path.dirname(fastspike.__file__)}; fastspike._C "
              f"WITH_CUDA={C.WITH_CUDA}, CUDA_ARCHS={getattr(C, 'CUDA_ARCHS', '?')}; torch {torch.__version__}")
        seen.append(f"WITH_CUDA={C.WITH_CUDA}")
        if device == "cuda" and not C.WITH_CUDA:
            problems.append("fastspike._C was built without its CUDA kernels")
    except ImportError as err:
        problems.append(f"fastspike._C does not import: {err}")
    if device == "cuda" and not torch.cuda.is_available():
        problems.append("PyTorch sees no CUDA device")
    else:
        if device == "cuda":
            print(f"GPU: {torch.cuda.get_device_name()}, compute capability {torch.cuda.get_device_capability()}")
        gen = torch.Generator().manual_seed(0)
        x = (torch.randn(8, 3, 4099, generator=gen) * 1.5 + 0.5).to(device)
        ref_s, ref_v = functional.lif_multistep(x, tau=2.0, backend="torch")
        for backend in ("native", "triton"):
            xg = x.clone().requires_grad_()
            try:
                spikes, v = functional.lif_multistep(xg, tau=2.0, backend=backend)
            except fastspike.BackendUnavailableError as err:
                if device == "cuda" or backend == "native":
                    problems.append(f"{backend} unavailable: {err}")
                else:
                    seen.append(f"{backend} n/a on {device}")
                    print(f"{backend}: n/a on {device} ({err})")
                continue
            (spikes.sum() + v.sum()).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            same = torch.equal(spikes, ref_s) and torch.equal(v, ref_v)
            finite = bool(torch.isfinite(xg.grad).all())
            print(f"{backend}: forward and backward launched on {device}; spikes and v "
                  f"{'bit-identical to' if same else 'DIFFERENT from'} the torch reference; grad "
                  f"{'finite' if finite else 'NOT finite'}")
            if same and finite:
                seen.append(f"{backend} kernels launch")
            else:
                problems.append(f"{backend}: wrong results on {device}")
    for p in problems:
        print(f"problem: {p}")
    if args.detail:
        with open(args.detail, "a") as f:
            f.write("; ".join(seen + problems) + "\n")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="fastspike._C and the fused kernels launch on the device")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--detail", help="append a one-line verdict to this file")
    p = sub.add_parser("summary", help="the verdict against the targets, as markdown")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--csv", required=True, help="the bench's results.csv")
    p.add_argument("--junit", required=True, help="pytest's --junitxml report of `pytest -m cuda`")
    p.add_argument("--steps", required=True, help="gpu_check.sh's step table (name, status, seconds, detail)")
    p.add_argument("--out", required=True, help="where to write the markdown")
    p.add_argument("--verdict", help="where to write the verdict word")
    args = parser.parse_args(argv)
    return check_main(args) if args.command == "check" else summary_main(args)


if __name__ == "__main__":
    sys.exit(main())
