"""split: load the labelled CSV and write a stratified, seeded train/validation/test split.

Runs before any augmentation, so no variant of a test sentence can leak into training.
Writes labels.json, the one label order every later stage and the device app use.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pocketbert import contract, dataset, stage
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("split",)
INPUTS = ()
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.split
    report = dataset.load_csv(p.csv, p.labels)
    parts = dataset.stratified_split(report.examples, p.labels, p.validation_fraction,
                                     p.test_fraction, p.seed, source=p.csv)
    with atomic_path(outputs["out"], directory=True) as tmp:
        for name, rows in parts.items():
            dataset.write_examples(tmp / f"{name}.csv", rows)
        dataset.write_labels(tmp / contract.LABELS_FILE, p.labels)
    metrics: dict = {
        "rows_read": len(report.examples) + report.dropped_label_id_minus_one
        + report.dropped_missing_label,
        "dropped_label_id_minus_one": report.dropped_label_id_minus_one,
        "dropped_missing_label": report.dropped_missing_label,
    }
    for name, rows in parts.items():
        metrics[f"{name}.rows"] = len(rows)
        for label, count in dataset.class_counts(rows, p.labels).items():
            metrics[f"{name}.{label}"] = count
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
