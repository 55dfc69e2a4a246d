"""params.yaml and dvc.yaml agree with the code: each stage declares exactly the params it reads."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from pocketbert.core import params
from pocketbert.core.errors import ParamsError

DVC_STAGES: dict = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
PARAMS_YAML: dict = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def _stage_body(definition: dict) -> dict:
    # a foreach/matrix stage keeps its cmd, deps and params under 'do' (foreach) or inline
    return definition.get("do", definition)


def _expand(entries: list) -> set[str]:
    """dvc.yaml `params:` as full keys: a section name stands for all its fields."""
    keys: set[str] = set()
    for entry in entries:
        if isinstance(entry, dict):  # {params file: [keys]}
            for file, names in entry.items():
                assert Path(file).name == "params.yaml", f"params from another file: {file}"
                keys |= _expand(list(names or []))
        elif "." in entry:
            section, name = entry.split(".", 1)
            assert section in params.SECTIONS, f"dvc.yaml names unknown section in {entry!r}"
            fields = {f.name for f in dataclasses.fields(params.SECTIONS[section])}
            assert name in fields, f"dvc.yaml names unknown key {entry!r}"
            keys.add(entry)
        else:
            assert entry in params.SECTIONS, f"dvc.yaml names unknown section {entry!r}"
            keys |= {f"{entry}.{f.name}" for f in dataclasses.fields(params.SECTIONS[entry])}
    return keys


@pytest.mark.parametrize("name", sorted(DVC_STAGES))
def test_dvc_params_match_what_the_stage_reads(name):
    module = importlib.import_module(f"stages.{name}")
    declared = _expand(_stage_body(DVC_STAGES[name]).get("params", []))
    read = set(params.reads(module.PARAMS))
    assert read == declared, (
        f"stage {name}: read but not in dvc.yaml: {sorted(read - declared)}; "
        f"in dvc.yaml but not read: {sorted(declared - read)}"
    )


@pytest.mark.parametrize("name", sorted(DVC_STAGES))
def test_dvc_stage_runs_its_module(name):
    body = _stage_body(DVC_STAGES[name])
    assert body["cmd"].split()[:3] == ["python", "-m", f"stages.{name}"]
    assert f"stages/{name}.py" in body.get("deps", [])


def test_every_stage_module_is_in_dvc_yaml():
    modules = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules <= set(DVC_STAGES), f"not in dvc.yaml: {sorted(modules - set(DVC_STAGES))}"


@pytest.mark.parametrize("section", sorted(PARAMS_YAML))
def test_params_yaml_section_parses(section):
    assert section in params.SECTIONS, f"params.yaml section {section!r} has no dataclass"
    parsed = params.load(ROOT / "params.yaml", section)
    assert isinstance(parsed, params.SECTIONS[section])
    # every key written in params.yaml is taken as written (lists become tuples)
    for key, value in (PARAMS_YAML[section] or {}).items():
        got = getattr(parsed, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, f"{section}.{key}"


@pytest.mark.parametrize("section", sorted(params.SECTIONS))
def test_every_field_has_a_docstring(section):
    cls = params.SECTIONS[section]
    docs = params.field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
    assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    assert all("\n" not in doc for doc in docs.values())  # one line each


@pytest.mark.parametrize(("section", "raw", "message"), [
    ("split", {"sed": 1}, "unknown key 'split.sed' (did you mean 'split.seed'?); known keys of "
                          "'split': conflicts, csv, "),
    ("split", {"zzz": 1}, "unknown key 'split.zzz'; known keys of 'split': conflicts, csv, "),
    ("baseline", {"class_weights": "balanced"},
     "'baseline.class_weights' must be a list, got str; write it as a list: [balanced]"),
    ("baseline", {"c_values": [-1.0, 3.0]},
     "'baseline.c_values': list one or more values, each > 0, e.g. [1.0, 10.0]"),
    ("split", {"seed": True}, "'split.seed' must be an integer, got True"),
    ("split", {"seed": 1.5}, "'split.seed' must be an integer, got 1.5"),
    ("split", {"labels": ["a", 3]}, "'split.labels[1]' must be a string, got 3"),
    ("split", {"test_fraction": "0.1"}, "'split.test_fraction' must be a number, got '0.1'"),
    ("split", {"test_fraction": 0.5}, "invalid value for 'split.test_fraction'"),
    ("teacher", {"mode": "distil"}, "'teacher.mode' is 'distil'; use one of ['fine_tune', "),
    ("train_student", {"trim_vocab": 1}, "'train_student.trim_vocab' must be true or false"),
    ("train_student", {"alpha": 1.5}, "'train_student.alpha' (given: 1.5): use a value in [0, 1]"),
    ("train_student", {"embedding_rank": 128, "vocab_clusters": 0},
     "'train_student.embedding_rank' (given: 128): set it to null, or vocab_clusters > 0"),
    ("train_student", {"embedding_rank": 0, "vocab_clusters": 8},
     "'train_student.embedding_rank' (given: 0): use a positive"),
    ("augment", {"deletion_probability": 1}, "'augment.deletion_probability'"),
    ("soft_label", {"calibration_share": 1.0},
     "'soft_label.calibration_share' (given: 1.0): use a share"),
    ("train_student", {"class_weight": "auto"},
     "'train_student.class_weight' is 'auto'; use one of ['none', 'balanced']"),
    ("train_student", {"soft_loss": "l2"},
     "'train_student.soft_loss' is 'l2'; use one of ['kl', 'mse']"),
    ("train_student", {"vocab_max_rows": 0},
     "'train_student.vocab_max_rows' (given: 0): use a positive row count, or null (no cap)"),
    ("train_student", {"vocab_max_rows": 6000, "trim_vocab": False},
     "'train_student.vocab_max_rows' (given: 6000): set it to null with trim_vocab: false"),
    ("teacher", {"mode": "given", "class_weight": "balanced"},
     "'teacher.class_weight': set it to 'none' with mode=given"),
    ("train_student", {"class_weight": "balanced", "alpha": 1.0},
     "'train_student.class_weight': set it to 'none', or alpha below 1"),
    ("train_student", {"class_weight": "Balanced"},
     "use one of ['none', 'balanced'] (did you mean 'balanced'? the values are case-sensitive)"),
    ("baseline", {"class_weights": ["none", "none"]},
     "'baseline.class_weights': list none and/or balanced, each once"),
    ("baseline", {"class_weights": ["auto"]},
     "'baseline.class_weights[0]' is 'auto'; use one of ['none', 'balanced']"),
    ("tokenize", [128], "section 'tokenize' must be a mapping"),
])
def test_bad_values_name_the_key(section, raw, message):
    with pytest.raises(ParamsError) as info:
        params.parse_section(section, raw)
    assert message in str(info.value)


def test_values_are_coerced_to_the_dataclass_form():
    p = params.parse_section("split", {"test_fraction": 0.2, "labels": ["b", "a"]})
    assert p.labels == ("b", "a") and p.test_fraction == 0.2
    assert params.parse_section("teacher", {"learning_rate": 1}).learning_rate == 1.0
    assert isinstance(params.parse_section("teacher", {"learning_rate": 1}).learning_rate, float)
    assert params.parse_section("train_student", {"init": "fresh", "hidden_size": 128}) \
        .hidden_size == 128
    assert params.parse_section("train_student", {"hidden_size": None}).hidden_size is None
    assert params.parse_section("tokenize", None) == params.TokenizeParams()


def test_reads_expands_sections_and_keeps_single_keys():
    assert params.reads(("tokenize", "teacher.model")) == {
        "tokenize.max_length", "tokenize.length_percentile", "teacher.model"}
    assert params.reads(("split",)) == {"split.csv", "split.labels", "split.validation_fraction",
                                        "split.test_fraction", "split.seed", "split.conflicts"}


def test_load_key_reads_one_key(tmp_path, write_params):
    path = write_params(teacher={"model": "/models/mine"})
    assert params.load_key(path, "teacher.model") == "/models/mine"
    assert params.load_key(write_params(raw={"split": {}}), "teacher.model") == \
        params.PACKAGED_BACKBONE
    bad = tmp_path / "bad.yaml"
    bad.write_text("split: [unclosed\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"bad\.yaml: not valid YAML"):
        params.load(bad, "split")


def test_load_key_checks_the_section_as_written(write_params) -> None:
    # app_variant fp32 is valid only together with the user's variants, not the defaults
    path = write_params(convert={"variants": ["fp32", "int8"], "app_variant": "fp32"})
    assert params.load_key(path, "convert.variants") == ("fp32", "int8")
    assert params.load_key(path, "convert.app_variant") == "fp32"


def test_params_view_raises_on_an_undeclared_key(write_params):
    from pocketbert.core import stage

    p = stage.Params.load(write_params(tokenize={"max_length": 48}),
                          ("export", "tokenize.max_length"))
    assert p.tokenize.max_length == 48 and p.export == params.ExportParams()
    with pytest.raises(stage.UndeclaredParamError, match=r"'convert' .*PARAMS.*dvc\.yaml"):
        _ = p.convert
    p = stage.Params({"convert": {"variants": ("fp16",)}})
    assert p.convert.variants == ("fp16",)
    with pytest.raises(stage.UndeclaredParamError, match=r"'convert\.app_variant'"):
        _ = p.convert.app_variant
    assert p.resolved() == {"convert": {"variants": ("fp16",)}}


def test_overrides_are_parsed_as_yaml_and_unknown_keys_refused() -> None:
    assert params.parse_overrides(["train_student.epochs=1", "split.labels=[a, b]"]) == {
        ("train_student", "epochs"): 1, ("split", "labels"): ["a", "b"]}
    for bad in ("train_student.epoch=1", "nosection.epochs=1", "epochs=1", "teacher.mode"):
        with pytest.raises(ParamsError, match=f"--set '{bad}'"):
            params.parse_overrides([bad])
    with pytest.raises(ParamsError, match="-S 'alpha=0.5': expected section.key=value"):
        params.parse_overrides(["alpha=0.5"], "-S")


def test_a_range_error_says_which_number_was_given_and_never_echoes_a_string():
    with pytest.raises(ParamsError, match=r"'train_student\.alpha' \(given: 2\.5\): use a value"):
        params.parse_section("train_student", {"alpha": 2.5})
    with pytest.raises(ParamsError) as info:  # a URL may carry a secret: not repeated
        params.parse_section("teacher", {"mode": "api", "api_url": "http://u:hunter2@host/"})
    assert "hunter2" not in str(info.value) and "given" not in str(info.value)
    with pytest.raises(ParamsError, match="'teacher.api_headers' must be a mapping, got str"
                       ) as info:  # a header written as one string: its value is not repeated
        params.parse_section("teacher", {"api_headers": "Authorization: Bearer hunter2"})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ParamsError) as info:  # the key at fault holds a string: not repeated
        params.parse_section("train_student", {"class_weight": "balanced", "alpha": 1})
    assert "given" not in str(info.value)
    for raw in ({"api_headers": {"X-Api-Key": 8812345678901}},  # a numeric key
                {"api_url": ["http://u:8812345678901@host/"]}):
        with pytest.raises(ParamsError, match=r"must be a string, got (int|list)$") as info:
            params.parse_section("teacher", raw)
        assert "8812345678901" not in str(info.value)


def test_a_repeated_header_is_reported_without_its_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("teacher:\n  api_headers:\n    Authorization: 'Bearer sk-1'\n"
                    "    Authorization: 'Bearer sk-2'\n", encoding="utf-8")
    with pytest.raises(ParamsError) as info:
        params.read_yaml(path)
    assert str(info.value) == (f'{path}: not valid YAML: found duplicate key "Authorization" '
                               "at line 4, column 5")


def test_a_choice_in_another_case_gets_a_hint_inside_a_list_or_word_too():
    with pytest.raises(ParamsError, match=r"got 'Auto' \(did you mean 'auto'\?"):
        params.parse_section("augment", {"keep_words": "Auto"})
    with pytest.raises(ParamsError) as info:
        params.parse_section("augment", {"keep_words": "all"})
    assert "did you mean" not in str(info.value) and info.value.key == "augment.keep_words"


def test_errors_name_the_params_file_that_was_read(tmp_path):
    other = tmp_path / "sweep.yaml"
    other.write_text("train_student:\n  alpha: 2.0\nsplit:\n  seed: x\n", encoding="utf-8")
    with pytest.raises(ParamsError) as info:
        params.load(other, "train_student")
    assert str(info.value) == (f"{other}: invalid value for 'train_student.alpha' (given: 2.0): "
                               "use a value in [0, 1]")
    assert info.value.key == "train_student.alpha"
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(other))}: 'split.seed' must be"):
        params.load_key(other, "split.seed")
    with pytest.raises(ParamsError, match=r"^params\.yaml: 'split\.seed' must be"):
        params.parse_section("split", {"seed": "x"})  # no file read: the default name
