"""Metric computations, the latency harness, README's results table and metric diffs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from pocketbert import benchmarking, evaluation, report


def test_accuracy_and_macro_f1_on_known_inputs() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    assert evaluation.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    f1 = evaluation.per_class_f1(y_true, y_pred, 3)
    np.testing.assert_allclose(f1, [0.5, 0.8, 2 / 3])
    assert evaluation.macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert evaluation.confusion(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_a_class_never_seen_scores_zero_not_nan() -> None:
    assert evaluation.per_class_f1(np.array([0, 0]), np.array([0, 0]), 2).tolist() == [1.0, 0.0]


def test_expected_calibration_error_on_known_inputs() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # one example per bin: confidences .9 (right), .8 (wrong), .6 (right), .7 (right)
    expected = 0.25 * (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.6) + abs(1 - 0.7))
    assert evaluation.expected_calibration_error(probs, y, bins=10) == pytest.approx(expected)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert evaluation.expected_calibration_error(perfect, np.array([0, 1])) == 0.0


class FakeClock:
    """perf_counter that advances only when the measured function says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_calls_excludes_warmup_and_keeps_order(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(benchmarking.time, "perf_counter", clock)
    calls = []

    def fn(x: int) -> int:
        calls.append(x)
        clock.now += 5.0 if len(calls) <= 3 else 0.001 * x  # warm-up calls are slow
        return x * 10

    ms, outs = benchmarking.time_calls(fn, [1, 2, 3, 4], warmup=3)
    assert calls == [1, 2, 3, 1, 2, 3, 4]  # three warm-up calls, then each input once
    np.testing.assert_allclose(ms, [1.0, 2.0, 3.0, 4.0])
    assert outs == [10, 20, 30, 40]


def test_latency_percentiles() -> None:
    ms = np.arange(1, 101, dtype=float)
    summary = benchmarking.latency_summary(ms)
    assert summary["latency_p50_ms"] == pytest.approx(50.5)
    assert summary["latency_p95_ms"] == pytest.approx(95.05)


def test_throughput_counts_examples_over_timed_batches(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(benchmarking.time, "perf_counter", clock)
    seen = []

    def run_batch(batch):
        seen.append([len(s) for s in batch])
        clock.now += 0.5

    seqs = [[1] * n for n in (5, 1, 3, 2, 4)]
    rate = benchmarking.throughput(run_batch, seqs, batch_size=2, warmup=1)
    assert seen[0] == [1, 2]  # warm-up batch, then the three timed batches, length-sorted
    assert seen[1:] == [[1, 2], [3, 4], [5]]
    assert rate == pytest.approx(5 / 1.5)


def _metrics(flagged: bool = False) -> dict:
    m = {"test_rows": 4, "threads": 1}
    for variant, size in (("teacher.pytorch_fp32", 90.0), ("student.onnx_int8", 6.0)):
        m.update({f"{variant}.size_mb": size, f"{variant}.parameters": 1000,
                  f"{variant}.accuracy": 0.9, f"{variant}.macro_f1": 0.9,
                  f"{variant}.agreement_with_teacher": 1.0, f"{variant}.ece": 0.05,
                  f"{variant}.latency_p50_ms": 2.0, f"{variant}.latency_p95_ms": 3.0,
                  f"{variant}.throughput": 500.0})
    m.update({"student.coreml_fp16.size_mb": 11.0, "student.coreml_fp16.macro_f1": 0.8,
              "student.coreml_fp16.latency_p50_ms": "not measured here",
              "student.coreml_fp16.measured_by": "reference executor",
              "student.coreml_fp16.top1_agreement_with_pytorch": 0.95,
              "student.coreml_fp16.flagged": flagged,
              "teacher.coreml_fp16.size_mb": 45.0,
              "teacher.coreml_fp16.measured_by": "not measured here",
              "headline.student_variant": "student.onnx_int8",
              "headline.target_size_ratio": 0.0833, "headline.target_macro_f1_ratio": 0.97,
              "headline.target_speedup": 10.0,
              "headline.size_ratio": 6 / 90, "headline.macro_f1_ratio": 1.0,
              "headline.p50_speedup": 1.0, "headline.size_target_met": True,
              "headline.macro_f1_target_met": True, "headline.speedup_target_met": False})
    return m


def test_results_table_shows_every_variant_flags_and_unmet_targets() -> None:
    table = report.results_table(_metrics(flagged=True))
    lines = table.splitlines()
    assert lines[0].startswith("| variant | size MB |")
    rows = [line for line in lines if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [
        "teacher.pytorch_fp32", "student.onnx_int8", "student.coreml_fp16",
        "teacher.coreml_fp16"]
    assert "not measured here" in rows[2] and "accuracy by the reference executor" in rows[2]
    assert "flagged" in rows[2]
    assert "size only" in rows[3]
    assert "p50 speed-up 1.0× (target ≥ 10×: **not met**)" in table
    assert "1/15.0" in table


def test_readme_table_is_generated_from_the_committed_metrics() -> None:
    metrics_file = ROOT / "metrics" / "benchmark.json"
    if not metrics_file.is_file():
        pytest.skip("metrics/benchmark.json not produced yet")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    assert report.readme_table(ROOT / "README.md") == report.results_table(metrics), (
        "README's results table is stale: run `make results`")
    assert report.readme_table(ROOT / "README.md", report.PARAMS_START,
                               report.PARAMS_END) == report.params_table(), (
        "README's params table is stale: run `make results`")


def test_update_readme_replaces_only_the_marked_block(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nSTALE\n{report.END}\nmid\n{report.PARAMS_START}\n"
                      f"{report.PARAMS_END}\nend\n", encoding="utf-8")
    assert report.update_readme(readme, _metrics())
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("end\n") and "STALE" not in text
    assert "\nmid\n" in text and "| `train_student.alpha` |" in text
    assert not report.update_readme(readme, _metrics())  # idempotent


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_report_diffs_metrics_and_params_between_two_commits(tmp_path, monkeypatch) -> None:
    dvc = ROOT / ".venv" / "bin" / "dvc"
    if not dvc.exists():
        pytest.skip("dvc not installed in .venv")
    monkeypatch.setenv("PATH", f"{dvc.parent}:{os.environ['PATH']}")

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.org")
    sh("git", "config", "user.name", "t")
    sh(str(dvc), "init", "-q")
    sh(str(dvc), "config", "core.analytics", "false")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: echo\n    params: [train]\n"
        "    metrics:\n      - m.json:\n          cache: false\n")
    for i, (alpha, f1) in enumerate(((0.5, 0.90), (0.7, 0.93))):
        (tmp_path / "params.yaml").write_text(f"train:\n  alpha: {alpha}\n")
        (tmp_path / "m.json").write_text(json.dumps({"test.macro_f1": f1}))
        sh("git", "add", "-A")
        sh("git", "commit", "-qm", f"run {i}")
    md = report.diff_markdown("HEAD~1", "HEAD", cwd=tmp_path)
    assert "### Metrics (HEAD~1 → HEAD)" in md and "### Params (HEAD~1 → HEAD)" in md
    metrics_part, params_part = md.split("### Params")
    assert "test.macro_f1" in metrics_part and "0.9" in metrics_part and "0.93" in metrics_part
    assert "train.alpha" in params_part and "0.5" in params_part and "0.7" in params_part
