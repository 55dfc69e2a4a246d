"""benchmark: measure every variant side by side on the same test sentences.

Teacher and student in PyTorch fp32, ONNX fp32 and (export.int8) ONNX int8, every Core ML
variant, and what a user who does not distil would train instead: TF-IDF + logistic regression
(the baseline stage), fastText plain and quantized (the fasttext stage), Model2Vec static
embeddings with a linear head on the written labels and on the teacher's soft labels (the
model2vec stage). Same inputs (the test split, each model's own tokenizer,
no padding at batch 1; the alternatives read the raw text), same thread count, warm-up excluded.
Per variant: size, parameters, accuracy, macro-F1, per-class F1, agreement with the teacher,
expected calibration error, batch-1 latency p50/p95 and throughput, and bootstrap confidence
intervals of macro-F1 and agreement (every variant on the same resampled test sets). Core ML
variants: on macOS by Core ML itself; elsewhere accuracy by the reference executor
(pocketbert.export.mil_executor) and latency not measured (null). Writes the headline ratios against
the teacher (the macro-F1 ratio with a paired interval) and the data of the plots declared in
dvc.yaml. With teacher.mode api there are no teacher weights: the teacher row is the API's own
answers on the test split, read from the soft labels (``--soft-label``), with no size,
parameters or latency, and the student is measured against it (agreement, macro-F1 ratio).
Where export@teacher or convert@teacher recorded the teacher's architecture as unsupported
(unsupported.json), the teacher's ONNX or Core ML rows are left out and
``teacher.export_supported`` / ``teacher.convert_supported`` say so (false).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from pocketbert.benchmarks import benchmarking, frontier
from pocketbert.benchmarks.benchmarking import VariantResult
from pocketbert.core import contract, evaluation, model_folders, stage
from pocketbert.core.artifacts import atomic_path, size_mb, write_json
from pocketbert.core.errors import DataError, ParamsError
from pocketbert.data import dataset, tokenization
from pocketbert.data.soft_labels import SoftLabels
from pocketbert.runtime import onnx_runner
from pocketbert.training import baseline, fasttext_model, model2vec_model, modeling

PARAMS = ("benchmark", "convert.variants", "export.int8")
INPUTS = (
    "teacher",
    "student",
    "export_teacher",
    "export_student",
    "convert_teacher",
    "convert_student",
    "tokenize",
    "baseline",
    "fasttext",
    "model2vec",
)
OUTPUTS = ("metrics", "plots")
OPTIONS = ("soft_label",)
MODELS = ("teacher", "student")
API_TEACHER = "teacher.api"
SIZE_ONLY_NOTE = "size only: not in benchmark.coreml_models"
BASELINE = "baseline.tfidf_logreg"
FASTTEXT = {"baseline.fasttext": fasttext_model.MODEL_FILE,
            "baseline.fasttext_quantized": fasttext_model.QUANTIZED_FILE}
MODEL2VEC = {"baseline.model2vec": model2vec_model.PLAIN,
             "baseline.model2vec_distilled": model2vec_model.DISTILLED}
"the fasttext and model2vec stages' models, the other alternatives a user could ship"


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    b = params.benchmark
    torch.set_num_threads(b.threads)
    test = tokenization.load(inputs["tokenize"])["test"]
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    gold, texts = np.asarray(test["label"]), list(test["text"])
    results: dict[str, VariantResult] = {}
    teacher_pred: np.ndarray | None = None
    teacher_key, models = "teacher.pytorch_fp32", MODELS
    if model_folders.is_endpoint(inputs["teacher"]):  # no weights: its stored answers are its row
        teacher_key, models = API_TEACHER, ("student",)
        results[API_TEACHER] = _api_teacher(inputs, gold, labels, b)
        teacher_pred = results[API_TEACHER].probs.argmax(-1)
    for name in models:  # the teacher first: its PyTorch predictions are the reference
        teacher_pred = _model_rows(results, name, params, inputs, texts, gold, labels,
                                   teacher_pred)
    n = len(labels)
    alternatives = [
        benchmarking.baseline_variant(BASELINE, inputs["baseline"] / baseline.MODEL_FILE,
                                      n_labels=n),
        *(benchmarking.fasttext_variant(name, inputs["fasttext"] / file, n_labels=n)
          for name, file in FASTTEXT.items()),
        *(benchmarking.model2vec_variant(name, inputs["model2vec"] / folder)
          for name, folder in MODEL2VEC.items())]
    # scikit-learn's and numpy's BLAS/OpenMP pools held to the same thread count as the other
    # runtimes (fastText predicts on one thread)
    with threadpool_limits(limits=b.threads):
        for variant in alternatives:
            results[variant.name] = benchmarking.measure(
                variant, texts, gold, labels=labels, warmup=b.warmup, batch_size=b.batch_size,
                ece_bins=b.ece_bins, teacher_pred=teacher_pred)
    assert teacher_pred is not None
    for result in results.values():
        if result.probs is not None:
            benchmarking.add_intervals(result, gold, teacher_pred, n_labels=len(labels),
                                       params=b)
    metrics = _metrics(results, gold, params, inputs, teacher_key)
    _write_plots(outputs["plots"], results, gold, labels, teacher_key, metrics)
    write_json(outputs["metrics"], metrics)
    return metrics


def _model_rows(results: dict[str, VariantResult], name: str, params: stage.Params,
                inputs: stage.Paths, texts: list[str], gold: np.ndarray,
                labels: tuple[str, ...], teacher_pred: np.ndarray | None) -> np.ndarray | None:
    """Add model ``name``'s rows to ``results`` (PyTorch fp32, ONNX fp32 and int8, Core ML
    variants); returns the teacher's predictions (set by the teacher's PyTorch row)."""
    b = params.benchmark
    folder = inputs[name]
    model = modeling.load_classifier(folder, labels, origin=f"stage input {folder}").eval()
    tok = tokenization.load_tokenizer(folder)
    seqs = tokenization.encode(tok, texts, tokenization.read_max_length(inputs["tokenize"]))[
        "input_ids"]
    n_params, pad_id = modeling.count_parameters(model), tok.pad_token_id
    variants = [benchmarking.torch_variant(
        f"{name}.pytorch_fp32", model, pad_id=pad_id,
        size_mb=size_mb(folder / contract.WEIGHTS_FILE), parameters=n_params)]
    onnx_files = {"onnx_fp32": contract.ONNX_FP32_FILE}
    if params.export.int8:
        onnx_files["onnx_int8"] = contract.ONNX_INT8_FILE
    steps = _teacher_steps(inputs) if name == "teacher" else {}
    if not steps.get("export", True):
        onnx_files = {}  # export@teacher recorded its architecture as unsupported
    variants += [benchmarking.onnx_variant(
        f"{name}.{variant}", inputs[f"export_{name}"] / filename, pad_id=pad_id,
        threads=b.threads, parameters=n_params) for variant, filename in onnx_files.items()]
    for variant in variants:  # PyTorch first: the teacher's predictions are the reference
        results[variant.name] = benchmarking.measure(
            variant, seqs, gold, labels=labels, warmup=b.warmup, batch_size=b.batch_size,
            ece_bins=b.ece_bins, teacher_pred=teacher_pred)
        if variant.name == "teacher.pytorch_fp32":
            teacher_pred = results[variant.name].probs.argmax(-1)
            results[variant.name].scores["agreement_with_teacher"] = 1.0
    reference = results[f"{name}.pytorch_fp32"]
    for variant in params.convert.variants if steps.get("convert", True) else ():
        key, path = f"{name}.coreml_{variant}", (inputs[f"convert_{name}"]
                                                 / contract.coreml_file(variant))
        if name not in b.coreml_models:
            results[key] = VariantResult(key, size_mb(path), extra={"note": SIZE_ONLY_NOTE})
            continue
        results[key] = benchmarking.measure(
            benchmarking.coreml_variant(key, path, labels=labels, parameters=n_params),
            seqs, gold, labels=labels, warmup=b.warmup, batch_size=b.batch_size,
            ece_bins=b.ece_bins, teacher_pred=teacher_pred)
        benchmarking.compare_to_reference(results[key], reference.probs,
                                          b.min_coreml_agreement)
    return teacher_pred


def _metrics(results: dict[str, VariantResult], gold: np.ndarray, params: stage.Params,
             inputs: stage.Paths, teacher_key: str) -> dict:
    """The benchmark's metrics: run settings, every variant's scores and the headline of the
    shipped student (int8 when export writes it, else fp32) against the teacher."""
    b = params.benchmark
    student = "student.onnx_int8" if params.export.int8 else "student.onnx_fp32"
    metrics: dict = {"test_rows": len(gold), "threads": b.threads,
                     "confidence_level": b.confidence_level,
                     "bootstrap_resamples": b.bootstrap_resamples,
                     **onnx_runner.cpu_features()}  # the int8 kernels onnxruntime picked
    if teacher_key != API_TEACHER:  # false: that step's variants are absent
        metrics.update({f"teacher.{step}_supported": supported
                        for step, supported in _teacher_steps(inputs).items()})
    for key, result in results.items():
        metrics.update(evaluation.flatten(key, result.metrics()))
    metrics.update(evaluation.flatten("headline", benchmarking.headline(
        results, gold, student=student, teacher=teacher_key, params=b,
        baseline=BASELINE if BASELINE in results else None)))
    return metrics


def _write_plots(folder, results: dict[str, VariantResult], gold: np.ndarray,
                 labels: tuple[str, ...], teacher: str, metrics: dict) -> None:
    """The plot data dvc.yaml declares: confusion pairs per model (PyTorch fp32; ``teacher``
    names the teacher's row), size vs macro-F1 per variant with a size, batch-1 p50 latency
    where it was measured, and agreement with the teacher against size and against p50 with
    the frontier marked (benchmarks.frontier, from ``metrics``)."""
    rows = [{"variant": r.name, "size_mb": None if r.size_mb is None else round(r.size_mb, 3),
             "macro_f1": round(r.scores["macro_f1"], 4), "p50_ms": r.latency_p50_ms}
            for r in results.values() if r.probs is not None]
    with atomic_path(folder, directory=True) as tmp:
        for name, key in (("teacher", teacher), ("student", "student.pytorch_fp32")):
            pred = results[key].probs.argmax(-1)
            write_json(tmp / f"confusion_{name}.json",
                       [{"actual": labels[a], "predicted": labels[b]}
                        for a, b in zip(gold, pred, strict=True)])
        write_json(tmp / "tradeoff.json", [r for r in rows if r["size_mb"] is not None])
        write_json(tmp / "latency.json", [r for r in rows if r["p50_ms"] is not None])
        points = frontier.points(metrics)
        for cost in frontier.COSTS:
            write_json(tmp / f"frontier_{cost}.json", frontier.plot_rows(points, cost))


def _teacher_steps(inputs: stage.Paths) -> dict[str, bool]:
    """Whether export@teacher and convert@teacher took the teacher's architecture (False where
    the step recorded it as unsupported: modeling.skip_teacher_step)."""
    return {step: modeling.teacher_step_supported(inputs[f"{step}_teacher"])
            for step in ("export", "convert")}


def _api_teacher(inputs: stage.Paths, gold: np.ndarray, labels: tuple[str, ...],
                 b) -> VariantResult:
    """teacher.mode api: the API's answers on the test split [n, labels], as soft_label stored
    them, scored like a variant (no size, parameters or latency: None, not measured).

    Raises ParamsError without --soft-label, DataError when the stored test logits do not
    match the test split or the labels."""
    if "soft_label" not in inputs:
        raise ParamsError("teacher.mode api: the benchmark reads the API's test answers from "
                          "the soft labels; pass --soft-label FOLDER (dvc.yaml's cmd does)")
    try:
        logits = SoftLabels.read(inputs["soft_label"], labels,
                                 {"test": len(gold)}).logits["test"]  # [test rows, labels]
    except DataError as exc:
        raise DataError(f"no stored test answers of the API for these {len(gold)} test rows "
                        f"and labels {list(labels)}: {exc}") from None
    variant = benchmarking.Variant(API_TEACHER, None, None, lambda i: logits[i], timed=False,
                                   measured_by="API's answers (stored soft labels)")
    result = benchmarking.measure(variant, range(len(gold)), gold, labels=labels, warmup=0,
                                  batch_size=b.batch_size, ece_bins=b.ece_bins)
    result.scores["agreement_with_teacher"] = 1.0
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
