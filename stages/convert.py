"""convert: write a model as Core ML ML programs (fp16, fp32, int8, palettized) from PyTorch.

Run per model (dvc.yaml foreach: teacher, student; paths and command there). Each variant is saved,
read back and checked: one int32 input ``input_ids`` of the enumerated lengths (convert.buckets) or
of 1..max_length (convert.shapes range), classLabel + classLabel_probs outputs, the labels and the
metadata (labels, max_length, buckets, lowercasing, special token ids). Every variant is then run by
the reference executor (pocketbert.export.mil_executor) on the tokenizer edge cases and the first
convert.bucket_check_texts texts of the test split, each text padded to every bucket that holds it,
against the unpadded PyTorch model (``<variant>.bucket_*`` metrics); a NaN or infinite probability
fails the stage. A model of more than convert.bucket_check_max_parameters parameters skips that
check (``bucket_checked: false``): the executor runs in numpy, minutes per variant at BERT-large
size. On macOS every variant also predicts the test split in Core ML; elsewhere those metrics are
absent and a note says why. A teacher whose architecture the converter cannot take is recorded, not
fatal: one warning line, an output folder holding only unsupported.json (step, model_type, reason),
``supported: false`` in the metrics, exit 0; the benchmark then leaves the teacher's Core ML rows
out. The student must convert."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

import pocketbert
from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset, tokenization
from pocketbert.export import coreml
from pocketbert.runtime import torch_runner
from pocketbert.training import modeling

# Not convert.app_variant: choosing the app's variant must not re-convert every model.
PARAMS = ("convert.variants", "convert.minimum_deployment_target", "convert.license",
          "convert.shapes", "convert.buckets", "convert.bucket_check_texts",
          "convert.bucket_check_max_parameters")
INPUTS = ("model", "tokenize")
OUTPUTS = ("out", "metrics")
NOT_MEASURED_NOTE = (f"test accuracy {contract.NOT_MEASURED_NOTE}: Core ML predicts only on "
                     "macOS (the benchmark measures it with the reference executor)")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    max_length = tokenization.read_max_length(inputs["tokenize"])
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    model = modeling.load_classifier(inputs["model"], labels,
                                     origin=f"stage input {inputs['model']}")
    tokenizer = tokenization.load_tokenizer(inputs["model"])
    buckets = (coreml.sequence_buckets(params.convert.buckets, max_length)
               if params.convert.shapes == "enumerated" else None)
    test = _TestSplit.load(inputs["tokenize"], tokenizer, model, max_length) \
        if coreml.can_predict() else None
    limit = params.convert.bucket_check_max_parameters
    checked = limit is None or sum(p.numel() for p in model.parameters()) <= limit
    parity = _BucketParity.load(inputs["tokenize"], tokenizer, model, max_length,
                                params.convert.bucket_check_texts) if checked else None
    metrics: dict = ({"measured_by": "Core ML"} if test else {"note": NOT_MEASURED_NOTE})
    metrics["buckets"] = len(buckets or ())
    metrics["bucket_checked"] = checked
    try:
        metrics.update(_convert(params, inputs, outputs["out"], model=model, labels=labels,
                                tokenizer=tokenizer, buckets=buckets, parity=parity, test=test))
    except modeling.UnsupportedArchitectureError as exc:  # the teacher's is recorded, not fatal
        metrics.update(modeling.skip_teacher_step(exc, inputs["model"], outputs["out"],
                                                  "convert"))
    write_json(outputs["metrics"], metrics)
    return metrics


def _convert(params: stage.Params, inputs: stage.Paths, out, *, model, labels, tokenizer,
             buckets, parity: _BucketParity | None, test: _TestSplit | None) -> dict:
    """Write every variant of convert.variants to ``out``, each read back and checked, and
    return their metrics. Raises ModelError on a failed check, and
    modeling.UnsupportedArchitectureError when the architecture does not convert."""
    max_length, pad_id = tokenization.read_max_length(inputs["tokenize"]), tokenizer.pad_token_id
    metrics: dict = {"supported": True}
    with atomic_path(out, directory=True) as tmp:
        for variant, mlmodel in coreml.convert_variants(
                model, labels=labels, max_length=max_length, variants=params.convert.variants,
                target=params.convert.minimum_deployment_target, buckets=buckets,
                pad_id=pad_id):
            coreml.set_metadata(
                mlmodel, labels=labels, max_length=max_length,
                wordpiece=tokenization.wordpiece_settings(tokenizer, max_length),
                description=(f"pocketbert {inputs['model'].name}: classifies a sentence as "
                             f"one of {', '.join(labels)}"),
                license_text=params.convert.license, version=pocketbert.__version__,
                variant=variant, buckets=buckets)
            path = tmp / contract.coreml_file(variant)
            mlmodel.save(str(path))
            coreml.check_spec(coreml.read_back(path), labels, max_length, path, buckets)
            metrics[f"{variant}.size_mb"] = size_mb(path)
            metrics[f"{variant}.spec_checked"] = True
            if parity:
                metrics.update(parity.scores(variant, path, buckets or (max_length,), pad_id))
            if test:
                metrics.update(test.scores(variant, mlmodel, labels))
    return metrics


class _BucketParity:
    """Tokenizer edge cases and test texts, with the unpadded PyTorch probabilities."""

    def __init__(self, ids: list[list[int]], reference: np.ndarray) -> None:
        self.ids, self.reference = ids, reference

    @classmethod
    def load(cls, folder, tokenizer, model, max_length: int, n_test: int) -> _BucketParity:
        test = tokenization.load(folder)["test"]
        texts = tokenization.edge_cases(max_length) + list(test["text"][:n_test])
        ids = tokenization.encode(tokenizer, texts, max_length)["input_ids"]
        # batch 1: no padding at all in the reference
        logits = torch_runner.predict_logits(model, ids, tokenizer.pad_token_id, batch_size=1,
                                             progress=False)
        return cls(ids, evaluation.softmax(logits))

    def scores(self, variant: str, path, lengths, pad_id: int) -> dict:
        from pocketbert.export.mil_executor import Executor

        with coreml.quiet():
            executor = Executor(path)
        result = coreml.bucket_parity(executor, self.ids, self.reference, lengths, pad_id)
        if result["bucket_nonfinite"]:
            raise ModelError(f"{path}: {result['bucket_nonfinite']} of {result['bucket_cases']} "
                             "padded inputs give a NaN or infinite probability in the reference "
                             "executor; this variant would fail on a device (try fp32)")
        return {f"{variant}.{key}": value for key, value in result.items()}


class _TestSplit:
    """The test split in the model's own tokenization, with PyTorch's logits (macOS only)."""

    def __init__(self, ids: list[list[int]], gold: np.ndarray, reference: np.ndarray) -> None:
        self.ids, self.gold, self.reference = ids, gold, reference

    @classmethod
    def load(cls, folder, tokenizer, model, max_length: int) -> _TestSplit:
        test = tokenization.load(folder)["test"]
        ids = tokenization.encode(tokenizer, list(test["text"]), max_length)["input_ids"]
        reference = torch_runner.predict_logits(model, ids, tokenizer.pad_token_id)
        return cls(ids, np.asarray(test["label"]), reference)

    def scores(self, variant: str, mlmodel, labels: tuple[str, ...]) -> dict:
        probs = coreml.predict_probabilities(mlmodel, self.ids, labels)
        out = evaluation.flatten(f"{variant}.test", evaluation.scores(probs, self.gold, labels))
        out[f"{variant}.top1_agreement_with_pytorch"] = evaluation.accuracy(
            self.reference.argmax(-1), probs.argmax(-1))
        return out


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
