"""`pocketbert choose`: the model a budget allows, from a benchmark metrics file."""

from __future__ import annotations

import json

import pytest
from conftest import frontier_benchmark as benchmark

from pocketbert.apps import cli


@pytest.fixture
def metrics(tmp_path):
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(benchmark()), encoding="utf-8")
    return str(path)


def test_choose_names_the_model_where_it_is_and_how_to_build_it(metrics, capsys) -> None:
    assert cli.main(["choose", "--metrics", metrics, "--max-mb", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("student.coreml_palette6: 5.00 MB, agrees with the teacher on "
                             "0.986 (0.966–1.000) of 212 test texts")
    assert "p50 not measured here (Core ML)" in out[0]
    assert out[1] == "  where: models/convert/student/palette6.mlpackage (Core ML)"
    assert "convert.app_variant: palette6" in out[2]
    assert sum(line.startswith("  ") and "MB" in line for line in out) == 4  # the frontier


def test_nothing_fits_is_exit_status_1_with_the_frontier(metrics, capsys) -> None:
    assert cli.main(["choose", "--metrics", metrics, "--max-mb", "1"]) == 1
    captured = capsys.readouterr()
    assert "no measured model fits --max-mb 1" in captured.err
    assert "baseline.tfidf_logreg: 2.10 MB" in captured.out


def test_runtime_keeps_the_models_that_run_in_it(metrics, capsys) -> None:
    assert cli.main(["choose", "--metrics", metrics, "--max-mb", "10", "--runtime", "onnx"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("student.onnx_int8: 6.70 MB")
    assert "the size frontier in onnx" in out and "coreml" not in out
    assert cli.main(["choose", "--metrics", metrics, "--max-mb", "3", "--runtime", "coreml"]) == 1
    assert "no measured model fits --max-mb 3, --runtime coreml" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--max-mb", "-1"], "not a budget"),
    (["--max-mb", "inf"], "use a finite number"),
    (["--max-ms", "fast"], "not a number"),
    (["--min-agreement", "97"], "agreement is a share, 0 to 1"),
    (["--runtime", "tflite"], "invalid choice"),
    (["--metrics", "none.json"], "none.json not found; run `dvc repro benchmark`"),
])
def test_bad_budgets_are_one_error(metrics, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["choose", "--metrics", metrics, *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_readmes_budget_table_is_what_choose_names() -> None:
    from pocketbert.apps import results

    rows = results.budget_table(benchmark()).splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == [
        "none measured fits", "none measured fits", "`student.coreml_palette6`",
        "`student.coreml_palette6`"]
    assert rows[2] == ("| ≤ 5 MB | `student.coreml_palette6` | 5.00 | 0.986 (0.966–1.000) | "
                       "not measured here | Core ML |")
