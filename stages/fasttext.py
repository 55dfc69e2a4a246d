"""fasttext: train fastText supervised, plain and quantized, on the written train rows.

What a user could ship instead of a distilled student, measured by the benchmark beside it:
a bag of word and word 2-gram vectors averaged into a linear classifier (fastText), on the same
written train rows as the teacher and the TF-IDF baseline (no augmented variants), and the same
quantized by fastText's product quantizer (``model.ftz``). Writes both models with labels.json.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset, tokenization
from pocketbert.training import fasttext_model

PARAMS = ("fasttext",)
INPUTS = ("tokenize",)
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p = params.fasttext
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    data = tokenization.load(inputs["tokenize"])
    train, validation = data["train"], data["validation"]
    metrics: dict = {"train_rows": len(train)}
    with atomic_path(outputs["out"], directory=True) as tmp:
        for name, file, quantize in (("plain", fasttext_model.MODEL_FILE, False),
                                     ("quantized", fasttext_model.QUANTIZED_FILE, True)):
            start = time.perf_counter()
            try:
                model = fasttext_model.train(train["text"], train["label"], p,
                                             quantize=quantize)
            except RuntimeError as exc:  # fastText's "Encountered NaN": a diverged run
                raise ModelError(f"fastText training failed ({exc}); lower "
                                 "fasttext.learning_rate") from None
            seconds = time.perf_counter() - start
            model.save_model(str(tmp / file))
            pred = fasttext_model.probabilities(model, validation["text"], len(labels))
            metrics.update({
                f"{name}.train_seconds": seconds, f"{name}.size_mb": size_mb(tmp / file),
                f"{name}.parameters": fasttext_model.count_parameters(model, p),
                f"{name}.validation.macro_f1": evaluation.macro_f1(
                    np.asarray(validation["label"]), pred.argmax(1), len(labels))})
            print(f"fasttext {name}: {seconds:.1f} s, {metrics[f'{name}.size_mb']:.2f} MB, "
                  f"validation macro-F1 {metrics[f'{name}.validation.macro_f1']:.3f}",
                  file=sys.stderr, flush=True)
        dataset.write_labels(tmp / contract.LABELS_FILE, labels)
        write_json(tmp / fasttext_model.PARAMETERS_FILE,
                   {fasttext_model.MODEL_FILE: metrics["plain.parameters"],
                    fasttext_model.QUANTIZED_FILE: metrics["quantized.parameters"]})
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
