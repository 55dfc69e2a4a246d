"""bundle: assemble models/app, everything an iOS app needs and nothing else.

The student Core ML model (convert.app_variant), its vocab.txt (trimmed when trimming is on),
labels.json, the tokenizer files (tokenizer.json + tokenizer_config.json, readable by
swift-transformers), a one-page WordPiece settings file, and tokenizer parity vectors: texts with
the exact input_ids and attention_mask the pipeline's tokenizer gives, for checking a device
tokenizer against training.

    python -m stages.bundle --student models/student --coreml models/convert/student \
        --tokenize data/tokenize/written --out models/app --metrics metrics/bundle.json
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from pocketbert import coreml, dataset, stage, tokenization
from pocketbert.artifacts import atomic_path, read_json, size_mb, write_json

PARAMS = ("convert.app_variant", "tokenize.max_length")
INPUTS = ("student", "coreml", "tokenize")
OUTPUTS = ("out", "metrics")
MODEL_NAME = "PocketBert.mlpackage"


def run(app_variant: str, max_length: int, inputs: dict[str, str],
        outputs: dict[str, str]) -> dict:
    student = Path(inputs["student"])
    labels = dataset.read_labels(student / "labels.json")
    tokenizer = tokenization.load_tokenizer(student)
    test = tokenization.load(inputs["tokenize"])["test"]
    texts = list(tokenization.EDGE_CASES) + list(test["text"])
    vectors = tokenization.parity_vectors(tokenizer, texts, max_length)
    with atomic_path(outputs["out"], directory=True) as tmp:
        shutil.copytree(Path(inputs["coreml"]) / f"{app_variant}.mlpackage", tmp / MODEL_NAME)
        shutil.copyfile(student / "vocab.txt", tmp / "vocab.txt")
        dataset.write_labels(tmp / "labels.json", labels)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.move(tmp / "tokenizer" / name, tmp / name)
        shutil.rmtree(tmp / "tokenizer")
        wordpiece = coreml.tokenizer_config(tokenizer, max_length)
        write_json(tmp / "wordpiece.json", wordpiece)
        # transformers 5 names its generic backend here; device libraries (swift-transformers)
        # pick the algorithm by this class name, and WordPiece is BertTokenizer
        config = read_json(tmp / "tokenizer_config.json")
        config.update({"tokenizer_class": "BertTokenizer",
                       "do_lower_case": wordpiece["do_lower_case"],
                       "strip_accents": wordpiece["strip_accents"],
                       "model_max_length": max_length})
        write_json(tmp / "tokenizer_config.json", config)
        write_json(tmp / "tokenizer_parity.json", {"max_length": max_length, "cases": vectors})
        coreml.check_spec(coreml.read_back(tmp / MODEL_NAME), labels, max_length,
                          Path(outputs["out"]) / MODEL_NAME)
        files = {p.name: size_mb(p) for p in sorted(tmp.iterdir())}
    metrics = {"parity_cases": len(vectors), "app_variant": app_variant,
               "size_mb": sum(files.values()),
               **{f"files.{name}.size_mb": size for name, size in files.items()}}
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
