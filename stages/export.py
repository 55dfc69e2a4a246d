"""export: write a model as ONNX (fp32 and int8) and verify it against PyTorch on the test split.

Run per model (dvc foreach: teacher, student). fp32 parity: max |logit difference| over the
real test sentences must stay within export.atol with identical top-1, or the stage fails and
names the worst examples. The int8 model (onnxruntime dynamic quantization) is measured:
size, top-1 agreement with fp32, macro-F1 on test.

    python -m stages.export --model models/student --tokenize data/tokenize/written \
        --out models/export/student --metrics metrics/export_student.json
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert import dataset, evaluation, modeling, onnx_export, params, stage, tokenization
from pocketbert.artifacts import atomic_path, size_mb, write_json

PARAMS = ("export", "tokenize.max_length")
INPUTS = ("model", "tokenize")
OUTPUTS = ("out", "metrics")


def run(p: params.ExportParams, max_length: int, inputs: dict[str, str],
        outputs: dict[str, str]) -> dict:
    from pocketbert import inference

    model_dir = Path(inputs["model"])
    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    test = tokenization.load(inputs["tokenize"])["test"]
    model = modeling.load_classifier(model_dir, labels, key=f"model folder {model_dir}")
    tokenizer = tokenization.load_tokenizer(model_dir)
    texts = list(test["text"])
    gold = np.asarray(test["label"])
    # the model's own tokenizer: a trimmed student vocabulary gives other ids than the teacher's
    ids = tokenization.encode(tokenizer, texts, max_length)["input_ids"]
    reference, _ = inference.predict_logits(model, ids, 32, tokenizer.pad_token_id,
                                            desc="pytorch test")
    metrics: dict = {"pytorch.size_mb": size_mb(model_dir / "model.safetensors")}
    metrics.update(evaluation.report(reference, gold, labels, "pytorch.test"))
    with atomic_path(outputs["out"], directory=True) as tmp:
        fp32 = tmp / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            onnx_export.export(model, fp32, p.opset)
        logits = onnx_export.run_batches(onnx_export.session(fp32), ids, tokenizer.pad_token_id)
        check = onnx_export.parity(reference, logits)
        metrics.update({
            "fp32.size_mb": size_mb(fp32),
            "fp32.max_abs_logit_diff": check.max_abs_diff,
            "fp32.top1_agreement_with_pytorch": check.top1_agreement,
        })
        onnx_export.check_parity(check, p.atol, texts, f"{fp32.name} vs PyTorch on the test split")
        metrics.update(evaluation.report(logits, gold, labels, "fp32.test"))
        if p.int8:
            int8 = tmp / "model.int8.onnx"
            onnx_export.quantize_int8(fp32, int8, p.per_channel)
            q_logits = onnx_export.run_batches(onnx_export.session(int8), ids,
                                               tokenizer.pad_token_id)
            q_check = onnx_export.parity(logits, q_logits)
            metrics.update({
                "int8.size_mb": size_mb(int8),
                "int8.max_abs_logit_diff": q_check.max_abs_diff,
                "int8.top1_agreement_with_fp32": q_check.top1_agreement,
                "int8.meets_agreement_target": q_check.top1_agreement >= p.min_int8_agreement,
            })
            metrics.update(evaluation.report(q_logits, gold, labels, "int8.test"))
            if q_check.top1_agreement < p.min_int8_agreement:
                warnings.warn(
                    f"int8 top-1 agreement with fp32 is {q_check.top1_agreement:.4f}, below "
                    f"export.min_int8_agreement {p.min_int8_agreement}; ship the fp32 model"
                    + ("" if p.per_channel else " or set export.per_channel: true"), stacklevel=1)
        tokenizer.save_pretrained(str(tmp))
        dataset.write_labels(tmp / "labels.json", labels)
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
