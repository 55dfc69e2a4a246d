"""teacher (given mode), soft_label and train_student stages end to end on tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from pocketbert.data import tokenization
from pocketbert.runtime.torch_runner import pad_batch
from pocketbert.training import modeling
from stages import soft_label, teacher, train_student


def _teacher(w: dict[str, Path]) -> Path:
    out = w["root"] / "models" / "teacher"
    teacher.main(["--params", str(w["params"]), "--tokenize", str(w["tokenize"]),
                  "--out", str(out), "--metrics", str(w["root"] / "m" / "teacher.json")])
    return out


def _soft_label(w: dict[str, Path], teacher_dir: Path) -> Path:
    out = w["root"] / "soft_label"
    soft_label.main(["--params", str(w["params"]), "--teacher", str(teacher_dir),
                     "--tokenize", str(w["tokenize"]), "--augmented", str(w["augmented"]),
                     "--out", str(out),
                     "--metrics", str(w["root"] / "m" / "soft_label.json")])
    return out


def _student_args(w: dict[str, Path], teacher_dir: Path, soft: Path) -> list[str]:
    return ["--params", str(w["params"]), "--teacher", str(teacher_dir),
            "--tokenize", str(w["tokenize"]), "--augmented", str(w["augmented"]),
            "--soft-label", str(soft),
            "--out", str(w["root"] / "models" / "student"),
            "--metrics", str(w["root"] / "m" / "train_student.json"),
            "--curves", str(w["root"] / "m" / "curves")]


def test_soft_labels_are_the_teachers_raw_logits(tiny_world) -> None:
    teacher_dir = _teacher(tiny_world)
    assert json.loads((teacher_dir / "labels.json").read_text())["labels"] == list(
        modeling.load_classifier(teacher_dir, tuple(json.loads(
            (teacher_dir / "labels.json").read_text())["labels"])).config.id2label.values())
    soft = _soft_label(tiny_world, teacher_dir)
    logits = np.load(soft / "train_logits.npy")
    data = tokenization.load(tiny_world["tokenize"], tiny_world["augmented"])
    model = modeling.load_classifier(teacher_dir, tuple(json.loads(
        (soft / "meta.json").read_text())["labels"]))
    with torch.inference_mode():
        ids = data["train"]["input_ids"][:3]
        expected = model(**pad_batch(list(ids), 0)).logits.numpy()
    assert logits.shape == (len(data["train"]), 4)
    np.testing.assert_allclose(logits[:3], expected, atol=1e-5)
    # probabilities would be in [0, 1] and sum to 1 per row: logits are not
    assert not np.allclose(logits.sum(axis=1), 1.0)
    assert json.loads((soft / "meta.json").read_text())["kind"] == "logits"


def test_train_student_writes_a_small_student_and_metrics(tiny_world) -> None:
    teacher_dir = _teacher(tiny_world)
    soft = _soft_label(tiny_world, teacher_dir)
    metrics = train_student.main(_student_args(tiny_world, teacher_dir, soft))
    student_dir = tiny_world["root"] / "models" / "student"
    assert (student_dir / "model.safetensors").is_file()
    assert (student_dir / "vocab.txt").is_file()
    assert (student_dir / "params.yaml").is_file()
    assert metrics["student.vocab_size"] < metrics["teacher.vocab_size"]
    assert metrics["student.parameters"] < metrics["teacher.parameters"]
    assert 0 <= metrics["student.test.macro_f1"] <= 1
    assert "student.test.agreement_with_teacher" in metrics
    # it learnt: the distillation loss on the train rows falls from the first epoch to the
    # last (a student whose optimiser step does nothing keeps it, up to dropout, which is 0)
    curves = tiny_world["root"] / "m" / "curves" / "plots" / "metrics"
    loss = np.loadtxt(curves / "train" / "loss.tsv", skiprows=1, ndmin=2)[:, 1]
    assert len(loss) == metrics["epochs_run"] == 2 and loss[-1] < loss[0]
    vocab_lines = (student_dir / "vocab.txt").read_text().splitlines()
    assert len(vocab_lines) == metrics["student.vocab_size"]
    assert (curves / "validation" / "macro_f1.tsv").is_file()
    assert not list(student_dir.parent.glob(".train_student.*"))  # scratch removed


def test_a_row_cap_reaches_the_student_and_one_too_small_stops_the_stage(tiny_world,
                                                                         capsys) -> None:
    import shutil

    import yaml

    from pocketbert.data import tokenization as tok
    from pocketbert.data import vocabulary

    teacher_dir = _teacher(tiny_world)
    soft = _soft_label(tiny_world, teacher_dir)
    raw = yaml.safe_load(tiny_world["params"].read_text())
    always = len(vocabulary.kept_token_ids(tok.load_tokenizer(teacher_dir), [], reserve=0))
    rows = {}
    for cap in (None, always + 3):
        raw["train_student"].update(vocab_max_rows=cap, vocab_clusters=0, epochs=1)
        tiny_world["params"].write_text(yaml.safe_dump(raw))
        rows[cap] = train_student.main(_student_args(tiny_world, teacher_dir, soft))[
            "student.embedding_rows"]
    assert rows[always + 3] == always + 3 < rows[None]
    raw["train_student"]["vocab_max_rows"] = always - 1
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    student_dir = tiny_world["root"] / "models" / "student"
    shutil.rmtree(student_dir)
    with pytest.raises(SystemExit):
        train_student.main(_student_args(tiny_world, teacher_dir, soft))
    assert f"'train_student.vocab_max_rows' is {always - 1}" in capsys.readouterr().err
    assert not student_dir.exists()


def test_a_calibration_share_without_unlabelled_texts_warns(tiny_world) -> None:
    import yaml

    raw = yaml.safe_load(tiny_world["params"].read_text())
    raw["soft_label"].update(use_unlabelled=False, calibration_share=0.3)
    tiny_world["params"].write_text(yaml.safe_dump(raw))
    teacher_dir = _teacher(tiny_world)
    with pytest.warns(UserWarning, match="use_unlabelled is false: there are no calibration"):
        soft = _soft_label(tiny_world, teacher_dir)
    assert set(json.loads((soft / "meta.json").read_text())["rows"]) == {
        "train", "validation", "test"}


def test_soft_labels_with_wrong_row_count_are_rejected(tiny_world, capsys) -> None:
    teacher_dir = _teacher(tiny_world)
    soft = _soft_label(tiny_world, teacher_dir)
    np.save(soft / "train_logits.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(SystemExit) as exc:
        train_student.main(_student_args(tiny_world, teacher_dir, soft))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "train_logits.npy" in err and "(3, 4)" in err and "dvc repro soft_label" in err
    assert not (tiny_world["root"] / "models" / "student").exists()


def test_given_teacher_with_other_labels_is_rejected(tiny_world, write_params, capsys) -> None:
    from conftest import tiny_classifier

    other = tiny_world["root"] / "other"
    tiny_classifier(90, labels=("w", "x", "y", "z")).save_pretrained(str(other))
    params_file = write_params(teacher={"model": str(other), "mode": "given"})
    with pytest.raises(SystemExit):
        teacher.main(["--params", str(params_file), "--tokenize", str(tiny_world["tokenize"]),
                      "--out", str(tiny_world["root"] / "t"), "--metrics",
                      str(tiny_world["root"] / "t.json")])
    assert "id2label has names ['w', 'x', 'y', 'z'] that are not in split.labels" in (
        capsys.readouterr().err)
    assert not (tiny_world["root"] / "t").exists()


def test_missing_teacher_folder_names_the_key(tiny_world, write_params, capsys) -> None:
    params_file = write_params(teacher={"model": str(tiny_world["root"] / "nope")})
    with pytest.raises(SystemExit):
        teacher.main(["--params", str(params_file), "--tokenize", str(tiny_world["tokenize"]),
                      "--out", str(tiny_world["root"] / "t"), "--metrics",
                      str(tiny_world["root"] / "t.json")])
    err = capsys.readouterr().err
    assert "teacher.model" in err and "not found" in err


def test_fine_tune_mode_trains_a_new_head(tiny_world, write_params) -> None:
    params_file = write_params(teacher={"model": str(tiny_world["given_teacher"]),
                                        "mode": "fine_tune", "epochs": 1, "batch_size": 8})
    metrics = teacher.main(["--params", str(params_file), "--tokenize",
                            str(tiny_world["tokenize"]), "--out", str(tiny_world["root"] / "ft"),
                            "--metrics", str(tiny_world["root"] / "ft.json")])
    assert metrics["epochs_run"] == 1.0
    assert metrics["train_rows"] == 32  # written rows only, not the 6 variants


def test_train_student_runs_under_torchrun_with_two_processes(tiny_world) -> None:
    teacher_dir = _teacher(tiny_world)
    soft = _soft_label(tiny_world, teacher_dir)
    # torch's own launcher, beside this interpreter (torch is a dependency: no skip);
    # --standalone: a free rendezvous port on localhost, never a fixed one
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m",
           "stages.train_student", *_student_args(tiny_world, teacher_dir, soft)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tiny_world["root"] / "m" / "train_student.json").read_text())
    assert metrics["world_size"] == 2  # Trainer ran data-parallel over two gloo processes
    assert (tiny_world["root"] / "models" / "student" / "model.safetensors").is_file()
