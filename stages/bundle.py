"""bundle: assemble models/app, everything an iOS app needs and nothing else.

The student Core ML model (convert.app_variant), its vocab.txt (trimmed when trimming is on),
labels.json, the tokenizer files (tokenizer.json + tokenizer_config.json, readable by
swift-transformers), a one-page WordPiece settings file, and tokenizer parity vectors: texts with
the exact input_ids and attention_mask the pipeline's tokenizer gives, for checking a device
tokenizer against training.

    python -m stages.bundle --student models/student --coreml models/convert/student \
        --tokenize data/tokenize/written --out models/app
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from pocketbert import coreml, dataset, stage, tokenization
from pocketbert.artifacts import atomic_path, write_json

PARAMS = ("convert.app_variant", "tokenize.max_length")
INPUTS = ("student", "coreml", "tokenize")
OUTPUTS = ("out",)
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
        write_json(tmp / "wordpiece.json", coreml.tokenizer_config(tokenizer, max_length))
        write_json(tmp / "tokenizer_parity.json", {"max_length": max_length, "cases": vectors})
    coreml.check_spec(coreml.read_back(Path(outputs["out"]) / MODEL_NAME), labels, max_length,
                      Path(outputs["out"]) / MODEL_NAME)
    return {"parity_cases": len(vectors), "files": sorted(p.name for p in
                                                          Path(outputs["out"]).iterdir())}


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
