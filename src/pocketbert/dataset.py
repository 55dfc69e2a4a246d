"""Labelled sentences: loading the CSV format, the label list, and the stratified split.

The CSV format is the one the project started from: a ``text`` column, a ``label`` column and an
optional ``label_id`` (or ``label id``) column. Rows whose label id is -1 or whose label is empty
are dropped and counted; anything else that cannot be used is a DataError naming the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pocketbert.artifacts import atomic_path, read_json, write_json
from pocketbert.errors import DataError

SPLITS = ("train", "validation", "test")
LABEL_ID_COLUMNS = ("label_id", "label id")


@dataclass
class Example:
    text: str
    label: str
    line: int
    "line of the source file the row started on (header = line 1)"
    augmentation: str = "none"
    "none for a written row, else the technique that made this variant of it"


@dataclass
class LoadReport:
    examples: list[Example] = field(default_factory=list)
    dropped_label_id_minus_one: int = 0
    dropped_missing_label: int = 0


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # utf-8-sig reports offsets past the byte-order mark it stripped
        start = exc.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        line = raw[:start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} has bytes that are not UTF-8 (byte {start}: "
            f"{raw[start:start + 1]!r}); re-save the file as UTF-8"
        ) from exc


def _is_missing(value: str | None) -> bool:
    # pandas writes a missing cell as an empty string or "NaN"; treat both as missing
    return value is None or value.strip() == "" or value.strip().lower() in {"nan", "null"}


def load_csv(path: str | Path, labels: tuple[str, ...]) -> LoadReport:
    """Read a labelled CSV; raise DataError for anything unusable, naming its line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; set split.csv in params.yaml to your CSV")
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path}: file is empty; it needs a header row 'text,label' and data rows")
    # csv.reader, not DictReader: DictReader skips blank lines silently, which would shift the
    # line numbers that error messages and Example.line report
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in next(reader, [])]
    for needed in ("text", "label"):
        if needed not in columns:
            raise DataError(
                f"{path}: no '{needed}' column (header is {columns}); the CSV needs columns "
                "'text' and 'label' (optional 'label_id' or 'label id')"
            )
    id_column = next((c for c in LABEL_ID_COLUMNS if c in columns), None)
    report = LoadReport()
    first_seen: dict[str, int] = {}
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines; name the row's first line
        cells = next(reader, None)
        if cells is None:
            break
        if not cells:  # a blank line
            continue
        if len(cells) > len(columns):
            raise DataError(f"{path}: line {line} has more cells than the header; quote texts "
                            "that contain commas")
        row: dict[str, str | None] = dict.fromkeys(columns)
        row.update(zip(columns, cells, strict=False))
        if id_column and not _is_missing(row[id_column]):
            try:
                label_id = int(float(row[id_column]))
            except (ValueError, OverflowError):  # OverflowError: 'inf'
                raise DataError(f"{path}: line {line}, column '{id_column}': "
                                f"{row[id_column]!r} is not an integer") from None
            if label_id == -1:
                report.dropped_label_id_minus_one += 1
                continue
        if _is_missing(row["label"]):
            report.dropped_missing_label += 1
            continue
        label = row["label"].strip()
        if label not in labels:
            raise DataError(
                f"{path}: line {line}, column 'label': {label!r} is not one of {list(labels)}; "
                "fix the row, or add the label to split.labels in params.yaml"
            )
        if _is_missing(row["text"]):
            raise DataError(f"{path}: line {line}, column 'text' is empty; "
                            "write the sentence or delete the row")
        sentence = " ".join(row["text"].split())
        key = sentence.casefold()
        if key in first_seen:
            raise DataError(
                f"{path}: line {line} repeats the text of line {first_seen[key]} "
                f"({sentence[:60]!r}); delete one of them (duplicates leak between splits)"
            )
        first_seen[key] = line
        report.examples.append(Example(sentence, label, line))
    if not report.examples:
        raise DataError(f"{path}: no usable rows (every row was dropped or the file has only "
                        "a header)")
    return report


def stratified_split(
    examples: list[Example], labels: tuple[str, ...], validation_fraction: float,
    test_fraction: float, seed: int, source: str = "data",
) -> dict[str, list[Example]]:
    """Seeded per-class shuffle, then test / validation / train cuts; every class in every split."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {label: [] for label in labels}
    for ex in examples:
        by_label[ex.label].append(ex)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for label, rows in by_label.items():
        n = len(rows)
        n_test, n_val = _cut_sizes(n, test_fraction, validation_fraction)
        if n - n_test - n_val < 1:
            need = next(m for m in range(3, 10_000)
                        if m - sum(_cut_sizes(m, test_fraction, validation_fraction)) >= 1)
            raise DataError(
                f"{source}: label {label!r} has {n} rows, too few to stratify into train, "
                f"validation and test; give it at least {need} rows, or remove the label "
                "from split.labels in params.yaml"
            )
        rows = rows[:]
        rng.shuffle(rows)
        out["test"] += rows[:n_test]
        out["validation"] += rows[n_test:n_test + n_val]
        out["train"] += rows[n_test + n_val:]
    for name in SPLITS:
        out[name].sort(key=lambda e: e.line)
    return out


def _cut_sizes(n: int, test_fraction: float, validation_fraction: float) -> tuple[int, int]:
    return max(1, round(n * test_fraction)), max(1, round(n * validation_fraction))


def write_examples(path: str | Path, rows: list[Example]) -> None:
    """Write rows as CSV (text, label, line, augmentation), atomically."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "line", "augmentation"])
        for ex in rows:
            writer.writerow([ex.text, ex.label, ex.line, ex.augmentation])


def read_examples(path: str | Path) -> list[Example]:
    """Read a CSV written by write_examples."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return [Example(r["text"], r["label"], int(r["line"]), r["augmentation"])
                for r in csv.DictReader(fh)]


def class_counts(rows: list[Example], labels: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(ex.label for ex in rows)
    return {label: counts.get(label, 0) for label in labels}


def write_labels(path: str | Path, labels: tuple[str, ...]) -> None:
    write_json(path, {"labels": list(labels)})


def read_labels(path: str | Path) -> tuple[str, ...]:
    return tuple(read_json(path)["labels"])
