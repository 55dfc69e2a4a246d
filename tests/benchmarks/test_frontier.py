"""The size-quality frontier: points from the benchmark's metrics, Pareto fronts, budgets."""

from __future__ import annotations

import pytest
from conftest import FRONTIER_ROWS as ROWS
from conftest import frontier_benchmark as benchmark

from pocketbert.benchmarks import frontier


def test_points_are_the_measured_variants_with_where_they_live() -> None:
    points = {p.variant: p for p in frontier.points(benchmark())}
    assert list(points) == list(ROWS)  # the size-only Core ML teacher is no point
    assert points["student.coreml_palette6"].p50_ms is None
    assert points["student.coreml_palette6"].artifact == "models/convert/student/palette6.mlpackage"
    assert points["student.onnx_int8"].artifact == "models/export/student/model.int8.onnx"
    assert points["baseline.tfidf_logreg"].runtime == "scikit-learn"


def test_the_front_keeps_exactly_the_undominated_points() -> None:
    points = frontier.points(benchmark())
    by_size = [p.variant for p in frontier.front(points, "size_mb")]
    # the int8 ONNX and Core ML students agree as often as palette6 but are larger
    assert by_size == ["baseline.tfidf_logreg", "student.coreml_palette4",
                       "student.coreml_palette6", "teacher.onnx_int8"]
    # by p50 only the timed points count; the baseline is slower than the int8 student
    assert [p.variant for p in frontier.front(points, "p50_ms")] == [
        "student.onnx_int8", "teacher.onnx_int8"]
    for cost in frontier.COSTS:  # the definition, checked point by point
        kept = {p.variant for p in frontier.front(points, cost)}
        for p in points:
            if p.cost(cost) is None:
                continue
            beaten = any(q.cost(cost) is not None and q.cost(cost) <= p.cost(cost)
                         and q.agreement >= p.agreement
                         and (q.cost(cost), q.agreement) != (p.cost(cost), p.agreement)
                         for q in points)
            assert (p.variant in kept) == (not beaten)
    with pytest.raises(ValueError, match="unknown cost"):
        frontier.front(points, "params")


@pytest.mark.parametrize(("budget", "expected"), [
    ({"max_mb": 1.0}, None),
    ({"max_mb": 3.0}, "baseline.tfidf_logreg"),
    ({"max_mb": 5.0}, "student.coreml_palette6"),  # 5.0 fits: at most, not below
    ({"max_mb": 10.0}, "student.coreml_palette6"),  # ties on agreement: the smallest
    ({"max_ms": 1.0}, "student.onnx_int8"),  # Core ML is not timed: never in a latency budget
    ({"max_mb": 4.0, "min_agreement": 0.98}, None),
    ({}, "teacher.onnx_int8"),
])
def test_choose_takes_the_highest_agreement_the_budget_allows(budget, expected) -> None:
    chosen = frontier.choose(frontier.points(benchmark()), **budget)
    assert (chosen.variant if chosen else None) == expected


def test_plot_rows_mark_the_front() -> None:
    rows = frontier.plot_rows(frontier.points(benchmark()), "p50_ms")
    assert [r["variant"] for r in rows] == ["teacher.onnx_int8", "student.onnx_int8",
                                            "baseline.tfidf_logreg"]
    assert [r["front"] for r in rows] == ["on the frontier", "on the frontier", "dominated"]
    assert frontier.how_to_build(frontier.points(benchmark())[2]).startswith(
        "`convert.variants` holding palette6")
