"""tokenize: turn every split into token ids with the teacher's fast WordPiece tokenizer.

Two outputs, saved with ``datasets``: ``written`` holds the rows as written (train, validation,
test) with the tokenizer and labels.json; ``augmented`` holds only the augmented train variants.
The teacher depends on ``written`` alone, so changing augmentation does not retrain it. No
padding is stored; batches are padded later. Records length percentiles and truncation.

    python -m stages.tokenize --split data/split --augment data/augment \
        --written data/tokenize/written --augmented data/tokenize/augmented \
        --metrics metrics/tokenize.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pocketbert import checkpoints, dataset, params, stage, tokenization
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("tokenize", "teacher.model")
INPUTS = ("split", "augment")
OUTPUTS = ("written", "augmented", "metrics")


def run(p: params.TokenizeParams, model: str, inputs: dict[str, str],
        outputs: dict[str, str]) -> dict:
    from datasets import DatasetDict

    folder = checkpoints.resolve(model)
    tokenizer = tokenization.load_tokenizer(folder)
    labels = dataset.read_labels(Path(inputs["split"]) / "labels.json")
    train = dataset.read_examples(Path(inputs["augment"]) / "train.csv")
    rows = {
        "train": [r for r in train if r.augmentation == "none"],
        "validation": dataset.read_examples(Path(inputs["split"]) / "validation.csv"),
        "test": dataset.read_examples(Path(inputs["split"]) / "test.csv"),
        "augmented": [r for r in train if r.augmentation != "none"],
    }
    parts, metrics = {}, {"vocab_size": len(tokenizer)}
    for name, examples in rows.items():
        parts[name] = tokenization.to_dataset(tokenizer, examples, labels, p.max_length)
        metrics[f"{name}.rows"] = len(parts[name])
        if examples:
            stats = tokenization.length_stats(parts[name]["full_length"], p.max_length)
            metrics.update({f"{name}.{k}": v for k, v in stats.items()})
    augmented = parts.pop("augmented")
    with atomic_path(outputs["written"], directory=True) as tmp:
        DatasetDict(parts).save_to_disk(str(tmp / "dataset"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        dataset.write_labels(tmp / "labels.json", labels)
    with atomic_path(outputs["augmented"], directory=True) as tmp:
        augmented.save_to_disk(str(tmp / "dataset"), num_shards=1)  # also when empty
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
