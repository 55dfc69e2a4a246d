"""train_student: initialise a small student and train it by knowledge distillation.

The student starts from chosen teacher layers, from layers of its own pre-trained backbone with its
own tokenizer, or from a fresh config (pocketbert.training.student); keeps only the vocabulary it
needs; and learns from the teacher's stored logits (KL at temperature T, weight alpha) plus the gold
labels (weight 1 - alpha). Unlabelled transfer texts labelled by soft_label enter the KL term only.
With teacher.mode api there are no teacher weights: init must be pretrained, and the teacher's
scores in the metrics are the API's answers stored by soft_label. The weights kept follow
train_student.select_by: the mean of the last average_last epochs (default), or the epoch with the
best validation macro-F1, agreement or KL with early stopping; curves (with validation agreement and
KL) go to dvclive. The same command runs under ``torchrun --nproc_per_node N -m stages.train_student
...`` (DDP).

    python -m stages.train_student --teacher models/teacher --tokenize data/tokenize/written \
        --augmented data/tokenize/augmented --soft-label data/soft_label --out models/student \
        --metrics metrics/train_student.json --curves metrics/train_student_curves
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

import numpy as np

from pocketbert.core import evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.errors import ParamsError
from pocketbert.data import dataset, tokenization, vocabulary
from pocketbert.training import modeling, student

PARAMS = ("train_student", "tokenize.max_length", "teacher.mode")
INPUTS = ("teacher", "tokenize", "augmented", "soft_label")
OUTPUTS = ("out", "metrics", "curves")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    from transformers import set_seed

    from pocketbert.runtime import torch_runner
    from pocketbert.training import distillation

    main_process = int(os.environ.get("RANK", "0")) == 0
    p, max_length = params.train_student, params.tokenize.max_length
    api = params.teacher.mode == "api"
    if api and p.init != "pretrained":
        raise ParamsError(
            f"params.yaml: 'train_student.init' is {p.init!r}, but teacher.mode api has no "
            "teacher weights or config to copy; set train_student.init: pretrained (layers of "
            "train_student.backbone, with its own tokenizer)")
    labels = dataset.read_labels(inputs["tokenize"] / "labels.json")
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    soft = student.read_soft_labels(inputs["soft_label"], data, labels)
    unlabelled = (student.read_unlabelled_texts(inputs["soft_label"]) if "unlabelled" in soft
                  else None)
    teacher_dir = inputs["teacher"]
    teacher = teacher_tokenizer = None  # teacher.mode api: only endpoint.json in teacher_dir
    metrics: dict = {}
    if not api:
        teacher = modeling.load_classifier(teacher_dir, labels,
                                           origin=f"stage input {teacher_dir}")
        teacher_tokenizer = tokenization.load_tokenizer(teacher_dir)
        metrics["teacher.vocab_size"] = len(teacher_tokenizer)
    set_seed(p.seed)
    model, tokenizer = student.init_student(p, teacher, teacher_tokenizer, labels)
    metrics["student.backbone_vocab_size"] = len(tokenizer)
    if p.trim_vocab:
        written_train = [t for t, a in zip(data["train"]["text"], data["train"]["augmentation"],
                                           strict=True) if a == "none"]
        if p.vocab_clusters:
            tokenizer = student.cluster(model, tokenizer, written_train, p.vocab_reserve,
                                        p.vocab_clusters, max_length, p.seed)
        else:
            tokenizer = student.trim(model, tokenizer, written_train, p.vocab_reserve,
                                     max_length)
    metrics["student.vocab_size"] = len(tokenizer)
    metrics["student.embedding_rows"] = model.get_input_embeddings().weight.shape[0]
    metrics["train.unlabelled_rows"] = len(unlabelled or ())

    # The student sees what the device will see: every split re-tokenized with its own
    # tokenizer (identical pieces on the training corpus, [UNK] or spelled-out pieces elsewhere).
    splits = student.student_splits(data, soft, tokenizer, max_length, unlabelled)
    unk = tokenizer.unk_token_id
    for split in ("validation", "test"):
        n_unk = sum(row.count(unk) for row in splits[split]["input_ids"])
        metrics[f"{split}.unk_tokens"] = n_unk

    curves = outputs["out"].with_name(".train_student.curves")
    shutil.rmtree(curves, ignore_errors=True)
    result = distillation.train(
        model, splits["train"], splits["validation"], distillation.TrainConfig.of(p),
        tokenizer.pad_token_id, scratch=outputs["out"].with_name(".train_student.trainer"),
        live_dir=str(curves) if main_process else None)
    if not main_process:
        return {}
    metrics["epochs_run"] = result["epochs_run"]
    metrics["world_size"] = result["world_size"]
    for split in ("validation", "test"):
        logits, _ = torch_runner.predict_logits(model, splits[split]["input_ids"], 64,
                                             tokenizer.pad_token_id, desc=f"student {split}")
        metrics.update(evaluation.report(logits, np.asarray(splits[split]["label"]), labels,
                                         f"student.{split}", reference_logits=soft[split]))
        metrics.update(evaluation.report(soft[split], np.asarray(splits[split]["label"]), labels,
                                         f"teacher.{split}"))
    model = model.cpu()
    with atomic_path(outputs["out"], directory=True) as tmp:
        modeling.save_classifier(tmp, model, tokenizer, labels, "train_student", p)
        vocabulary.write_vocab_txt(tokenizer, tmp / "vocab.txt")
    with atomic_path(outputs["curves"], directory=True) as tmp:
        if curves.is_dir():
            shutil.copytree(curves, tmp, dirs_exist_ok=True)
            shutil.rmtree(curves)
    s_params = modeling.count_parameters(model)
    s_size = size_mb(outputs["out"] / "model.safetensors")
    if teacher is None:  # an API teacher has no parameters or file size to compare with
        metrics.update({"student.parameters": s_params, "student.size_mb": s_size})
    else:
        t_params = modeling.count_parameters(teacher)
        t_size = size_mb(teacher_dir / "model.safetensors")
        metrics.update({
            "student.parameters": s_params,
            "teacher.parameters": t_params,
            "parameter_ratio": s_params / t_params,
            "student.size_mb": s_size,
            "teacher.size_mb": t_size,
            "size_ratio": s_size / t_size,
        })
    metrics["macro_f1_ratio"] = (metrics["student.test.macro_f1"]
                                 / metrics["teacher.test.macro_f1"])
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
