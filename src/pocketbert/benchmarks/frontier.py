"""The size-quality frontier of the measured models: which one to ship for a budget.

Every variant the benchmark stage measured on the test split (metrics/benchmark.json) is a
point: its size on disk, its top-1 agreement with the teacher (with the bootstrap interval) and,
where this machine could time it, its batch-1 p50 latency. A point is on the frontier of a cost
(size or p50) when no other point costs at most as much and agrees at least as often, better in
one of the two (Pareto optimality). ``choose`` names the point a budget allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pocketbert.core import contract

COSTS = ("size_mb", "p50_ms")
"the costs a frontier is drawn against"
RUNTIMES = {"coreml": "Core ML", "onnx": "ONNX Runtime", "pytorch": "PyTorch",
            "sklearn": "scikit-learn", "fasttext": "fastText",
            "model2vec": "Model2Vec"}
"a Point's runtime by its short name (`pocketbert choose --runtime`)"


@dataclass(frozen=True)
class Point:
    """One measured variant: ``variant`` (e.g. 'student.coreml_palette6'), ``size_mb`` (10^6
    bytes on disk), ``agreement`` with the teacher's top-1 label on the test split and its
    95% interval, ``macro_f1``, ``p50_ms`` (batch 1, the benchmark's threads; None where it was
    not measured here, Core ML), ``runtime`` and ``artifact`` (where the pipeline writes it)."""

    variant: str
    size_mb: float
    agreement: float
    agreement_low: float | None
    agreement_high: float | None
    macro_f1: float
    p50_ms: float | None
    runtime: str
    artifact: str

    def cost(self, name: str) -> float | None:
        """The cost ``name`` of COSTS."""
        return getattr(self, name)


def _where(variant: str) -> tuple[str, str]:
    """The runtime and artifact path of a benchmark variant name."""
    model, kind = variant.split(".", 1)
    if kind.startswith("onnx_"):
        name = contract.ONNX_INT8_FILE if kind == "onnx_int8" else contract.ONNX_FP32_FILE
        return RUNTIMES["onnx"], f"models/export/{model}/{name}"
    if kind.startswith("coreml_"):
        variant = contract.coreml_file(kind[len("coreml_"):])
        return RUNTIMES["coreml"], f"models/convert/{model}/{variant}"
    if kind.startswith("fasttext"):
        from pocketbert.training import fasttext_model

        name = (fasttext_model.QUANTIZED_FILE if kind.endswith("_quantized")
                else fasttext_model.MODEL_FILE)
        return RUNTIMES["fasttext"], f"models/fasttext/{name}"
    if kind.startswith("model2vec"):
        from pocketbert.training import model2vec_model

        name = (model2vec_model.DISTILLED if kind.endswith("_distilled")
                else model2vec_model.PLAIN)
        return RUNTIMES["model2vec"], f"models/model2vec/{name}"
    if model == "baseline":
        return RUNTIMES["sklearn"], "models/baseline"
    return RUNTIMES["pytorch"], f"models/{model}"


def how_to_build(point: Point) -> str:
    """The params and command that produce ``point``'s artifact with the committed recipe."""
    model, kind = point.variant.split(".", 1)
    if kind.startswith("coreml_"):
        variant = kind[len("coreml_"):]
        ship = (f"; `convert.app_variant: {variant}` ships it in models/app"
                if model == "student" else "")
        return (f"`convert.variants` holding {variant}, then `dvc repro convert@{model}`"
                f"{ship}")
    if kind == "onnx_int8":
        return f"`export.int8: true` (the default), then `dvc repro export@{model}`"
    if kind.startswith("onnx_"):
        return f"`dvc repro export@{model}` (model.onnx beside the int8 model)"
    if kind.startswith("fasttext"):
        return "`dvc repro fasttext` (the `fasttext` params)"
    if kind.startswith("model2vec"):
        return "`dvc repro model2vec` (the `model2vec` params)"
    if model == "baseline":
        return "`dvc repro baseline` (the `baseline` params)"
    return f"`dvc repro {'train_student' if model == 'student' else 'teacher'}`"


def points(benchmark: Mapping[str, Any]) -> list[Point]:
    """Every variant of ``benchmark`` (metrics/benchmark.json) measured on the test split, in
    the benchmark's order; size-only rows (no agreement measured) are left out."""
    out = []
    suffix = ".size_mb"
    for key in benchmark:
        if not (key.endswith(suffix) and key.startswith(("teacher.", "student.", "baseline."))):
            continue
        variant = key[: -len(suffix)]
        agreement = benchmark.get(f"{variant}.agreement_with_teacher")
        if not isinstance(agreement, int | float):
            continue
        p50 = benchmark.get(f"{variant}.latency_p50_ms")
        runtime, artifact = _where(variant)
        out.append(Point(
            variant, float(benchmark[key]), float(agreement),
            benchmark.get(f"{variant}.agreement_with_teacher_ci_low"),
            benchmark.get(f"{variant}.agreement_with_teacher_ci_high"),
            float(benchmark[f"{variant}.macro_f1"]),
            float(p50) if isinstance(p50, int | float) else None, runtime, artifact))
    return out


def front(candidates: Iterable[Point], cost: str) -> list[Point]:
    """The points no other point dominates on (``cost`` lower or equal, agreement higher or
    equal, one of them strictly), by increasing cost; points without that cost are left out.
    Raises ValueError for a cost not in COSTS."""
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; use one of {COSTS}")
    costed = [p for p in candidates if p.cost(cost) is not None]
    kept = [p for p in costed if not any(
        q.cost(cost) <= p.cost(cost) and q.agreement >= p.agreement
        and (q.cost(cost) < p.cost(cost) or q.agreement > p.agreement) for q in costed)]
    return sorted(kept, key=lambda p: (p.cost(cost), -p.agreement))


def choose(candidates: Sequence[Point], *, max_mb: float | None = None,
           max_ms: float | None = None, min_agreement: float | None = None) -> Point | None:
    """The point a budget allows: at most ``max_mb`` MB, at most ``max_ms`` ms p50 (a point
    not timed here never passes a latency budget), at least ``min_agreement``; among those the
    highest agreement, then the smallest, then the fastest. None when no point fits."""
    fits = [p for p in candidates
            if (max_mb is None or p.size_mb <= max_mb)
            and (max_ms is None or (p.p50_ms is not None and p.p50_ms <= max_ms))
            and (min_agreement is None or p.agreement >= min_agreement)]
    if not fits:
        return None
    return min(fits, key=lambda p: (-p.agreement, p.size_mb,
                                    float("inf") if p.p50_ms is None else p.p50_ms))


def plot_rows(candidates: Sequence[Point], cost: str) -> list[dict[str, Any]]:
    """The rows of a frontier plot (DVC plots, template frontier): per point with that cost,
    {'variant', cost, 'agreement', 'front': 'on the frontier' | 'dominated'}."""
    on = {p.variant for p in front(candidates, cost)}
    return [{"variant": p.variant, cost: round(p.cost(cost), 4),
             "agreement": round(p.agreement, 4),
             "front": "on the frontier" if p.variant in on else "dominated"}
            for p in candidates if p.cost(cost) is not None]
