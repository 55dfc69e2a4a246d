"""End to end on the real offline backbone (all-MiniLM-L6-v2) and a small fixture CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages import augment, soft_label, split, teacher, tokenize, train_student

pytestmark = pytest.mark.e2e


def test_pipeline_on_the_packaged_backbone(tmp_path, small_csv, write_params) -> None:
    p = str(write_params(
        split={"csv": str(small_csv)},
        augment={"factor": 1, "synonym_probability": 0.0},
        teacher={"epochs": 1, "batch_size": 8},
        train_student={"epochs": 2, "batch_size": 8, "vocab_reserve": 100},
        tokenize={"max_length": 32},
    ))
    d, m = tmp_path / "data", tmp_path / "metrics"
    split.main(["--params", p, "--out", f"{d}/split", "--metrics", f"{m}/split.json"])
    augment.main(["--params", p, "--train", f"{d}/split/train.csv", "--out", f"{d}/augment",
                  "--metrics", f"{m}/augment.json"])
    tokenize.main(["--params", p, "--split", f"{d}/split", "--augment", f"{d}/augment",
                   "--written", f"{d}/tok", "--augmented", f"{d}/aug",
                   "--metrics", f"{m}/tokenize.json"])
    t = teacher.main(["--params", p, "--tokenize", f"{d}/tok", "--out", f"{d}/teacher",
                      "--metrics", f"{m}/teacher.json"])
    assert t["parameters"] == 22_714_756  # MiniLM-L6-H384 + a 4-label head
    soft_label.main(["--params", p, "--teacher", f"{d}/teacher", "--tokenize", f"{d}/tok",
                     "--augmented", f"{d}/aug", "--out", f"{d}/soft_label",
                     "--metrics", f"{m}/soft_label.json"])
    s = train_student.main([
        "--params", p, "--teacher", f"{d}/teacher", "--tokenize", f"{d}/tok",
        "--augmented", f"{d}/aug", "--soft-label", f"{d}/soft_label", "--out", f"{d}/student",
        "--metrics", f"{m}/train_student.json", "--curves", f"{m}/curves"])
    # 2 copied layers + a vocabulary trimmed to the fixture's words: far below 1/4
    assert s["parameter_ratio"] < 0.25
    assert s["student.vocab_size"] < 1000
    saved = json.loads((m / "train_student.json").read_text())
    assert saved["student.parameters"] == s["student.parameters"]
    assert (d / "student" / "vocab.txt").read_text().splitlines()[0] == "[PAD]"
    # the student learnt from the teacher's logits: the distillation loss on the train rows
    # falls from the first epoch to the second (no dropout change: an idle optimiser keeps it)
    loss = np.loadtxt(m / "curves" / "plots" / "metrics" / "train" / "loss.tsv", skiprows=1,
                      ndmin=2)[:, 1]
    assert len(loss) == 2 and loss[1] < loss[0]
