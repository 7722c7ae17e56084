"""The benchmark harness (fastspike.bench) on CPU with tiny shapes: shape sweep, provider discovery, error
and crash rows, CSV/markdown writers, roofline arithmetic, and one small run through worker subprocesses."""
import json
import math
import os
import sys
import time

import pytest
import torch

from fastspike.bench import cli, providers, report, runner, suite, worker
from fastspike.bench.providers import Location
from fastspike.bench.suite import Job

CPU = torch.device("cpu")


def provider(pid):
    return next(p for p in providers.registry() if p.id == pid)


# ----------------------------------------------------------------------------------------- shape sweep
def test_quick_config_is_small_and_without_duplicates():
    jobs = suite.jobs(suite.quick_config("cpu"))
    neuron = [j for j in jobs if j.suite == "neuron"]
    assert {(j.kind, j.reset, j.dtype) for j in neuron} == {("lif", "hard", "fp32"), ("if", "hard", "fp32")}
    # 4 layer shapes for LIF and IF, the 3-point T sweep for LIF only.
    assert len(neuron) == 2 * 4 + 3
    assert len(set(jobs)) == len(jobs)
    assert {(j.shape, j.dtype) for j in jobs if j.suite == "copy"} == {(j.shape, j.dtype) for j in neuron}
    assert max(math.prod(j.shape) for j in neuron) <= 4 * 2**20
    assert [j.dtype for j in jobs if j.suite == "e2e"] == ["fp32", "amp"]
    assert all(j.modes == ("forward", "forward+backward") for j in neuron)


def test_full_config_covers_the_issue_grid():
    config = suite.full_config()
    jobs = suite.jobs(config)
    neuron = [j for j in jobs if j.suite == "neuron"]
    for shape in [(4, 128, 128, 28, 28), (4, 128, 128, 14, 14), (4, 128, 2048), (8, 32, 128, 32, 32),
                  (64, 64, 4096), (100, 128, 10), (100, 128, 784)]:
        assert {(j.kind, j.reset, j.dtype) for j in neuron if j.shape == shape} == {
            (k, r, d) for k in ("lif", "if", "plif") for r in suite.RESETS for d in suite.DTYPES}
    assert tuple(config.kinds) == ("lif", "if", "plif")
    # (64, 64, 4096) is both a layer shape and a T-sweep point: measured once.
    assert len(neuron) == 3 * 2 * 3 * 7 + 5
    assert [j.shape for j in jobs if j.suite == "e2e"] == [(4, 128, 1, 28, 28)] * 2


def test_acceptance_config_is_the_issue_grid():
    jobs = suite.jobs(suite.acceptance_config("cuda"))
    neuron = [j for j in jobs if j.suite == "neuron"]
    shapes = [(4, 128, 128, 28, 28), (8, 32, 128, 32, 32), (64, 64, 4096), (100, 128, 10)]
    assert {(j.kind, j.reset, j.dtype, j.shape) for j in neuron} == (
        {(k, "hard", "fp32", s) for k in ("lif", "if") for s in shapes}
        | {(k, "hard", "bf16", shapes[0]) for k in ("lif", "if")})
    assert len(neuron) == 10 and len(set(jobs)) == len(jobs)
    assert {(j.shape, j.dtype) for j in jobs if j.suite == "copy"} == {(j.shape, j.dtype) for j in neuron}
    assert not [j for j in jobs if j.suite == "e2e"]
    tiny = [j for j in suite.jobs(suite.acceptance_config("cpu")) if j.suite == "neuron"]
    assert len(tiny) == 10 and max(math.prod(j.shape) for j in tiny) <= 2 ** 14
    assert [j.shape[0] for j in tiny[:4]] == [s[0] for s in shapes]  # the same T as on the GPU


def _args(*argv):
    parser = cli.argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_acceptance_grid_narrowed_from_the_command_line():
    only_fp32 = cli.build_config(_args("--device", "cuda", "--grid", "acceptance", "--dtypes", "fp32"))
    assert {j.dtype for j in suite.jobs(only_fp32)} == {"fp32"}
    replaced = cli.build_config(_args("--device", "cuda", "--grid", "acceptance", "--shapes", "3,7"))
    assert {j.shape for j in suite.jobs(replaced)} == {(3, 7)}
    assert cli.build_config(_args("--device", "cpu", "--quick")).shapes == suite.QUICK_SHAPES


def test_acceptance_providers(capsys):
    assert suite.acceptance_providers("cuda") == ("copy", "fs-native", "fs-triton", "sj2-triton", "sj014-cupy",
                                                   "compile")
    assert cli.main(["--device", "cpu", "--grid", "acceptance", "--list-providers"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [p.id for p in providers.registry() if p.id in suite.acceptance_providers("cpu")]
    assert {"sj014-torch", "sj2-auto"} <= set(listed)


def test_parse_shape():
    assert suite.parse_shape("4,128,2048") == (4, 128, 2048) == suite.parse_shape("4x128x2048")
    for bad in ("4", "4,0", "a,b", ""):
        with pytest.raises(ValueError):
            suite.parse_shape(bad)


# ----------------------------------------------------------------------------------------- discovery
def test_registry_follows_fastspike_backends():
    from fastspike import backends
    ids = [p.id for p in providers.registry()]
    assert ids[0] == "copy"
    assert [f"fs-{b}" for b in backends.BACKENDS] == [i for i in ids if i.startswith("fs-")]
    assert {"sj014-torch", "sj014-cupy", "sj2-auto", "sj2-triton", "sj2-torch", "snntorch", "compile"} <= set(ids)
    forced = provider("sj2-triton").env
    assert ("SJ_LIF_CUDA_IMPLEMENTATION", "triton") in forced


def test_select():
    known = providers.registry()
    assert [p.id for p in providers.select(["fs-torch"], known)] == ["copy", "fs-torch"]
    assert {p.id for p in providers.select(["sj2"], known)} == {"copy", "sj2-auto", "sj2-triton", "sj2-torch"}
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        providers.select(["nope"], known)


def _fake_install(path, name, version):
    dist = path / f"{name}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (path / name).mkdir()


def test_locate_peers(tmp_path):
    missing = providers.locate("snntorch", str(tmp_path / "nowhere"))
    assert missing.reason and "no such directory" in missing.reason
    assert "no snntorch package" in providers.locate("snntorch", str(tmp_path)).reason
    _fake_install(tmp_path / "old", "spikingjelly", "0.0.0.0.14")
    old = providers.locate("sj014", str(tmp_path / "old"))
    assert (old.version, old.reason) == ("0.0.0.0.14", None)
    wrong = providers.locate("sj2", str(tmp_path / "old"))
    assert "is not 2.x" in wrong.reason and "--sj200" in wrong.reason
    _fake_install(tmp_path / "new", "spikingjelly", "2.0.0")
    assert providers.locate("sj2", str(tmp_path / "new")).reason is None
    assert providers.locate("fastspike").reason is None


def test_missing_provider_becomes_skip_rows_without_a_process():
    jobs = [Job("copy", "", "", "fp32", (2, 3, 4)), Job("neuron", "lif", "hard", "fp32", (2, 3, 4))]
    chosen = [provider("copy"), provider("fs-torch"), provider("snntorch"), provider("sj2-triton"),
              provider("compile")]
    locations = {f: Location(f, None, None, None) for f in providers.LOCAL_FAMILIES + ("sj2",)}
    locations["snntorch"] = Location("snntorch", None, None, "snntorch is not installed here")
    skipped, groups = runner.plan(chosen, jobs, locations, "cpu")
    reasons = {(r["provider"], r["mode"]): r["reason"] for r in skipped}
    assert reasons[("snntorch", "forward")] == reasons[("snntorch", "forward+backward")] == \
        "snntorch is not installed here"
    assert "CUDA" in reasons[("sj2-triton", "forward")]
    assert all(r["status"] == "skipped" for r in skipped)
    assert {key[1] for key in groups} == {(), (("OMP_WAIT_POLICY", "PASSIVE"),)}
    units = [u for key in groups for u in groups[key]]
    assert [(u.provider.id, u.job.suite) for u in units] == [("copy", "copy"), ("fs-torch", "neuron"),
                                                             ("compile", "neuron")]
    # The compiled loop runs LIF with hard reset only.
    skipped, groups = runner.plan(chosen, [Job("neuron", "if", "hard", "fp32", (2, 3))], locations, "cpu")
    assert "LIF with hard reset only" in {r["provider"]: r["reason"] for r in skipped}["compile"]


# ----------------------------------------------------------------------------------------- worker
def test_provider_that_raises_gives_error_rows(monkeypatch):
    def broken(*args):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(worker, "build_neuron", broken)
    rows = worker.run_unit(provider("fs-torch"), Job("neuron", "lif", "hard", "fp32", (2, 3, 4)), CPU, {})
    assert [(r["mode"], r["status"]) for r in rows] == [("forward", "error"), ("forward+backward", "error")]
    assert all(r["reason"] == "RuntimeError: kernel exploded" for r in rows)


def test_worker_measures_neuron_and_e2e_in_process():
    options = {"warmup": 1, "repeats": 3, "min_repeats": 1, "budget_s": 0.01}
    rows = worker.run_unit(provider("fs-torch"), Job("neuron", "plif", "soft", "bf16", (3, 2, 5)), CPU, options)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["p20_ms"] <= rows[0]["ms"] <= rows[0]["p80_ms"] and 0 <= rows[0]["spike_rate"] <= 1
    # At least one fp32 value per element is saved for backward.
    assert rows[1]["saved_bytes"] >= 3 * 2 * 5 * 4
    e2e = worker.run_unit(provider("fs-torch"), Job("e2e", "if", "hard", "amp", (2, 2, 1, 28, 28), "", 2), CPU,
                          options)
    assert e2e[0]["status"] == "ok" and e2e[0]["items_per_s"] == pytest.approx(2 / (e2e[0]["ms"] / 1e3))


def test_reference_loop_matches_fastspike():
    from fastspike import neuron, surrogate
    x = torch.randn(6, 3, 4) * 1.5 + 0.5
    for kind, hard in (("lif", True), ("if", False)):
        options = {"surrogate_function": surrogate.ATan(), "step_mode": "m"}
        node = neuron.LIFNode(tau=2.0, **options) if kind == "lif" else neuron.IFNode(v_reset=None, **options)
        torch.testing.assert_close(worker.reference_loop(x, None, kind, hard), node(x))


def test_cpu_timer_statistics_and_retake():
    from fastspike.bench import timing
    assert timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0])["ms"] == 3.0
    assert timing.summarize([2.0]) == {"ms": 2.0, "p20_ms": 2.0, "p80_ms": 2.0, "samples": 1}
    calls = iter(range(1000))

    def disturbed_then_steady():
        # The first series of 10 alternates 20 ms and 1 ms (another process "interferes"); later ones are steady.
        i = next(calls)
        time.sleep(0.02 if i < 10 and i % 2 == 0 else 0.001)

    result = timing.bench_cpu(disturbed_then_steady, warmup=0, repeats=10, min_repeats=10, budget_s=0.0)
    assert result["ms"] < 10 and result["samples"] == 10


# ----------------------------------------------------------------------------------------- runner
_CRASHING_WORKER = """
import json, os, sys
request = json.load(sys.stdin)
if request["units"] and request.get("die_at_start"):
    sys.stderr.write("ImportError: no module named torch_but_fake\\n"); sys.exit(7)
print("@@START 0", flush=True)
u = request["units"][0]
row = {"suite": u["job"]["suite"], "provider": u["provider"]["id"], "family": u["provider"]["family"],
       "kind": u["job"]["kind"], "reset": u["job"]["reset"], "dtype": u["job"]["dtype"],
       "shape": "x".join(map(str, u["job"]["shape"])), "label": "", "mode": "forward", "status": "ok", "ms": 1.0}
print("@@ROW " + json.dumps(row), flush=True)
sys.stderr.write("Segmentation fault\\n")
os._exit(3)
"""


def test_crashing_worker_costs_only_the_unit_in_progress(tmp_path):
    units = [runner.Unit(provider("fs-torch"), Job("neuron", k, "hard", "fp32", (2, 3))) for k in ("lif", "if")]
    progress = runner.Progress(4, quiet=True)
    rows = runner.run_group((None, ()), units, {"device": "cpu"}, str(tmp_path / "w.log"), progress,
                            [sys.executable, "-c", _CRASHING_WORKER])
    assert [(r["kind"], r["mode"], r["status"]) for r in rows] == [
        ("lif", "forward", "ok"), ("lif", "forward+backward", "error"),
        ("if", "forward", "ok"), ("if", "forward+backward", "error")]
    assert "exited with code 3" in rows[1]["reason"] and "Segmentation fault" in rows[1]["reason"]
    assert progress.done == 4
    # A worker that dies before measuring anything is not restarted: every unit gets the start-up error.
    rows = runner.run_group((None, ()), units, {"device": "cpu", "die_at_start": True}, str(tmp_path / "x.log"),
                            runner.Progress(4, quiet=True), [sys.executable, "-c", _CRASHING_WORKER])
    assert [r["status"] for r in rows] == ["error"] * 4 and "torch_but_fake" in rows[0]["reason"]


_SLOW_WORKER = """
import json, sys, time
request = json.load(sys.stdin)
u = request["units"][0]
print("@@START 0", flush=True)
row = {"suite": u["job"]["suite"], "provider": u["provider"]["id"], "family": u["provider"]["family"],
       "kind": u["job"]["kind"], "reset": u["job"]["reset"], "dtype": u["job"]["dtype"],
       "shape": "x".join(map(str, u["job"]["shape"])), "label": "", "mode": "forward", "status": "ok", "ms": 1.0}
print("@@ROW " + json.dumps(row), flush=True)
time.sleep(60)
"""


def test_time_limit_kills_the_worker_and_skips_what_is_left(tmp_path):
    units = [runner.Unit(provider("fs-torch"), Job("neuron", k, "hard", "fp32", (2, 3))) for k in ("lif", "if")]
    progress = runner.Progress(4, quiet=True)
    start = time.monotonic()
    rows = runner.run_group((None, ()), units, {"device": "cpu"}, str(tmp_path / "w.log"), progress,
                            [sys.executable, "-c", _SLOW_WORKER], runner.Deadline.after(1.5))
    assert time.monotonic() - start < 30
    reason = "not measured: the run's time limit (1.5 s) was reached"
    assert [(r["kind"], r["mode"], r["status"], r.get("reason")) for r in rows] == [
        ("lif", "forward", "ok", None), ("lif", "forward+backward", "skipped", reason),
        ("if", "forward", "skipped", reason), ("if", "forward+backward", "skipped", reason)]
    assert progress.done == 4
    # A group that starts after the deadline starts no worker.
    late = runner.run_group((None, ()), units, {"device": "cpu"}, str(tmp_path / "x.log"),
                            runner.Progress(4, quiet=True), ["false"], runner.Deadline.after(0))
    assert [r["status"] for r in late] == ["skipped"] * 4 and not (tmp_path / "x.log").exists()


def test_commit_outside_a_checkout_comes_from_the_environment(monkeypatch):
    def no_git(*args, **kwargs):
        raise runner.subprocess.CalledProcessError(128, args[0])

    monkeypatch.setattr(runner.subprocess, "run", no_git)
    monkeypatch.delenv("FASTSPIKE_COMMIT", raising=False)
    assert runner.commit() == "unknown"
    monkeypatch.setenv("FASTSPIKE_COMMIT", "abc1234")
    assert runner.commit() == "abc1234"


# ----------------------------------------------------------------------------------------- report
def test_roofline_arithmetic():
    assert report.ideal_bytes(1000, "fp32", "forward") == 8000
    assert report.ideal_bytes(1000, "fp32", "forward+backward") == 24000
    assert report.ideal_bytes(1000, "bf16", "forward+backward") == 12000
    assert report.gbps(8e9, 1000.0) == 8.0
    assert report.copy_equivalent_ms(0.5, "forward+backward") == 1.5
    assert report.speedup(3.0, 1.5) == 2.0 and report.speedup(None, 1.0) is None


def _row(provider_id, family, mode, ms, status="ok", kind="lif", suite_="neuron", reason=None):
    return {"suite": suite_, "label": "tiny", "provider": provider_id, "family": family, "kind": kind,
            "reset": "hard" if suite_ == "neuron" else "", "dtype": "fp32", "shape": "10x100", "mode": mode,
            "status": status, "ms": ms, "reason": reason, "device": "cpu", "device_name": "Test CPU",
            "command": "fastspike bench --test"}


def _rows():
    return [_row("copy", "copy", "copy", 0.01, kind="", suite_="copy"),
            _row("fs-native", "fastspike", "forward", 0.02), _row("fs-native", "fastspike", "forward+backward", 0.06),
            _row("sj014-torch", "sj014", "forward", 0.2), _row("sj014-torch", "sj014", "forward+backward", 1.2),
            _row("snntorch", "snntorch", "forward", None, "error", reason="RuntimeError: boom"),
            _row("snntorch", "snntorch", "forward+backward", None, "skipped", reason="not installed")]


def test_derive_with_hand_numbers():
    rows = report.derive(_rows())
    fwd, fb = rows[1], rows[2]
    assert (fwd["numel"], fwd["T"], fwd["ideal_bytes"]) == (1000, 10, 8000)
    assert fwd["copy_ms"] == 0.01 and fwd["x_copy"] == pytest.approx(2.0) and fwd["gbps"] == pytest.approx(0.4)
    assert fb["copy_ms"] == pytest.approx(0.03) and fb["x_copy"] == pytest.approx(2.0)
    assert rows[0]["gbps"] == pytest.approx(0.8) and rows[5].get("gbps") is None


def test_csv_round_trip(tmp_path):
    rows = report.derive(_rows())
    rows[1].update(samples=7, peak_mem_bytes=None, saved_bytes=4000, load1=0.5, p20_ms=0.019)
    report.write_csv(rows, str(tmp_path / "r.csv"))
    back = report.read_csv(str(tmp_path / "r.csv"))
    assert len(back) == len(rows)
    for old, new in zip(rows, back):
        # Empty cells read back as None, whether they were None or ''.
        assert {k: v for k, v in old.items() if v not in (None, "")} == {k: v for k, v in new.items() if v is not None}
    assert back[1]["peak_mem_bytes"] is None and back[1]["samples"] == 7 and back[1]["ms"] == 0.02


def test_markdown_tables():
    text = report.markdown(report.derive(_rows()), notes=["a note"])
    assert "fastspike bench --test" in text and "Test CPU" in text and "- a note" in text
    assert "| tiny `[10,100]` | 0.01 | 0.02 / 0.06 | 0.2 / 1.2 | **error** / skip |" in text
    # Roofline row: 8000 B in 0.02 ms = 0.4 GB/s, 2x copy; 10x and 20x faster than SpikingJelly.
    assert "| tiny `[10,100]` | fs-native | 0.02 | 0.4 | 2.00x | 0.06 | 0.4 | 2.00x | 10.0x / 20.0x |" in text
    assert "| snntorch | error | 1 | RuntimeError: boom |" in text
    assert "| snntorch | skipped | 1 | not installed |" in text
    snippet = report.headline_snippet(report.derive(_rows()), "results.md")
    assert snippet.startswith("LIF, hard reset, fp32") and "Test CPU" in snippet and "| tiny `[10,100]` |" in snippet


# ----------------------------------------------------------------------------------------- end to end
def test_tiny_run_through_worker_subprocesses(tmp_path):
    wanted = ["fs-torch"]
    if providers.locate("sj014").reason is None:
        wanted.append("sj014-torch")
    else:
        wanted.append("fs-native")
    out = tmp_path / "out"
    os.makedirs(out / "logs")
    (out / "logs" / "local.log").write_text("an earlier run's stderr\n")
    code = cli.main(["--device", "cpu", "--out", str(out), "--shapes", "3,2,8;12,4", "--kinds", "lif",
                     "--resets", "hard", "--dtypes", "fp32", "--no-t-sweep", "--no-e2e",
                     "--providers", ",".join(wanted), "--budget-s", "0.01", "--no-progress"])
    assert code == 0
    rows = report.read_csv(str(out / "results.csv"))
    assert {(r["provider"], r["mode"]) for r in rows if r["status"] == "ok"} >= {
        ("copy", "copy"), (wanted[0], "forward"), (wanted[1], "forward+backward")}
    assert all(r["device_name"] and r["torch"] and r["commit"] and r["timestamp"] for r in rows)
    text = (out / "results.md").read_text()
    assert "## Headline: LIF, hard reset, fp32" in text and wanted[1] in text
    assert "an earlier run" not in (out / "logs" / "local.log").read_text()  # a log holds its own run only
    sweep = json.dumps([r["shape"] for r in rows])
    assert "3x2x8" in sweep and "12x4" in sweep
    # Two runs' CSVs merge into one set of tables.
    assert cli.main(["--from-csv", f"{out / 'results.csv'},{out / 'results.csv'}", "--out", str(tmp_path / "m"),
                     "--no-plots"]) == 0
    assert len(report.read_csv(str(tmp_path / "m" / "results.csv"))) == 2 * len(rows)


# ----------------------------------------------------------------------------------------- memory suite
def test_memory_grid_is_the_issue_models():
    jobs = suite.jobs(cli.build_config(_args("--device", "cpu", "--grid", "memory")))
    assert [(j.suite, j.kind, j.shape, j.channels) for j in jobs] == [
        ("memory", "csnn", (4, 8, 1, 28, 28), 32), ("memory", "sew", (4, 8, 1, 28, 28), 16)]
    assert jobs[0].modes == ("default", "recompute")
    assert suite.MEMORY_PROVIDERS["cpu"] == ("fs-native", "sj014-torch", "sj2-auto")


def test_worker_measures_memory_modes_in_process(tmp_path):
    options = {"warmup": 1, "repeats": 2, "min_repeats": 1, "budget_s": 0.01}
    rows = worker.run_unit(provider("fs-torch"), Job("memory", "csnn", "hard", "fp32", (2, 2, 1, 28, 28), "tiny", 2),
                           CPU, options)
    assert [(r["mode"], r["status"]) for r in rows] == [("default", "ok"), ("recompute", "ok")]
    default, recompute = rows
    assert recompute["same_grads"] is True and "same_grads" not in default
    assert 0 < recompute["saved_bytes"] < default["saved_bytes"]
    assert default["saved_activation_bytes"] <= default["saved_bytes"] and default["ms"] > 0
    text = report.markdown(report.derive([dict(r, command="x") for r in rows]))
    assert "## Memory per training step" in text and "| fs-torch | recompute |" in text
    from fastspike.bench import plots
    assert [os.path.basename(p) for p in plots.plot(rows, str(tmp_path))] == ["memory.png"]
