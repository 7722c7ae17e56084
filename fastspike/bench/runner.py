"""The parent side of a run: plan the (provider, job) units, start one worker process per provider group,
stream its rows behind a progress bar, survive worker crashes, and stamp every row with the run's metadata.

A worker that dies (segfault, CUDA error, out of memory) costs only the unit it was measuring: that unit
gets 'error' rows quoting the end of the worker's log, and a fresh worker takes the remaining units.
With a time limit, the worker measuring when it runs out is killed, and every unit not measured by then
gets 'skipped' rows saying so: a run always ends with its results written. Workers' stderr goes to
``<out>/logs/<group>.log``.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

import fastspike

from .providers import Location, Provider, group_key, job_skip_reason, static_skip_reason
from .suite import Job
from .worker import skip_rows

WORKER_CMD = (sys.executable, "-m", "fastspike.bench.worker")
TIME_LIMIT_REASON = "not measured: the run's time limit ({:g} s) was reached"


@dataclass(frozen=True)
class Unit:
    provider: Provider
    job: Job


class Progress:
    """A tqdm bar over all rows of the run (its description names the unit being measured), or, without
    tqdm or when ``enabled`` is False, one line per unit on stderr (nothing at all when ``quiet``)."""

    def __init__(self, total: int, enabled: bool = True, quiet: bool = False):
        self.total, self.done, self.quiet, self.bar = total, 0, quiet, None
        if enabled and not quiet:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="row", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text[:60])
        elif not self.quiet:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def unit_text(unit: Unit) -> str:
    job = unit.job
    what = job.kind or job.suite
    return f"{unit.provider.id} {what} {job.reset} {job.dtype} {'x'.join(map(str, job.shape))}".replace("  ", " ")


def plan(providers: Sequence[Provider], jobs: Sequence[Job], locations: Dict[str, Location], device: str,
         skip: Optional[Dict[str, str]] = None):
    """``(skipped_rows, groups)``: rows for units that cannot run here (reasons from ``skip`` by provider
    id, then :func:`~.providers.static_skip_reason` and :func:`~.providers.job_skip_reason`), and the
    runnable units per worker group, job-major so all providers measure one input back to back."""
    skip = skip or {}
    skipped, groups = [], {}
    for job in jobs:
        for provider in providers:
            if job.suite not in provider.suites:
                continue
            location = locations[provider.family]
            reason = (skip.get(provider.id) or static_skip_reason(provider, location, device)
                      or job_skip_reason(provider, job))
            if reason is not None:
                rows = skip_rows(provider, job, "skipped", reason)
                for row in rows:
                    row["provider_version"] = location.version
                skipped += rows
            else:
                groups.setdefault(group_key(provider, location), []).append(Unit(provider, job))
    return skipped, groups


def _log_tail(path: str, offset: int, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return "no log"
    tail = " | ".join(text[-lines:]) or "nothing on stderr"
    return tail if len(tail) <= 400 else "..." + tail[-397:]


@dataclass(frozen=True)
class Deadline:
    """When measuring stops (a ``time.monotonic()`` value), and the limit in seconds for the reason text."""

    at: float
    limit_s: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    @property
    def reason(self) -> str:
        return TIME_LIMIT_REASON.format(self.limit_s)


def _out_of_time(units: Sequence[Unit], deadline: Deadline, progress: Progress, done_modes: int = 0) -> List[dict]:
    """'skipped' rows for ``units``, the first of which has its first ``done_modes`` modes measured already."""
    rows = []
    for i, unit in enumerate(units):
        modes = unit.job.modes[done_modes if i == 0 else 0:]
        rows += [r for r in skip_rows(unit.provider, unit.job, "skipped", deadline.reason) if r["mode"] in modes]
        progress.update(len(modes))
    return rows


def run_group(key, units: Sequence[Unit], request: dict, log_path: str, progress: Progress,
              worker_cmd: Sequence[str] = WORKER_CMD, deadline: Optional[Deadline] = None) -> List[dict]:
    """Run ``units`` in worker processes with the group's import path and environment ``key``; returns
    their rows. ``request`` holds the device, threads and timing options shared by all units. Past
    ``deadline`` the worker is killed and the units left get 'skipped' rows."""
    path, env_pairs = key
    env = dict(os.environ)
    env.update(dict(env_pairs))
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    rows, pending = [], list(units)
    while pending:
        if deadline is not None and deadline.left() <= 0:
            rows += _out_of_time(pending, deadline, progress)
            break
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        payload = dict(request, units=[{"provider": u.provider.to_dict(), "job": u.job.to_dict()} for u in pending])
        current, got = None, 0
        with open(log_path, "a") as log:
            proc = subprocess.Popen(list(worker_cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                    env=env, text=True)
            timer = threading.Timer(deadline.left(), proc.kill) if deadline is not None else None
            if timer is not None:
                timer.start()
            try:
                try:
                    proc.stdin.write(json.dumps(payload))
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                for line in proc.stdout:
                    if line.startswith("@@START "):
                        current, got = int(line.split()[1]), 0
                        progress.describe(unit_text(pending[current]))
                    elif line.startswith("@@ROW ") and current is not None:
                        rows.append(json.loads(line[6:]))
                        got += 1
                        progress.update(1)
                code = proc.wait()
            finally:
                if timer is not None:
                    timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finished = current is not None and current == len(pending) - 1 and got == len(pending[current].job.modes)
        if finished:
            break
        if deadline is not None and deadline.left() <= 0:
            rows += _out_of_time(pending[current or 0:], deadline, progress, got if current is not None else 0)
            break
        reason = f"worker exited with code {code}: {_log_tail(log_path, offset)}"
        if current is None:
            # It died before measuring anything (an import or start-up failure): retrying would do the same.
            for unit in pending:
                rows += skip_rows(unit.provider, unit.job, "error", reason)
                progress.update(len(unit.job.modes))
            break
        crashed = pending[current]
        for mode in crashed.job.modes[got:]:
            rows += [r for r in skip_rows(crashed.provider, crashed.job, "error", reason) if r["mode"] == mode]
            progress.update(1)
        pending = pending[current + 1:]
    return rows


def _group_name(key) -> str:
    path, env_pairs = key
    name = os.path.basename(path.rstrip(os.sep)) if path else "local"
    if env_pairs:
        name += "-" + env_pairs[0][1]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def commit() -> str:
    """Short commit of the fastspike source tree, '+dirty' when it has uncommitted changes; outside a git
    checkout (a copy of the tree sent to a GPU machine) $FASTSPIKE_COMMIT, else 'unknown'."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastspike.__file__)))
    try:
        head = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("FASTSPIKE_COMMIT") or "unknown"
    return head + ("+dirty" if dirty else "")


def metadata(device: str, threads: Optional[int]) -> dict:
    """Columns every row carries: device, threads, torch/triton/fastspike versions, commit, UTC timestamp."""
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "absent"
    return {"device": device, "threads": threads or torch.get_num_threads(), "torch": torch.__version__,
            "triton": triton, "fastspike": fastspike.__version__, "commit": commit(),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run(providers: Sequence[Provider], jobs: Sequence[Job], locations: Dict[str, Location], device: str,
        log_dir: str, threads: Optional[int] = None, timing: Optional[dict] = None,
        skip: Optional[Dict[str, str]] = None, progress: bool = True, quiet: bool = False,
        worker_cmd: Sequence[str] = WORKER_CMD, time_limit_s: Optional[float] = None) -> List[dict]:
    """Measure every provider on every job it takes part in, for at most ``time_limit_s`` seconds; returns
    the rows (job-major, then provider, then mode order) with the run's :func:`metadata` on each. Never
    raises for a provider's failure."""
    deadline = Deadline.after(time_limit_s) if time_limit_s is not None else None
    skipped, groups = plan(providers, jobs, locations, device, skip)
    total = len(skipped) + sum(len(u.job.modes) for units in groups.values() for u in units)
    bar = Progress(total, enabled=progress, quiet=quiet)
    bar.update(len(skipped))
    os.makedirs(log_dir, exist_ok=True)
    request = {"device": device, "threads": threads, "timing": timing or {}}
    rows = list(skipped)
    try:
        for key, units in groups.items():
            log_path = os.path.join(log_dir, _group_name(key) + ".log")
            open(log_path, "w").close()  # a group's log holds this run only (its restarted workers append)
            rows += run_group(key, units, request, log_path, bar, worker_cmd, deadline)
    finally:
        bar.close()
    meta = metadata(device, threads)
    names = {r["device_name"] for r in rows if r.get("device_name")}
    for row in rows:
        row.update(meta)
        row.setdefault("device_name", next(iter(names), ""))
    job_order = {(j.suite, j.kind, j.reset, j.dtype, "x".join(map(str, j.shape))): i for i, j in enumerate(jobs)}
    provider_order = {p.id: i for i, p in enumerate(providers)}
    mode_order = {m: i for i, m in enumerate(("copy", "forward", "forward+backward", "train_step", "default",
                                              "recompute"))}
    rows.sort(key=lambda r: (job_order.get((r["suite"], r["kind"], r["reset"], r["dtype"], r["shape"]), 0),
                             provider_order.get(r["provider"], 0), mode_order.get(r["mode"], 0)))
    return rows
