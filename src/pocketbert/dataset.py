"""Labelled sentences: loading the CSV format, the label list, and the stratified split.

The CSV format is the one the project started from: a ``text`` column, a ``label`` column and an
optional ``label_id`` (or ``label id``) column. Rows whose label id is -1 or whose label is empty
are dropped and counted; anything else that cannot be used is a DataError naming the line.
The file is UTF-8 (a byte-order mark is allowed) and comma-, semicolon- or tab-separated: the
separator is the one under which the header names both 'text' and 'label' (spreadsheets save
CSV with ';' where ',' is the decimal mark, and "Unicode text" as tab-separated).
"""

from __future__ import annotations

import codecs
import csv
import io
import random
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pocketbert.artifacts import atomic_path, read_json, write_json
from pocketbert.errors import DataError

SPLITS = ("train", "validation", "test")
LABEL_ID_COLUMNS = ("label_id", "label id")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
"accepted column separators, most common first"
# UTF-32 first: its little-endian mark starts with UTF-16's (FF FE)
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


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
    """The file's text; DataError naming UTF-16/UTF-32 (by byte-order mark, or by the NUL bytes
    every ASCII character carries in them) or the first byte that is not UTF-8."""
    resave = ("re-save it as UTF-8 (Excel: 'CSV UTF-8'; LibreOffice: character set 'Unicode "
              f"(UTF-8)'; or iconv -f {{}} -t UTF-8 {path.name} > utf8-{path.name})")
    for mark, encoding in BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            raise DataError(f"{path}: the file is {encoding} (it starts with a {encoding} "
                            f"byte-order mark), not UTF-8; " + resave.format(encoding))
    head = raw[:4096]
    # a UTF-8 CSV has next to no NUL bytes; UTF-16 has one per ASCII character, UTF-32 three
    if head.count(0) * 4 >= len(head) > 0:
        raise DataError(f"{path}: the file looks like UTF-16 or UTF-32 without a byte-order "
                        f"mark ({head.count(0)} of its first {len(head)} bytes are NUL), not "
                        "UTF-8; " + resave.format("UTF-16"))
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


# what to call a character that unicodedata.name has no name for (other categories: none)
_UNNAMED = defaultdict(str, {"Cc": "(control)", "Cs": "(surrogate)", "Co": "(private use)",
                             "Cn": "(unassigned)"})


def blank_reason(text: str) -> str | None:
    """None when ``text`` has a character a tokenizer keeps, else what the text holds instead.

    A character is kept when it is a letter, digit, punctuation mark or symbol (Unicode general
    categories L, N, P, S) other than U+FFFD, the replacement character. BERT's normaliser
    (tokenizers' BertNormalizer: clean_text, strip_accents) deletes every control, format
    (zero-width), private-use and unassigned character and U+FFFD, turns whitespace into
    separators, and an uncased model also strips combining marks; a text made only of those
    encodes to ``[CLS] [SEP]`` although ``str.strip()`` keeps it. Returns "empty" for
    whitespace, else e.g. "only U+200B ZERO WIDTH SPACE" (at most three characters named).
    """
    if any(unicodedata.category(c)[0] in "LNPS" and c != "\ufffd" for c in text):
        return None
    if not text.strip():
        return "empty"
    names = [f"U+{ord(c):04X} {unicodedata.name(c, '') or _UNNAMED[unicodedata.category(c)]}"
             for c in dict.fromkeys(text) if c not in " \t\n\r\x0b\x0c"]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return "only " + ", ".join(names[:3]) + more


def _delimiter(path: Path, text: str, needed: tuple[str, ...], fix: str) -> str:
    """The separator (DELIMITERS) under which the header row names every ``needed`` column;
    of several, the one that splits the header into the most columns, comma on a tie.

    Raises DataError when none does, naming the separator csv.Sniffer finds in the first lines
    (a file that names its columns differently still says how it is separated)."""
    fits = [d for d in DELIMITERS if set(needed) <= set(_header(text, d))]
    if fits:
        return max(fits, key=lambda d: len(_header(text, d)))  # max keeps the first on a tie
    try:
        sniffed = csv.Sniffer().sniff("\n".join(text.splitlines()[:50]),
                                      delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:  # one column, or no separator used consistently
        sniffed = ","
    columns = _header(text, sniffed)
    missing = next(c for c in needed if c not in columns)
    looks = "" if sniffed == "," else f", read as {DELIMITERS[sniffed]}-separated"
    raise DataError(f"{path}: no '{missing}' column (header is {columns}{looks}); the CSV needs "
                    f"{fix}, separated by commas, semicolons or tabs")


def _header(text: str, delimiter: str) -> list[str]:
    return [c.strip() for c in next(csv.reader(io.StringIO(text, newline=""),
                                               delimiter=delimiter), [])]


def _rows(path: Path, needed: tuple[str, ...], fix: str) -> Iterator[tuple[int, dict]]:
    """(line, {column: cell or None}) for each non-blank data row of the CSV at ``path``.

    ``line`` is the file line the row starts on (header = line 1). Raises DataError for an
    empty file, bytes that are not UTF-8 (_decode), a header without the ``needed`` columns
    (``fix`` says what the CSV needs) and a row with more cells than the header."""
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(f"{path}: file is empty; it needs a header row and data rows: {fix}")
    delimiter = _delimiter(path, text, needed, fix)
    # csv.reader, not DictReader: DictReader skips blank lines silently, which would shift the
    # line numbers that error messages and Example.line report
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [c.strip() for c in next(reader, [])]
    while True:
        line = reader.line_num + 1  # a quoted cell may span lines; name the row's first line
        cells = next(reader, None)
        if cells is None:
            return
        if not cells:  # a blank line
            continue
        if len(cells) > len(columns):
            raise DataError(f"{path}: line {line} has more cells than the header; quote texts "
                            f"that contain {DELIMITERS[delimiter]}s")
        row: dict[str, str | None] = dict.fromkeys(columns)
        row.update(zip(columns, cells, strict=False))
        yield line, row


def _sentence(path: Path, line: int, cell: str | None) -> str:
    """The text cell with whitespace collapsed; DataError when it is empty or empty after
    normalisation (blank_reason)."""
    if _is_missing(cell):
        raise DataError(f"{path}: line {line}, column 'text' is empty; "
                        "write the sentence or delete the row")
    if blank := blank_reason(cell):
        raise DataError(f"{path}: line {line}, column 'text' is empty after normalisation: "
                        f"it holds {blank} (no letter, digit, punctuation or symbol), so the "
                        "model would see [CLS] [SEP] alone; write the sentence or delete the row")
    # words with nothing a tokenizer keeps ("\u200b" between two spaces) go, so that no
    # augmented variant (a word deleted) can be left with only such words
    return " ".join(w for w in cell.split() if blank_reason(w) is None)


def load_csv(path: str | Path, labels: tuple[str, ...]) -> LoadReport:
    """Read a labelled CSV (UTF-8; comma-, semicolon- or tab-separated); raise DataError for
    anything unusable, naming its line: a text that is empty or empty after normalisation
    (blank_reason), a label not in ``labels``, a label id that is not an integer, a duplicate
    text (up to case and whitespace), a row with more cells than the header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; set split.csv in params.yaml to your CSV")
    rows = _rows(path, ("text", "label"),
                 "columns 'text' and 'label' (optional 'label_id' or 'label id')")
    report = LoadReport()
    first_seen: dict[str, int] = {}
    for line, row in rows:
        id_column = next((c for c in LABEL_ID_COLUMNS if c in row), None)
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
        sentence = _sentence(path, line, row["text"])
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


def load_unlabelled_csv(path: str | Path, exclude: set[str] = frozenset()) -> tuple[list[str], int]:
    """Texts of an unlabelled transfer CSV (a ``text`` column; other columns are ignored), in
    file order, and how many were skipped because they repeat a text of ``exclude``.

    Bad rows follow load_csv's rules and raise DataError naming the line: not UTF-8, no
    header or no 'text' column, more cells than the header, a text that is empty or empty after
    normalisation, a text repeated within the file. Blank lines are skipped; the file may be
    comma-, semicolon- or tab-separated. ``exclude`` holds casefolded, whitespace-joined
    texts (the labelled splits): such rows are skipped and counted, so no validation or test
    sentence reaches training through the teacher's labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; set soft_label.unlabelled_csv in params.yaml "
                        "to your CSV of unlabelled texts, or soft_label.use_unlabelled: false")
    texts: list[str] = []
    first_seen: dict[str, int] = {}
    skipped = 0
    for line, row in _rows(path, ("text",), "a header row with a 'text' column"):
        sentence = _sentence(path, line, row["text"])
        key = sentence.casefold()
        if key in first_seen:
            raise DataError(f"{path}: line {line} repeats the text of line {first_seen[key]} "
                            f"({sentence[:60]!r}); delete one of them")
        first_seen[key] = line
        if key in exclude:
            skipped += 1
            continue
        texts.append(sentence)
    if not texts:
        raise DataError(f"{path}: no usable rows (the file has only a header, or every text is "
                        "also a labelled sentence)")
    return texts, skipped
