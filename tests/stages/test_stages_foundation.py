"""split -> augment -> tokenize through their mains on a 40-row CSV written in the test."""

from __future__ import annotations

import json

import pytest

from pocketbert.core import params
from pocketbert.data import augmentation, dataset, tokenization, wordnet
from stages import augment, split, tokenize


def fake_synonyms(word: str) -> list[str]:
    return [f"{word.lower()}ish"]


@pytest.fixture
def params_reads(monkeypatch) -> list[str]:
    """Every full key a stage main reads through params.load / params.load_key."""
    seen: list[str] = []
    real_load, real_load_key = params.load, params.load_key

    def load(path, name):
        parsed = real_load(path, name)
        seen.extend(params.reads((name,)))
        return parsed

    def load_key(path, key):
        seen.append(key)
        return real_load_key(path, key)

    monkeypatch.setattr(params, "load", load)
    monkeypatch.setattr(params, "load_key", load_key)
    return seen


def test_split_augment_tokenize(tmp_path, small_csv, write_params, monkeypatch, params_reads):
    from datasets import load_from_disk

    # the synonym path runs as in the pipeline, on a fake WordNet (fast, no corpus needed)
    monkeypatch.setattr(wordnet, "load", lambda *a, **k: object())
    monkeypatch.setattr(augmentation, "wordnet_synonyms", lambda _reader: fake_synonyms)
    params_path = write_params(split={"csv": str(small_csv)},
                               augment={"factor": 2, "synonym_probability": 0.3,
                                        "deletion_probability": 0.2},
                               tokenize={"max_length": 32})
    d, m = tmp_path / "data", tmp_path / "metrics"
    common = ["--params", str(params_path)]

    def reads_of(run):
        params_reads.clear()
        result = run()
        return result, set(params_reads)

    m_split, read = reads_of(lambda: split.main(
        [*common, "--out", str(d / "split"), "--metrics", str(m / "split.json")]))
    assert read == params.reads(split.PARAMS)
    m_aug, read = reads_of(lambda: augment.main(
        [*common, "--train", str(d / "split" / "train.csv"), "--out", str(d / "augment"),
         "--metrics", str(m / "augment.json")]))
    assert read == params.reads(augment.PARAMS)
    m_tok, read = reads_of(lambda: tokenize.main(
        [*common, "--split", str(d / "split"), "--augment", str(d / "augment"),
         "--written", str(d / "tokenize"), "--augmented", str(d / "augmented"),
         "--metrics", str(m / "tokenize.json")]))
    assert read == params.reads(tokenize.PARAMS)

    # every output and metrics file exists, and the metrics files hold what main returned
    for name, returned in (("split", m_split), ("augment", m_aug), ("tokenize", m_tok)):
        assert json.loads((m / f"{name}.json").read_text()) == returned
    assert sorted(p.name for p in (d / "split").iterdir()) == [
        "labels.json", "test.csv", "train.csv", "validation.csv"]
    assert [p.name for p in (d / "augment").iterdir()] == ["train.csv"]
    assert sorted(p.name for p in (d / "tokenize").iterdir()) == [
        "dataset", "labels.json", "max_length.json", "tokenizer"]
    assert not [p for p in tmp_path.rglob(".*")]  # no temp folders left anywhere

    # row counts line up from stage to stage
    assert m_split["rows_read"] == 40
    assert (m_split["train.rows"], m_split["validation.rows"], m_split["test.rows"]) == (24, 8, 8)
    assert m_aug["source_rows"] == m_split["train.rows"]
    assert m_aug["added_rows"] == m_aug["added.synonym"] + m_aug["added.deletion"] > 24
    assert m_aug["total_rows"] == 24 + m_aug["added_rows"]
    assert m_aug["added_rows"] + m_aug["skipped_variants"] == 2 * 24
    assert m_tok["train.rows"] == m_aug["source_rows"]
    assert m_tok["augmented.rows"] == m_aug["added_rows"]
    assert (m_tok["validation.rows"], m_tok["test.rows"]) == (8, 8)

    data = tokenization.load(d / "tokenize", d / "augmented")
    assert load_from_disk(str(d / "tokenize" / "dataset"))["train"]["text"] == [
        r.text for r in dataset.read_examples(d / "augment" / "train.csv")
        if r.augmentation == "none"]  # the teacher's train split: written rows only
    labels = dataset.read_labels(d / "tokenize" / "labels.json")
    assert labels == params.LABELS == dataset.read_labels(d / "split" / "labels.json")
    for name in ("validation", "test"):  # held-out splits arrive untouched
        rows = dataset.read_examples(d / "split" / f"{name}.csv")
        assert data[name]["text"] == [r.text for r in rows]
        assert data[name]["label"] == [labels.index(r.label) for r in rows]
    augmented = dataset.read_examples(d / "augment" / "train.csv")
    assert data["train"]["text"] == [r.text for r in augmented]
    held_out_lines = {r.line for n in ("validation", "test")
                      for r in dataset.read_examples(d / "split" / f"{n}.csv")}
    assert not {r.line for r in augmented} & held_out_lines
    assert any("ish" in t for t in data["train"]["text"])  # the synonym path ran
    assert all(len(ids) == n for ids, n in zip(data["train"]["input_ids"],
                                               data["train"]["full_length"], strict=True))
    assert m_tok["train.truncated"] == 0


def test_stages_never_write_outside_the_given_paths(tmp_path, small_csv, write_params,
                                                    monkeypatch):
    """Run from an empty working folder: the mains create nothing but --out and --metrics."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    params_path = write_params(split={"csv": str(small_csv)},
                               augment={"synonym_probability": 0.0})
    split.main(["--params", str(params_path), "--out", str(tmp_path / "s"),
                "--metrics", str(tmp_path / "s.json")])
    augment.main(["--params", str(params_path), "--train", str(tmp_path / "s" / "train.csv"),
                  "--out", str(tmp_path / "a"), "--metrics", str(tmp_path / "a.json")])
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a", "a.json", "cwd", "params.yaml", "raw", "s", "s.json"]
