"""The BERT-large-sized run's machinery (runs.scale_check), on tiny shapes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import LABELS, ROOT

from pocketbert.core.errors import ParamsError
from runs import scale_check, workspace


def test_teacher_has_the_shape_the_labels_and_a_real_tokenizer(tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    n = scale_check.build_teacher(tmp_path / "t", LABELS, layers=2, hidden=32, heads=4,
                                  intermediate=48, seed=0)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "t")
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (
        2, 32, 4, 48)
    assert [c.id2label[i] for i in range(len(LABELS))] == list(LABELS)
    assert n == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "t" / "model.safetensors").is_file()
    ids = AutoTokenizer.from_pretrained(tmp_path / "t")("Unplug the kettle.")["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) > 3  # [CLS] ... [SEP], WordPiece ids
    with pytest.raises(ParamsError, match="--hidden 30 is not a multiple of --heads 4"):
        scale_check.build_teacher(tmp_path / "u", LABELS, layers=1, hidden=30, heads=4,
                                  intermediate=8, seed=0)


def test_scratch_repo_carries_uncommitted_changes_and_follows_later_ones(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    for name in ("kept.txt", "changed.txt", "deleted.txt"):
        (src / name).write_text("committed\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    (src / "changed.txt").write_text("edited\n")
    (src / "deleted.txt").unlink()
    (src / "new").mkdir()
    (src / "new" / "file.txt").write_text("untracked\n")
    (src / ".gitignore").write_text("ignored.txt\n")
    (src / "ignored.txt").write_text("ignored\n")
    dest = workspace.scratch_repo(src, tmp_path / "copy")
    assert (dest / "kept.txt").read_text() == "committed\n"
    assert (dest / "changed.txt").read_text() == "edited\n"
    assert (dest / "new" / "file.txt").read_text() == "untracked\n"
    assert not (dest / "deleted.txt").exists()
    assert not (dest / "ignored.txt").exists()
    # a reused workspace (the recipe check's) follows the source's next edits
    (src / "kept.txt").write_text("edited later\n")
    (src / "new" / "file.txt").unlink()
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "next"], check=True)
    assert workspace.scratch_repo(src, dest) == dest
    assert (dest / "kept.txt").read_text() == "edited later\n"
    assert (dest / "changed.txt").read_text() == "edited\n"


def test_configure_sets_a_given_or_a_fine_tuned_teacher_and_keeps_comments(tmp_path) -> None:
    from ruamel.yaml import YAML

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"))
    scale_check.configure(tmp_path, "all-mpnet-base-v2", {("train_student", "epochs"): 3},
                          mode="fine_tune")
    text = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    doc = YAML().load(text)
    assert (doc["teacher"]["mode"], doc["teacher"]["model"]) == ("fine_tune", "all-mpnet-base-v2")
    assert doc["train_student"]["init"] == "pretrained" and doc["train_student"]["epochs"] == 3
    assert "# packaged offline MiniLM" in text  # comments kept
    scale_check.configure(tmp_path, tmp_path / "big", {})
    doc = YAML().load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    assert (doc["teacher"]["mode"], doc["teacher"]["model"]) == ("given", str(tmp_path / "big"))


def test_the_report_names_a_fine_tuned_teacher() -> None:
    report = {"teacher": {"model": "all-mpnet-base-v2"}, "build_s": 0.0, "total_s": 3.0,
              "peak_rss_gib": 1.5, "stages": [{"stage": "split", "wall_s": 3.0,
                                                "peak_rss_gib": 1.5, "returncode": 0,
                                                "over_limit": False}]}
    table = scale_check.markdown(report)
    assert table.startswith("Teacher: all-mpnet-base-v2, fine-tuned by the teacher stage.")
    assert "| split | 3.0 | 1.5 |  |" in table


def test_measure_sees_the_memory_of_a_grandchild(tmp_path) -> None:
    # the stage's Python runs under dvc: the peak must include a child's child. ru_maxrss of a
    # child starts from its parent's resident set (fork copies the parent's high-water mark),
    # so both measurements run from a small helper process, never from pytest (torch loaded),
    # and a control child that allocates nothing shows what the helper itself contributes.
    allocated = 300 * 2**20  # bytes, every page touched
    grandchild = f"b = bytearray({allocated}); b[::4096] = b'x' * len(b[::4096])"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    helper = ("import json, sys; from pathlib import Path; from runs import workspace\n"
              "tmp = Path(sys.argv[1])\n"
              "rows = [workspace.measure([sys.executable, '-c', code], cwd=tmp, env=None,\n"
              "                          log=tmp / 'log.txt') for code in sys.argv[2:]]\n"
              "print(json.dumps(rows))")
    out = subprocess.run([sys.executable, "-c", helper, str(tmp_path), "pass", child],
                         capture_output=True, text=True, check=True, timeout=120)
    control, row = json.loads(out.stdout)
    assert control["returncode"] == row["returncode"] == 0 and row["wall_s"] >= 0
    gib = allocated / 2**30
    # the control proves the bound can fail: a measure that missed the grandchild (or only
    # saw the helper) reads under the allocation
    assert control["peak_rss_gib"] < gib <= row["peak_rss_gib"]
    # at most the helper (control), plus the grandchild's interpreter (no larger than the
    # control's) and its allocation; 0.001: the report rounds to MiB
    assert row["peak_rss_gib"] <= 2 * control["peak_rss_gib"] + gib + 0.001


def test_measure_appends_to_the_log_and_passes_the_exit_status_on(tmp_path) -> None:
    log = tmp_path / "log.txt"
    first = workspace.measure([sys.executable, "-c", "print('one')"], cwd=tmp_path, env=None,
                              log=log)
    second = workspace.measure([sys.executable, "-c", "print('two'); raise SystemExit(3)"],
                               cwd=tmp_path, env=None, log=log, append=True)
    assert (first["returncode"], second["returncode"]) == (0, 3)
    assert log.read_text().split() == ["one", "two"]
    workspace.measure([sys.executable, "-c", "print('three')"], cwd=tmp_path, env=None, log=log)
    assert log.read_text().split() == ["three"]  # without append, the log starts over


def test_a_missing_teacher_model_is_named_before_any_work(tmp_path, capsys) -> None:
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as exc:
        scale_check.main(["--workdir", str(work), "--teacher", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--teacher '{tmp_path / 'nope'}'" in err and "not found" in err
    assert not work.exists()


def test_a_used_workdir_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(SystemExit) as exc:
        scale_check.main(["--workdir", str(tmp_path), "--layers", "1"])
    assert exc.value.code == 2
    assert f"--workdir {tmp_path} is not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_shape_runs_every_stage_and_reports_it(tmp_path) -> None:
    # every 8th row of the committed data: all labels, a test split big enough to benchmark
    with (ROOT / "data" / "raw" / "sentences.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    small = tmp_path / "small.csv"
    with small.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[::8])
    work = tmp_path / "work"
    code = scale_check.main([
        "--workdir", str(work), "--layers", "2", "--hidden", "32", "--heads", "2",
        "--intermediate", "64", "--set", f"split.csv={small}", "--set", "augment.factor=1",
        "--set", "train_student.epochs=1", "--set", "benchmark.bootstrap_resamples=100",
        "--set", "benchmark.warmup=1"])
    report = json.loads((work / scale_check.REPORT_JSON).read_text())
    assert code == 0, report
    stages = scale_check.stage_order(work / "repo")
    assert [row["stage"] for row in report["stages"]] == stages
    assert {"split", "teacher", "export@teacher", "convert@teacher", "benchmark"} <= set(stages)
    for row in report["stages"]:
        assert row["returncode"] == 0 and not row["over_limit"]
        assert isinstance(row["wall_s"], float) and row["wall_s"] > 0
        assert isinstance(row["peak_rss_gib"], float) and 0 < row["peak_rss_gib"] < 16
    assert report["completed"] and report["teacher"]["parameters"] > 0
    # this run's teacher, not the committed metrics: ~1 M parameters at fp16 is a few MB
    assert 0 < report["teacher_coreml_fp16_mb"] < 10
    table = (work / scale_check.REPORT_MD).read_text()
    assert all(f"| {name} |" in table for name in stages) and "670.1 MB" in table
