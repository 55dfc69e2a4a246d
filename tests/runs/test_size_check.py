"""runs.size_check: the untrained student's int8 size and its share of the teacher's weights."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import LABELS, small_rows, tiny_tokenizer, write_csv

from pocketbert.core import contract
from pocketbert.core.artifacts import size_mb
from pocketbert.core.errors import DataError
from pocketbert.data import dataset, tokenization, vocabulary
from runs import size_check


def _split(folder):
    """A split stage output with the tiny rows' texts as train.csv."""
    write_csv(folder / "train.csv", small_rows(10))
    dataset.write_labels(folder / contract.LABELS_FILE, LABELS)
    return folder


def _set(params_file, section: str, **values) -> None:
    data = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    data[section].update(values)
    params_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_size_check_weighs_the_student_the_stage_builds_and_its_teacher(tiny_world,
                                                                        tmp_path) -> None:
    split = _split(tmp_path / "split")
    result = size_check.measure(split, tiny_world["params"])
    texts = [row["text"] for row in small_rows(10)]
    tokenizer = tiny_tokenizer()
    kept = vocabulary.kept_token_ids(
        tokenizer, tokenization.encode(tokenizer, texts, 32)["input_ids"], reserve=0)
    assert result["student.embedding_rows"] == len(kept) < len(tokenizer)  # trimmed to texts
    assert result["train_texts"] == len(texts) and result["labels"] == len(LABELS)
    # mode given: the teacher's own weights, written again, weigh what its folder's file does
    assert result["teacher_fp32_mb"] == size_mb(tiny_world["given_teacher"]
                                                / contract.WEIGHTS_FILE)
    assert result["size_ratio"] == result["student_int8_mb"] / result["teacher_fp32_mb"]
    assert result["meets_target"] == (result["size_ratio"] <= result["target_size_ratio"])

    # the row cap is read from the params: at the always-kept tokens only, fewer rows, smaller
    always = len(vocabulary.kept_token_ids(tokenizer, [], reserve=0))
    _set(tiny_world["params"], "train_student", vocab_max_rows=always)
    capped = size_check.measure(split, tiny_world["params"])
    assert capped["student.embedding_rows"] == always < result["student.embedding_rows"]
    assert capped["student_int8_mb"] < result["student_int8_mb"]


def test_size_check_cli_prints_the_verdict_and_writes_json(tiny_world, tmp_path,
                                                           capsys) -> None:
    split = _split(tmp_path / "split")
    out = tmp_path / "size.json"
    assert size_check.main(["--split", str(split), "--params", str(tiny_world["params"]),
                            "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    printed = capsys.readouterr()
    assert f"student int8 {result['student_int8_mb']:.2f} MB" in printed.out
    assert "the student for 40 train texts (vocabulary, shared rows): " in printed.err
    assert "ONNX export, transformer fusions, int8: " in printed.err
    assert ("(target 1/12.0: met)" if result["meets_target"] else "not met") in printed.out


def test_a_missing_split_names_the_files_and_the_command(tiny_world, tmp_path) -> None:
    with pytest.raises(DataError, match=r"no train\.csv, labels\.json; run `dvc repro split`"):
        size_check.measure(tmp_path / "nowhere", tiny_world["params"])
