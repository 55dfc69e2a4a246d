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
from stages import export, soft_label, teacher, train_student


def _split(folder, texts=None, labels=None):
    """A split stage output folder: train.csv (``texts`` and label names ``labels``; default:
    the tiny rows) and labels.json."""
    rows = small_rows(10)
    texts = texts or [r["text"] for r in rows]
    labels = labels or [r["label"] for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    dataset.write_examples(folder / "train.csv", [
        dataset.Example(text, label, i + 2) for i, (text, label) in
        enumerate(zip(texts, labels, strict=True))])
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
    other = tmp_path / "other"
    write_csv(other / "train.csv", small_rows(2))  # the user's own CSV: no line column
    dataset.write_labels(other / contract.LABELS_FILE, LABELS)
    with pytest.raises(DataError, match=r"train\.csv: not a split stage output .*dvc repro"):
        size_check.measure(other, tiny_world["params"])


def test_a_params_error_names_the_params_file_given(tiny_world, tmp_path, capsys) -> None:
    split = _split(tmp_path / "split")
    _set(tiny_world["params"], "train_student", vocab_max_rows=3)  # under the always-kept
    with pytest.raises(SystemExit) as exc:
        size_check.main(["--split", str(split), "--params", str(tiny_world["params"])])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert f"{tiny_world['params']}: 'train_student.vocab_max_rows' is 3" in err
    assert "Traceback" not in err


def test_size_check_gives_the_rows_and_int8_size_of_the_trained_student(tiny_world,
                                                                        tmp_path) -> None:
    """The stages on the same written train texts: train_student's embedding rows and the
    export stage's int8 file. A given teacher's embedding rows are the check's, so the shared
    rows (vocab_clusters, the committed path) group the same vectors; the int8 file holds the
    same tensors of other values (distinct_weights: none equal), so the same bytes."""
    w, p = tiny_world, str(tiny_world["params"])
    _set(w["params"], "train_student", vocab_clusters=4, epochs=1)
    written = tokenization.load(w["tokenize"])["train"]
    split = _split(tmp_path / "split", list(written["text"]),
                   [LABELS[label] for label in written["label"]])
    r = w["root"]
    teacher.main(["--params", p, "--tokenize", str(w["tokenize"]), "--out", str(r / "teacher"),
                  "--metrics", str(r / "t.json")])
    soft_label.main(["--params", p, "--teacher", str(r / "teacher"), "--tokenize",
                     str(w["tokenize"]), "--augmented", str(w["augmented"]),
                     "--out", str(r / "soft"), "--metrics", str(r / "s.json")])
    trained = train_student.main([
        "--params", p, "--teacher", str(r / "teacher"), "--tokenize", str(w["tokenize"]),
        "--augmented", str(w["augmented"]), "--soft-label", str(r / "soft"),
        "--out", str(r / "student"), "--metrics", str(r / "ts.json"),
        "--curves", str(r / "curves")])
    exported = export.main(["--params", p, "--model", str(r / "student"), "--tokenize",
                            str(w["tokenize"]), "--out", str(r / "onnx"),
                            "--metrics", str(r / "e.json")])
    result = size_check.measure(split, w["params"])
    assert result["student.embedding_rows"] == trained["student.embedding_rows"]
    assert trained["student.embedding_rows"] < len(tiny_tokenizer())  # rows were shared
    assert exported["int8.fused"] is True
    assert result["student_int8_mb"] == exported["int8.size_mb"]  # the same bytes
    assert result["student_int8_mb"] < exported["fp32.size_mb"] / 2  # int8, not fp32


def test_a_fine_tuned_teacher_is_weighed_with_a_new_head_and_an_api_teacher_not_at_all(
        tiny_world, tmp_path, capsys) -> None:
    split = _split(tmp_path / "split")
    given = tiny_world["given_teacher"]
    # fine_tune: the folder as a backbone with a new head of the split's 4 labels, the shapes
    # of the given classifier, so its weights file weighs the same
    _set(tiny_world["params"], "teacher", mode="fine_tune")
    tuned = size_check.measure(split, tiny_world["params"])
    assert tuned["teacher_fp32_mb"] == size_mb(given / contract.WEIGHTS_FILE)
    # api: no teacher weights; the student starts from its own backbone (the same tiny folder)
    _set(tiny_world["params"], "teacher", mode="api", api_url="http://127.0.0.1:9/")
    _set(tiny_world["params"], "train_student", init="pretrained", backbone=str(given))
    out = tmp_path / "api.json"
    assert size_check.main(["--split", str(split), "--params", str(tiny_world["params"]),
                            "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["teacher_fp32_mb"] is None and result["size_ratio"] is None
    assert result["meets_target"] is None and result["student_int8_mb"] > 0
    assert result["student.embedding_rows"] == tuned["student.embedding_rows"]  # same texts
    assert "no teacher weights to compare (teacher.mode api)" in capsys.readouterr().out
