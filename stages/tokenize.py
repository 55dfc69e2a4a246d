"""tokenize: turn every split into token ids with the teacher's fast WordPiece tokenizer.

Saved with ``datasets`` (train = augmented train split); no padding is stored, batches are
padded later. Records length percentiles and how many examples max_length truncates.

    python -m stages.tokenize --split data/split --augment data/augment --out data/tokenize \
        --metrics metrics/tokenize.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pocketbert import checkpoints, dataset, params, stage, tokenization
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("tokenize", "teacher.model")


def run(p: params.TokenizeParams, model: str, inputs: dict[str, str],
        outputs: dict[str, str]) -> dict:
    from datasets import DatasetDict

    folder = checkpoints.resolve(model)
    tokenizer = tokenization.load_tokenizer(folder)
    labels = dataset.read_labels(Path(inputs["split"]) / "labels.json")
    sources = {
        "train": Path(inputs["augment"]) / "train.csv",
        "validation": Path(inputs["split"]) / "validation.csv",
        "test": Path(inputs["split"]) / "test.csv",
    }
    parts, metrics = {}, {"vocab_size": len(tokenizer)}
    for name, path in sources.items():
        parts[name] = tokenization.to_dataset(tokenizer, dataset.read_examples(path), labels,
                                              p.max_length)
        stats = tokenization.length_stats(parts[name]["full_length"], p.max_length)
        metrics.update({f"{name}.{k}": v for k, v in stats.items()})
        metrics[f"{name}.rows"] = len(parts[name])
    with atomic_path(outputs["out"], directory=True) as tmp:
        DatasetDict(parts).save_to_disk(str(tmp / "dataset"))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        dataset.write_labels(tmp / "labels.json", labels)
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    def body() -> dict:
        params_path, inputs, outputs = stage.parse_args(argv, __doc__, ("split", "augment"),
                                                        ("out", "metrics"))
        p = params.load(params_path, "tokenize")
        model = params.load_key(params_path, "teacher.model")
        stage.log_params("tokenize", p)
        return run(p, model, inputs, outputs)

    return stage.guarded(body)


if __name__ == "__main__":
    main()
