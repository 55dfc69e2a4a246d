"""convert: write a model as Core ML ML programs (fp16, fp32, int8, palettized) from PyTorch.

Run per model (dvc foreach: teacher, student). Each variant is saved, read back and checked:
int32 inputs of shape [1, 1..max_length], classLabel + classLabel_probs outputs, the labels
and the metadata (labels, max_length, lowercasing, special token ids). On macOS every variant
also predicts the test split; elsewhere those numbers are recorded as "not measured here".

    python -m stages.convert --model models/student --tokenize data/tokenize/written \
        --out models/convert/student --metrics metrics/convert_student.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import pocketbert
from pocketbert import coreml, dataset, evaluation, modeling, stage, tokenization
from pocketbert.artifacts import atomic_path, size_mb, write_json

# Not convert.app_variant: choosing the app's variant must not re-convert every model.
PARAMS = ("convert.variants", "convert.minimum_deployment_target", "convert.license",
          "tokenize.max_length")
INPUTS = ("model", "tokenize")
OUTPUTS = ("out", "metrics")


def run(variants: tuple[str, ...], target: str, license_text: str, max_length: int,
        inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    model_dir = Path(inputs["model"])
    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    model = modeling.load_classifier(model_dir, labels, key=f"model folder {model_dir}")
    tokenizer = tokenization.load_tokenizer(model_dir)
    tok_config = coreml.tokenizer_config(tokenizer, max_length)
    description = (f"pocketbert {model_dir.name}: classifies a sentence as one of "
                   f"{', '.join(labels)}")
    measure = coreml.can_predict()
    test_ids = gold = reference = None
    if measure:
        from pocketbert import inference

        test = tokenization.load(inputs["tokenize"])["test"]
        test_ids = tokenization.encode(tokenizer, list(test["text"]), max_length)["input_ids"]
        gold = np.asarray(test["label"])
        reference, _ = inference.predict_logits(model, test_ids, 32, tokenizer.pad_token_id)
    metrics: dict = {"measured_by": "Core ML" if measure else coreml.NOT_MEASURED}
    with atomic_path(outputs["out"], directory=True) as tmp:
        base = {}
        for precision in ("fp32", "fp16"):
            if precision in variants or (precision == "fp16" and set(variants)
                                           - {"fp32", "fp16"}):
                base[precision] = coreml.convert(model, labels, max_length, precision,
                                                 target)
        for variant in variants:
            mlmodel = base.get(variant) or coreml.compress(base["fp16"], variant)
            coreml.set_metadata(mlmodel, labels, max_length, tok_config, description,
                                license_text, pocketbert.__version__, variant)
            path = tmp / f"{variant}.mlpackage"
            mlmodel.save(str(path))
            coreml.check_spec(coreml.read_back(path), labels, max_length, path)
            metrics[f"{variant}.size_mb"] = size_mb(path)
            metrics[f"{variant}.spec_checked"] = True
            if measure:
                probs = coreml.predict_probabilities(mlmodel, test_ids, labels)
                metrics.update(evaluation.report(np.log(probs + 1e-12), gold, labels,
                                                 f"{variant}.test"))
                metrics[f"{variant}.top1_agreement_with_pytorch"] = evaluation.accuracy(
                    reference.argmax(-1), probs.argmax(-1))
            else:
                for key in ("test.accuracy", "test.macro_f1", "top1_agreement_with_pytorch"):
                    metrics[f"{variant}.{key}"] = coreml.NOT_MEASURED
        write_json(tmp / "tokenizer_config.device.json", tok_config)
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
