"""latency: batch-1 latency candidates for the student's int8 ONNX model.

Builds every candidate of pocketbert.benchmarks.latency.CANDIDATES from the student's fp32 export
(quantization styles, transformer fusions, a trimmed position table, session settings, a
fewer-heads probe), times them interleaved on the test sentences, one text per call with
benchmark.threads threads, and scores each against fp32: top-1 agreement and test macro-F1
(judged against fp32's bootstrap interval). The latency candidates table of docs/experiments.md
is generated from the metrics; the plot ranks the candidates by p50.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from pocketbert.benchmarks import latency
from pocketbert.core import contract, stage
from pocketbert.core.artifacts import atomic_path, read_json, write_json
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset, tokenization
from pocketbert.runtime import onnx_runner

PARAMS = ("latency", "export", "benchmark.threads",
          "benchmark.bootstrap_resamples", "benchmark.bootstrap_seed",
          "benchmark.confidence_level")
INPUTS = ("export", "model", "tokenize")
OUTPUTS = ("metrics", "plots")


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    export, config = inputs["export"], inputs["model"] / "config.json"
    fp32 = export / contract.ONNX_FP32_FILE
    if not fp32.is_file():
        raise ModelError(f"{fp32}: not found; run `dvc repro export@student` first")
    if not config.is_file():
        raise ModelError(f"{config}: not found; --model is the student's folder (its config "
                         "gives the attention heads): run `dvc repro train_student` first")
    if not (inputs["tokenize"] / "dataset").is_dir():
        raise ModelError(f"{inputs['tokenize'] / 'dataset'}: not found; --tokenize is the "
                         "tokenize stage's written folder: run `dvc repro tokenize` first")
    shipped = export / contract.ONNX_INT8_FILE
    labels = dataset.read_labels(export / contract.LABELS_FILE)
    tokenizer = tokenization.load_tokenizer(export)
    data = tokenization.load(inputs["tokenize"])
    max_length = tokenization.read_max_length(inputs["tokenize"])
    test_ids = tokenization.encode(tokenizer, list(data["test"]["text"]), max_length)
    train_texts = list(data["train"]["text"])[: params.latency.calibration_texts]
    calibration = tokenization.encode(tokenizer, train_texts, max_length)["input_ids"]
    results, (low, high) = latency.run_all(
        fp32, shipped=shipped if shipped.is_file() else None,
        config=read_json(config),
        sequences=test_ids["input_ids"], gold=np.asarray(data["test"]["label"]),
        labels=labels, pad_id=tokenizer.pad_token_id, calibration=calibration, params=params,
        max_length=max_length)
    lengths = [len(ids) for ids in test_ids["input_ids"]]
    metrics = {"cpu.model": onnx_runner.cpu_model(), **onnx_runner.cpu_features(),
               "threads": params.benchmark.threads, "rounds": params.latency.rounds,
               "test_sentences": len(lengths), "median_tokens": float(np.median(lengths)),
               "fp32_macro_f1_ci_low": low, "fp32_macro_f1_ci_high": high,
               "confidence_level": params.benchmark.confidence_level,
               "candidates": results}
    with atomic_path(outputs["plots"], directory=True) as tmp:
        write_json(tmp / "candidates.json", [
            {"candidate": name, "p50_ms": r["latency_p50_ms"]}
            for name, r in sorted(results.items(), key=lambda item: item[1]["latency_p50_ms"])])
    write_json(outputs["metrics"], metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
