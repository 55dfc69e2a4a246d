"""bundle: assemble models/app, everything an iOS app needs and nothing else.

The student Core ML model (convert.app_variant), its vocab.txt (trimmed when trimming is on),
labels.json, the tokenizer files (tokenizer.json + tokenizer_config.json, readable by
swift-transformers), a one-page WordPiece settings file (with the Core ML input lengths the app
pads to, read from the model's metadata), tokenizer parity vectors: texts with
the exact input_ids and attention_mask the pipeline's tokenizer gives, for checking a device
tokenizer against training, and the deferral settings of the calibrate stage (its
calibration.json, also in the model's metadata: when the app should ask the server).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

from pocketbert.core import contract, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.data import dataset, tokenization
from pocketbert.export import coreml

PARAMS = ("convert.app_variant",)
INPUTS = ("student", "coreml", "tokenize", "calibration")
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    app_variant = params.convert.app_variant
    max_length = tokenization.read_max_length(inputs["tokenize"])
    student = inputs["student"]
    labels = dataset.read_labels(student / contract.LABELS_FILE)
    tokenizer = tokenization.load_tokenizer(student)
    test = tokenization.load(inputs["tokenize"])["test"]
    texts = tokenization.edge_cases(max_length) + list(test["text"])
    vectors = tokenization.parity_vectors(tokenizer, texts, max_length)
    settings = contract.read_calibration(inputs["calibration"], labels)
    with atomic_path(outputs["out"], directory=True) as tmp:
        coreml.add_deferral(inputs["coreml"] / contract.coreml_file(app_variant),
                            tmp / contract.APP_MODEL_FILE, settings)
        write_json(tmp / contract.CALIBRATION_FILE, settings)
        shutil.copyfile(student / contract.VOCAB_FILE, tmp / contract.VOCAB_FILE)
        dataset.write_labels(tmp / contract.LABELS_FILE, labels)
        info = coreml.read_back(tmp / contract.APP_MODEL_FILE)
        buckets = coreml.metadata_buckets(info)
        coreml.check_spec(info, labels, max_length, outputs["out"] / contract.APP_MODEL_FILE,
                          buckets)
        wordpiece = tokenization.save_device_tokenizer(tokenizer, tmp, max_length)
        # the app pads input_ids with [PAD] to the next of these lengths (none: a range model)
        wordpiece["buckets"] = list(buckets)
        write_json(tmp / contract.WORDPIECE_FILE, wordpiece)
        write_json(tmp / "tokenizer_parity.json", {"max_length": max_length, "cases": vectors})
        files = {p.name: size_mb(p) for p in sorted(tmp.iterdir())}
    metrics = {"parity_cases": len(vectors), "app_variant": app_variant,
               "deferral.score": settings["score"], "deferral.threshold": settings["threshold"],
               "deferral.temperature": settings["temperature"],
               "size_mb": sum(files.values()),
               **{f"files.{name}.size_mb": size for name, size in files.items()}}
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
