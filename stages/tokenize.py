"""tokenize: turn every split into token ids with the teacher's fast WordPiece tokenizer.

Two outputs, saved with ``datasets``: ``written`` holds the rows as written (train, validation,
test) with the tokenizer and labels.json; ``augmented`` holds only the augmented train variants.
The teacher depends on ``written`` alone, so changing augmentation does not retrain it. No
padding is stored; batches are padded later. Texts are cut at tokenize.max_length tokens or, with
tokenize.length_percentile, at the length that follows the written train rows
(tokenization.data_max_length); the length is recorded in ``written`` (contract.LENGTH_FILE),
where every later stage reads it. Records length percentiles and truncation. With
teacher.mode api there is no teacher tokenizer: the student backbone's (train_student.backbone)
is used, the one the student re-tokenizes with anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pocketbert.core import contract, model_folders, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.data import dataset, tokenization

PARAMS = ("tokenize", "teacher.model", "teacher.mode", "train_student.backbone")
INPUTS = ("split", "augment")
OUTPUTS = ("written", "augmented", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    from datasets import DatasetDict

    p = params.tokenize
    folder = model_folders.tokenizer_folder(params.teacher, params.train_student.backbone)
    tokenizer = tokenization.load_tokenizer(folder)
    labels = dataset.read_labels(inputs["split"] / contract.LABELS_FILE)
    train = dataset.read_examples(inputs["augment"] / "train.csv")
    rows = {
        "train": [r for r in train if r.augmentation == "none"],
        "validation": dataset.read_examples(inputs["split"] / "validation.csv"),
        "test": dataset.read_examples(inputs["split"] / "test.csv"),
        "augmented": [r for r in train if r.augmentation != "none"],
    }
    max_length = tokenization.max_length_for(tokenizer, [r.text for r in rows["train"]],
                                             p.max_length, p.length_percentile)
    parts, metrics = {}, {"vocab_size": len(tokenizer), "max_length": max_length}
    for name, examples in rows.items():
        parts[name] = tokenization.to_dataset(tokenizer, examples, labels, max_length)
        metrics[f"{name}.rows"] = len(parts[name])
        if examples:
            stats = tokenization.length_stats(parts[name]["full_length"], max_length)
            metrics.update({f"{name}.{k}": v for k, v in stats.items()})
    augmented = parts.pop("augmented")
    with atomic_path(outputs["written"], directory=True) as tmp:
        DatasetDict(parts).save_to_disk(str(tmp / "dataset"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        dataset.write_labels(tmp / contract.LABELS_FILE, labels)
        tokenization.write_max_length(tmp, max_length)
    with atomic_path(outputs["augmented"], directory=True) as tmp:
        augmented.save_to_disk(str(tmp / "dataset"), num_shards=1)  # also when empty
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
