"""train_student: initialise a small student and train it by knowledge distillation.

The student starts from chosen teacher layers, from layers of its own pre-trained backbone with its
own tokenizer, or from a fresh config (pocketbert.training.student); keeps only the vocabulary it
needs; and learns from the teacher's stored logits (KL at temperature T, weight alpha) plus the gold
labels (weight 1 - alpha), and with hidden_weight > 0 from the hidden states of the teacher layers
it copies, with relation_weight > 0 from the attention relations of the last one (the teacher
model running beside it). Unlabelled transfer texts labelled by soft_label
enter the KL term only.
With teacher.mode api there are no teacher weights: init must be pretrained, and the teacher's
scores in the metrics are the API's answers stored by soft_label. The weights kept follow
train_student.select_by: the mean of the last average_last epochs (default), or the epoch with the
best validation macro-F1, agreement or KL with early stopping; curves (with validation agreement and
KL) go to dvclive. The same command runs under ``torchrun --nproc_per_node N -m stages.train_student
...`` (DDP).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.data import dataset, tokenization, vocabulary
from pocketbert.teachers import teacher as teachers
from pocketbert.training import modeling, student

PARAMS = ("train_student",)
INPUTS = ("teacher", "tokenize", "augmented", "soft_label")
OUTPUTS = ("out", "metrics", "curves")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    from pocketbert.training import distillation

    main_process = int(os.environ.get("RANK", "0")) == 0
    p, max_length = params.train_student, tokenization.read_max_length(inputs["tokenize"])
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    stored = student.read_soft_labels(inputs["soft_label"], data, labels)
    teacher = teachers.load(inputs["teacher"], labels)  # an endpoint: no weights to copy
    written_train = [t for t, a in zip(data["train"]["text"], data["train"]["augmentation"],
                                       strict=True) if a == "none"]
    model, tokenizer, metrics = student.build(p, teacher.model, teacher.tokenizer, labels,
                                              written_train, max_length)
    metrics["train.unlabelled_rows"] = len(stored.unlabelled_texts or ())
    # The student sees what the device will see: every split re-tokenized with its own
    # tokenizer (identical pieces on the training corpus, [UNK] or spelled-out pieces elsewhere).
    splits = student.student_splits(data, stored.logits, tokenizer, max_length,
                                    stored.unlabelled_texts)
    metrics.update({f"{split}.unk_tokens": sum(row.count(tokenizer.unk_token_id)
                                               for row in splits[split]["input_ids"])
                    for split in ("validation", "test")})
    curves = outputs["out"].with_name(".train_student.curves")  # dvclive's, moved in below
    shutil.rmtree(curves, ignore_errors=True)
    hidden_teacher = (distillation.HiddenTeacher(teacher.model,
                                                 student.hidden_layer_map(p.copy_layers),
                                                 student.relation_layers(p.copy_layers))
                      if p.hidden_weight or p.relation_weight else None)  # only init copy
    result = distillation.train(
        model, splits["train"], splits["validation"], distillation.TrainConfig.of(p),
        tokenizer.pad_token_id, scratch=outputs["out"].with_name(".train_student.trainer"),
        live_dir=str(curves) if main_process else None, hidden_teacher=hidden_teacher)
    if not main_process:
        return {}
    metrics.update({"epochs_run": result["epochs_run"], "world_size": result["world_size"],
                    **distillation.class_weight_metrics(result, labels)})
    metrics.update(_scores(model, tokenizer, splits, stored.logits, labels))
    model = model.cpu()
    with atomic_path(outputs["out"], directory=True) as tmp:
        modeling.save_classifier(tmp, model, tokenizer, labels, "train_student", p)
        vocabulary.write_vocab_txt(tokenizer, tmp / contract.VOCAB_FILE)
    with atomic_path(outputs["curves"], directory=True) as tmp:
        if curves.is_dir():
            shutil.copytree(curves, tmp, dirs_exist_ok=True)
    shutil.rmtree(curves, ignore_errors=True)
    metrics.update(_sizes(model, outputs["out"], teacher))
    metrics["macro_f1_ratio"] = metrics["student.test.macro_f1"] / metrics["teacher.test.macro_f1"]
    write_json(outputs["metrics"], metrics)
    return metrics


def _scores(model, tokenizer, splits, soft: Mapping[str, np.ndarray],
            labels: tuple[str, ...]) -> dict:
    """Student and teacher (its stored logits) scores on validation and test, the student's
    with its agreement with the teacher."""
    from pocketbert.runtime import torch_runner

    metrics: dict = {}
    for split in ("validation", "test"):
        logits = torch_runner.predict_logits(model, splits[split]["input_ids"],
                                             tokenizer.pad_token_id, desc=f"student {split}")
        gold = np.asarray(splits[split]["label"])
        metrics.update(evaluation.report(logits, gold, labels, f"student.{split}",
                                         reference_logits=soft[split]))
        metrics.update(evaluation.report(soft[split], gold, labels, f"teacher.{split}"))
    return metrics


def _sizes(model, out: Path, teacher: teachers.Teacher) -> dict:
    """Parameters and file sizes of the student and, where it has weights, of the teacher."""
    s_params, s_size = modeling.count_parameters(model), size_mb(out / contract.WEIGHTS_FILE)
    if teacher.model is None:  # an endpoint has no parameters or file size to compare with
        return {"student.parameters": s_params, "student.size_mb": s_size}
    t_params = modeling.count_parameters(teacher.model)
    return {"student.parameters": s_params, "teacher.parameters": t_params,
            "parameter_ratio": s_params / t_params, "student.size_mb": s_size,
            "teacher.size_mb": teacher.size_mb, "size_ratio": s_size / teacher.size_mb}


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
