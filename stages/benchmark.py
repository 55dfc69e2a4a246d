"""benchmark: measure every variant side by side on the same test sentences.

Teacher and student in PyTorch fp32 and ONNX fp32, the student in ONNX int8, and every Core ML
variant. Same inputs (the test split, each model's own tokenizer, no padding at batch 1), same
thread count, warm-up excluded. Per variant: size, parameters, accuracy, macro-F1, per-class
F1, agreement with the teacher, expected calibration error, batch-1 latency p50/p95 and
throughput. Core ML variants: on macOS by Core ML itself; elsewhere accuracy by the reference
executor (pocketbert.mil_executor) and latency "not measured here". Writes the headline ratios
against the teacher and the data of the plots declared in dvc.yaml.

    python -m stages.benchmark --teacher models/teacher --student models/student \
        --export-teacher models/export/teacher --export-student models/export/student \
        --convert-teacher models/convert/teacher --convert-student models/convert/student \
        --tokenize data/tokenize/written --metrics metrics/benchmark.json \
        --plots metrics/benchmark_plots
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pocketbert import (
    benchmarking,
    coreml,
    dataset,
    evaluation,
    modeling,
    onnx_export,
    params,
    stage,
    tokenization,
)
from pocketbert.artifacts import atomic_path, size_mb, write_json
from pocketbert.inference import pad_batch

PARAMS = ("benchmark", "tokenize.max_length", "convert.variants", "export.int8")
INPUTS = (
    "teacher",
    "student",
    "export_teacher",
    "export_student",
    "convert_teacher",
    "convert_student",
    "tokenize",
)
OUTPUTS = ("metrics", "plots")
MODELS = ("teacher", "student")


def _scores(probs: np.ndarray, gold: np.ndarray, labels: tuple[str, ...],
            teacher_pred: np.ndarray | None, bins: int) -> dict:
    out = evaluation.report(np.log(np.clip(probs, 1e-12, None)), gold, labels, "x")
    out = {k[2:]: v for k, v in out.items()}  # drop the placeholder prefix
    if teacher_pred is not None:
        out["agreement_with_teacher"] = evaluation.accuracy(teacher_pred, probs.argmax(-1))
    out["ece"] = evaluation.expected_calibration_error(probs, gold, bins)
    return out


def _timed(fn: Callable, seqs: list[list[int]], warmup: int) -> tuple[dict, np.ndarray]:
    """Batch-1 latency summary and the outputs stacked [n, labels]."""
    ms, outs = benchmarking.time_calls(fn, seqs, warmup)
    return benchmarking.latency_summary(ms), np.stack(outs)


def run(p: params.BenchmarkParams, max_length: int, variants: tuple[str, ...], int8: bool,
        inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    torch.set_num_threads(p.threads)
    test = tokenization.load(inputs["tokenize"])["test"]
    labels = dataset.read_labels(Path(inputs["tokenize"]) / "labels.json")
    gold = np.asarray(test["label"])
    texts = list(test["text"])
    metrics: dict = {"test_rows": len(texts), "threads": p.threads}
    rows: list[dict] = []  # plot data: one row per variant
    confusion: dict[str, list[dict]] = {}
    teacher_pred: np.ndarray | None = None

    def record(key: str, probs: np.ndarray, size: float, n_params: int,
               latency: dict | None, examples_per_s: float | None) -> None:
        nonlocal teacher_pred
        scores = _scores(probs, gold, labels, teacher_pred, p.ece_bins)
        entry = {"size_mb": size, "parameters": n_params, **scores}
        entry.update(latency or {"latency_p50_ms": coreml.NOT_MEASURED,
                                 "latency_p95_ms": coreml.NOT_MEASURED})
        entry["throughput"] = (examples_per_s if examples_per_s is not None
                               else coreml.NOT_MEASURED)
        metrics.update({f"{key}.{k}": v for k, v in entry.items()})
        rows.append({"variant": key, "size_mb": round(size, 3),
                     "macro_f1": round(scores["macro_f1"], 4),
                     "p50_ms": latency["latency_p50_ms"] if latency else None})

    for name in MODELS:
        folder = Path(inputs[name])
        model = modeling.load_classifier(folder, labels, key=f"model folder {folder}").eval()
        tok = tokenization.load_tokenizer(folder)
        seqs = tokenization.encode(tok, texts, max_length)["input_ids"]
        n_params = modeling.count_parameters(model)
        pad = tok.pad_token_id

        def torch_one(ids: list[int], model=model, pad=pad) -> np.ndarray:
            with torch.inference_mode():
                return model(**pad_batch([ids], pad)).logits[0].numpy()

        def torch_batch(batch: list[list[int]], model=model, pad=pad) -> None:
            with torch.inference_mode():
                model(**pad_batch(batch, pad))

        latency, logits = _timed(torch_one, seqs, p.warmup)
        tput = benchmarking.throughput(torch_batch, seqs, p.batch_size)
        probs = evaluation.softmax(logits)
        record(f"{name}.pytorch_fp32", probs, size_mb(folder / "model.safetensors"), n_params,
               latency, tput)
        if name == "teacher":
            teacher_pred = probs.argmax(-1)
            metrics["teacher.pytorch_fp32.agreement_with_teacher"] = 1.0
        confusion[name] = [{"actual": labels[a], "predicted": labels[b]}
                           for a, b in zip(gold, probs.argmax(-1), strict=True)]
        reference = probs

        onnx_files = {"onnx_fp32": "model.onnx"}
        if name == "student" and int8:
            onnx_files["onnx_int8"] = "model.int8.onnx"
        for variant, filename in onnx_files.items():
            path = Path(inputs[f"export_{name}"]) / filename
            sess = onnx_export.session(path, threads=p.threads)

            def ort_one(ids: list[int], sess=sess, pad=pad) -> np.ndarray:
                feed = {k: v.numpy() for k, v in pad_batch([ids], pad).items()}
                return sess.run(["logits"], feed)[0][0]

            def ort_batch(batch: list[list[int]], sess=sess, pad=pad) -> None:
                sess.run(["logits"], {k: v.numpy() for k, v in pad_batch(batch, pad).items()})

            latency, logits = _timed(ort_one, seqs, p.warmup)
            tput = benchmarking.throughput(ort_batch, seqs, p.batch_size)
            record(f"{name}.{variant}", evaluation.softmax(logits), size_mb(path), n_params,
                   latency, tput)

        for variant in variants:
            path = Path(inputs[f"convert_{name}"]) / f"{variant}.mlpackage"
            key = f"{name}.coreml_{variant}"
            if name not in p.coreml_models:
                metrics[f"{key}.size_mb"] = size_mb(path)
                metrics[f"{key}.measured_by"] = coreml.NOT_MEASURED
                continue
            probs_c, measured_by, latency = _coreml_probs(path, seqs, labels, p.warmup)
            record(key, probs_c, size_mb(path), n_params, latency, None)
            agree = evaluation.accuracy(reference.argmax(-1), probs_c.argmax(-1))
            metrics[f"{key}.measured_by"] = measured_by
            metrics[f"{key}.top1_agreement_with_pytorch"] = agree
            metrics[f"{key}.max_abs_prob_diff"] = float(np.abs(probs_c - reference).max())
            metrics[f"{key}.flagged"] = agree < p.min_coreml_agreement

    # the shipped student: int8 when export writes it, else fp32
    t, s = "teacher.pytorch_fp32", "student.onnx_int8" if int8 else "student.onnx_fp32"
    headline = {
        "student_variant": s,
        "target_size_ratio": p.target_size_ratio,
        "target_macro_f1_ratio": p.target_macro_f1_ratio,
        "target_speedup": p.target_speedup,
        "size_ratio": metrics[f"{s}.size_mb"] / metrics[f"{t}.size_mb"],
        "macro_f1_ratio": metrics[f"{s}.macro_f1"] / metrics[f"{t}.macro_f1"],
        "p50_speedup": metrics[f"{t}.latency_p50_ms"] / metrics[f"{s}.latency_p50_ms"],
    }
    headline["size_target_met"] = headline["size_ratio"] <= p.target_size_ratio
    headline["macro_f1_target_met"] = headline["macro_f1_ratio"] >= p.target_macro_f1_ratio
    headline["speedup_target_met"] = headline["p50_speedup"] >= p.target_speedup
    metrics.update({f"headline.{k}": v for k, v in headline.items()})

    with atomic_path(outputs["plots"], directory=True) as tmp:
        for name, pairs in confusion.items():
            write_json(tmp / f"confusion_{name}.json", pairs)
        write_json(tmp / "tradeoff.json", rows)
        write_json(tmp / "latency.json", [r for r in rows if r["p50_ms"] is not None])
    write_json(outputs["metrics"], metrics)
    return metrics


def _coreml_probs(path: Path, seqs: list[list[int]], labels: tuple[str, ...], warmup: int,
                  ) -> tuple[np.ndarray, str, dict | None]:
    """Probabilities from Core ML (macOS, timed) or from the reference executor (untimed)."""
    if coreml.can_predict():
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(path))
        ms, outs = benchmarking.time_calls(
            lambda ids: coreml.predict_probabilities(mlmodel, [ids], labels)[0], seqs, warmup)
        return np.stack(outs), "Core ML", benchmarking.latency_summary(ms)
    from pocketbert.mil_executor import Executor

    with coreml.quiet():
        executor = Executor(path)
    probs = np.stack([
        executor.probabilities(np.asarray([ids], dtype=np.int32),
                               np.ones((1, len(ids)), dtype=np.int32))
        for ids in tqdm(seqs, desc=f"reference executor {path.name}", unit="ex", mininterval=5)
    ])
    return probs.astype(np.float64), "reference executor", None


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(argv, __doc__, PARAMS, INPUTS, OUTPUTS, run)


if __name__ == "__main__":
    main()
