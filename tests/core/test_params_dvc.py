"""params.yaml as `dvc exp run -S` rewrites it: every numeric key reads as the number DVC wrote.

DVC rewrites params.yaml with ruamel.yaml (YAML 1.2): `-S train_student.learning_rate=5e-5`
writes `5e-05`, `inf` writes `.inf`, `1e3` writes `1000.0`, and the whole file is re-emitted
with `no` unquoted. The tests produce that text with DVC's own function and read it back.
"""

from __future__ import annotations

import shutil
import types
import typing
from pathlib import Path

import pytest
from conftest import ROOT

from pocketbert.core import params
from pocketbert.core.errors import ParamsError


def _numeric_keys() -> dict[str, type]:
    """Every int and float field (optional ones included), as 'section.field' -> int | float."""
    keys = {}
    for name, cls in params.SECTIONS.items():
        for fname, hint in typing.get_type_hints(cls).items():
            optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
            kinds = {hint} | (set(typing.get_args(hint)) if optional else set())
            for kind in (float, int):  # float first: no field is int | float
                if kind in kinds:
                    keys[f"{name}.{fname}"] = kind
                    break
    return keys


def _dvc_set(tmp_path: Path, overrides: list[str]) -> Path:
    """A copy of the committed params.yaml rewritten exactly as `dvc exp run -S` rewrites it
    (DVC calls dvc.utils.hydra.apply_overrides on the params file). A key the file does not
    set yet is added with Hydra's '++' (`-S ++key=value`)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    written = params.read_yaml(path)

    def override(item: str) -> str:
        section, fname = item.split("=", 1)[0].split(".", 1)
        return item if fname in (written.get(section) or {}) else f"++{item}"

    apply_overrides(path, [override(o) for o in overrides])
    return path


def _field(raw: dict, key: str):
    section, fname = key.split(".", 1)
    hint = typing.get_type_hints(params.SECTIONS[section])[fname]
    return params._coerce(raw[section][fname], hint, key)


def test_the_issue_learning_rate_override_is_read_as_a_number(tmp_path) -> None:
    path = _dvc_set(tmp_path, ["train_student.learning_rate=5e-5"])
    assert "learning_rate: 5e-05" in path.read_text(encoding="utf-8")  # what DVC writes
    assert params.load(path, "train_student").learning_rate == 5e-05
    assert params.load(path, "teacher").learning_rate == 1e-4  # written 0.0001 by the rewrite


@pytest.mark.parametrize(("given", "expected"), [
    ("5e-5", 5e-05), ("1e-4", 1e-4), ("2.5E-3", 2.5e-3), ("1e+2", 100.0), ("3", 3.0),
    ("0.25", 0.25), ("-1e-3", -1e-3),
])
def test_every_float_key_reads_what_dvc_writes(given, expected, tmp_path) -> None:
    floats = [k for k, kind in _numeric_keys().items() if kind is float]
    assert len(floats) >= 10  # the test covers the real sections, not an empty list
    raw = params.read_yaml(_dvc_set(tmp_path, [f"{k}={given}" for k in floats]))
    for key in floats:
        value = _field(raw, key)
        assert isinstance(value, float) and value == expected, (key, value)


@pytest.mark.parametrize(("given", "expected"), [("7", 7), ("1e3", 1000), ("2.0", 2)])
def test_every_int_key_reads_what_dvc_writes(given, expected, tmp_path) -> None:
    ints = [k for k, kind in _numeric_keys().items() if kind is int]
    assert len(ints) >= 10
    raw = params.read_yaml(_dvc_set(tmp_path, [f"{k}={given}" for k in ints]))
    for key in ints:
        value = _field(raw, key)
        assert type(value) is int and value == expected, (key, value)


@pytest.mark.parametrize(("given", "written"), [("inf", ".inf"), ("-inf", "-.inf"),
                                                ("nan", ".nan")])
def test_non_finite_numbers_name_the_key(given, written, tmp_path) -> None:
    path = _dvc_set(tmp_path, [f"export.atol={given}"])
    assert f"atol: {written}" in path.read_text(encoding="utf-8")
    with pytest.raises(ParamsError, match=r"'export\.atol' must be a finite number, got -?"):
        params.load(path, "export")


def test_a_whole_float_for_an_int_key_is_that_integer_and_a_fraction_is_refused() -> None:
    assert params.parse_section("split", {"seed": 1000.0}).seed == 1000
    with pytest.raises(ParamsError, match=r"'split\.seed' must be an integer, got 2\.5"):
        params.parse_section("split", {"seed": 2.5})


def test_every_section_parses_after_a_dvc_rewrite(tmp_path) -> None:
    # any -S rewrites the whole file: flow lists become block lists and "no" loses its quotes,
    # which YAML 1.1 (PyYAML) would read as the boolean false (the committed keep_words is
    # auto, so the test sets a list with "no" in it)
    path = _dvc_set(tmp_path, ["train_student.learning_rate=5e-5", "split.seed=1e3",
                               "augment.keep_words=[if,no]"])
    assert "\n  - no\n" in path.read_text(encoding="utf-8")
    for name in params.read_yaml(ROOT / "params.yaml"):
        params.load(path, name)
    assert "no" in params.load(path, "augment").keep_words
    assert params.load(path, "split").seed == 1000


def test_duplicate_keys_are_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  seed: 1\n  seed: 2\n", encoding="utf-8")
    with pytest.raises(ParamsError) as info:
        params.read_yaml(path)
    # the values are left out: a repeated header's may be a secret
    assert str(info.value) == (f"{path}: not valid YAML: found duplicate key \"seed\" "
                               "at line 3, column 3")


def test_a_misspelt_section_is_named_instead_of_running_on_defaults(tmp_path) -> None:
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    misspelt = tmp_path / "params.yaml"
    misspelt.write_text(text.replace("train_student:", "train_studnet:", 1), encoding="utf-8")
    with pytest.raises(ParamsError, match=r"unknown section 'train_studnet' \(did you mean "
                                          r"'train_student'\?\)"):
        params.load(misspelt, "split")
    extra = tmp_path / "extra.yaml"
    extra.write_text(text + "\nzzz:\n  a: 1\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"unknown section 'zzz' \(known: split, "):
        params.load_key(extra, "tokenize.max_length")
