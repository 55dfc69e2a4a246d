"""baseline: train the classical baseline the benchmark compares distillation against.

TF-IDF word and character n-grams with logistic regression (scikit-learn), fitted on the
written train rows (the texts and labels the teacher is trained on; no augmented variants),
one fit per (baseline.class_weights, baseline.c_values) pair, the best validation macro-F1
kept. Writes the pickled pipeline (pocketbert.training.baseline says why pickle) with
labels.json and the resolved params beside it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import yaml

from pocketbert.core import contract, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.errors import DataError
from pocketbert.data import dataset, tokenization
from pocketbert.training import baseline

PARAMS = ("baseline",)
INPUTS = ("tokenize",)
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.baseline
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    data = tokenization.load(inputs["tokenize"])
    train, validation = data["train"], data["validation"]
    if len(set(train["label"])) < 2:
        raise DataError(f"{inputs['tokenize']}: the train split holds fewer than two labels; "
                        "a classifier needs at least two (check split.csv)")
    model, info = baseline.fit((train["text"], train["label"]),
                               (validation["text"], validation["label"]), len(labels), p)
    with atomic_path(outputs["out"], directory=True) as tmp:
        baseline.save(model, tmp / baseline.MODEL_FILE)
        write_json(tmp / contract.LABELS_FILE, {"labels": list(labels)})
        (tmp / "params.yaml").write_text(yaml.safe_dump(params.resolved(), sort_keys=False),
                                         encoding="utf-8")
    metrics = {"train_rows": len(train), **info,
               "parameters": baseline.count_parameters(model),
               "size_mb": size_mb(outputs["out"] / baseline.MODEL_FILE)}
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
