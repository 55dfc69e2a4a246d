"""A given teacher's labels matched by name: reordering, generic names, every label-map defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import LABELS, tiny_classifier, tiny_tokenizer

from pocketbert.core.errors import ModelError
from pocketbert.runtime.torch_runner import pad_batch
from pocketbert.training import modeling

IDS = [[2, 10, 11, 12, 3], [2, 13, 3]]


def _logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model(**pad_batch(IDS, 0)).logits


def _saved(tmp_path: Path, labels=LABELS, id2label: dict | None = None) -> Path:
    """A tiny classifier saved with ``labels``; ``id2label`` then overwrites config.json's map."""
    folder = tmp_path / "given"
    tiny_classifier(80, labels=labels).save_pretrained(str(folder))
    if id2label is not None:
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = id2label
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_logits_are_reordered_into_the_pipeline_order(tmp_path) -> None:
    shuffled = ("process", "condition", "notice", "constraint")
    folder = _saved(tmp_path, labels=shuffled)
    original = _logits(tiny_classifier(80, labels=shuffled))
    model = modeling.load_classifier(folder, LABELS)
    assert model.pocketbert_label_order == [1, 3, 2, 0]
    assert list(model.config.id2label.values()) == list(LABELS)
    got = _logits(model)
    for i, source in enumerate(model.pocketbert_label_order):
        assert torch.allclose(got[:, i], original[:, source], atol=1e-6)


def test_same_order_is_left_alone(tmp_path) -> None:
    model = modeling.load_classifier(_saved(tmp_path), LABELS)
    assert model.pocketbert_label_order == [0, 1, 2, 3]
    assert torch.allclose(_logits(model), _logits(tiny_classifier(80)), atol=1e-6)


def test_generic_names_take_label_names_from_params(tmp_path) -> None:
    generic = {str(i): f"LABEL_{i}" for i in range(4)}
    folder = _saved(tmp_path, id2label=generic)
    with pytest.raises(ModelError, match=r"config.json: id2label has only generic names.*"
                                         r"teacher.label_names"):
        modeling.load_classifier(folder, LABELS)
    names = ("notice", "process", "condition", "constraint")  # the checkpoint's id order
    model = modeling.load_classifier(folder, LABELS, label_names=names)
    assert model.pocketbert_label_order == [2, 3, 0, 1]


@pytest.mark.parametrize(("id2label", "label_names", "message"), [
    (None, (), r"id2label is missing"),
    ({}, (), r"id2label is missing"),
    ({"0": "condition", "1": "constraint", "2": "notice", "4": "process"}, (),
     r"ids \[0, 1, 2, 4\]: ids \[3\] are missing"),
    ({"0": "condition", "x": "constraint", "2": "notice", "3": "process"}, (),
     r"key 'x', not an integer id"),
    ({"0": "condition", "00": "constraint", "2": "notice", "3": "process"}, (),
     r"lists id 0 twice"),
    ({"0": "condition", "1": "condition", "2": "notice", "3": "process"}, (),
     r"names \['condition'\] more than once"),
    ({"0": "condition", "1": "limit", "2": "notice", "3": "process"}, (),
     r"names \['limit'\] that are not in split.labels"),
    ({"0": "condition", "1": "constraint", "2": "notice"}, (),
     r"has 3 labels .* split.labels has 4"),
    ({str(i): f"LABEL_{i}" for i in range(4)}, ("condition", "notice"),
     r"4 outputs but the params key 'teacher.label_names' lists 2"),
    ({str(i): f"LABEL_{i}" for i in range(4)}, ("condition", "notice", "notice", "process"),
     r"teacher.label_names' names \['notice'\] more than once"),
])
def test_every_label_map_defect_is_one_clear_error(tmp_path, id2label, label_names,
                                                   message) -> None:
    folder = _saved(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if id2label is None:
        del config["id2label"]
    else:
        config["id2label"] = id2label
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message) as err:
        modeling.load_classifier(folder, LABELS, label_names=label_names)
    assert "\n" not in str(err.value)
    assert "config.json" in str(err.value) or "teacher.label_names" in str(err.value)


def test_id2label_that_disagrees_with_the_head_size(tmp_path) -> None:
    folder = _saved(tmp_path, labels=("condition", "constraint", "notice"))
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = dict(enumerate(LABELS))
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as err:
        modeling.load_classifier(folder, LABELS)
    assert str(err.value).startswith(str(folder))
    assert "\n" not in str(err.value)


def test_teacher_stage_records_the_mapping_and_fails_in_one_line(tiny_world, write_params,
                                                                 capsys) -> None:
    from stages import teacher

    shuffled = ("notice", "condition", "process", "constraint")
    folder = tiny_world["root"] / "shuffled"
    tiny_classifier(len(tiny_tokenizer()), labels=shuffled).save_pretrained(str(folder))
    args = ["--tokenize", str(tiny_world["tokenize"]),
            "--out", str(tiny_world["root"] / "t"), "--metrics", str(tiny_world["root"] / "t.json")]
    good = write_params(teacher={"model": str(folder), "mode": "given"},
                        tokenize={"max_length": 32})
    metrics = teacher.main(["--params", str(good), *args])
    assert {k: v for k, v in metrics.items() if k.startswith("label_map.")} == {
        "label_map.condition": 1, "label_map.constraint": 3, "label_map.notice": 0,
        "label_map.process": 2}
    saved = json.loads((tiny_world["root"] / "t" / "config.json").read_text())
    assert list(saved["id2label"].values()) == list(LABELS)

    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "notice", "1": "condition", "2": "process", "5": "constraint"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        teacher.main(["--params", str(good), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {folder / 'config.json'}: id2label has ids")
