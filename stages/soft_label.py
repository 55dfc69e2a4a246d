"""soft_label: run the teacher once and store its LOGITS for every training example.

Logits, not probabilities: train_student divides them by the temperature itself; storing
softmax outputs and softening them again would flatten the targets towards uniform. Covers the
(augmented) train split and validation (distillation targets) and test (only to measure how
often the student agrees with the teacher).

    python -m stages.soft_label --teacher models/teacher --tokenize data/tokenize/written \
        --augmented data/tokenize/augmented --out data/soft_label \
        --metrics metrics/soft_label.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert import dataset, evaluation, modeling, params, stage, tokenization
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("soft_label",)
INPUTS = ("teacher", "tokenize", "augmented")
OUTPUTS = ("out", "metrics")
SPLITS = ("train", "validation", "test")


def run(p: params.SoftLabelParams, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    from pocketbert import inference

    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    data = tokenization.load(inputs["tokenize"], inputs["augmented"])
    teacher = modeling.load_classifier(Path(inputs["teacher"]), labels, key="teacher folder")
    pad_id = tokenization.load_tokenizer(inputs["teacher"]).pad_token_id
    device = inference.pick_device()
    metrics: dict = {"device": device.type}
    with atomic_path(outputs["out"], directory=True) as tmp:
        for split in SPLITS:
            logits, throughput = inference.predict_logits(
                teacher, data[split]["input_ids"], p.batch_size, pad_id, device,
                desc=f"soft_label {split}")
            np.save(tmp / f"{split}_logits.npy", logits)  # [rows, num_labels] float32
            gold = np.asarray(data[split]["label"])
            metrics[f"{split}.rows"] = len(gold)
            metrics[f"{split}.teacher_gold_agreement"] = evaluation.accuracy(
                gold, logits.argmax(-1))
            metrics[f"{split}.examples_per_s"] = throughput
        write_json(tmp / "meta.json", {"kind": "logits", "labels": list(labels),
                                       "rows": {s: metrics[f"{s}.rows"] for s in SPLITS}})
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
