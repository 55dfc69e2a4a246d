"""export: write a model as ONNX (fp32 and int8) and verify it against PyTorch on the test split.

Run per model (dvc foreach: teacher, student). fp32 parity: max |logit difference| over the
real test sentences must stay within export.atol with identical top-1, or the stage fails and
names the worst examples. The int8 model (onnxruntime dynamic quantization, of the graph after
onnxruntime's transformer fusions with export.fuse) is measured one text per call, as the app
runs it: size, top-1 agreement with fp32, macro-F1 on test, and the
CPU features its int8 kernels were chosen by (cpu.* metrics). A teacher whose architecture
the exporter cannot take is recorded, not fatal: one warning line, an output folder holding
only unsupported.json (step, model_type, reason), ``supported: false`` in the metrics, exit 0;
the benchmark then leaves the teacher's ONNX rows out. The student must export.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.params import ExportParams
from pocketbert.data import dataset, tokenization
from pocketbert.export import onnx_export
from pocketbert.runtime import onnx_runner, torch_runner
from pocketbert.training import modeling

PARAMS = ("export",)
INPUTS = ("model", "tokenize")
OUTPUTS = ("out", "metrics")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    model_dir = inputs["model"]
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    test = tokenization.load(inputs["tokenize"])["test"]
    model = modeling.load_classifier(model_dir, labels, origin=f"stage input {model_dir}")
    tokenizer = tokenization.load_tokenizer(model_dir)
    max_length = tokenization.read_max_length(inputs["tokenize"])
    texts, gold, pad_id = list(test["text"]), np.asarray(test["label"]), tokenizer.pad_token_id
    # the model's own tokenizer: a trimmed student vocabulary gives other ids than the teacher's
    ids = tokenization.encode(tokenizer, texts, max_length)["input_ids"]
    reference = torch_runner.predict_logits(model, ids, pad_id, desc="pytorch test")
    metrics: dict = {"pytorch.size_mb": size_mb(model_dir / contract.WEIGHTS_FILE)}
    metrics.update(evaluation.report(reference, gold, labels, "pytorch.test"))
    try:
        metrics.update(_export(params, model, outputs["out"], ids=ids, pad_id=pad_id,
                               reference=reference, texts=texts, gold=gold, labels=labels,
                               tokenizer=tokenizer, max_length=max_length))
    except modeling.UnsupportedArchitectureError as exc:  # the teacher's is recorded, not fatal
        metrics.update(modeling.skip_teacher_step(exc, model_dir, outputs["out"], "export"))
    write_json(outputs["metrics"], metrics)
    return metrics


def _export(params: stage.Params, model, out: Path, *, ids: list[list[int]], pad_id: int,
            reference: np.ndarray, texts: list[str], gold: np.ndarray,
            labels: tuple[str, ...], tokenizer, max_length: int) -> dict:
    """Write ``out`` (model.onnx, int8 when asked, tokenizer, labels, the max_length its
    inputs are cut to) and return its metrics;
    ``reference``: PyTorch's logits [test rows, labels]. Raises ParityError, and
    modeling.UnsupportedArchitectureError when the architecture does not export."""
    metrics: dict = {"supported": True}
    with atomic_path(out, directory=True) as tmp:
        fp32 = tmp / contract.ONNX_FP32_FILE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            onnx_export.export(model, fp32, params.export.opset)
        logits = onnx_runner.predict_logits(onnx_runner.session(fp32), ids, pad_id)
        check = onnx_export.parity(reference, logits)
        metrics.update({
            "fp32.size_mb": size_mb(fp32),
            "fp32.max_abs_logit_diff": check.max_abs_diff,
            "fp32.top1_agreement_with_pytorch": check.top1_agreement,
        })
        onnx_export.check_parity(check, params.export.atol, texts,
                                 f"{fp32.name} vs PyTorch on the test split")
        metrics.update(evaluation.report(logits, gold, labels, "fp32.test"))
        if params.export.int8:
            metrics.update(_int8(params.export, fp32, tmp / contract.ONNX_INT8_FILE, ids=ids,
                                 pad_id=pad_id, fp32_logits=logits, gold=gold, labels=labels,
                                 config=model.config))
        tokenizer.save_pretrained(str(tmp))
        dataset.write_labels(tmp / contract.LABELS_FILE, labels)
        tokenization.write_max_length(tmp, max_length)
    return metrics


def _int8(p: ExportParams, fp32: Path, int8: Path, *, ids: list[list[int]], pad_id: int,
          fp32_logits: np.ndarray, gold: np.ndarray, labels: tuple[str, ...], config) -> dict:
    """Quantize (after the transformer fusions with export.fuse: onnx_export.int8_model), then
    measure the int8 model against fp32 and the gold labels; warn below
    export.min_int8_agreement. The fused fp32 graph must give the unfused one's logits on the
    test split (``fp32_logits``) within export.atol with the same top-1, or the int8 model is
    quantized unfused."""

    def check_fused(path: Path) -> None:
        check = onnx_export.parity(
            fp32_logits, onnx_runner.predict_logits(onnx_runner.session(path), ids, pad_id))
        if check.max_abs_diff > p.atol or check.top1_agreement < 1.0:
            raise onnx_export.ParityError(
                f"max |logit difference| {check.max_abs_diff:.2e} against the unfused graph")

    fused = onnx_export.int8_model(fp32, int8, config=config, fuse=p.fuse,
                                   per_channel=p.per_channel, reduce_range=p.reduce_range,
                                   check_fused=check_fused)
    # one text per call, as predict and the app run it: dynamic int8 results depend on the batch
    per_call = onnx_runner.texts_per_call(int8)
    q_logits = onnx_runner.predict_logits(onnx_runner.session(int8), ids, pad_id,
                                        batch_size=per_call)
    q_check = onnx_export.parity(fp32_logits, q_logits)
    metrics = {
        **fused,
        **onnx_runner.cpu_features(),  # int8 kernels, and so int8 numbers, differ by CPU
        "int8.texts_per_call": per_call,
        "int8.size_mb": size_mb(int8),
        "int8.max_abs_logit_diff": q_check.max_abs_diff,
        "int8.top1_agreement_with_fp32": q_check.top1_agreement,
        "int8.meets_agreement_target": q_check.top1_agreement >= p.min_int8_agreement,
        **evaluation.report(q_logits, gold, labels, "int8.test"),
    }
    if q_check.top1_agreement < p.min_int8_agreement:
        warnings.warn(
            f"int8 top-1 agreement with fp32 is {q_check.top1_agreement:.4f}, below "
            f"export.min_int8_agreement {p.min_int8_agreement}; ship the fp32 model"
            + ("" if p.per_channel else " or set export.per_channel: true")
            + ("" if p.reduce_range else " or set export.reduce_range: true"), stacklevel=1)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
