"""split: load the labelled CSV and write a stratified, seeded train/validation/test split.

Runs before any augmentation, so no variant of a test sentence can leak into training.
Writes labels.json, the one label order every later stage and the device app use: split.labels,
or, when that list is empty, the labels of the CSV sorted by name.

It also checks the unlabelled transfer texts that soft_label will add (soft_label.unlabelled_csv
when soft_label.use_unlabelled is on), so that a bad row stops the pipeline here rather than
after the teacher is trained, and the metrics name the file and how many of its texts are used.
The committed transfer file was written for the embedded data set: with any other split.csv it
is refused until soft_label names the user's own file or is told to use none.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pocketbert.core import contract, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.core.errors import ParamsError
from pocketbert.core.params import EMBEDDED_CSV, EMBEDDED_UNLABELLED_CSV
from pocketbert.data import dataset

PARAMS = ("split", "soft_label.use_unlabelled", "soft_label.unlabelled_csv")
INPUTS = ()
OUTPUTS = ("out", "metrics")


def transfer_csv(params: stage.Params) -> str | None:
    """The unlabelled transfer CSV soft_label will read (soft_label.unlabelled_csv), or None
    when soft_label.use_unlabelled is off.

    Raises ParamsError when split.csv is not the embedded data set but the transfer file is the
    one written for it: those texts must not reach a user's model unless named explicitly."""
    path = params.soft_label.unlabelled_csv
    if not params.soft_label.use_unlabelled:
        return None
    csv = params.split.csv
    embedded_texts = dataset.same_file(path, EMBEDDED_UNLABELLED_CSV)
    if embedded_texts and not dataset.same_file(csv, EMBEDDED_CSV):
        raise ParamsError(
            f"split.csv is {csv}, not the embedded data set, but soft_label would still add "
            f"the {EMBEDDED_UNLABELLED_CSV} transfer texts written for the embedded sentences; "
            "point soft_label.unlabelled_csv at unlabelled texts like your own (a CSV with a "
            "'text' column), or set soft_label.use_unlabelled: false",
            key="soft_label.unlabelled_csv", source="params.yaml")
    return path


def _transfer_metrics(path: str | None, examples: list[dataset.Example]) -> dict:
    """Which transfer file soft_label will read and how many of its texts it keeps (texts
    that are also labelled ``examples`` are left out). Raises DataError naming every bad row
    of the file (dataset.load_unlabelled_csv)."""
    if path is None:
        return {"transfer.csv": None, "transfer.texts": 0, "transfer.skipped_labelled_texts": 0}
    labelled = {dataset.text_key(ex.text) for ex in examples}
    texts, skipped = dataset.load_unlabelled_csv(path, exclude=labelled)
    return {"transfer.csv": path, "transfer.texts": len(texts),
            "transfer.skipped_labelled_texts": skipped}


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    """Write train/validation/test CSVs and labels.json to ``outputs["out"]`` and the metrics
    (returned) to ``outputs["metrics"]``. Raises ParamsError (transfer_csv) or DataError
    (dataset.load_csv, dataset.stratified_split, the transfer CSV) before writing anything."""
    p = params.split
    transfer = transfer_csv(params)
    report = dataset.load_csv(p.csv, p.labels, p.conflicts)
    labels = report.labels
    parts = dataset.stratified_split(report.examples, labels, p.validation_fraction,
                                     p.test_fraction, p.seed, source=p.csv,
                                     labels_from_csv=report.labels_from_csv)
    transfer_metrics = _transfer_metrics(transfer, report.examples)
    with atomic_path(outputs["out"], directory=True) as tmp:
        for name, rows in parts.items():
            dataset.write_examples(tmp / f"{name}.csv", rows)
        dataset.write_labels(tmp / contract.LABELS_FILE, labels)
    metrics: dict = {
        "rows_read": report.rows_read,
        "dropped_label_id_minus_one": report.dropped_label_id_minus_one,
        "dropped_missing_label": report.dropped_missing_label,
        "duplicates_dropped": report.duplicates_dropped,
        "conflicting_texts": report.conflicting_texts,
        "conflict_rows_dropped": report.conflict_rows_dropped,
        "conflict_ties_dropped": report.conflict_ties_dropped,
        "rows_used": len(report.examples),
        "labels_from": "csv" if report.labels_from_csv else "params",
    }
    for label, count in dataset.class_counts(report.examples, labels).items():
        metrics[f"used.{label}"] = count
    metrics.update(transfer_metrics)
    for name, rows in parts.items():
        metrics[f"{name}.rows"] = len(rows)
        for label, count in dataset.class_counts(rows, labels).items():
            metrics[f"{name}.{label}"] = count
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
