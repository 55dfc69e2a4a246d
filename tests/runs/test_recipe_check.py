"""The variants driver (runs.recipe_check): its data sets, arguments, measurement and
table. The dvc runs themselves are what `make variants` does; here each piece runs on its own."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    LABELS,
    ROOT,
    default_params,
    tiny_classifier,
    tiny_tokenizer,
    write_tokenized_splits,
)

from pocketbert.core import evaluation
from pocketbert.data import dataset
from pocketbert.data.soft_labels import SoftLabels
from pocketbert.training import baseline
from runs import recipe_check


def _source_rows(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "sentences.csv"
    domains = ["cooking", "travel", recipe_check.HELD_OUT_DOMAIN]
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "label_id", "domain"])
        for i in range(120):
            writer.writerow([f"sentence number {i}", LABELS[i % 4], i % 4, domains[i % 3]])
    return recipe_check.read_source_rows(path)


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text(yaml.safe_dump(default_params()), encoding="utf-8")
    return ws


def test_regrouped_variant_merges_labels_and_marks_rows_minus_one(tmp_path) -> None:
    ws = _workspace(tmp_path)
    overrides = recipe_check.VARIANTS["regrouped"].build(_source_rows(tmp_path), ws)
    assert overrides["split.labels"] == ["rule", "notice", "process"]
    report = dataset.load_csv(ws / overrides["split.csv"], tuple(overrides["split.labels"]))
    marked = round(recipe_check.MINUS_ONE_SHARE * 120)
    assert report.dropped_label_id_minus_one == marked
    counts = Counter(e.label for e in report.examples)
    assert sum(counts.values()) == 120 - marked
    # rule = condition + constraint (60 rows) less the rows marked -1 among them
    assert 60 - marked <= counts["rule"] <= 60
    assert set(counts) == {"rule", "notice", "process"}


def test_two_label_variant(tmp_path) -> None:
    ws = _workspace(tmp_path)
    overrides = recipe_check.VARIANTS["two_label"].build(_source_rows(tmp_path), ws)
    report = dataset.load_csv(ws / overrides["split.csv"], tuple(overrides["split.labels"]))
    assert Counter(e.label for e in report.examples) == {"directive": 90, "notice": 30}


def test_held_out_variant_tests_only_on_the_unseen_domain(tmp_path) -> None:
    ws = _workspace(tmp_path)
    rows = _source_rows(tmp_path)
    unlabelled = ws / recipe_check.UNLABELLED_CSV
    unlabelled.parent.mkdir(parents=True)
    unlabelled.write_text("text,domain\nA lease ends in May.,legal/contracts\n"
                          "Water the roses weekly.,gardening\n", encoding="utf-8")
    assert recipe_check.VARIANTS["held_out"].build(rows, ws) == {
        "soft_label.unlabelled_csv": str(recipe_check.VARIANT_UNLABELLED_CSV)}
    # no text of the held-out domain reaches training, unlabelled transfer text included
    kept = (ws / recipe_check.VARIANT_UNLABELLED_CSV).read_text(encoding="utf-8").splitlines()
    assert kept == ["text,domain", "Water the roses weekly.,gardening"]
    parts = {s: dataset.read_examples(ws / f"data/split/{s}.csv")
             for s in ("train", "validation", "test")}
    held = {r["text"] for r in rows if r["domain"] == recipe_check.HELD_OUT_DOMAIN}
    assert {e.text for e in parts["test"]} == held
    assert not held & {e.text for e in parts["train"] + parts["validation"]}
    assert len(parts["train"]) + len(parts["validation"]) == 80
    assert {e.label for e in parts["validation"]} == set(LABELS)
    assert json.loads((ws / "data/split/labels.json").read_text())["labels"] == list(LABELS)


def test_small_variant_keeps_a_stratified_third(tmp_path) -> None:
    split = tmp_path / "data/split"
    rows = [dataset.Example(f"text {i}", LABELS[i % 4], i + 2) for i in range(60)]
    dataset.write_examples(split / "train.csv", rows)
    recipe_check.VARIANTS["small"].after_split(tmp_path)
    kept = dataset.read_examples(split / "train.csv")
    assert Counter(e.label for e in kept) == {label: 5 for label in LABELS}
    assert [e.line for e in kept] == sorted(e.line for e in kept)


def test_unknown_variant_and_missing_column_exit_2(tmp_path, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        recipe_check.main(["--variants", "default,tiny"])
    assert exc.value.code == 2
    assert "unknown ['tiny']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        recipe_check.main(["--variants", ","])
    assert exc.value.code == 2
    assert "--variants: name at least one of ['default'" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/sentences.csv").write_text("text,label\na,b\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        recipe_check.main(["--variants", "default"])
    assert exc.value.code == 2
    assert "missing column(s) ['domain']" in capsys.readouterr().err


def test_measure_scores_the_int8_student_one_text_at_a_time(tmp_path) -> None:
    """A workspace as the stages leave it; the teacher's stored logits disagree with the
    student on exactly one test row, so agreement is (n - 1) / n."""
    from pocketbert.runtime import onnx_runner
    from stages import baseline as baseline_stage
    from stages import export

    ws = _workspace(tmp_path)
    data = default_params()
    data["tokenize"]["max_length"] = 32
    data["benchmark"]["bootstrap_resamples"] = 200
    (ws / "params.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    tokenizer = tiny_tokenizer()
    model_dir = tmp_path / "student"
    tiny_classifier(len(tokenizer)).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    tok_dir = ws / "data/tokenize/written"
    rows = write_tokenized_splits(tok_dir, tokenizer)
    dataset.write_examples(ws / "data/split/train.csv", rows["train"])
    export.main(["--params", str(ws / "params.yaml"), "--model", str(model_dir),
                 "--tokenize", str(tok_dir), "--out", str(ws / "models/export/student"),
                 "--metrics", str(tmp_path / "export.json")])
    (ws / "metrics").mkdir()
    chosen = baseline_stage.main(["--params", str(ws / "params.yaml"), "--tokenize", str(tok_dir),
                                  "--out", str(ws / "models/baseline"),
                                  "--metrics", str(ws / "metrics/baseline.json")])
    (ws / "metrics/train_student.json").write_text('{"epochs_run": 3.0}', encoding="utf-8")
    texts = [r.text for r in rows["test"]]
    onnx = onnx_runner.load_classifier(ws / "models/export/student/model.int8.onnx", 32)
    student = np.stack([onnx.logits([t])[0] for t in texts]).argmax(-1)
    teacher_pred = student.copy()
    teacher_pred[0] = (teacher_pred[0] + 1) % len(LABELS)
    (ws / "data/soft_label").mkdir(parents=True)
    SoftLabels(tuple(LABELS), {"test": np.eye(len(LABELS), dtype=np.float32)[teacher_pred] * 5}
               ).write(ws / "data/soft_label")

    (ws / "metrics/teacher.json").write_text('{"size_mb": 40.0}', encoding="utf-8")

    got = recipe_check.measure(ws)
    int8_mb = (ws / "models/export/student/model.int8.onnx").stat().st_size / 1e6
    assert got["student_int8_mb"] == pytest.approx(int8_mb)
    assert got["size_ratio"] == pytest.approx(int8_mb / 40.0)
    gold = np.array([LABELS.index(r.label) for r in rows["test"]])
    n = len(texts)
    assert got["test_rows"] == n and got["train_rows"] == len(rows["train"])
    assert got["agreement"] == pytest.approx((n - 1) / n)
    assert got["student_int8_macro_f1"] == pytest.approx(
        evaluation.macro_f1(gold, student, len(LABELS)))
    assert got["teacher_macro_f1"] == pytest.approx(
        evaluation.macro_f1(gold, teacher_pred, len(LABELS)))
    assert got["ratio"] == pytest.approx(got["student_int8_macro_f1"] / got["teacher_macro_f1"])
    base = baseline.probabilities(baseline.load(ws / "models/baseline/model.pkl"), texts,
                                  len(LABELS)).argmax(-1)
    base_f1 = evaluation.macro_f1(gold, base, len(LABELS))
    assert got["baseline_macro_f1"] == pytest.approx(base_f1)
    assert got["baseline_class_weight"] == chosen["class_weight"]
    gain = got["teacher_macro_f1"] - base_f1
    assert got["teacher_gain_over_baseline"] == pytest.approx(gain)
    assert got["gain_kept"] == (pytest.approx((got["student_int8_macro_f1"] - base_f1) / gain)
                                if gain > 0 else None)
    assert got["agreement_ci"][0] <= got["agreement"] <= got["agreement_ci"][1]
    s_f1, t_f1 = (evaluation.per_class_f1(gold, p, len(LABELS)) for p in (student, teacher_pred))
    kept = {label: s / t for label, s, t in zip(LABELS, s_f1, t_f1, strict=True) if t > 0}
    assert got["worst_class_f1_ratio"] == pytest.approx(min(kept.values()))
    assert kept[got["worst_class"]] == pytest.approx(min(kept.values()))
    base_by_label = evaluation.per_class_f1(gold, base, len(LABELS))
    for name, values in (("teacher", t_f1), ("student_int8", s_f1), ("baseline", base_by_label)):
        assert got["f1_by_label"][name] == pytest.approx(dict(zip(LABELS, values, strict=True)))
    assert got["epochs_run"] == 3.0
    assert got["disagreements"] == 1
    assert got["teacher_wrong"] == int((teacher_pred != gold).sum())
    assert got["disagreements_where_teacher_wrong"] == int(teacher_pred[0] != gold[0])


def test_table_lists_every_variant_with_intervals() -> None:
    row = {"test_rows": 212, "teacher_macro_f1": 0.976, "student_int8_macro_f1": 0.967,
           "ratio": 0.99, "ratio_ci": (0.97, 1.01), "agreement": 0.98, "baseline_macro_f1": 0.9,
           "gain_kept": 0.88, "gain_kept_ci": (0.5, 1.2), "worst_class": "notice",
           "worst_class_f1_ratio": 0.95,
           "agreement_ci": (0.96, 0.99), "epochs_run": 6.0, "disagreements": 4,
           "disagreements_where_teacher_wrong": 3}
    deferred = {**row, "deferral.test.coverage": 0.88, "deferral.test.coverage_ci_low": 0.84,
                "deferral.test.coverage_ci_high": 0.92, "deferral.test.agreement": 1.0,
                "deferral.test.cascade_agreement": 1.0, "deferral.test.coverage_ceiling": 0.9}
    lines = recipe_check.table({"default": deferred, "small": row}).splitlines()
    assert len(lines) == 4
    assert lines[2].endswith("| 4 (3) | 0.880 (0.840–0.920) | 0.900 | 1.0000 | 1.0000 | 6 | – |")
    assert lines[3] == ("| `small` | 212 | 0.976 | 0.900 | 0.967 | – | 0.990 (0.970–1.010) | "
                        "0.880 (0.500–1.200) | 0.980 (0.960–0.990) | `notice` (0.950) | 4 (3) | "
                        "– | – | – | – | 6 | – |")  # a run without the calibrate stage or size


def test_a_workspace_shares_the_cache_and_a_failing_dvc_command_names_its_log(tmp_path) -> None:
    ws = tmp_path / "ws"
    log = recipe_check.prepare_workspace(ROOT, ws, tmp_path / "cache")
    assert log == ws / "recipe_check.log" and log.is_file()
    assert str(tmp_path / "cache") in (ws / ".dvc" / "config.local").read_text()
    row = recipe_check._dvc(ws, ["stage", "list"], log)
    assert set(row) == {"wall_s", "peak_rss_gib"} and row["peak_rss_gib"] > 0
    with pytest.raises(recipe_check.RecipeCheckError,
                       match=r"'dvc repro --single-item no_such_stage' failed; see .*"
                             r"recipe_check\.log"):
        recipe_check._dvc(ws, ["repro", "--single-item", "no_such_stage"], log)
    assert "no_such_stage" in log.read_text()  # appended: both commands' output kept


def test_deferral_reads_the_calibrate_stages_figures_when_it_ran(tmp_path) -> None:
    assert recipe_check.deferral(tmp_path) == {}
    (tmp_path / "metrics").mkdir()
    m = {key: 0.5 for key in recipe_check.DEFERRAL_KEYS} | {"score": "margin", "other": 1}
    (tmp_path / "metrics" / "calibrate.json").write_text(json.dumps(m))
    got = recipe_check.deferral(tmp_path)
    assert got == {f"deferral.{key}": m[key] for key in recipe_check.DEFERRAL_KEYS}
    assert got["deferral.score"] == "margin" and "deferral.other" not in got
