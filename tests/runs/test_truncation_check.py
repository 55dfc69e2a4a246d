"""runs.truncation_check: the texts cut where their first N tokens end, and the baseline fitted
on them beside the whole texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import LABELS, default_params, sentences, tiny_tokenizer, write_tokenized_splits

from pocketbert.core import evaluation, params
from pocketbert.data import tokenization
from pocketbert.training import baseline
from runs import truncation_check

LONG = " ".join(sentences("process", 6))


@pytest.mark.parametrize("max_length", [5, 12, 32])
def test_a_cut_text_gives_the_ids_the_model_reads(max_length: int) -> None:
    tokenizer = tiny_tokenizer()
    texts = [LONG, *sentences("notice", 4), "Kettle!  "]
    cut = truncation_check.cut_texts(tokenizer, texts, max_length)
    for text, short in zip(texts, cut, strict=True):
        assert text.startswith(short)
        assert (tokenizer(short, truncation=True, max_length=max_length)["input_ids"]
                == tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
    assert len(cut[0]) < len(LONG)  # the long text is cut at every length here
    assert cut[-1] == "Kettle!"  # a text that fits: whole, less its trailing spaces
    assert truncation_check.cut_texts(tokenizer, [], 8) == []


def test_check_fits_the_baseline_per_length_and_on_the_whole_texts(tmp_path, capsys) -> None:
    tokenizer = tiny_tokenizer()
    written = tmp_path / "written"
    write_tokenized_splits(written, tokenizer)
    tokenizer.save_pretrained(str(written / "tokenizer"))
    data = default_params()
    data["baseline"]["c_values"] = [1.0]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    rows = truncation_check.main(["--tokenize", str(written), "--params", str(params_file),
                                  "--lengths", "6,4", "--out", str(tmp_path / "out.json")])
    assert [r["length"] for r in rows] == [4, 6, "all"]
    assert rows[0]["test_truncated"] >= rows[1]["test_truncated"] >= rows[2]["test_truncated"]
    assert rows[0]["test_truncated"] == 1.0  # every test sentence is longer than 4 tokens
    # the whole-text row is the baseline stage's model
    loaded = tokenization.load(written)
    model, _ = baseline.fit((loaded["train"]["text"], loaded["train"]["label"]),
                            (loaded["validation"]["text"], loaded["validation"]["label"]),
                            len(LABELS), params.load(params_file, "baseline"))
    pred = baseline.probabilities(model, loaded["test"]["text"], len(LABELS)).argmax(1)
    assert rows[-1]["test_macro_f1"] == evaluation.macro_f1(
        np.asarray(loaded["test"]["label"]), pred, len(LABELS))
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == rows
    out = capsys.readouterr()
    assert "| tokens read | test texts cut |" in out.out and "length 4:" in out.err


def test_missing_data_and_bad_lengths_are_one_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        truncation_check.main(["--tokenize", str(tmp_path)])
    assert exc.value.code == 2
    assert "no tokenized data; run `dvc repro tokenize`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        truncation_check.main(["--lengths", "64,x"])
    assert "give whole numbers" in capsys.readouterr().err
