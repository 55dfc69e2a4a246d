"""soft_label: run the teacher once and store its LOGITS for every training example.

Logits, not probabilities: train_student divides them by the temperature itself; storing
softmax outputs and softening them again would flatten the targets towards uniform. Covers the
(augmented) train split and validation (distillation targets) and test (only to measure how
often the student agrees with the teacher). With soft_label.use_unlabelled, also the texts of
soft_label.unlabelled_csv (rows repeating a labelled text are skipped and counted): the student
learns them through the distillation term only. With teacher.mode api the same texts go to the
endpoint instead (pocketbert.teachers.api: answers cached in --api-cache, outside DVC; calls
and cache hits are metrics) and probabilities are stored as log-probabilities.

    python -m stages.soft_label --teacher models/teacher --tokenize data/tokenize/written \
        --augmented data/tokenize/augmented --out data/soft_label \
        --metrics metrics/soft_label.json [--api-cache .cache/pocketbert/api]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from pocketbert.core import evaluation, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.teachers import api
from pocketbert.training import modeling, student

PARAMS = ("soft_label", "tokenize.max_length", *api.PARAMS)
INPUTS = ("teacher", "tokenize", "augmented")
OUTPUTS = ("out", "metrics")
OPTIONS = ("api_cache",)
SPLITS = ("train", "validation", "test")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    if params.teacher.mode == "api":
        return _run_api(params, inputs, outputs)
    from pocketbert.runtime import torch_runner

    p = params.soft_label
    labels = dataset.read_labels(inputs["tokenize"] / "labels.json")
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    teacher = modeling.load_classifier(inputs["teacher"], labels,
                                       origin=f"stage input {inputs['teacher']}")
    teacher_tokenizer = tokenization.load_tokenizer(inputs["teacher"])
    pad_id = teacher_tokenizer.pad_token_id
    device = torch_runner.pick_device()
    metrics: dict = {"device": device.type}
    rows = {split: data[split]["input_ids"] for split in SPLITS}
    if p.use_unlabelled:
        labelled = {text.casefold() for split in SPLITS for text in data[split]["text"]}
        texts, skipped = dataset.load_unlabelled_csv(p.unlabelled_csv, exclude=labelled)
        rows["unlabelled"] = tokenization.encode(
            teacher_tokenizer, texts, params.tokenize.max_length)["input_ids"]
        metrics["unlabelled.skipped_labelled_texts"] = skipped
    with atomic_path(outputs["out"], directory=True) as tmp:
        for split, ids in rows.items():
            logits, throughput = torch_runner.predict_logits(
                teacher, ids, p.batch_size, pad_id, device=device, desc=f"soft_label {split}")
            np.save(tmp / f"{split}_logits.npy", logits)  # [rows, num_labels] float32
            metrics[f"{split}.rows"] = len(ids)
            metrics[f"{split}.examples_per_s"] = throughput
            if split in SPLITS:
                metrics[f"{split}.teacher_gold_agreement"] = evaluation.accuracy(
                    np.asarray(data[split]["label"]), logits.argmax(-1))
        if p.use_unlabelled:
            write_json(tmp / student.UNLABELLED_TEXTS, {"texts": texts})
        write_json(tmp / "meta.json", {"kind": "logits", "labels": list(labels),
                                       "rows": {s: metrics[f"{s}.rows"] for s in rows}})
    write_json(outputs["metrics"], metrics)
    return metrics


def _run_api(params: stage.Params, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    """teacher.mode api: the endpoint's scores for the same rows, in the same files."""
    p = params.soft_label
    cache = api.cache_folder(inputs)
    labels = dataset.read_labels(inputs["tokenize"] / "labels.json")
    api.check_endpoint(inputs["teacher"], params.teacher, labels)
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    texts = {split: list(data[split]["text"]) for split in SPLITS}
    metrics: dict = {}
    if p.use_unlabelled:
        labelled = {text.casefold() for split in SPLITS for text in data[split]["text"]}
        texts["unlabelled"], skipped = dataset.load_unlabelled_csv(p.unlabelled_csv,
                                                                   exclude=labelled)
        metrics["unlabelled.skipped_labelled_texts"] = skipped
    flat = [text for rows in texts.values() for text in rows]
    logits, stats = api.teacher_logits(flat, labels, params.teacher, cache)
    with atomic_path(outputs["out"], directory=True) as tmp:
        start = 0
        for split, rows in texts.items():
            part = logits[start : start + len(rows)]  # [rows, num_labels] float32
            start += len(rows)
            np.save(tmp / f"{split}_logits.npy", part)
            metrics[f"{split}.rows"] = len(rows)
            if split in SPLITS:
                metrics[f"{split}.teacher_gold_agreement"] = evaluation.accuracy(
                    np.asarray(data[split]["label"]), part.argmax(-1))
        if p.use_unlabelled:
            write_json(tmp / student.UNLABELLED_TEXTS, {"texts": texts["unlabelled"]})
        write_json(tmp / "meta.json", {"kind": "logits", "labels": list(labels),
                                       "rows": {s: len(rows) for s, rows in texts.items()}})
    metrics.update(stats.metrics())
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
