"""Metric computations, the latency harness, bootstrap intervals, the classical baseline,
README's results table and metric diffs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS, ROOT, sentences

from pocketbert.apps import results
from pocketbert.benchmarks import benchmarking
from pocketbert.core import evaluation, params
from pocketbert.core.errors import ModelError, ParamsError
from pocketbert.training import baseline


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


def _metrics(flagged: bool = False, intervals: bool = False) -> dict:
    m = {"test_rows": 4, "threads": 1}
    for variant, size in (("teacher.pytorch_fp32", 90.0), ("student.onnx_int8", 6.0)):
        m.update({f"{variant}.size_mb": size, f"{variant}.parameters": 1000,
                  f"{variant}.accuracy": 0.9, f"{variant}.macro_f1": 0.9,
                  f"{variant}.agreement_with_teacher": 1.0, f"{variant}.ece": 0.05,
                  f"{variant}.latency_p50_ms": 2.0, f"{variant}.latency_p95_ms": 3.0,
                  f"{variant}.throughput": 500.0})
    m.update({"student.coreml_fp16.size_mb": 11.0, "student.coreml_fp16.macro_f1": 0.8,
              "student.coreml_fp16.latency_p50_ms": None,
              "student.coreml_fp16.measured_by": "reference executor",
              "student.coreml_fp16.top1_agreement_with_pytorch": 0.95,
              "student.coreml_fp16.flagged": flagged,
              "teacher.coreml_fp16.size_mb": 45.0,
              "teacher.coreml_fp16.note": "size only: not in benchmark.coreml_models",
              "headline.student_variant": "student.onnx_int8",
              "headline.target_size_ratio": 0.0833, "headline.target_macro_f1_ratio": 0.97,
              "headline.target_speedup": 10.0,
              "headline.size_ratio": 6 / 90, "headline.macro_f1_ratio": 1.0,
              "headline.p50_speedup": 1.0, "headline.size_target_met": True,
              "headline.macro_f1_target_met": True, "headline.speedup_target_met": False})
    if intervals:
        m.update({"confidence_level": 0.95, "bootstrap_resamples": 9999,
                  "student.onnx_int8.macro_f1_ci_low": 0.85,
                  "student.onnx_int8.macro_f1_ci_high": 0.95,
                  "student.onnx_int8.agreement_with_teacher_ci_low": 0.97,
                  "student.onnx_int8.agreement_with_teacher_ci_high": 1.0,
                  "headline.macro_f1_ratio_ci_low": 0.93,
                  "headline.macro_f1_ratio_ci_high": 1.04,
                  "baseline.tfidf_logreg.size_mb": 2.1, "baseline.tfidf_logreg.parameters": 5,
                  "baseline.tfidf_logreg.macro_f1": 0.8, "baseline.tfidf_logreg.accuracy": 0.8,
                  "baseline.tfidf_logreg.latency_p50_ms": 0.5})
    return m


def test_results_table_shows_every_variant_flags_and_unmet_targets() -> None:
    table = results.results_table(_metrics(flagged=True))
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


def test_results_table_prints_intervals_beside_the_point_and_the_baseline_row() -> None:
    table = results.results_table(_metrics(intervals=True))
    rows = {r.split("`")[1]: r for r in table.splitlines() if r.startswith("| `")}
    assert "| 0.900 [0.850, 0.950] |" in rows["student.onnx_int8"]  # macro-F1 and interval
    assert "| 1.000 [0.970, 1.000] |" in rows["student.onnx_int8"]  # agreement
    assert "| 0.900 |" in rows["teacher.pytorch_fp32"]  # no interval keys: the point alone
    assert list(rows)[-1] == "baseline.tfidf_logreg"  # in the benchmark's order, after Core ML
    assert "| 0.800 |" in rows["baseline.tfidf_logreg"] and "| 0.50 |" in rows[
        "baseline.tfidf_logreg"]
    assert ("95% bootstrap interval (`scipy.stats.bootstrap`, percentile method, 9,999 "
            "resamples") in table
    assert "macro-F1 ratio 1.000 (95% interval 0.930–1.040, paired; target ≥ 0.97: met)" in table
    # metrics from before the intervals existed still render, without them
    assert "interval" not in results.results_table(_metrics())


MARKDOWN = tuple(dict.fromkeys(name for name, _, _ in results.BLOCKS))
"README.md and the docs files that hold generated blocks"
PUBLIC_RUNS = tuple(str(p.relative_to(ROOT)) for p in
                    sorted((ROOT / results.PUBLIC_RUNS).glob("*.json")))
VARIANT_RUNS = tuple(str(p.relative_to(ROOT)) for p in
                     sorted((ROOT / results.VARIANT_RUNS).glob("*.json")))
GENERATED_FROM = (*MARKDOWN, "metrics/benchmark.json", "metrics/latency.json",
                  "metrics/calibrate.json", "params.yaml", *PUBLIC_RUNS, *VARIANT_RUNS)
"README, the docs with generated blocks, and the files their generated tables are made from"


def _readme_revision(tmp_path):
    """GENERATED_FROM as of README's own revision, copied under ``tmp_path``: HEAD's files when
    every file of MARKDOWN is committed and unchanged in the working tree (`make repro`
    re-measures the metrics and leaves the tables to `make results`, so a rebuilt workspace is
    not a stale README), the working tree's when one of them is being edited or is not
    committed yet (or there is no git checkout)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)

    committed = (shutil.which("git") is not None
                 and git("rev-parse", "--verify", "HEAD").returncode == 0
                 and all(git("cat-file", "-e", f"HEAD:{name}").returncode == 0
                         for name in MARKDOWN)
                 and git("diff", "--quiet", "HEAD", "--", *MARKDOWN).returncode == 0)
    for name in GENERATED_FROM:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if committed:
            shown = git("show", f"HEAD:{name}")
            assert shown.returncode == 0, shown.stderr.decode()
            target.write_bytes(shown.stdout)
        else:
            shutil.copyfile(ROOT / name, target)
    return tmp_path


def test_every_generated_block_is_in_its_file() -> None:
    """Each block of results.BLOCKS has its markers once, in order, in its own file and in
    no other file of MARKDOWN (a block moved without results.BLOCKS would go unchecked)."""
    for name, start, end in results.BLOCKS:
        text = (ROOT / name).read_text(encoding="utf-8")
        assert text.count(start) == 1 and text.count(end) == 1, (name, start)
        assert text.index(start) < text.index(end), (name, start)
        for other in MARKDOWN:
            if other != name:
                assert start not in (ROOT / other).read_text(encoding="utf-8"), (other, start)


def test_readme_tables_are_generated_from_the_metrics_of_the_same_revision(tmp_path) -> None:
    files = _readme_revision(tmp_path)
    readme = files / "README.md"
    metrics = json.loads((files / "metrics" / "benchmark.json").read_text(encoding="utf-8"))
    latency = json.loads((files / "metrics" / "latency.json").read_text(encoding="utf-8"))
    public = results.read_runs(files / results.PUBLIC_RUNS)
    deferral = json.loads((files / "metrics" / "calibrate.json").read_text(encoding="utf-8"))
    candidates = results.read_runs(files / results.VARIANT_RUNS)
    expected = {results.START: (results.results_table(metrics), "results"),
                results.CANDIDATES_START: (results.candidates_table(candidates, public),
                                           "recipe candidates"),
                results.PUBLIC_START: (results.public_table(public), "public sets"),
                results.DEFERRAL_START: (results.deferral_table(deferral), "deferral"),
                results.BUDGET_START: (results.budget_table(metrics), "budget"),
                results.PARAMS_START: (results.params_table(files / "params.yaml"), "params"),
                results.LATENCY_START: (results.latency_table(latency), "latency candidates")}
    assert set(expected) == {start for _, start, _ in results.BLOCKS}
    for name, start, end in results.BLOCKS:
        body, what = expected[start]
        assert results.readme_table(results.block_file(readme, name), start, end) == body, (
            f"the {what} table in {name} is stale: run `make results`")
    assert not results.stale_files(readme, metrics, files / "params.yaml", latency, public,
                                   deferral, candidates)


def test_params_table_has_three_cells_per_row_and_writes_null_as_yaml_does() -> None:
    import re

    table = results.params_table(ROOT / "params.yaml").splitlines()
    # a | inside a cell is escaped, so every row splits into key, value and meaning
    cells = [len(re.split(r"(?<!\\)\|", row)) - 2 for row in table]
    assert cells == [3] * len(table), [row for row, n in zip(table, cells, strict=True) if n != 3]
    rows = {row.split("|")[1].strip(" `"): row for row in table[2:]}
    assert "| `null` |" in rows["tokenize.length_percentile"]
    assert "float32 \\| float16" in rows["model2vec.quantize_to"]


def test_stage_table_shows_each_stage_once_in_order_met_and_skips_unmeasured_runs() -> None:
    rows = {"a/x": {"stages": {"split": {"wall_s": 30.0, "peak_rss_gib": 0.44},
                               "teacher": {"wall_s": 600.0, "peak_rss_gib": 2.06}}},
            "b/y": {"stages": {"split": {"wall_s": 6.0, "peak_rss_gib": 0.4},
                               "baseline": {"wall_s": 90.0, "peak_rss_gib": 1.0}}},
            "c/z": {}}  # an older run file without stage figures
    lines = results.stage_table(rows, {"a/x": "`x`"}).splitlines()
    assert lines[0] == "| set | `split` | `teacher` | `baseline` |"
    assert lines[2] == "| `x` | 0.5 min, 0.4 GiB | 10.0 min, 2.1 GiB | – |"
    assert lines[3] == "| `b/y` | 0.1 min, 0.4 GiB | – | 1.5 min, 1.0 GiB |"
    assert len(lines) == 4 and results.stage_table({"c/z": {}}) == ""


def test_public_table_names_the_runs_whose_baseline_tried_equal_weights_only() -> None:
    row = {"test_rows": 100, "teacher_macro_f1": 0.9, "student_int8_macro_f1": 0.9,
           "baseline_macro_f1": 0.95, "ratio": 1.0, "ratio_ci": (0.95, 1.05),
           "gain_kept": None, "gain_kept_ci": (None, None), "agreement": 0.97,
           "agreement_ci": (0.95, 0.99), "epochs_run": 4.0, "disagreements": 3,
           "disagreements_where_teacher_wrong": 1}
    runs = {"old_run": {"overrides": {"teacher.epochs": 2}, "variants": {"a": row}},
            "new_run": {"variants": {"b": {**row, "baseline_class_weight": "balanced"}}}}
    text = results.public_table(runs)
    assert "`old_run.json`: run with an earlier baseline stage, equal weights only" in text
    assert "`new_run.json`:" not in text.split("TF-IDF:")[1]  # only the older run is named
    table = text.split("\n\n")[0].splitlines()
    assert table[2].startswith(
        "| `a` | 100 | 0.900 | 0.950 | 0.900 | – | 1.000 (0.950–1.050) | – |")
    sized = {"run": {"variants": {"a": {**row, "student_int8_mb": 7.961, "size_ratio": 0.0876}}}}
    assert "| 0.900 | 7.96 (1/11.4) | 1.000 (0.950–1.050) |" in results.public_table(sized)
    unknown_teacher = {"run": {"variants": {"a": {**row, "student_int8_mb": 7.961,
                                                  "size_ratio": None}}}}  # an API teacher
    assert "| 0.900 | 7.96 | 1.000 (0.950–1.050) |" in results.public_table(unknown_teacher)
    both_new = {"new_run": runs["new_run"]}
    assert "equal weights only" not in results.public_table(both_new)


def test_public_table_names_the_file_of_a_set_run_twice() -> None:
    row = {"test_rows": 100, "teacher_macro_f1": 0.9, "student_int8_macro_f1": 0.9,
           "baseline_macro_f1": 0.8, "baseline_class_weight": "none", "ratio": 1.0,
           "ratio_ci": (0.95, 1.05), "gain_kept": 1.0, "gain_kept_ci": (0.9, 1.1),
           "agreement": 0.97, "agreement_ci": (0.95, 0.99), "epochs_run": 4.0,
           "disagreements": 3, "disagreements_where_teacher_wrong": 1}
    runs = {"a": {"variants": {"tweets": row, "r8": row}},
            "a_reduced": {"overrides": {"teacher.epochs": 2}, "variants": {"tweets": row}}}
    text = results.public_table(runs)
    table = [line.split(" | ")[0] for line in text.split("\n\n")[0].splitlines()[2:]]
    assert table == ["| `tweets` (`a.json`)", "| `r8`", "| `tweets` (`a_reduced.json`)"]
    assert "`a.json` in `metrics/runs/public/`: the committed params" in text


def test_candidates_table_orders_committed_seed_reference_then_candidates() -> None:
    def row(agreement: float, disagreements: int, f1: float, answered: float | None = None):
        r = {"test_rows": 212, "agreement": agreement, "disagreements": disagreements,
             "student_int8_macro_f1": f1}
        return r if answered is None else {**r, "deferral.test.coverage": answered}

    runs = {"a_weight": {"overrides": {"train_student.alpha": 1.0},
                         "variants": {"small": row(0.929, 15, 0.934, 0.854)}},
            "a_weight_seed_7": {"overrides": {"train_student.alpha": 1.0,
                                              "train_student.seed": 7},
                                "variants": {"small": row(0.93, 14, 0.935)}},
            "b_layers": {"overrides": {"train_student.copy_layers": [0, 2, 5],
                                       "train_student.embedding_rank": None},
                         "variants": {"default": row(0.95, 10, 0.96), "small": row(0.9, 20, 0.9),
                                      "r8": {**row(0.99, 8, 0.91), "test_rows": 1139}}},
            "baseline_check": {"params": {}, "results": {}},  # not a recipe run
            "rerun": {"variants": {"small": row(0.934, 14, 0.939)}},
            "recipe_check": {"overrides": {},
                             "variants": {"default": row(0.986, 3, 0.962, 0.858),
                                          "small": {"agreement": 0.934, "test_rows": 212}}},
            "seed_7": {"overrides": {"train_student.seed": 7},
                       "variants": {"small": row(0.94, 12, 0.94)}}}
    public = {"r8_reduced": {"overrides": {"teacher.epochs": 2},
                             "variants": {"r8": {**row(0.986, 16, 0.910, 0.978),
                                                 "test_rows": 1139}}},
              "tweets_reduced": {"variants": {"tweets": row(0.977, 20, 0.964)}}}
    lines = results.candidates_table(runs, public).splitlines()
    assert lines[0] == ("| candidate (run file): agreement (disagreements) · student macro-F1 · "
                        "answered | `default` (212) | `small` (212) | `r8` (1,139) |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| committed params (`recipe_check.json`)",
        "| committed params (`rerun.json`)",
        "| committed params, `train_student.seed=7` (`seed_7.json`)",
        "| reference at its schedule, `teacher.epochs=2` (`public/r8_reduced.json`)",
        "| `train_student.alpha=1.0` (`a_weight.json`)",
        "| `train_student.alpha=1.0`, `train_student.seed=7` (`a_weight_seed_7.json`)",
        "| `train_student.copy_layers=[0, 2, 5]`, `train_student.embedding_rank=null` "
        "(`b_layers.json`)"]  # tweets: no candidate ran it, so no reference row
    assert lines[2] == ("| committed params (`recipe_check.json`) | 0.986 (3) · 0.962 · 0.86 | "
                        "0.934 (–) · – · – |  |")
    assert lines[5].endswith("|  |  | 0.986 (16) · 0.910 · 0.98 |")
    assert results.candidates_table({"baseline_check": runs["baseline_check"]}) == ""


def test_deferral_table_shows_both_models_and_a_threshold_that_defers_everything() -> None:
    m = {"test_rows": 10, "validation_rows": 10, "confidence_level": 0.9, "temperature": 1.5,
         "target_agreement": 0.995, "score": "margin", "threshold": 0.25,
         "test.ece_before": 0.1, "test.ece_after": 0.05, "test.nll_before": 0.4,
         "test.nll_after": 0.3, "ood_rows": 4, "ood.deferred_share": 0.75,
         "test.answered": 8, "test.disagreements_answered": 0,
         "test.coverage": 0.8, "test.coverage_ci_low": 0.6, "test.coverage_ci_high": 1.0,
         "test.agreement": 1.0, "test.agreement_ci_low": 1.0, "test.agreement_ci_high": 1.0,
         "test.macro_f1": 0.9, "test.macro_f1_ci_low": 0.8, "test.macro_f1_ci_high": 1.0,
         "baseline.threshold": None, "baseline.test.answered": 0,
         "baseline.test.disagreements_answered": 0, "baseline.test.coverage": 0.0,
         "scores.margin.selection.coverage": 0.7, "scores.margin.selection.disagreements": 0,
         "scores.margin.selection.agreement_lower_bound": 0.79, "scores.margin.ood.auroc": 0.9}
    table = results.deferral_table(m)
    lines = table.splitlines()
    assert lines[0] == "| on 10 test texts (90% interval) | student int8 | TF-IDF baseline |"
    assert lines[2] == "| answered on device (coverage) | 0.800 (0.600–1.000) | 0.000 |"
    assert lines[3] == ("| agreement with the teacher on the answered | 1.0000 (1.0000–1.0000) "
                        "| – |")
    assert lines[6] == ("| answers when | top-two margin ≥ 0.250 (calibrated) | none reaches "
                        "the target: every text deferred |")
    assert "`margin` 0.700; `margin` answers the most" in table
    assert "lower bound of their agreement is 0.790" in table and "75.0% are deferred" in table
    assert "Threshold chosen on the 10 validation texts, never on test" in table
    assert "cannot certify the target on its own" in table
    # with calibration texts: named among the selection texts; a bound above the target is not
    # said to fall short of it
    pooled = results.deferral_table(m | {"calibration_rows": 600,
                                         "scores.margin.selection.agreement_lower_bound": 0.996,
                                         "scores.margin.selection.disagreements": 1,
                                         "validation_alone.score": "entropy",
                                         "validation_alone.test.coverage": 0.9,
                                         "validation_alone.test.disagreements_answered": 2})
    assert ("chosen on the 10 validation texts and the 600 calibration texts (unlabelled texts "
            "kept from training") in pooled
    assert "lower bound of their agreement is 0.996." in pooled and "certify" not in pooled
    assert "hold 1 disagreement;" in pooled and "hold 0 disagreements;" in table
    assert ("Validation alone would have answered 0.900 of the test texts with 2 disagreement(s) "
            "among them (`entropy`;") in pooled and "Validation alone" not in table


def test_results_check_exits_1_on_a_stale_readme_and_2_without_metrics(tmp_path,
                                                                         capsys) -> None:
    from pocketbert.apps import cli

    files = _readme_revision(tmp_path)
    args = ["results", "--readme", str(files / "README.md"),
            "--metrics", str(files / "metrics" / "benchmark.json"),
            "--latency", str(files / "metrics" / "latency.json"),
            "--params", str(files / "params.yaml"),
            "--public-runs", str(files / results.PUBLIC_RUNS),
            "--calibrate", str(files / "metrics" / "calibrate.json"), "--check"]
    assert cli.main(args) == 0
    metrics_file = files / "metrics" / "benchmark.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    metrics["student.onnx_int8.macro_f1"] = 0.123  # a re-measured figure README does not show
    metrics_file.write_text(json.dumps(metrics), encoding="utf-8")
    assert cli.main(args) == 1
    assert "stale" in capsys.readouterr().out
    metrics_file.unlink()
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    assert "benchmark.json not found; run `dvc repro benchmark`" in capsys.readouterr().err


def test_update_readme_replaces_only_the_marked_blocks_in_every_file(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.START}\nSTALE\n{results.END}\n{results.BUDGET_START}\n"
                      f"{results.BUDGET_END}\nend\n", encoding="utf-8")
    reference = tmp_path / "docs" / "reference.md"
    reference.parent.mkdir()
    reference.write_text(f"# Reference\n{results.PARAMS_START}\nSTALE\n{results.PARAMS_END}\nmid\n",
                         encoding="utf-8")
    params_file = tmp_path / "params.yaml"
    params_file.write_text("train_student:\n  alpha: 0.25\n", encoding="utf-8")
    assert results.stale_files(readme, _metrics(), params_file)
    assert results.update_readme(readme, _metrics(), params_file)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("end\n") and "STALE" not in text
    assert "| `student.onnx_int8` |" in text and "`train_student.alpha`" not in text
    docs = reference.read_text(encoding="utf-8")
    # the committed value, not the dataclass default (a tuned and committed experiment)
    assert "| `train_student.alpha` | `0.25` |" in docs
    assert "| `train_student.temperature` | `2.0` |" in docs  # absent: the default
    assert docs.startswith("# Reference\n") and docs.endswith("mid\n") and "STALE" not in docs
    assert not results.stale_files(readme, _metrics(), params_file)
    assert not results.update_readme(readme, _metrics(), params_file)  # idempotent


def test_update_readme_names_a_missing_file_or_marker_and_writes_nothing(tmp_path) -> None:
    readme = tmp_path / "README.md"
    original = (f"intro\n{results.START}\nSTALE\n{results.END}\n{results.BUDGET_START}\n"
                f"{results.BUDGET_END}\n")
    readme.write_text(original, encoding="utf-8")
    params_file = tmp_path / "params.yaml"
    params_file.write_text("train_student:\n  alpha: 0.25\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"reference\.md: not found"):
        results.update_readme(readme, _metrics(), params_file)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "reference.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="markers <!-- params:start -->"):
        results.update_readme(readme, _metrics(), params_file)
    assert readme.read_text(encoding="utf-8") == original  # nothing half-written


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_report_diffs_metrics_and_params_between_two_commits(tmp_path, monkeypatch) -> None:
    dvc = Path(sys.executable).parent / "dvc"  # a dependency, installed beside this Python
    assert dvc.is_file(), f"{dvc} missing: run `make setup`"
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
    # Core ML latency: unmeasured (null, as off macOS) in the first run, measured in the second
    for i, (alpha, f1, p50) in enumerate(((0.5, 0.90, None), (0.7, 0.93, 4.25))):
        (tmp_path / "params.yaml").write_text(f"train:\n  alpha: {alpha}\n")
        (tmp_path / "m.json").write_text(json.dumps({"test.macro_f1": f1,
                                                     "coreml_fp16.latency_p50_ms": p50}))
        sh("git", "add", "-A")
        sh("git", "commit", "-qm", f"run {i}")
    md = results.diff_markdown("HEAD~1", "HEAD", cwd=tmp_path)
    assert "### Metrics (HEAD~1 → HEAD)" in md and "### Params (HEAD~1 → HEAD)" in md
    metrics_part, params_part = md.split("### Params")
    assert "test.macro_f1" in metrics_part and "0.9" in metrics_part and "0.93" in metrics_part
    assert "train.alpha" in params_part and "0.5" in params_part and "0.7" in params_part
    # the value that appeared is a row of its own: nothing before ('-'), the number after
    row = next(line for line in metrics_part.splitlines() if "coreml_fp16.latency_p50_ms" in line)
    assert [cell.strip() for cell in row.strip("|").split("|")][2:4] == ["-", "4.25"]


# --- bootstrap intervals -------------------------------------------------------------------

BOOT = types.SimpleNamespace(bootstrap_resamples=999, bootstrap_seed=0, confidence_level=0.95,
                             target_size_ratio=0.5, target_macro_f1_ratio=0.97,
                             target_speedup=2.0)


def _noisy(gold: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``gold`` with about ``share`` of the labels replaced by another label."""
    rng = np.random.default_rng(seed)
    flip = rng.random(gold.size) < share
    return np.where(flip, (gold + rng.integers(1, 4, gold.size)) % 4, gold)


def _result(name: str, pred: np.ndarray, gold: np.ndarray, size: float = 1.0,
            p50: float = 1.0) -> benchmarking.VariantResult:
    probs = np.eye(4)[pred]
    return benchmarking.VariantResult(
        name, size, probs=probs, scores=evaluation.scores(probs, gold, tuple("abcd")),
        latency_p50_ms=p50)


def test_vectorised_macro_f1_is_evaluations_macro_f1_per_row() -> None:
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, (5, 30)), rng.integers(0, 3, (5, 30))  # label 3 unseen
    got = benchmarking.macro_f1_along(y_true, y_pred, 4)
    np.testing.assert_allclose(got, [evaluation.macro_f1(t, p, 4)
                                     for t, p in zip(y_true, y_pred, strict=True)])


def test_intervals_bracket_the_point_and_repeat_with_the_seed() -> None:
    gold = np.arange(212) % 4
    teacher, student = _noisy(gold, 0.05, 1), _noisy(gold, 0.12, 2)
    result = _result("student", student, gold)
    benchmarking.add_intervals(result, gold, teacher, n_labels=4, params=BOOT)
    s = result.scores
    agreement = evaluation.accuracy(teacher, student)
    assert s["macro_f1_ci_low"] < s["macro_f1"] < s["macro_f1_ci_high"]
    assert s["agreement_with_teacher_ci_low"] < agreement < s["agreement_with_teacher_ci_high"]
    # about ±4 points at n=212 (binomial standard error sqrt(.1 * .9 / 212) = 0.02)
    assert 0.04 < s["macro_f1_ci_high"] - s["macro_f1_ci_low"] < 0.15
    again = _result("student", student, gold)
    benchmarking.add_intervals(again, gold, teacher, n_labels=4, params=BOOT)
    assert again.scores == s  # same seed, same resamples, same bounds
    other = _result("student", student, gold)
    benchmarking.add_intervals(other, gold, teacher, n_labels=4,
                               params=types.SimpleNamespace(**{**vars(BOOT),
                                                               "bootstrap_seed": 1}))
    assert other.scores["macro_f1_ci_low"] != s["macro_f1_ci_low"] or (
        other.scores["macro_f1_ci_high"] != s["macro_f1_ci_high"])


def test_identical_predictions_agree_on_every_resample() -> None:
    gold = np.arange(100) % 4
    pred = _noisy(gold, 0.2, 3)
    result = _result("teacher", pred, gold)
    benchmarking.add_intervals(result, gold, pred, n_labels=4, params=BOOT)
    assert result.scores["agreement_with_teacher_ci_low"] == 1.0
    assert result.scores["agreement_with_teacher_ci_high"] == 1.0


def test_headline_ratio_interval_resamples_both_models_together() -> None:
    gold = np.arange(212) % 4
    teacher_pred = _noisy(gold, 0.15, 4)
    # the same predictions: every paired resample gives ratio 1; resampling the two models'
    # test sentences independently would spread it (about ±0.08 here)
    same = {"s": _result("s", teacher_pred, gold, 0.1, 0.5),
            "t": _result("t", teacher_pred, gold)}
    h = benchmarking.headline(same, gold, student="s", teacher="t", params=BOOT)
    assert h["macro_f1_ratio"] == 1.0
    assert h["macro_f1_ratio_ci_low"] == pytest.approx(1.0)
    assert h["macro_f1_ratio_ci_high"] == pytest.approx(1.0)
    # a worse student: the interval holds the point ratio and lies below 1
    worse = {"s": _result("s", _noisy(teacher_pred, 0.2, 5), gold, 0.1, 0.5),
             "t": _result("t", teacher_pred, gold)}
    h = benchmarking.headline(worse, gold, student="s", teacher="t", params=BOOT)
    assert h["macro_f1_ratio_ci_low"] < h["macro_f1_ratio"] < h["macro_f1_ratio_ci_high"] < 1.0
    assert h["size_ratio"] == pytest.approx(0.1) and h["p50_speedup"] == pytest.approx(2.0)
    assert h["macro_f1_target_met"] is False  # judged on the point estimate


def test_gain_kept_is_the_share_of_the_teachers_gain_over_the_baseline() -> None:
    gold = np.arange(212) % 4
    teacher_pred = _noisy(gold, 0.1, 4)
    base_pred = _noisy(gold, 0.4, 6)
    results = {"s": _result("s", teacher_pred, gold, 0.1, 0.5),
               "t": _result("t", teacher_pred, gold), "b": _result("b", base_pred, gold)}
    h = benchmarking.headline(results, gold, student="s", teacher="t", params=BOOT,
                              baseline="b")
    t_f1, b_f1 = (results[k].scores["macro_f1"] for k in ("t", "b"))
    assert h["teacher_gain_over_baseline"] == pytest.approx(t_f1 - b_f1) and t_f1 > b_f1
    assert h["gain_kept"] == pytest.approx(1.0)  # the teacher's own predictions keep it all
    assert h["gain_kept_ci_low"] == pytest.approx(1.0) == h["gain_kept_ci_high"]  # paired
    # a student that answers as the baseline does keeps none of it
    results["s"] = _result("s", base_pred, gold, 0.1, 0.5)
    h = benchmarking.headline(results, gold, student="s", teacher="t", params=BOOT,
                              baseline="b")
    assert h["gain_kept"] == pytest.approx(0.0)
    assert h["gain_kept_ci_low"] <= 0.0 <= h["gain_kept_ci_high"]
    # without a baseline the keys are absent
    assert "gain_kept" not in benchmarking.headline(results, gold, student="s", teacher="t",
                                                    params=BOOT)
    # a teacher no better than the baseline: no gain to keep, said as None
    results["t"] = _result("t", base_pred, gold)
    h = benchmarking.headline(results, gold, student="s", teacher="t", params=BOOT,
                              baseline="b")
    assert h["gain_kept"] is None and h["gain_kept_ci_low"] is None


def test_headline_ratio_interval_is_null_where_the_teacher_can_score_zero() -> None:
    gold = np.arange(8) % 4
    teacher_pred = (gold + 1) % 4
    teacher_pred[0] = gold[0]  # one right answer: a resample without it scores macro-F1 0
    results = {"s": _result("s", gold, gold), "t": _result("t", teacher_pred, gold)}
    h = benchmarking.headline(results, gold, student="s", teacher="t", params=BOOT)
    assert h["macro_f1_ratio"] > 1 and h["macro_f1_ratio_ci_low"] is None
    assert h["macro_f1_ratio_ci_high"] is None


# --- classical baseline ----------------------------------------------------------------------

BASELINE_PARAMS = params.BaselineParams(c_values=(1.0, 10.0), max_iter=200)


def _split(per_label: int, start: int = 0) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for label_id, label in enumerate(LABELS):
        for text in sentences(label, 12)[start : start + per_label]:
            texts.append(text)
            labels.append(label_id)
    return texts, labels


def test_baseline_learns_saves_and_loads_the_same_model(tmp_path) -> None:
    model, info = baseline.fit(_split(8), _split(2, 8), len(LABELS), BASELINE_PARAMS)
    assert info["c"] in (1.0, 10.0) and info["validation.macro_f1"] == 1.0  # template cues
    assert info["features"] == sum(len(v.vocabulary_) for _, v in model[0].transformer_list)
    clf = model[-1]
    assert baseline.count_parameters(model) == (
        info["features"] + clf.coef_.size + clf.intercept_.size)
    test_texts, test_labels = _split(2, 10)
    probs = baseline.probabilities(model, test_texts, len(LABELS))
    assert probs.shape == (8, 4) and np.allclose(probs.sum(-1), 1.0)
    assert evaluation.accuracy(np.asarray(test_labels), probs.argmax(-1)) == 1.0
    path = tmp_path / baseline.MODEL_FILE
    baseline.save(model, path)
    np.testing.assert_array_equal(
        baseline.probabilities(baseline.load(path), test_texts, len(LABELS)), probs)
    variant = benchmarking.baseline_variant("baseline.x", path, n_labels=len(LABELS))
    assert variant.size_mb == pytest.approx(path.stat().st_size / 1e6)
    assert not variant.returns_logits
    np.testing.assert_array_equal(variant.predict_one(test_texts[0]), probs[0])


def test_baseline_keeps_at_most_max_features_ngrams_per_vectorizer() -> None:
    bounded = dataclasses.replace(BASELINE_PARAMS, max_features=25)
    model, info = baseline.fit(_split(8), _split(2, 8), len(LABELS), bounded)
    sizes = [len(v.vocabulary_) for _, v in model[0].transformer_list]
    assert sizes == [25, 25] and info["features"] == 50
    # plain ints, as without max_features: numpy integers would inflate the pickled size
    assert all(type(i) is int for _, v in model[0].transformer_list
               for i in v.vocabulary_.values())
    assert model[-1].coef_.shape == (len(LABELS), 50)
    unbounded, _ = baseline.fit(_split(8), _split(2, 8), len(LABELS),
                                dataclasses.replace(BASELINE_PARAMS, max_features=None))
    assert all(len(v.vocabulary_) > 25 for _, v in unbounded[0].transformer_list)


def test_baseline_keeps_balanced_weights_when_validation_says_a_rare_label_needs_them() -> None:
    common, rare = sentences("process", 12), sentences("notice", 12)
    train = (common[:10] * 4 + rare[:2], [0] * 40 + [1] * 2)  # the rare label: 2 rows of 42
    validation = (common[10:] + rare[2:6], [0, 0, 1, 1, 1, 1])
    strong = dataclasses.replace(BASELINE_PARAMS, c_values=(0.01,))  # the prior outweighs words
    model, info = baseline.fit(train, validation, 2, strong)
    _, unweighted = baseline.fit(train, validation, 2,
                                 dataclasses.replace(strong, class_weights=("none",)))
    # unweighted, every validation text gets the common label: F1 0 on the rare one
    assert unweighted["class_weight"] == "none" and unweighted["validation.macro_f1"] == 0.25
    assert info["class_weight"] == "balanced" and model[-1].class_weight == "balanced"
    assert info["validation.macro_f1"] == 1.0


def test_baseline_gives_a_label_missing_from_train_probability_zero() -> None:
    texts, labels = _split(4)
    keep = [i for i, y in enumerate(labels) if y != 2]  # no 'notice' rows
    model = baseline.build(BASELINE_PARAMS, 1.0).fit([texts[i] for i in keep],
                                                     [labels[i] for i in keep])
    probs = baseline.probabilities(model, texts[:3], 4)
    assert probs.shape == (3, 4) and (probs[:, 2] == 0).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0)


def test_baseline_load_names_the_file_and_the_fix(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"model\.pkl: baseline model not found; .*dvc repro"):
        baseline.load(tmp_path / "model.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match=r"bad\.pkl: cannot load the baseline model"):
        baseline.load(bad)


def test_baseline_stage_writes_model_labels_params_and_numeric_metrics(tiny_world) -> None:
    from stages import baseline as stage

    w = tiny_world
    m = stage.main(["--params", str(w["params"]), "--tokenize", str(w["tokenize"]),
                    "--out", str(w["root"] / "baseline"),
                    "--metrics", str(w["root"] / "baseline.json")])
    out = w["root"] / "baseline"
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "model.pkl", "params.yaml"]
    assert m["train_rows"] == 32 and m["validation.macro_f1"] == 1.0
    assert m["size_mb"] == pytest.approx((out / "model.pkl").stat().st_size / 1e6)
    assert m["class_weight"] in ("none", "balanced")  # the one string: which weighting won
    assert all(isinstance(v, int | float) for k, v in m.items() if k != "class_weight")
    assert json.loads((w["root"] / "baseline.json").read_text()) == m


def test_bad_baseline_params_name_the_key() -> None:
    with pytest.raises(ParamsError, match=r"baseline\.char_ngram_min"):
        params.BaselineParams(char_ngram_min=6, char_ngram_max=5)
    with pytest.raises(ParamsError, match=r"baseline\.c_values"):
        params.BaselineParams(c_values=(1.0, 0.0))
    with pytest.raises(ParamsError, match=r"baseline\.class_weights"):
        params.BaselineParams(class_weights=())
    with pytest.raises(ParamsError, match=r"benchmark\.confidence_level"):
        params.BenchmarkParams(confidence_level=95)


def test_results_table_says_how_much_of_the_gain_over_the_baseline_is_kept() -> None:
    metrics = _metrics(intervals=True)
    assert "gain over" not in results.results_table(metrics)  # older metrics: no sentence
    metrics.update({"headline.baseline_variant": "baseline.tfidf_logreg",
                    "headline.teacher_gain_over_baseline": 0.08, "headline.gain_kept": 0.75,
                    "headline.gain_kept_ci_low": 0.41, "headline.gain_kept_ci_high": 1.02})
    assert ("Of the teacher's macro-F1 gain over `baseline.tfidf_logreg` (+0.080), the student "
            "keeps 0.75 (95% interval 0.41–1.02, paired).") in results.results_table(metrics)
    metrics.update({"headline.teacher_gain_over_baseline": -0.01, "headline.gain_kept": None,
                    "headline.gain_kept_ci_low": None, "headline.gain_kept_ci_high": None})
    assert "no gain over the baseline to keep" in results.results_table(metrics)


def test_worst_class_names_the_label_the_student_keeps_least_of() -> None:
    got = benchmarking.worst_class({"a": 0.9, "b": 0.5, "c": 0.0},
                                   {"a": 1.0, "b": 0.8, "c": 0.0})
    assert got == {"worst_class": "b", "worst_class_f1_ratio": pytest.approx(0.625)}
    assert benchmarking.worst_class({"a": 0.0}, {"a": 0.0}) == {}  # no label to judge
    metrics = _metrics(intervals=True)
    metrics.update({"headline.worst_class": "b", "headline.worst_class_f1_ratio": 0.625})
    assert "Worst label: `b`, F1 ratio 0.625." in results.results_table(metrics)
