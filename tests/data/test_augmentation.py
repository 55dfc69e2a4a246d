"""Augmentation (synonym replacement, random deletion), the augment stage, and offline WordNet."""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pocketbert.core import params, stage
from pocketbert.core.errors import ParamsError
from pocketbert.data import augmentation, dataset, wordnet
from stages import augment

KEEP = frozenset(params.CUE_WORDS)
# Written out here, independent of augmentation.NUMBER_WORDS: every one must survive.
_NUMBER_TEXT = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand million billion dozen half once twice first second third fourth "
    "fifth tenth"
)
NUMBER_WORDS = _NUMBER_TEXT.split()
DIGIT_TOKENS = ("5", "10kg", "3rd", "2-3", "24/7", "90%", "v2", "1,000", "#4", "(7)")
_CONTENT_TEXT = (
    "valve pressure boiler tenant landlord invoice payment kitchen window garden battery "
    "charger ticket luggage passenger cable router folder report manager deadline filter "
    "customer review engine bracket clean replace check open close inspect tighten remove "
    "broken heavy quiet yellow slowly carefully"
)
CONTENT_WORDS = _CONTENT_TEXT.split()
PUNCT = ("", "", "", ",", ".", ";", ":", "!", "?")


def fake_synonyms(word: str) -> list[str]:
    """Always offers replacements (never a cue word, number or digit)."""
    return [f"zz{word.lower()}", f"qq{word.lower()}"]


def _core(token: str) -> str:
    return augmentation._split(token)[1].lower()


def _protected(token: str) -> bool:
    core = _core(token)
    return core in KEEP or core in NUMBER_WORDS or any(ch.isdigit() for ch in token)


def _random_sentence(rng: random.Random) -> str:
    pools = (CONTENT_WORDS, CONTENT_WORDS, sorted(KEEP), NUMBER_WORDS, DIGIT_TOKENS)
    words = []
    for _ in range(rng.randint(1, 14)):
        word = rng.choice(rng.choice(pools))
        if rng.random() < 0.2:
            word = word.capitalize()
        words.append(word + rng.choice(PUNCT))
    return " ".join(words)


def _augment(text: str, seed: int = 13, factor: int = 3, synonym_probability: float = 0.5,
             deletion_probability: float = 0.5, stats=None) -> list[tuple[str, str]]:
    return augmentation.augment_text(text, factor, seed, synonym_probability,
                                     deletion_probability, fake_synonyms, KEEP, stats)


# ---- the library ---------------------------------------------------------------------------------

def test_cue_words_numbers_and_digits_are_never_touched():
    rng = random.Random(0)
    checked_variants = 0
    for _ in range(400):
        text = _random_sentence(rng)
        for p_syn, p_del in ((0.95, 0.0), (0.0, 0.95), (0.6, 0.6)):
            for variant, technique in _augment(text, seed=rng.randrange(10**6),
                                               synonym_probability=p_syn,
                                               deletion_probability=p_del):
                # the protected tokens, punctuation included, appear unchanged and in order
                assert [t for t in variant.split() if _protected(t)] == \
                    [t for t in text.split() if _protected(t)], (text, variant, technique)
                checked_variants += 1
    assert checked_variants > 1000  # the generator really produced variants to check


@pytest.mark.parametrize("word", NUMBER_WORDS + [w.capitalize() for w in NUMBER_WORDS[:5]])
def test_each_number_word_survives(word):
    text = f"Keep {word} spare cables ready."
    variants = _augment(text, factor=5, synonym_probability=0.99, deletion_probability=0.99)
    assert variants
    for variant, _ in variants:
        assert word in variant.split()


def test_variants_are_new_distinct_and_not_empty():
    rng = random.Random(1)
    for _ in range(300):
        text = _random_sentence(rng)
        variants = [v for v, _ in _augment(text, seed=rng.randrange(10**6), factor=4)]
        assert all(v.strip() for v in variants)
        assert text not in variants
        assert len(set(variants)) == len(variants)
        assert len(variants) <= 4


def test_single_word_is_replaced_not_deleted():
    stats = augmentation.AugmentStats()
    variants = _augment("Replace.", factor=2, synonym_probability=0.9,
                        deletion_probability=0.9, stats=stats)
    assert sorted(v for v, _ in variants) == ["Qqreplace.", "Zzreplace."]  # case kept
    assert {t for _, t in variants} == {"synonym"}
    assert stats.by_technique == Counter(synonym=2)
    assert stats.words_changed == 2


def test_nothing_to_change_gives_no_variant_and_counts_it():
    stats = augmentation.AugmentStats()
    assert _augment("If not, never 3; twice.", factor=3, stats=stats) == []
    assert stats.skipped_variants == 3
    assert stats.words_changed == 0


def test_stopwords_are_not_replaced():
    stats = augmentation.AugmentStats()
    variants = _augment("the cat and the dog", factor=5, synonym_probability=0.99,
                        deletion_probability=0.0, stats=stats)
    for variant, _ in variants:
        words = variant.split()
        assert words[0] == "the" and words[2] == "and" and words[3] == "the"


def test_augment_text_is_deterministic_per_seed():
    rng = random.Random(2)
    texts = [_random_sentence(rng) for _ in range(60)]
    first = [_augment(t, seed=5) for t in texts]
    assert [_augment(t, seed=5) for t in texts] == first
    assert [_augment(t, seed=6) for t in texts] != first
    # a sentence's variants do not depend on the other sentences around it
    assert [_augment(t, seed=5) for t in reversed(texts)] == list(reversed(first))


# ---- the stage -----------------------------------------------------------------------------------

def _train_rows(n: int = 30) -> list[dataset.Example]:
    rng = random.Random(3)
    texts = {_random_sentence(rng) + " valve" for _ in range(n * 2)}
    return [dataset.Example(text, ("notice", "process")[i % 2], i + 2)
            for i, text in enumerate(sorted(texts)[:n])]


def _augment_params(**values) -> params.AugmentParams:
    return params.parse_section("augment", {"factor": 2, "synonym_probability": 0.3,
                                            "deletion_probability": 0.2, "seed": 13, **values})


def _run_stage(tmp_path: Path, train: Path, name: str, csv: str = params.EMBEDDED_CSV,
               **values) -> tuple[dict, Path]:
    out = tmp_path / name
    metrics = augment.run(stage.Params({"augment": _augment_params(**values),
                                        "split": {"csv": csv}}),
                          inputs={"train": train},
                          outputs={"out": out, "metrics": tmp_path / f"{name}.json"},
                          synonyms=fake_synonyms)
    return metrics, out


def _read_augmented(out: Path) -> list[dict[str, str]]:
    import csv

    with (out / "train.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_stage_is_deterministic_and_seeded(tmp_path):
    train = tmp_path / "split" / "train.csv"
    dataset.write_examples(train, _train_rows())
    m1, out1 = _run_stage(tmp_path, train, "a")
    m2, out2 = _run_stage(tmp_path, train, "b")
    m3, out3 = _run_stage(tmp_path, train, "c", seed=14)
    assert m1 == m2
    assert (out1 / "train.csv").read_bytes() == (out2 / "train.csv").read_bytes()
    assert (out1 / "train.csv").read_bytes() != (out3 / "train.csv").read_bytes()


def test_stage_output_and_metrics(tmp_path):
    rows = _train_rows()
    train = tmp_path / "split" / "train.csv"
    dataset.write_examples(train, rows)
    metrics, out = _run_stage(tmp_path, train, "augment", factor=3)

    assert [p.name for p in out.iterdir()] == ["train.csv"]
    written = _read_augmented(out)
    originals, added = written[:len(rows)], written[len(rows):]
    # the source rows come first, unchanged
    assert [(r["text"], r["label"], int(r["line"]), r["augmentation"]) for r in originals] == \
        [(e.text, e.label, e.line, "none") for e in rows]
    by_line = {e.line: e for e in rows}
    for r in added:
        source = by_line[int(r["line"])]
        assert r["label"] == source.label
        assert r["text"] != source.text and r["text"].strip()
        assert r["augmentation"] in ("synonym", "deletion")
    per_source = Counter(int(r["line"]) for r in added)
    assert max(per_source.values()) <= 3

    techniques = Counter(r["augmentation"] for r in added)
    assert metrics["source_rows"] == len(rows) == 30
    assert metrics["added_rows"] == len(added) > 30
    assert metrics["total_rows"] == len(written)
    assert metrics["added.synonym"] == techniques["synonym"] > 0
    assert metrics["added.deletion"] == techniques["deletion"] > 0
    assert metrics["skipped_variants"] == 3 * len(rows) - len(added)
    assert metrics["words_changed"] >= len(added)  # every variant changed at least one word
    assert metrics["words_changed_per_variant"] == pytest.approx(
        metrics["words_changed"] / len(added))
    assert dataset.read_examples(out / "train.csv")[:len(rows)] == rows


def test_keep_words_auto_protects_the_cue_words_of_the_embedded_csv_only(tmp_path):
    # every sentence is cue words and one content word: with the cue words protected, only
    # that word can change; without them, deletion removes cue words too
    rows = [dataset.Example(f"If not, never {word} must only", "condition", i + 2)
            for i, word in enumerate(CONTENT_WORDS)]
    train = tmp_path / "train.csv"
    dataset.write_examples(train, rows)
    cues = {"if", "not", "never", "must", "only"}

    def cue_words_kept(out: Path) -> bool:
        added = _read_augmented(out)[len(rows):]
        assert added
        return all(cues <= {_core(t) for t in r["text"].split()} for r in added)

    values = {"factor": 3, "synonym_probability": 0.0, "deletion_probability": 0.6}
    metrics, out = _run_stage(tmp_path, train, "embedded", **values)
    assert (metrics["keep_words"], metrics["keep_words_from"]) == (48, "auto: embedded data set")
    assert cue_words_kept(out)
    # the same path spelt differently is still the embedded data set
    metrics, _ = _run_stage(tmp_path, train, "spelt", csv="./data/raw/../raw/sentences.csv",
                            **values)
    assert metrics["keep_words"] == 48

    metrics, out = _run_stage(tmp_path, train, "mine", csv=str(tmp_path / "mine.csv"), **values)
    assert metrics["keep_words"] == 0
    assert metrics["keep_words_from"] == "auto: none, split.csv is not the embedded data set"
    assert not cue_words_kept(out)

    metrics, out = _run_stage(tmp_path, train, "listed", csv=str(tmp_path / "mine.csv"),
                              keep_words=sorted(w.upper() for w in cues), **values)
    assert (metrics["keep_words"], metrics["keep_words_from"]) == (5, "params")
    assert cue_words_kept(out)  # listed words are matched without regard to case


def test_keep_words_param_takes_a_list_or_auto():
    assert params.parse_section("augment", {}).keep_words == "auto"
    assert params.parse_section("augment", {"keep_words": []}).keep_words == ()
    assert params.parse_section("augment", {"keep_words": ["no"]}).keep_words == ("no",)
    for bad, message in ((5, "must be a list or 'auto', got 5"),
                         ("none", "must be a list or 'auto', got 'none'"),
                         (["if", 3], "'augment.keep_words[1]' must be a string, got 3")):
        with pytest.raises(ParamsError, match=re.escape(message)):
            params.parse_section("augment", {"keep_words": bad})


def test_stage_reads_only_the_train_split(tmp_path, small_csv, write_params, monkeypatch):
    from stages import split

    params_path = write_params(split={"csv": str(small_csv)},
                               augment={"synonym_probability": 0.0, "deletion_probability": 0.5})
    split_dir = tmp_path / "split"
    split.main(["--params", str(params_path), "--out", str(split_dir),
                "--metrics", str(tmp_path / "split.json")])
    before = {p.name: p.read_bytes() for p in split_dir.iterdir()}

    read: list[Path] = []
    real_read = dataset.read_examples
    monkeypatch.setattr(dataset, "read_examples", lambda path: read.append(Path(path))
                        or real_read(path))
    metrics = augment.main(["--params", str(params_path), "--train", str(split_dir / "train.csv"),
                            "--out", str(tmp_path / "augment"),
                            "--metrics", str(tmp_path / "augment.json")])
    assert read == [split_dir / "train.csv"]
    assert {p.name: p.read_bytes() for p in split_dir.iterdir()} == before  # untouched

    written = _read_augmented(tmp_path / "augment")
    train = dataset.read_examples(split_dir / "train.csv")
    held_out = {e.line for name in ("validation", "test")
                for e in dataset.read_examples(split_dir / f"{name}.csv")}
    assert {int(r["line"]) for r in written} == {e.line for e in train}
    assert not {int(r["line"]) for r in written} & held_out
    assert metrics["source_rows"] == len(train) == 24
    assert metrics["total_rows"] == len(written)
    assert metrics["added.synonym"] == 0  # synonym_probability 0: deletion only, no WordNet


def test_factor_zero_copies_the_train_split(tmp_path):
    rows = _train_rows(10)
    train = tmp_path / "train.csv"
    dataset.write_examples(train, rows)
    metrics = augment.run(stage.Params({"augment": _augment_params(factor=0),
                                        "split": {"csv": params.EMBEDDED_CSV}}),
                          inputs={"train": train},
                          outputs={"out": tmp_path / "out", "metrics": tmp_path / "m.json"})
    assert metrics["added_rows"] == 0 and metrics["total_rows"] == 10
    assert dataset.read_examples(tmp_path / "out" / "train.csv") == rows


def test_stage_rejects_bad_params(tmp_path, write_params, capsys):
    train = tmp_path / "train.csv"
    dataset.write_examples(train, _train_rows(5))
    params_path = write_params(augment={"factor": 2.5})
    with pytest.raises(SystemExit) as info:
        augment.main(["--params", str(params_path), "--train", str(train),
                      "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: {params_path}: 'augment.factor' must be an integer, got 2.5"  # the file read
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


# ---- WordNet -------------------------------------------------------------------------------------

def test_assemble_from_debian_on_a_fake_source(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for name in wordnet._FILES:
        (source / name).write_text(f"dummy {name}\n", encoding="utf-8")
    root = wordnet.assemble_from_debian(source, tmp_path / "nltk_data")
    corpus = root / "corpora" / "wordnet"
    lines = (corpus / "lexnames").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 45
    # the lexnames(5WN) layout nltk parses: index, name, syntactic category
    for i, line in enumerate(lines):
        index, name, category = line.split("\t")
        assert int(index) == i
        assert category == str({"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]])
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[44] == "44\tadj.ppl\t3"
    for name in wordnet._FILES:
        assert (corpus / name).read_text(encoding="utf-8") == f"dummy {name}\n"
    assert sorted(p.name for p in corpus.parent.iterdir()) == ["wordnet"]  # no temp folder left
    # a second call keeps the assembled corpus
    assert wordnet.assemble_from_debian(source, tmp_path / "nltk_data") == root


def test_assemble_from_debian_names_missing_files(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for name in wordnet._FILES:
        if name != "index.sense":
            (source / name).write_text("x", encoding="utf-8")
    with pytest.raises(wordnet.WordNetMissing, match=r"WordNet files missing: \['index.sense'\]"):
        wordnet.assemble_from_debian(source, tmp_path / "nltk_data")
    assert not (tmp_path / "nltk_data" / "corpora" / "wordnet").exists()


def test_load_without_any_wordnet_names_apt_get(tmp_path, monkeypatch):
    nltk = pytest.importorskip("nltk")

    def not_found(resource, *args, **kwargs):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", not_found)
    with pytest.raises(wordnet.WordNetMissing, match="apt-get install wordnet-base") as info:
        wordnet.load(debian_dir=tmp_path / "no-such-dir", cache=tmp_path / "cache")
    assert "nltk.download('wordnet')" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_real_wordnet_synonyms_keep_cue_words(tmp_path):
    try:
        reader = wordnet.load(cache=tmp_path / "nltk_data")
    except wordnet.WordNetMissing as exc:
        # `make setup` installs Debian's WordNet where it can (root and apt-get): there its
        # absence is a failure; elsewhere the user installs it (wordnet.py says how)
        if os.geteuid() == 0 and shutil.which("apt-get"):
            raise
        pytest.skip(f"WordNet is not installed and `make setup` cannot install it here: {exc}")
    synonyms = augmentation.wordnet_synonyms(reader)
    found = synonyms("finish")
    assert found and all(w.isascii() and "_" not in w and w.lower() != "finish" for w in found)
    assert found == sorted(found)
    assert synonyms("merged") == []  # inflected forms are left alone
    assert synonyms("Finish") == found

    text = "If the boiler pressure drops below fifteen bar, never open the relief valve."
    variants = augmentation.augment_text(text, 6, 13, 0.9, 0.3, synonyms, KEEP)
    assert variants
    for variant, _ in variants:
        assert [t for t in variant.split() if _protected(t)] == \
            ["If", "fifteen", "never"]
        assert variant != text
    assert augmentation.augment_text(text, 6, 13, 0.9, 0.3, synonyms, KEEP) == variants
