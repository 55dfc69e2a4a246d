"""Per-epoch validation agreement with the teacher and KL to it: the curves that show whether
the student's chosen epoch is a lucky swing (README "Does the recipe hold on other data?")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pocketbert import distillation
from pocketbert.distillation import teacher_kl


def test_teacher_kl_by_hand() -> None:
    teacher = np.array([[math.log(0.7), math.log(0.3)]])
    student = np.array([[math.log(0.4), math.log(0.6)]])
    expected = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert teacher_kl(student, teacher) == pytest.approx(expected, rel=1e-9)
    assert teacher_kl(teacher + 5.0, teacher) == pytest.approx(0.0, abs=1e-12)  # shift-free


def test_training_logs_agreement_and_kl_per_epoch(tmp_path) -> None:
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, set_seed

    set_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3, max_position_embeddings=16))
    rng = np.random.default_rng(0)

    def rows(n: int) -> Dataset:
        labels = rng.integers(0, 3, n)
        ids = [[1, 5 + 3 * int(y), *rng.integers(20, 40, 3).tolist(), 2] for y in labels]
        teacher = np.eye(3)[labels] * 4.0 + rng.normal(0, 1, (n, 3))
        return Dataset.from_dict({"input_ids": ids, "label": labels.tolist(),
                                  "teacher_logits": teacher.tolist()})

    config = distillation.TrainConfig(epochs=3, learning_rate=5e-3, batch_size=8,
                                      weight_decay=0.0, warmup_ratio=0.0,
                                      early_stopping_patience=3, seed=0, temperature=2.0,
                                      alpha=0.7)
    eval_ds = rows(24)
    live = tmp_path / "curves"
    result = distillation.train(model, rows(48), eval_ds, config, pad_id=0,
                                scratch=tmp_path / "scratch", live_dir=str(live))
    evals = [h for h in result["history"] if "eval_kl" in h]
    assert len(evals) == 3
    assert all(0.0 <= h["eval_agreement"] <= 1.0 and h["eval_kl"] >= 0.0 for h in evals)
    for name in ("agreement", "kl"):
        curve = (live / f"plots/metrics/validation/{name}.tsv").read_text().splitlines()
        assert len(curve) == 1 + 3  # header + one row per epoch
        logged = [float(line.split("\t")[1]) for line in curve[1:]]
        assert logged == pytest.approx([h[f"eval_{name}"] for h in evals])
