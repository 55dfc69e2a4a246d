"""Measuring variants side by side: one Variant object per model format, one measure().

A Variant is a name, a size, a parameter count, a batch-1 predict function and (optionally) a
batch predict function. ``measure`` times it on the same sequences as every other variant and
scores its outputs; the result is a VariantResult, flattened into DVC metrics only when the
benchmark writes them. ``add_intervals`` and ``headline`` add bootstrap confidence intervals
computed on one shared set of resampled test sentences. Torch, onnxruntime, coremltools,
scikit-learn and scipy are imported inside the functions that use them, so this module imports
with numpy alone.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketbert.core import batching, contract, evaluation


@dataclass(frozen=True)
class Variant:
    """One model in one format, ready to predict token-id sequences."""

    name: str
    "metrics prefix, e.g. 'student.onnx_int8'"
    size_mb: float
    parameters: int
    predict_one: Callable[[Any], np.ndarray]
    "one input (token ids; the text for a text-in model) -> [labels] logits or probabilities"
    predict_batch: Callable[[list[Any]], Any] | None = None
    "a list of inputs -> anything (timed for throughput); None: throughput not measured"
    returns_logits: bool = True
    timed: bool = True
    "False: the batch-1 calls are not timed (a reference executor, not the device runtime)"
    measured_by: str | None = None
    "who computed the outputs when it is not the runtime named by the variant"


@dataclass
class VariantResult:
    """What measure() found for one variant; ``None`` means not measured here."""

    name: str
    size_mb: float | None
    parameters: int | None = None
    probs: np.ndarray | None = None
    "[n, labels] float64"
    scores: dict = field(default_factory=dict)
    "accuracy, macro_f1, f1 per label, agreement_with_teacher, ece, *_ci_low / *_ci_high"
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput: float | None = None
    "examples per second over length-sorted batches"
    extra: dict = field(default_factory=dict)
    "measured_by, agreement with PyTorch for Core ML variants, a note"

    def metrics(self) -> dict:
        """Nested metrics of this variant (evaluation.flatten gives the DVC keys)."""
        if self.probs is None:
            return {"size_mb": self.size_mb, **self.extra}
        return {"size_mb": self.size_mb, "parameters": self.parameters, **self.scores,
                "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
                "throughput": self.throughput, **self.extra}


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int,
               ) -> tuple[np.ndarray, list[Any]]:
    """Call ``fn`` once per input, after ``warmup`` untimed calls (caches, lazy init, JIT).

    Returns the per-call times in milliseconds and the outputs, both in input order.
    """
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times, outputs = [], []
    for x in inputs:
        start = time.perf_counter()
        outputs.append(fn(x))
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1000.0, outputs


def latency_summary(ms: np.ndarray) -> dict[str, float]:
    """p50 and p95 of per-call times in milliseconds."""
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
    }


def throughput(run_batch: Callable[[list[Any]], Any], sequences: Sequence[Any],
               batch_size: int, warmup: int = 1) -> float:
    """Examples per second over length-sorted batches (each padded to its own longest row;
    texts sort by characters)."""
    order = sorted(sequences, key=len)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for i in range(min(warmup, len(batches))):
        run_batch(batches[i])
    start = time.perf_counter()
    for batch in batches:
        run_batch(batch)
    return len(sequences) / max(time.perf_counter() - start, 1e-9)


def measure(variant: Variant, sequences: Sequence[Any], gold: np.ndarray, *,
            labels: tuple[str, ...], warmup: int, batch_size: int, ece_bins: int,
            teacher_pred: np.ndarray | None = None) -> VariantResult:
    """Batch-1 latency (when ``variant.timed``), throughput (when it predicts batches),
    scores against ``gold`` [n] and, given ``teacher_pred`` [n], agreement with the teacher.

    ``sequences``: one input per test sentence, what ``variant.predict_one`` takes."""
    if variant.timed:
        ms, outs = time_calls(variant.predict_one, sequences, warmup)
        latency: dict = latency_summary(ms)
    else:
        outs, latency = [variant.predict_one(s) for s in sequences], {}
    stacked = np.stack(outs)  # [n, labels]
    probs = (evaluation.softmax(stacked) if variant.returns_logits
             else stacked.astype(np.float64))
    scores = evaluation.scores(probs, gold, labels)
    if teacher_pred is not None:
        scores["agreement_with_teacher"] = evaluation.accuracy(teacher_pred, probs.argmax(-1))
    scores["ece"] = evaluation.expected_calibration_error(probs, gold, ece_bins)
    return VariantResult(
        name=variant.name, size_mb=variant.size_mb, parameters=variant.parameters, probs=probs,
        scores=scores, latency_p50_ms=latency.get("latency_p50_ms"),
        latency_p95_ms=latency.get("latency_p95_ms"),
        throughput=(throughput(variant.predict_batch, sequences, batch_size)
                    if variant.predict_batch else None),
        extra={"measured_by": variant.measured_by} if variant.measured_by else {})


def compare_to_reference(result: VariantResult, reference: np.ndarray,
                         min_agreement: float) -> None:
    """Add top-1 agreement with ``reference`` probabilities [n, labels] (the same model in
    PyTorch), the largest probability difference, and ``flagged`` below ``min_agreement``."""
    assert result.probs is not None
    agree = evaluation.accuracy(reference.argmax(-1), result.probs.argmax(-1))
    result.extra.update({
        "top1_agreement_with_pytorch": agree,
        "max_abs_prob_diff": float(np.abs(result.probs - reference).max()),
        "flagged": agree < min_agreement,
    })


def macro_f1_along(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int,
                   axis: int = -1) -> np.ndarray:
    """Macro-F1 of label ids [..., n] along ``axis`` (vectorised over resamples); the same
    rule as evaluation.macro_f1: a label neither true nor predicted scores F1 0."""
    f1 = []
    for label in range(n_labels):
        true, pred = y_true == label, y_pred == label
        tp = (true & pred).sum(axis=axis)
        denom = true.sum(axis=axis) + pred.sum(axis=axis)
        f1.append(np.divide(2.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0))
    return np.mean(f1, axis=0)


def bootstrap_interval(statistic: Callable[..., np.ndarray], samples: Sequence[np.ndarray],
                       *, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """A two-sided ``level`` confidence interval of ``statistic`` over paired resamples of the
    test sentences (index i of every array in ``samples`` [n] drawn together).

    scipy.stats.bootstrap with ``paired=True`` and the percentile method: percentile, not
    scipy's default BCa, because BCa is undefined (NaN and a warning) when every resample gives
    the same value, as the agreement of identical predictions does. A fresh generator seeded
    with ``seed`` per call draws the same resamples for every call with the same n, so the
    intervals of all variants are computed on the same resampled test sets.
    ``statistic(*arrays, axis=-1)`` must accept [resamples, n] arrays."""
    from scipy.stats import bootstrap

    result = bootstrap(tuple(samples), statistic, paired=True, vectorized=True,
                       n_resamples=resamples, batch=1000,  # bounds memory: 1000 x n per array
                       confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def add_intervals(result: VariantResult, gold: np.ndarray, teacher_pred: np.ndarray, *,
                  n_labels: int, params: Any) -> None:
    """Add ``macro_f1_ci_low``/``_ci_high`` and ``agreement_with_teacher_ci_low``/``_ci_high``
    to ``result.scores`` (``gold``, ``teacher_pred``: label ids [n]; ``params``:
    BenchmarkParams' bootstrap_resamples, bootstrap_seed and confidence_level)."""
    assert result.probs is not None
    pred = result.probs.argmax(-1)
    settings = {"resamples": params.bootstrap_resamples, "seed": params.bootstrap_seed,
                "level": params.confidence_level}
    low, high = bootstrap_interval(
        lambda y, p, axis=-1: macro_f1_along(y, p, n_labels, axis), (gold, pred), **settings)
    result.scores.update({"macro_f1_ci_low": low, "macro_f1_ci_high": high})
    low, high = bootstrap_interval(lambda t, p, axis=-1: (t == p).mean(axis=axis),
                                   (teacher_pred, pred), **settings)
    result.scores.update({"agreement_with_teacher_ci_low": low,
                          "agreement_with_teacher_ci_high": high})


def headline(results: dict[str, VariantResult], gold: np.ndarray, *, student: str,
             teacher: str, params: Any, baseline: str | None = None) -> dict:
    """Size, macro-F1 and p50 latency of ``student`` against ``teacher``, and whether each
    meets its target (``params``: BenchmarkParams; targets are judged on the point estimates).

    The macro-F1 ratio also gets a bootstrap interval, paired: on each resample of the test
    sentences (``gold``: label ids [n]) both models are scored on the same sentences, so
    identical predictions give the degenerate interval [1, 1]. Where some resample leaves the
    teacher with macro-F1 0 (a handful of test sentences and a poor teacher) the ratio is
    undefined there and both bounds are None. A teacher without a size or latency (an API
    teacher: None) gives None for that ratio and its target.

    With ``baseline`` (the classical baseline's key), also the share of the teacher's
    macro-F1 gain over the baseline that the student keeps, (student - baseline) /
    (teacher - baseline), with the same paired interval: a ratio near 1 can hide that a
    classical model is nearly as good, which this figure shows. Undefined (None) where the
    teacher is not better than the baseline (point estimate) or on some resample."""
    s, t = results[student], results[teacher]
    b = results.get(baseline) if baseline else None
    paired = paired_ratios(
        gold, s.probs.argmax(-1), t.probs.argmax(-1),
        None if b is None or b.probs is None else b.probs.argmax(-1),
        n_labels=s.probs.shape[1], params=params)
    gain = {} if "gain_kept" not in paired else {"baseline_variant": baseline}
    worst = worst_class(s.scores.get("f1", {}), t.scores.get("f1", {}))
    out = {
        "student_variant": student,
        "target_size_ratio": params.target_size_ratio,
        "target_macro_f1_ratio": params.target_macro_f1_ratio,
        "target_speedup": params.target_speedup,
        "size_ratio": None if t.size_mb is None else s.size_mb / t.size_mb,
        **paired,
        "p50_speedup": (None if t.latency_p50_ms is None
                        else t.latency_p50_ms / s.latency_p50_ms),
        **gain,
        **worst,
    }
    out["size_target_met"] = (None if out["size_ratio"] is None
                              else out["size_ratio"] <= params.target_size_ratio)
    out["macro_f1_target_met"] = (out["macro_f1_ratio"] is not None
                                  and out["macro_f1_ratio"] >= params.target_macro_f1_ratio)
    out["speedup_target_met"] = (None if out["p50_speedup"] is None
                                 else out["p50_speedup"] >= params.target_speedup)
    return out


def worst_class(student_f1: dict[str, float], teacher_f1: dict[str, float]) -> dict:
    """The label whose F1 the student keeps least of: {"worst_class": label,
    "worst_class_f1_ratio": student F1 / teacher F1}, over the labels where the teacher's F1
    is above 0 ({} when there is none). Macro-F1 averages the labels, so a rare label the
    student loses moves it little; this names it."""
    ratios = {label: student_f1[label] / f1 for label, f1 in teacher_f1.items()
              if f1 > 0 and label in student_f1}
    if not ratios:
        return {}
    label = min(ratios, key=lambda k: (ratios[k], k))
    return {"worst_class": label, "worst_class_f1_ratio": ratios[label]}


def paired_ratios(gold: np.ndarray, student: np.ndarray, teacher: np.ndarray,
                  baseline: np.ndarray | None, *, n_labels: int, params: Any) -> dict:
    """The student's macro-F1 ratio to the teacher and, with ``baseline``, the share of the
    teacher's gain over the baseline it keeps, each with its paired bootstrap interval.

    ``gold``, ``student``, ``teacher``, ``baseline``: label ids [n] of the same test texts;
    ``params``: BenchmarkParams' bootstrap_resamples, bootstrap_seed, confidence_level.
    Returns ``macro_f1_ratio`` (+ ``_ci_low``/``_ci_high``) and, with a baseline,
    ``teacher_gain_over_baseline`` and ``gain_kept`` (+ bounds). A ratio undefined on some
    resample (teacher macro-F1 0, or no gain over the baseline) gives None bounds; a gain
    kept with the teacher not above the baseline (point estimate) is None."""
    from scipy.stats import DegenerateDataWarning

    settings = {"resamples": params.bootstrap_resamples, "seed": params.bootstrap_seed,
                "level": params.confidence_level}

    def interval(statistic: Callable[..., np.ndarray], samples: tuple) -> tuple:
        with warnings.catch_warnings():  # a NaN bound is reported as None
            warnings.simplefilter("ignore", DegenerateDataWarning)
            bounds = bootstrap_interval(statistic, samples, **settings)
        return bounds if np.isfinite(bounds).all() else (None, None)

    def ratio(y: np.ndarray, ps: np.ndarray, pt: np.ndarray, axis: int = -1) -> np.ndarray:
        num, den = (macro_f1_along(y, p, n_labels, axis) for p in (ps, pt))
        return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)

    def kept(y: np.ndarray, ps: np.ndarray, pt: np.ndarray, pb: np.ndarray,
             axis: int = -1) -> np.ndarray:
        fs, ft, fb = (macro_f1_along(y, p, n_labels, axis) for p in (ps, pt, pb))
        return np.divide(fs - fb, ft - fb, out=np.full(fs.shape, np.nan), where=ft > fb)

    fs, ft = (float(macro_f1_along(gold, p, n_labels)) for p in (student, teacher))
    low, high = interval(ratio, (gold, student, teacher))
    out: dict[str, Any] = {"macro_f1_ratio": fs / ft if ft > 0 else None,
                           "macro_f1_ratio_ci_low": low, "macro_f1_ratio_ci_high": high}
    if baseline is None:
        return out
    fb = float(macro_f1_along(gold, baseline, n_labels))
    gain = ft - fb
    low, high = interval(kept, (gold, student, teacher, baseline)) if gain > 0 else (None, None)
    out.update({"teacher_gain_over_baseline": gain,
                "gain_kept": (fs - fb) / gain if gain > 0 else None,
                "gain_kept_ci_low": low, "gain_kept_ci_high": high})
    return out


# --- variant builders ---------------------------------------------------------------------------

def torch_variant(name: str, model, *, pad_id: int, size_mb: float, parameters: int) -> Variant:
    """A PyTorch classifier (eval mode, inference_mode), logits out."""
    import torch

    from pocketbert.runtime.torch_runner import pad_batch

    def one(ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            return model(**pad_batch([ids], pad_id)).logits[0].numpy()

    def batch(seqs: list[list[int]]) -> None:
        with torch.inference_mode():
            model(**pad_batch(seqs, pad_id))

    return Variant(name, size_mb, parameters, one, batch)


def onnx_variant(name: str, path: Path, *, pad_id: int, threads: int,
                 parameters: int, **session: Any) -> Variant:
    """An exported ONNX model in onnxruntime (``threads`` intra-op threads; ``session``: more
    onnx_runner.session settings), logits out."""
    from pocketbert.core.artifacts import size_mb
    from pocketbert.runtime import onnx_runner

    sess = onnx_runner.session(path, threads=threads, **session)

    def one(ids: list[int]) -> np.ndarray:
        ids_, mask = batching.pad([ids], pad_id)
        return sess.run([contract.LOGITS_OUTPUT], {contract.INPUT_NAMES[0]: ids_,
                                                   contract.INPUT_NAMES[1]: mask})[0][0]

    def batch(seqs: list[list[int]]) -> None:
        ids_, mask = batching.pad(seqs, pad_id)
        sess.run([contract.LOGITS_OUTPUT], {contract.INPUT_NAMES[0]: ids_,
                                            contract.INPUT_NAMES[1]: mask})

    return Variant(name, size_mb(path), parameters, one, batch)


def coreml_variant(name: str, path: Path, *, labels: tuple[str, ...],
                   parameters: int) -> Variant:
    """A Core ML package: Core ML itself on macOS (timed), elsewhere pocketbert's reference
    executor of the ML program (untimed: its speed says nothing about a device's)."""
    from pocketbert.core.artifacts import size_mb
    from pocketbert.export import coreml

    if coreml.can_predict():
        import coremltools as ct

        mlmodel = ct.models.MLModel(str(path))
        return Variant(name, size_mb(path), parameters,
                       lambda ids: coreml.predict_probabilities(mlmodel, [ids], labels)[0],
                       returns_logits=False, measured_by="Core ML")
    from pocketbert.export.mil_executor import Executor

    with coreml.quiet():
        executor = Executor(path)
    metadata = coreml.read_back(path)["metadata"]

    def one(ids: list[int]) -> np.ndarray:  # padded to the next bucket, as the app does
        return executor.probabilities(coreml.app_input(ids, metadata))

    return Variant(name, size_mb(path), parameters, one, returns_logits=False, timed=False,
                   measured_by="reference executor")


def fasttext_variant(name: str, path: Path, *, n_labels: int) -> Variant:
    """A fastText model of the fasttext stage (pocketbert.training.fasttext_model): the raw
    text of one test sentence in, probabilities [n_labels] out; its size is the file's, its
    parameters those the stage recorded beside it (fasttext_model.PARAMETERS_FILE)."""
    from pocketbert.core.artifacts import read_json, size_mb
    from pocketbert.training import fasttext_model

    model = fasttext_model.load(path)
    parameters = read_json(path.parent / fasttext_model.PARAMETERS_FILE)[path.name]

    def one(text: str) -> np.ndarray:
        return fasttext_model.probabilities(model, [text], n_labels)[0]

    def batch(texts: list[str]) -> None:
        fasttext_model.probabilities(model, texts, n_labels)

    return Variant(name, size_mb(path), int(parameters), one, batch, returns_logits=False)


def model2vec_variant(name: str, folder: Path) -> Variant:
    """A Model2Vec pipeline of the model2vec stage (pocketbert.training.model2vec_model): the
    raw text of one test sentence in, probabilities [labels] out (numpy: token vectors, mean,
    linear head); its size is the pipeline folder's."""
    from pocketbert.core.artifacts import size_mb
    from pocketbert.training import model2vec_model

    pipeline = model2vec_model.load(folder)

    def one(text: str) -> np.ndarray:
        return model2vec_model.probabilities(pipeline, [text])[0]

    def batch(texts: list[str]) -> None:
        model2vec_model.probabilities(pipeline, texts)

    return Variant(name, size_mb(folder), model2vec_model.count_parameters(pipeline), one, batch,
                   returns_logits=False)


def baseline_variant(name: str, path: Path, *, n_labels: int) -> Variant:
    """The pickled scikit-learn baseline (pocketbert.training.baseline): the raw text of one test
    sentence in, probabilities [n_labels] out; its size is the pickle file's."""
    from pocketbert.core.artifacts import size_mb
    from pocketbert.training import baseline

    model = baseline.load(path)

    def one(text: str) -> np.ndarray:
        return baseline.probabilities(model, [text], n_labels)[0]

    def batch(texts: list[str]) -> None:
        baseline.probabilities(model, texts, n_labels)

    return Variant(name, size_mb(path), baseline.count_parameters(model), one, batch,
                   returns_logits=False)
