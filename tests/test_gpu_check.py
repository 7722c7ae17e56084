"""benchmarks/gpu_check.sh and its Python steps (benchmarks/gpu_acceptance.py): the verdict against the
targets on hand-made bench rows and pytest reports (pass, fail, missing peer, our own error, the rehearsal),
the files the summary writes, the launch check on CPU, and the script's argument handling."""
import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_acceptance as acc  # noqa: E402

SHAPE = "4x128x128x28x28"


def row(provider, mode, ms, status="ok", reason="", shape=SHAPE, kind="lif", dtype="fp32"):
    suite = "copy" if provider == "copy" else "neuron"
    return {"suite": suite, "label": "CSNN conv1", "provider": provider, "kind": "" if suite == "copy" else kind,
            "reset": "" if suite == "copy" else "hard", "dtype": dtype, "shape": shape, "mode": mode,
            "status": status, "reason": reason, "ms": ms if status == "ok" else None, "device_name": "NVIDIA H200",
            "torch": "2.11.0+cu130", "triton": "3.6.0", "fastspike": "0.1.0", "commit": "abc1234",
            "timestamp": "2026-12-02T00:00:00+00:00"}


def measured(provider, fwd, fb, **kw):
    return [row(provider, "forward", fwd, **kw), row(provider, "forward+backward", fb, **kw)]


def passing_rows():
    # copy 0.1 ms; both backends 1.1x / 3.1x copy, sj2-triton 2x slower in both modes.
    return ([row("copy", "copy", 0.1)] + measured("fs-native", 0.11, 0.31) + measured("fs-triton", 0.11, 0.31)
            + measured("sj2-triton", 0.22, 0.62))


OK_STEPS = [(name, "ok", "1", "") for name in ("peers", "build", "check", "tests", "bench")]


def cases(outcome="passed", n=3, module="test_native", message=""):
    return [acc.Case(module, f"test_{i}", outcome, message) for i in range(n)]


def test_cell_ratios_and_limits():
    fwd, fb, fwd_peer, fb_peer = acc.TARGETS
    copy = row("copy", "copy", 0.1)
    assert acc.judge_cell(fwd, row("fs-native", "forward", 0.115), copy, None).verdict == acc.PASS  # 1.15x: the limit
    cell = acc.judge_cell(fwd, row("fs-native", "forward", 0.12), copy, None)
    assert (cell.verdict, cell.text, cell.value) == (acc.FAIL, "1.20x", pytest.approx(1.2))
    assert acc.judge_cell(fb, row("fs-native", "forward+backward", 0.32), copy, None).verdict == acc.PASS
    assert acc.judge_cell(fb, row("fs-native", "forward+backward", 0.33), copy, None).verdict == acc.FAIL
    peer = row("sj2-triton", "forward", 0.34)
    cell = acc.judge_cell(fwd_peer, row("fs-native", "forward", 0.2), copy, peer)
    assert (cell.verdict, cell.text) == (acc.PASS, "1.70x")
    assert acc.judge_cell(fwd_peer, row("fs-native", "forward", 0.21), copy, peer).verdict == acc.FAIL


def test_missing_or_skipped_peer_is_na_and_our_error_is_fail():
    fwd, _, fwd_peer, _ = acc.TARGETS
    ours = row("fs-native", "forward", 0.1)
    missing = acc.judge_cell(fwd_peer, ours, None, None)
    assert (missing.verdict, missing.note) == (acc.NA, "sj2-triton not measured")
    skipped = acc.judge_cell(fwd_peer, ours, None, row("sj2-triton", "forward", None, "skipped", "no --sj200"))
    assert (skipped.verdict, skipped.note) == (acc.NA, "sj2-triton skipped: no --sj200")
    broken_peer = acc.judge_cell(fwd_peer, ours, None, row("sj2-triton", "forward", None, "error", "boom"))
    assert broken_peer.verdict == acc.NA
    ours_skipped = acc.judge_cell(fwd, row("fs-triton", "forward", None, "skipped", "no GPU"), None, None)
    assert (ours_skipped.verdict, ours_skipped.note) == (acc.NA, "fs-triton skipped: no GPU")
    error = acc.judge_cell(fwd, row("fs-native", "forward", None, "error", "CUDA error: illegal address"), None, None)
    assert (error.verdict, error.note) == (acc.FAIL, "fs-native error: CUDA error: illegal address")
    assert acc.judge_cell(fwd, ours, None, None).note == "copy not measured"


def test_aggregate():
    c1, c2 = ("4x2", "lif", "hard", "fp32"), ("8x2", "if", "hard", "bf16")
    ok, bad = acc.Cell(acc.PASS, "1.0x", value=1.0), acc.Cell(acc.FAIL, "1.5x", value=1.5)
    na = acc.Cell(acc.NA, note="x")
    assert acc.aggregate([(c1, ok), (c2, ok)]) == acc.Cell(acc.PASS, "2 of 2")
    failed = acc.aggregate([(c1, ok), (c2, bad)])
    assert failed.verdict == acc.FAIL and failed.text == "1 of 2: 1.5x on IF bf16 [8,2]"
    assert acc.aggregate([(c1, ok), (c2, na)]) == acc.Cell(acc.NA, "1 of 2", "x")
    assert acc.aggregate([(c1, bad), (c2, na)]).verdict == acc.FAIL
    assert acc.aggregate([]).verdict == acc.NA
    unjudged = acc.aggregate([(c1, ok), (c2, bad)], judged=False)
    assert unjudged.text == "1.00x to 1.50x over 2 of 2"


def test_summary_passes_only_when_everything_passes():
    verdict, text = acc.summarize("cuda", passing_rows(), "", cases(), "", OK_STEPS)
    assert verdict == acc.PASS
    assert text.startswith("# fastspike GPU acceptance (cuda): PASS")
    assert "| forward <= 1.15x copy | **PASS** 1 of 1 | **PASS** 1 of 1 |" in text
    assert "| fs-native | LIF fp32 [4,128,128,28,28] | **PASS** 1.10x | **PASS** 3.10x | **PASS** 2.00x | " \
           "**PASS** 2.00x |" in text
    assert "NVIDIA H200" in text and "commit abc1234" in text
    assert "Bit-identity held (every `pytest -m cuda` test passed): **PASS** 3 tests in 1 module" in text


def test_summary_fails_on_a_missed_target_or_a_failed_test():
    rows = passing_rows()
    rows[2]["ms"] = 0.35  # fs-native forward+backward 3.5x copy
    verdict, text = acc.summarize("cuda", rows, "", cases(), "", OK_STEPS)
    assert verdict == acc.FAIL
    assert "| forward+backward <= 3.2x copy | **FAIL** 1 of 1: 3.50x on LIF fp32 [4,128,128,28,28] | " \
           "**PASS** 1 of 1 |" in text
    verdict, text = acc.summarize("cuda", passing_rows(), "", cases() + cases("failed", 1, "test_triton", "bits"),
                                  "", OK_STEPS)
    assert verdict == acc.FAIL and "1 of 1 failed: test_0" in text and "bits" in text
    steps = OK_STEPS[:3] + [("tests", "timed out", "180", "after 180s")] + OK_STEPS[4:]
    verdict, text = acc.summarize("cuda", passing_rows(), "", cases(), "", steps)
    assert verdict == acc.FAIL and "the tests step timed out: the report is incomplete" in text


def test_summary_with_a_missing_peer_is_incomplete_not_pass():
    rows = [r for r in passing_rows() if r["provider"] != "sj2-triton"]
    rows += [row("sj2-triton", m, None, "skipped", "spikingjelly is not installed here; pass --sj200 PATH")
             for m in ("forward", "forward+backward")]
    verdict, text = acc.summarize("cuda", rows, "", cases(), "", OK_STEPS)
    assert verdict == "INCOMPLETE"
    assert "| forward >= 1.7x sj2-triton | n/a: 1 of 1 [1] | n/a: 1 of 1 [1] |" in text
    assert "[1] sj2-triton skipped: spikingjelly is not installed here; pass --sj200 PATH" in text
    skipped = cases() + cases("skipped", 2, "test_triton", "needs a CUDA GPU")
    verdict, text = acc.summarize("cuda", passing_rows(), "", skipped, "", OK_STEPS)
    assert verdict == "INCOMPLETE" and "n/a: 2 of 2 skipped" in text


def test_summary_without_results_fails_on_the_gpu():
    steps = OK_STEPS[:4] + [("bench", "failed", "3", "exit 1")]
    verdict, text = acc.summarize("cuda", None, "no bench results (see the bench step)", None,
                                  "no pytest report (see the tests step)", steps)
    assert verdict == acc.FAIL
    assert "| bench | **failed** | 3 | exit 1 |" in text and "no bench results (see the bench step)" in text


def test_rehearsal_shows_ratios_unjudged_and_checks_the_marking():
    rows = passing_rows()
    rows[1]["ms"] = 2.0  # 20x copy: a CPU number, not judged
    verdict, text = acc.summarize("cpu", rows, "", cases("skipped", 4, message="needs a CUDA GPU"), "", OK_STEPS)
    assert verdict == "REHEARSAL OK"
    assert "| forward <= 1.15x copy | 20.00x to 20.00x over 1 of 1 |" in text and "**FAIL**" not in text
    assert "rehearsal: 4 collected, all skipped [1]" in text and "[1] needs a CUDA GPU" in text
    ran = cases("skipped", 2) + [acc.Case("test_native", "test_cpu_only", "passed", "")]
    verdict, text = acc.summarize("cpu", rows, "", ran, "", OK_STEPS)
    assert verdict == "REHEARSAL FAILED" and "1 of 3 ran without a GPU: test_cpu_only" in text
    verdict, _ = acc.summarize("cpu", rows, "", cases("skipped"), "", OK_STEPS[:4] + [("bench", "failed", "1", "")])
    assert verdict == "REHEARSAL FAILED"


def test_junit_report_is_read_per_module(tmp_path):
    report = tmp_path / "pytest.xml"
    report.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_native" name="test_cuda_grid[a]" time="0.1"/>'
        '<testcase classname="tests.test_native.TestNativeCUDA" name="test_cuda_graph_capture" time="0.1">'
        '<failure message="AssertionError: graph replay">trace</failure></testcase>'
        '<testcase classname="tests.test_triton" name="test_cuda_grid[b]" time="0">'
        '<skipped type="pytest.skip" message="needs a CUDA GPU">skip</skipped></testcase>'
        '<testcase classname="" name="tests.test_cuda" time="0"><error message="collection failure"/></testcase>'
        '</testsuite></testsuites>')
    got = acc.read_junit(str(report))
    assert [(c.module, c.outcome) for c in got] == [("test_native", "passed"), ("test_native", "failed"),
                                                    ("test_triton", "skipped"), ("test_cuda", "error")]
    assert got[1].message == "AssertionError: graph replay"
    groups = dict(acc.judge_tests(got, rehearsal=False))
    native = groups[f"{acc.TEST_GROUPS['test_native']} (test_native.py)"]
    assert native.verdict == acc.FAIL and native.text == "1 of 2 failed: test_cuda_graph_capture"
    assert groups[f"{acc.TEST_GROUPS['test_triton']} (test_triton.py)"].verdict == acc.NA


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_summary_command_writes_markdown_and_verdict(tmp_path):
    _write_csv(tmp_path / "results.csv", passing_rows())
    (tmp_path / "steps.tsv").write_text("".join(f"{n}\tok\t1\tfine\n" for n, *_ in OK_STEPS))
    args = ["summary", "--device", "cuda", "--csv", str(tmp_path / "results.csv"), "--junit",
            str(tmp_path / "missing.xml"), "--steps", str(tmp_path / "steps.tsv"), "--out", str(tmp_path / "s.md"),
            "--verdict", str(tmp_path / "verdict")]
    assert acc.main(args) == 0
    # The CSV passes, but without a pytest report there is no bit-identity verdict.
    assert (tmp_path / "verdict").read_text() == "FAIL\n"
    assert "no pytest report (see the tests step)" in (tmp_path / "s.md").read_text()


def test_launch_check_on_cpu(tmp_path):
    from fastspike import native
    if native.unavailable_reason("cpu") is not None:
        pytest.skip("extension not built")
    detail = tmp_path / "detail"
    assert acc.main(["check", "--device", "cpu", "--detail", str(detail)]) == 0
    assert "native kernels launch" in detail.read_text() and "triton n/a on cpu" in detail.read_text()


def test_script_arguments():
    script = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    usage = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--device cpu" in usage.stdout
    bad = subprocess.run(["bash", script, "--device", "gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and "must be cuda or cpu" in bad.stderr
