"""runs.baseline_check: each label weighting of the baseline fitted alone, beside the one the
stage's grid keeps."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml
from conftest import LABELS, default_params, tiny_tokenizer, write_tokenized_splits

from pocketbert.core import evaluation, params
from pocketbert.data import tokenization
from pocketbert.training import baseline
from runs import baseline_check


@pytest.mark.parametrize("order", [["none", "balanced"], ["balanced", "none"]])
def test_check_keeps_what_the_stage_keeps_and_scores_each_weighting_alone(tmp_path, capsys,
                                                                          order) -> None:
    written = tmp_path / "written"
    write_tokenized_splits(written, tiny_tokenizer())
    data = default_params()
    data["baseline"].update(c_values=[0.1, 1.0], class_weights=order)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    results = baseline_check.main(["--tokenize", str(written), "--params", str(params_file),
                                   "--out", str(tmp_path / "out.json")])
    r = results[str(written)]
    settings = params.load(params_file, "baseline")
    loaded = tokenization.load(written)
    train = (loaded["train"]["text"], loaded["train"]["label"])
    validation = (loaded["validation"]["text"], loaded["validation"]["label"])
    _, grid = baseline.fit(train, validation, len(LABELS), settings)
    assert r["kept"] == grid["class_weight"]  # the same choice, tie rule included
    scores = {w: v["validation_macro_f1"] for w, v in r["weightings"].items()}
    # the tiny splits are balanced and separable: both weightings score 1.0, a tie, and the
    # first listed is kept
    assert set(scores.values()) == {1.0} and r["kept"] == order[0]
    gold = np.asarray(loaded["test"]["label"])
    predictions = []
    for weighting in order:
        alone = dataclasses.replace(settings, class_weights=(weighting,))
        model, info = baseline.fit(train, validation, len(LABELS), alone)
        pred = baseline.probabilities(model, loaded["test"]["text"], len(LABELS)).argmax(1)
        predictions.append(pred)
        assert r["weightings"][weighting] == {
            "c": info["c"], "validation_macro_f1": info["validation.macro_f1"],
            "test_macro_f1": evaluation.macro_f1(gold, pred, len(LABELS))}
    assert r["same_test_labels"] == bool((predictions[0] == predictions[1]).all())
    assert json.loads((tmp_path / "out.json").read_text())["results"] == results
    out = capsys.readouterr()
    assert f"| `{written}` | {r['kept']} (" in out.out and "keeps" in out.err


def test_a_folder_without_tokenized_data_is_one_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        baseline_check.main(["--tokenize", str(tmp_path / "nowhere")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'nowhere'}: no tokenized data; run `dvc repro tokenize` there, or "
        "pass the written folder of a tokenize stage")
