"""Batch-1 latency candidates for the exported student: ways to build and run its int8 ONNX
model, each timed on the test sentences and checked against the fp32 export.

Every candidate is a model file built from the fp32 export (``fp32``, ``dynamic``,
``fused``, ...; see ``build``) run with some onnxruntime session settings. All candidates run in
one process, one text per call, as the app and the benchmark run them, in interleaved rounds
(round r times every candidate on every test sentence before round r + 1, in a seeded random
order), so a slow spell of a shared machine lands on all of them alike and no candidate always
runs right after the same other one; p50 and p95 are taken over all rounds' calls.

A candidate wins when its p50 is at least ``latency.min_gain`` below the int8 model as
quantized before any of these (``dynamic``), its top-1 agreement with fp32 is at least
``export.min_int8_agreement`` and its test macro-F1 lies inside fp32's bootstrap interval.
Probes (``probe=True``) are measured but never win: a graph the weights were not trained for
(fewer attention heads), or more threads than the benchmark's.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.benchmarks import benchmarking
from pocketbert.core import evaluation
from pocketbert.export import onnx_export


@dataclass(frozen=True)
class Candidate:
    """One way to run the student: a built model file and the session settings."""

    name: str
    "metrics key and README row"
    description: str
    "what changes against ``dynamic`` with default session settings, one line"
    build: str
    "the model file it runs: a key of the mapping ``build`` returns"
    session: dict[str, Any] = field(default_factory=dict)
    "onnx_runner.session settings beside threads (optimization_level, disabled_optimizers, ...)"
    threads: int | None = None
    "intra-op threads; None: benchmark.threads"
    probe: bool = False
    "measured, never a winner: the weights were not trained for this graph, or it uses more cores"


NO_DISABLED = {"disabled_optimizers": ()}
"onnxruntime's own session defaults: every graph optimizer on"

CANDIDATES = (
    Candidate("fp32", "fp32, no quantization", "fp32", NO_DISABLED),
    Candidate("dynamic", "dynamic int8, session defaults (the int8 export before these)",
              "dynamic", NO_DISABLED),
    Candidate("dynamic_level_extended", "graph optimization level extended",
              "dynamic", {**NO_DISABLED, "optimization_level": "extended"}),
    Candidate("dynamic_level_basic", "graph optimization level basic",
              "dynamic", {**NO_DISABLED, "optimization_level": "basic"}),
    Candidate("dynamic_no_arena", "no CPU memory arena",
              "dynamic", {**NO_DISABLED, "memory_arena": False}),
    Candidate("dynamic_no_skip_layernorm", "session without SkipLayerNormFusion",
              "dynamic", {"disabled_optimizers": ("SkipLayerNormFusion",)}),
    Candidate("dynamic_two_threads", "two intra-op threads (probe: a second core)",
              "dynamic", NO_DISABLED, threads=2, probe=True),
    Candidate("dynamic_per_tensor", "one weight scale per tensor",
              "dynamic_per_tensor", NO_DISABLED),
    Candidate("positions_trimmed", "position table cut to max_length",
              "positions_trimmed", NO_DISABLED),
    Candidate("static_qdq", "static int8 (QDQ), calibrated", "static_qdq", NO_DISABLED),
    Candidate("fused", "transformer fusions, then int8", "fused", NO_DISABLED),
    Candidate("fused_no_skip_layernorm",
              "transformer fusions without SkipLayerNormalization, session without it",
              "fused_unskipped", {"disabled_optimizers": ("SkipLayerNormFusion",)}),
    Candidate("fused_fewer_heads", "as fused_no_skip_layernorm, half the heads (probe)",
              "fused_fewer_heads", {"disabled_optimizers": ("SkipLayerNormFusion",)},
              probe=True),
    Candidate("shipped", "the export stage's int8 model, onnx_runner's session settings",
              "shipped"),
)
"every candidate the latency stage measures (README's table sorts them by p50)"


def _calibration(sequences: Sequence[Sequence[int]]) -> Any:
    """An onnxruntime CalibrationDataReader over token id lists, one text per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(sequences)

        def get_next(self) -> dict[str, np.ndarray] | None:
            ids = next(self._items, None)
            if ids is None:
                return None
            array = np.asarray([ids], dtype=np.int64)
            return {"input_ids": array, "attention_mask": np.ones_like(array)}

    return Reader()


def trim_positions(source: Path, target: Path, rows: int) -> bool:
    """Write ``target``: ``source`` with every initializer named ``*position_embeddings*``
    cut to its first ``rows`` rows (positions past the longest input never run). Returns
    False, writing nothing, when the graph has no such table or it is not longer than ``rows``
    (a model whose positions start past 0, as RoBERTa's do, needs its offset added to
    ``rows`` by the caller)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(source))
    trimmed = set()
    for init in proto.graph.initializer:
        if "position_embeddings" in init.name:
            table = numpy_helper.to_array(init)
            if table.ndim == 2 and table.shape[0] > rows:
                init.CopyFrom(numpy_helper.from_array(table[:rows].copy(), init.name))
                trimmed.add(init.name)
    if trimmed:
        # the recorded shape of the old table would contradict the new one
        kept = [v for v in proto.graph.value_info if v.name not in trimmed]
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(kept)
        onnx.save(proto, str(target))
    return bool(trimmed)


def halve_heads(source: Path, target: Path) -> bool:
    """Write ``target``: ``source`` with the ``num_heads`` attribute of every (Q)Attention node
    halved: the same multiply-adds in half as many, twice as wide heads, a different function
    of the same weights (a latency probe). Returns False, writing nothing, when there is no
    such node or a head count is odd."""
    import onnx

    proto = onnx.load(str(source))
    attributes = [a for node in proto.graph.node if node.op_type in ("Attention", "QAttention")
                  for a in node.attribute if a.name == "num_heads"]
    if not attributes or any(a.i % 2 for a in attributes):
        return False
    for attribute in attributes:
        attribute.i //= 2
    onnx.save(proto, str(target))
    return True


def build(fp32: Path, workdir: Path, *, shipped: Path | None, config: dict, per_channel: bool,
          reduce_range: bool, calibration: Sequence[Sequence[int]],
          max_length: int) -> dict[str, Path | None]:
    """Build every model file the candidates run, under ``workdir``, by key: ``fp32`` (the
    export as it is), ``dynamic`` (onnxruntime quantize_dynamic with export's settings),
    ``dynamic_per_tensor`` (one scale per weight tensor), ``positions_trimmed`` (position
    table cut to ``max_length`` rows, then dynamic), ``static_qdq`` (static int8, QDQ format,
    activation ranges calibrated on ``calibration``), ``fused`` / ``fused_unskipped``
    (onnx_export.fuse_transformer with / without SkipLayerNormalization, then dynamic),
    ``fused_fewer_heads`` (``fused_unskipped`` with half the heads, a probe) and ``shipped``.
    A build that does not apply to this model (no position table to trim; transformer
    fusions that fail on its graph, and with them the fewer-heads probe; no fused attention
    to halve) maps to None.

    ``shipped``: the export stage's int8 model (None without one); ``config``: the model's
    config.json (num_attention_heads, hidden_size, model_type);
    ``per_channel``/``reduce_range``: export's int8 settings; ``calibration``: token id lists
    (static int8 activation ranges); ``max_length``: the tokens a text is cut to. Raises
    onnxruntime's and onnx's own errors."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    out: dict[str, Path | None] = {"fp32": fp32, "shipped": shipped}

    def dynamic(source: Path, name: str, channel: bool = per_channel) -> Path:
        onnx_export.quantize_int8(source, workdir / f"{name}.onnx", channel, reduce_range)
        return workdir / f"{name}.onnx"

    out["dynamic"] = dynamic(fp32, "dynamic")
    out["dynamic_per_tensor"] = dynamic(fp32, "dynamic_per_tensor", False)
    # RoBERTa-style embeddings number positions from padding_idx + 1
    offset = config.get("pad_token_id", 0) + 1 if config.get("model_type") in (
        "roberta", "xlm-roberta", "camembert") else 0
    trimmed = workdir / "positions_trimmed.fp32.onnx"
    out["positions_trimmed"] = (dynamic(trimmed, "positions_trimmed")
                                if trim_positions(fp32, trimmed, max_length + offset) else None)
    prepared = workdir / "static_prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # one warning per LayerNorm weight that has no channel axis
    try:
        quantize_static(str(prepared), str(workdir / "static_qdq.onnx"),
                        _calibration(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        root.setLevel(level)
    out["static_qdq"] = workdir / "static_qdq.onnx"
    shape = {"num_heads": config["num_attention_heads"], "hidden_size": config["hidden_size"]}
    for name, skip in (("fused", True), ("fused_unskipped", False)):
        fused = workdir / f"{name}.fp32.onnx"
        try:
            onnx_export.fuse_transformer(fp32, fused, skip_layer_norm=skip, **shape)
        except Exception:  # onnxruntime's optimizer raises many types on unknown graphs
            out[name] = None
            continue
        out[name] = dynamic(fused, name)
    fewer = workdir / "fused_fewer_heads.onnx"
    unskipped = out["fused_unskipped"]
    out["fused_fewer_heads"] = (fewer if unskipped is not None and halve_heads(unskipped, fewer)
                                else None)
    return out


def measure(candidates: Sequence[Candidate], models: dict[str, Path | None],
            sequences: Sequence[Sequence[int]], gold: np.ndarray, *, labels: tuple[str, ...],
            pad_id: int, threads: int, warmup: int, rounds: int,
            progress: Any = None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Time every candidate whose model was built on ``sequences`` (one token id list per test
    sentence) in ``rounds`` interleaved rounds after ``warmup`` untimed calls each, and score
    its first round's logits against ``gold`` [n] and against the ``fp32`` candidate.

    Returns name -> {latency_p50_ms, latency_p95_ms, size_mb, macro_f1, agreement_with_fp32,
    max_abs_logit_diff, probe, build}, and name -> logits [n, labels]; a candidate whose
    model is None is left out of both.
    ``progress``: a tqdm-like object updated once per candidate and round."""
    from pocketbert.core.artifacts import size_mb

    runs = {c.name: (c, benchmarking.onnx_variant(
        c.name, models[c.build], pad_id=pad_id, threads=c.threads or threads, parameters=0,
        **c.session)) for c in candidates if models.get(c.build) is not None}
    times: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    logits: dict[str, np.ndarray] = {}
    order = np.random.default_rng(0)
    for round_ in range(rounds):
        for name in order.permutation(list(runs)):  # no candidate always follows the same one
            variant = runs[name][1]
            ms, outs = benchmarking.time_calls(variant.predict_one, sequences,
                                               warmup if round_ == 0 else 0)
            times[name].append(ms)
            logits.setdefault(name, np.stack(outs))  # [n, labels]
            if progress is not None:
                progress.update(1)
    reference = logits["fp32"]
    results = {}
    for name, (candidate, _) in runs.items():
        ms = np.concatenate(times[name])
        check = onnx_export.parity(reference, logits[name])
        results[name] = {
            **benchmarking.latency_summary(ms),
            "size_mb": size_mb(models[candidate.build]),
            "macro_f1": evaluation.macro_f1(gold, logits[name].argmax(-1), len(labels)),
            "agreement_with_fp32": check.top1_agreement,
            "max_abs_logit_diff": check.max_abs_diff,
            "probe": candidate.probe,
            "build": candidate.build,
        }
    return results, logits


def judge(results: dict[str, dict], *, baseline: str, min_gain: float, min_agreement: float,
          macro_f1_interval: tuple[float, float]) -> dict[str, dict]:
    """Add ``speedup`` (p50 of ``baseline`` / p50) and ``wins`` to each result: p50 at least
    ``min_gain`` below the baseline's, agreement with fp32 >= ``min_agreement``, macro-F1
    inside ``macro_f1_interval`` (fp32's bootstrap interval), not a probe, not fp32 itself."""
    base = results[baseline]["latency_p50_ms"]
    low, high = macro_f1_interval
    for name, r in results.items():
        r["speedup"] = base / r["latency_p50_ms"]
        r["wins"] = bool(
            name not in (baseline, "fp32") and not r["probe"]
            and r["latency_p50_ms"] <= (1.0 - min_gain) * base
            and r["agreement_with_fp32"] >= min_agreement
            and low <= r["macro_f1"] <= high)
    return results


def run_all(fp32: Path, *, shipped: Path | None, config: dict, sequences: Sequence[Sequence[int]],
            gold: np.ndarray, labels: tuple[str, ...], pad_id: int,
            calibration: Sequence[Sequence[int]], params: Any, max_length: int,
            ) -> tuple[dict[str, dict], tuple[float, float]]:
    """Build, measure and judge every candidate of CANDIDATES (``params``: stage params with
    latency, export and benchmark sections; ``max_length``: the tokens a text is cut to).
    Returns name -> result (see measure, judge) and fp32's macro-F1 bootstrap interval
    (benchmarking.bootstrap_interval)."""
    from tqdm.auto import tqdm

    p = params.latency
    with tempfile.TemporaryDirectory() as tmp:
        models = build(fp32, Path(tmp), shipped=shipped, config=config,
                       per_channel=params.export.per_channel,
                       reduce_range=params.export.reduce_range, calibration=calibration,
                       max_length=max_length)
        with tqdm(total=p.rounds * sum(models.get(c.build) is not None for c in CANDIDATES),
                  desc="latency candidates", unit="run") as bar:
            results, logits = measure(CANDIDATES, models, sequences, gold, labels=labels,
                                      pad_id=pad_id, threads=params.benchmark.threads,
                                      warmup=p.warmup, rounds=p.rounds, progress=bar)
    interval = benchmarking.bootstrap_interval(
        lambda y, q, axis=-1: benchmarking.macro_f1_along(y, q, len(labels), axis),
        (gold, logits["fp32"].argmax(-1)),
        resamples=params.benchmark.bootstrap_resamples, seed=params.benchmark.bootstrap_seed,
        level=params.benchmark.confidence_level)
    return judge(results, baseline="dynamic", min_gain=p.min_gain,
                 min_agreement=params.export.min_int8_agreement,
                 macro_f1_interval=interval), interval
