"""train_student: initialise a small student and train it by knowledge distillation.

The student starts from chosen teacher layers (or a fresh config), keeps only the vocabulary it
needs, and learns from the teacher's stored logits (KL at temperature T, weight alpha) plus the
gold labels (weight 1 - alpha). Early stopping on validation macro-F1; curves go to dvclive.
The same command runs under ``torchrun --nproc_per_node N -m stages.train_student ...`` (DDP).

    python -m stages.train_student --teacher models/teacher --tokenize data/tokenize/written \
        --augmented data/tokenize/augmented --soft-label data/soft_label --out models/student \
        --metrics metrics/train_student.json --curves metrics/train_student_curves
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert import dataset, evaluation, modeling, params, stage, tokenization, vocabulary
from pocketbert.artifacts import atomic_path, read_json, size_mb, write_json
from pocketbert.errors import DataError

PARAMS = ("train_student", "tokenize.max_length")
INPUTS = ("teacher", "tokenize", "augmented", "soft_label")
OUTPUTS = ("out", "metrics", "curves")
SPLITS = ("train", "validation", "test")


def read_soft_labels(folder: Path, data, labels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Teacher logits per split, checked against the tokenized data's rows and the labels."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        raise DataError(f"{meta_file}: not found; run 'dvc repro soft_label'")
    meta = read_json(meta_file)
    if meta.get("kind") != "logits":
        raise DataError(f"{meta_file}: soft labels must be teacher logits, found "
                        f"{meta.get('kind')!r}; re-run 'dvc repro soft_label'")
    if tuple(meta.get("labels", ())) != labels:
        raise DataError(f"{meta_file}: labels {meta.get('labels')} differ from labels.json "
                        f"{list(labels)}; re-run 'dvc repro soft_label'")
    out = {}
    for split in SPLITS:
        logits = np.load(folder / f"{split}_logits.npy")
        expected = (len(data[split]), len(labels))
        if logits.shape != expected:
            raise DataError(
                f"{folder / f'{split}_logits.npy'}: shape {logits.shape} does not match the "
                f"tokenized {split} split {expected} (rows, labels); re-run 'dvc repro soft_label'"
            )
        out[split] = logits
    return out


def init_student(p: params.TrainStudentParams, teacher):
    if p.init == "copy":
        return modeling.student_from_layers(teacher, p.copy_layers)
    return modeling.fresh_student(teacher, p.hidden_size, p.num_layers, p.num_heads,
                                  p.intermediate_size, p.seed)


def run(p: params.TrainStudentParams, max_length: int, inputs: dict[str, str],
        outputs: dict[str, str]) -> dict:
    from transformers import set_seed

    from pocketbert import distillation, inference

    main_process = int(os.environ.get("RANK", "0")) == 0
    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    written = tokenization.load(inputs["tokenize"])
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    soft = read_soft_labels(Path(inputs["soft_label"]), data, labels)
    teacher_dir = Path(inputs["teacher"])
    teacher = modeling.load_classifier(teacher_dir, labels, key="teacher folder")
    teacher_tokenizer = tokenization.load_tokenizer(teacher_dir)
    set_seed(p.seed)
    student = init_student(p, teacher)

    metrics: dict = {"teacher.vocab_size": len(teacher_tokenizer)}
    if p.trim_vocab:
        kept = vocabulary.kept_token_ids(teacher_tokenizer, list(written["train"]["input_ids"]),
                                         p.vocab_reserve)
        tokenizer = vocabulary.trimmed_tokenizer(teacher_tokenizer, kept)
        vocabulary.trim_embeddings(student, kept)
    else:
        tokenizer = teacher_tokenizer
    metrics["student.vocab_size"] = len(tokenizer)

    # The student sees what the device will see: every split re-tokenized with its own
    # tokenizer (identical pieces on the training corpus, [UNK] or spelled-out pieces elsewhere).
    splits = {}
    for split in SPLITS:
        ids = tokenization.encode(tokenizer, list(data[split]["text"]), max_length)["input_ids"]
        splits[split] = (data[split].remove_columns(["input_ids"])
                         .add_column("input_ids", ids)
                         .add_column("teacher_logits", soft[split].tolist()))
    unk = tokenizer.unk_token_id
    for split in ("validation", "test"):
        n_unk = sum(row.count(unk) for row in splits[split]["input_ids"])
        metrics[f"{split}.unk_tokens"] = n_unk

    curves = Path(outputs["out"]).with_name(".train_student.curves")
    shutil.rmtree(curves, ignore_errors=True)
    result = distillation.train(
        student, splits["train"], splits["validation"], distillation.TrainConfig.of(p),
        tokenizer.pad_token_id, scratch=Path(outputs["out"]).with_name(".train_student.trainer"),
        live_dir=str(curves) if main_process else None)
    if not main_process:
        return {}
    metrics["epochs_run"] = result["epochs_run"]
    metrics["world_size"] = result["world_size"]
    for split in ("validation", "test"):
        logits, _ = inference.predict_logits(student, splits[split]["input_ids"], 64,
                                             tokenizer.pad_token_id, desc=f"student {split}")
        metrics.update(evaluation.report(logits, np.asarray(splits[split]["label"]), labels,
                                         f"student.{split}", reference_logits=soft[split]))
        metrics.update(evaluation.report(soft[split], np.asarray(splits[split]["label"]), labels,
                                         f"teacher.{split}"))
    student = student.cpu()
    with atomic_path(outputs["out"], directory=True) as tmp:
        modeling.save_classifier(tmp, student, tokenizer, labels, "train_student", p)
        vocabulary.write_vocab_txt(tokenizer, tmp / "vocab.txt")
    with atomic_path(outputs["curves"], directory=True) as tmp:
        if curves.is_dir():
            shutil.copytree(curves, tmp, dirs_exist_ok=True)
            shutil.rmtree(curves)
    s_params, t_params = modeling.count_parameters(student), modeling.count_parameters(teacher)
    s_size = size_mb(Path(outputs["out"]) / "model.safetensors")
    t_size = size_mb(teacher_dir / "model.safetensors")
    metrics.update({
        "student.parameters": s_params,
        "teacher.parameters": t_params,
        "parameter_ratio": s_params / t_params,
        "student.size_mb": s_size,
        "teacher.size_mb": t_size,
        "size_ratio": s_size / t_size,
        "macro_f1_ratio": metrics["student.test.macro_f1"] / metrics["teacher.test.macro_f1"],
    })
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
