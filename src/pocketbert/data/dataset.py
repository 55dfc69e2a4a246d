"""Labelled sentences: loading the CSV format, the label list, and the stratified split.

The CSV format is the one the project started from: a ``text`` column, a ``label`` column and an
optional ``label_id`` (or ``label id``) column. Rows whose label id is -1 or whose label is empty
are dropped and counted, and so are repeats of a text under the same label (the first row is
kept). Anything else that cannot be used is a DataError naming the file, the lines and the
fix: every bad row of a file is listed in one message (the first MAX_LISTED of each kind, and
a count of the rest), so one run shows all there is to fix.
The file is UTF-8 (a byte-order mark is allowed) and comma-, semicolon- or tab-separated: the
separator is the one under which the header names both 'text' and 'label' (spreadsheets save
CSV with ';' where ',' is the decimal mark, and "Unicode text" as tab-separated).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import random
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pocketbert.core.artifacts import atomic_path, read_json, write_json
from pocketbert.core.errors import DataError

SPLITS = ("train", "validation", "test")
LABEL_ID_COLUMNS = ("label_id", "label id")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
"accepted column separators, most common first"
# UTF-32 first: its little-endian mark starts with UTF-16's (FF FE)
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)
CONFLICTS = ("stop", "drop", "majority")
"what load_csv does with a text under more than one label (params: split.conflicts)"
MAX_LISTED = 20
"bad rows named in one error message, per kind; the rest are counted"


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
    """What load_csv kept and what it dropped, by reason."""

    examples: list[Example] = field(default_factory=list)
    "rows kept, in file order"
    labels: tuple[str, ...] = ()
    "the label list: the one given, or the labels of the kept rows, sorted"
    labels_from_csv: bool = False
    "True when no label list was given and ``labels`` comes from the file"
    dropped_label_id_minus_one: int = 0
    dropped_missing_label: int = 0
    duplicates_dropped: int = 0
    "rows repeating an earlier row's text (text_key) under the same label"
    conflicting_texts: int = 0
    "texts found under more than one label (conflicts drop or majority)"
    conflict_rows_dropped: int = 0
    "rows of those texts that were not kept (all of them with drop or a majority tie)"
    conflict_ties_dropped: int = 0
    "texts that conflicts majority dropped because two or more labels tie"

    @property
    def rows_read(self) -> int:
        """Every data row of the file that reached a decision: kept or dropped."""
        return (len(self.examples) + self.dropped_label_id_minus_one
                + self.dropped_missing_label + self.duplicates_dropped
                + self.conflict_rows_dropped)


def text_key(text: str) -> str:
    """What two texts must share to count as the same text: the loader's text (whitespace
    runs collapsed to one space, words without a visible character removed), case-folded.

    The packaged backbone is uncased, so texts that differ only in case or spacing reach it as
    the same token ids, and for any model they are the same sentence: as two rows they could
    sit on both sides of the split."""
    return text.casefold()


def same_file(path: str | Path, other: str | Path) -> bool:
    """Whether two paths name the same file, however they are spelt; relative paths are taken
    from the working directory (every stage runs from the repository root)."""
    return Path(path).resolve() == Path(other).resolve()


def _listed(items: list[str], sep: str = ", ") -> str:
    """The first MAX_LISTED items joined by ``sep``, then how many more there are."""
    more = len(items) - MAX_LISTED
    return sep.join(items[:MAX_LISTED]) + (f"{sep}and {more} more" if more > 0 else "")


class _Problems:
    """The bad rows of one file, collected by kind and raised together as one DataError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._kinds: dict[str, tuple[str, str, str, list[tuple[str, str]]]] = {}

    def add(self, many: str, one: str, item: str, fix: str, fix_many: str | None = None,
            sep: str = ", ") -> None:
        """Record one bad row. Rows with the same ``many`` (a phrase in which ``{n}`` stands
        for their number, e.g. "{n} rows have an empty column 'text'") are listed together,
        in the order added: ``one`` is the whole sentence used when a row is the only one of
        its kind, ``item`` its entry in the list (joined by ``sep``), ``fix`` what to do
        (``fix_many`` when several rows need it)."""
        kind = self._kinds.setdefault(many, (fix, fix_many or fix, sep, []))
        kind[3].append((one, item))

    def raise_if_any(self) -> None:
        """Raise one DataError naming every recorded row (MAX_LISTED per kind), if any."""
        parts = []
        for many, (fix, fix_many, sep, found) in self._kinds.items():
            if len(found) == 1:
                parts.append(f"{found[0][0]}; {fix}")
            else:
                parts.append(f"{many.replace('{n}', str(len(found)))}: "
                             f"{_listed([item for _, item in found], sep)}; {fix_many}")
        if parts:
            raise DataError(f"{self.path}: " + ". Also, ".join(parts))


def _decode(path: Path, raw: bytes) -> str:
    """The file's text; DataError naming UTF-16/UTF-32 (by byte-order mark, or by the NUL bytes
    every ASCII character carries in them) or each line with bytes that are not UTF-8 (the
    first bad byte of each, MAX_LISTED lines)."""
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
    except UnicodeDecodeError:
        pass
    # name every line with such bytes: a newline byte never sits inside a UTF-8 character,
    # so each line decodes on its own (the byte-order mark is valid UTF-8 on line 1)
    problems, offset = _Problems(path), 0
    for line, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            start = offset + exc.start
            where = f"byte {start}: {raw[start:start + 1]!r}"
            problems.add("{n} lines have bytes that are not UTF-8",
                         f"line {line} has bytes that are not UTF-8 ({where})",
                         f"line {line} ({where})", "re-save the file as UTF-8")
        offset += len(chunk) + 1
    problems.raise_if_any()
    raise AssertionError("utf-8-sig failed on bytes that decode line by line")  # unreachable


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


def _rows(path: Path, needed: tuple[str, ...], fix: str,
          problems: _Problems) -> Iterator[tuple[int, dict]]:
    """(line, {column: cell or None}) for each usable non-blank data row of the CSV at ``path``.

    ``line`` is the file line the row starts on (header = line 1). Raises DataError for an
    empty file, bytes that are not UTF-8 (_decode) and a header without the ``needed`` columns
    (``fix`` says what the CSV needs); a row with more cells than the header is recorded in
    ``problems`` and skipped."""
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
            problems.add("{n} lines have more cells than the header",
                         f"line {line} has more cells than the header", f"line {line}",
                         f"quote texts that contain {DELIMITERS[delimiter]}s")
            continue
        row: dict[str, str | None] = dict.fromkeys(columns)
        row.update(zip(columns, cells, strict=False))
        yield line, row


def _sentence(problems: _Problems, line: int, cell: str | None) -> str | None:
    """The text cell with whitespace collapsed; None, with the row recorded in ``problems``,
    when it is empty or empty after normalisation (blank_reason)."""
    fix, fix_many = "write the sentence or delete the row", "write the sentences or delete the rows"
    if _is_missing(cell):
        problems.add("{n} rows have an empty column 'text'", f"line {line}, column 'text' is "
                     "empty", f"line {line}", fix, fix_many)
        return None
    if blank := blank_reason(cell):
        problems.add("{n} rows have a column 'text' that is empty after normalisation (no "
                     "letter, digit, punctuation or symbol, so the model would see [CLS] [SEP] "
                     "alone)",
                     f"line {line}, column 'text' is empty after normalisation: it holds "
                     f"{blank} (no letter, digit, punctuation or symbol), so the model would see "
                     "[CLS] [SEP] alone", f"line {line} ({blank})", fix, fix_many)
        return None
    # words with nothing a tokenizer keeps ("\u200b" between two spaces) go, so that no
    # augmented variant (a word deleted) can be left with only such words
    return " ".join(w for w in cell.split() if blank_reason(w) is None)


def load_csv(path: str | Path, labels: tuple[str, ...] = (),
             conflicts: str = "stop") -> LoadReport:
    """Read a labelled CSV (UTF-8; comma-, semicolon- or tab-separated) into a LoadReport.

    ``labels``: the allowed label names; empty: every label of the file, sorted by name
    (``LoadReport.labels``). Rows with label id -1 or an empty label are dropped and counted;
    a row repeating an earlier row's text (text_key) under the same label is dropped and
    counted (the first is kept); a text under more than one label follows ``conflicts``
    (CONFLICTS): stop raises, drop removes every row of it, majority keeps its first row with
    the most frequent label and drops the text when labels tie.

    Raises DataError naming the file, every bad line (MAX_LISTED per kind, the rest counted)
    and the fix, for: a text that is empty or empty after normalisation (blank_reason), a label
    not in ``labels``, a label id that is not an integer, a row with more cells than the
    header, a conflict with ``conflicts`` stop; and, for the whole file: missing, empty, not
    UTF-8 (every such line), no 'text' or 'label' column, no usable row, one label only.
    """
    if conflicts not in CONFLICTS:
        raise ValueError(f"conflicts must be one of {CONFLICTS}, got {conflicts!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; set split.csv in params.yaml to your CSV")
    problems = _Problems(path)
    rows = _rows(path, ("text", "label"),
                 "columns 'text' and 'label' (optional 'label_id' or 'label id')", problems)
    report = LoadReport()
    usable: list[Example] = []
    unknown: list[tuple[int, str]] = []
    for line, row in rows:
        id_column = next((c for c in LABEL_ID_COLUMNS if c in row), None)
        if id_column and not _is_missing(row[id_column]):
            try:
                label_id = int(float(row[id_column]))
            except (ValueError, OverflowError):  # OverflowError: 'inf'
                problems.add(f"{{n}} rows have a column '{id_column}' that is not an integer",
                             f"line {line}, column '{id_column}': {row[id_column]!r} is not an "
                             "integer", f"line {line} {row[id_column]!r}",
                             "write the label's integer id, -1 to drop the row, or nothing")
                continue
            if label_id == -1:
                report.dropped_label_id_minus_one += 1
                continue
        if _is_missing(row["label"]):
            report.dropped_missing_label += 1
            continue
        label = row["label"].strip()
        sentence = _sentence(problems, line, row["text"])
        if labels and label not in labels:
            unknown.append((line, label))
        elif sentence is not None:
            usable.append(Example(sentence, label, line))
    if unknown:
        _unknown_labels(problems, unknown, labels)
    report.examples = _repeats(problems, usable, conflicts, report)
    problems.raise_if_any()
    if not report.examples:
        raise DataError(f"{path}: no usable rows (every row was dropped or the file has only "
                        "a header)")
    report.labels_from_csv = not labels
    report.labels = tuple(labels) or tuple(sorted({ex.label for ex in report.examples}))
    if len(report.labels) < 2:
        raise DataError(f"{path}: every usable row has the label {report.labels[0]!r}; a "
                        "classifier needs at least two labels: add rows of another label")
    return report


def _unknown_labels(problems: _Problems, unknown: list[tuple[int, str]],
                    labels: tuple[str, ...]) -> None:
    """Record rows whose label is not in ``labels``, with a count per such label."""
    counts = Counter(label for _, label in unknown)
    found = _listed([f"{label!r}: {n} row{'s' if n > 1 else ''}"
                     for label, n in counts.most_common()])
    for line, label in unknown:
        problems.add(f"{{n}} rows have a label (column 'label') that is not one of "
                     f"{list(labels)} ({found})",
                     f"line {line}, column 'label': {label!r} is not one of {list(labels)}",
                     f"line {line} {label!r}",
                     "fix the row, or add the label to split.labels in params.yaml",
                     "fix the rows, or add the labels to split.labels in params.yaml (in model "
                     "output order), or set split.labels to [] to take the labels from the CSV")


def _lines(numbers: list[int], shown: int = 5) -> str:
    """'line 4' or 'lines 4, 9, 12' (the first ``shown``, then an ellipsis)."""
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    more = ", ..." if len(numbers) > shown else ""
    return "lines " + ", ".join(map(str, numbers[:shown])) + more


def _repeats(problems: _Problems, rows: list[Example], conflicts: str,
             report: LoadReport) -> list[Example]:
    """``rows`` with repeated texts (text_key) resolved and counted in ``report``: one row per
    text under a single label; a text under several labels follows ``conflicts``."""
    by_text: dict[str, list[Example]] = {}
    for ex in rows:
        by_text.setdefault(text_key(ex.text), []).append(ex)
    kept: list[Example] = []
    for group in by_text.values():  # in order of each text's first row
        counts = Counter(ex.label for ex in group)
        if len(counts) == 1:
            kept.append(group[0])
            report.duplicates_dropped += len(group) - 1
            continue
        if conflicts == "stop":
            short = group[0].text if len(group[0].text) <= 60 else group[0].text[:57] + "..."
            per_label = ", ".join(
                f"{label!r} ({_lines([e.line for e in group if e.label == label])})"
                for label in counts)
            problems.add(
                "{n} texts appear under more than one label (texts compared ignoring case and "
                "runs of spaces)",
                f"the text of line {group[0].line} ({short!r}) appears under {len(counts)} "
                f"labels (compared ignoring case and runs of spaces): {per_label}",
                f"line {group[0].line} {short!r}: {per_label}",
                "correct the labels, or set split.conflicts in params.yaml to drop (remove "
                "every row of such a text) or majority (keep its most frequent label)", sep="; ")
            continue
        report.conflicting_texts += 1
        ranked = counts.most_common()
        if conflicts == "majority" and ranked[0][1] > ranked[1][1]:
            kept.append(next(ex for ex in group if ex.label == ranked[0][0]))
            report.conflict_rows_dropped += len(group) - 1
            continue
        if conflicts == "majority":
            report.conflict_ties_dropped += 1
        report.conflict_rows_dropped += len(group)
    kept.sort(key=lambda ex: ex.line)
    return kept


def stratified_split(
    examples: list[Example], labels: tuple[str, ...], validation_fraction: float,
    test_fraction: float, seed: int, source: str = "data", labels_from_csv: bool = False,
) -> dict[str, list[Example]]:
    """Seeded per-class shuffle, then test / validation / train cuts; every class in every split.

    Returns {split name: examples in file order}. Raises DataError naming every label with too
    few rows for a row in each split (``source`` names the data; ``labels_from_csv`` words
    the fix for a label list taken from the file rather than split.labels)."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {label: [] for label in labels}
    for ex in examples:
        by_label[ex.label].append(ex)
    small = [(label, len(rows)) for label, rows in by_label.items()
             if len(rows) - sum(_cut_sizes(len(rows), test_fraction, validation_fraction)) < 1]
    if small:
        need = next(m for m in range(3, 10_000)
                    if m - sum(_cut_sizes(m, test_fraction, validation_fraction)) >= 1)
        if labels_from_csv:
            fix = ("or delete {its} rows (split.labels is empty, so every label of the CSV is "
                   "used)")
        else:
            fix = "or remove {the} from split.labels in params.yaml"
        if len(small) == 1:
            label, n = small[0]
            raise DataError(
                f"{source}: label {label!r} has {n} row{'' if n == 1 else 's'}, too few to "
                f"stratify into train, validation and test; give it at least {need} rows, "
                + fix.format(its="its", the="the label")
            )
        named = _listed([f"{label!r} has {n} row{'' if n == 1 else 's'}" for label, n in small])
        raise DataError(
            f"{source}: {len(small)} labels have too few rows to stratify into train, "
            f"validation and test: {named}; give each at least {need} rows, "
            + fix.format(its="their", the="those labels")
        )
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for rows in by_label.values():
        n = len(rows)
        n_test, n_val = _cut_sizes(n, test_fraction, validation_fraction)
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
    """{label: number of ``rows`` with it} for every label of ``labels``, in that order."""
    counts = Counter(ex.label for ex in rows)
    return {label: counts.get(label, 0) for label in labels}


def write_labels(path: str | Path, labels: tuple[str, ...]) -> None:
    """Write labels.json: {"labels": [name, ...]} in model output order."""
    write_json(path, {"labels": list(labels)})


def read_labels(path: str | Path) -> tuple[str, ...]:
    """The label names of a labels.json written by write_labels, in model output order."""
    return tuple(read_json(path)["labels"])


def load_unlabelled_csv(path: str | Path, exclude: set[str] = frozenset()) -> tuple[list[str], int]:
    """Texts of an unlabelled transfer CSV (a ``text`` column; other columns are ignored), in
    file order, and how many were skipped because they repeat a text of ``exclude``.

    Bad rows follow load_csv's rules and raise one DataError naming every bad line: not
    UTF-8, no header or no 'text' column, more cells than the header, a text that is empty or
    empty after normalisation, a text repeated within the file. Blank lines are skipped; the
    file may be comma-, semicolon- or tab-separated. ``exclude`` holds text_key values
    (casefolded, whitespace-joined texts: the labelled splits): such rows are skipped and
    counted, so no validation or test sentence reaches training through the teacher's labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; set soft_label.unlabelled_csv in params.yaml "
                        "to your CSV of unlabelled texts, or soft_label.use_unlabelled: false")
    texts: list[str] = []
    first_seen: dict[str, int] = {}
    skipped = 0
    problems = _Problems(path)
    for line, row in _rows(path, ("text",), "a header row with a 'text' column", problems):
        sentence = _sentence(problems, line, row["text"])
        if sentence is None:
            continue
        key = text_key(sentence)
        if key in first_seen:
            problems.add("{n} rows repeat an earlier text",
                         f"line {line} repeats the text of line {first_seen[key]} "
                         f"({sentence[:60]!r})", f"line {line} (of line {first_seen[key]})",
                         "delete one of them", "delete the repeats")
            continue
        first_seen[key] = line
        if key in exclude:
            skipped += 1
            continue
        texts.append(sentence)
    problems.raise_if_any()
    if not texts:
        raise DataError(f"{path}: no usable rows (the file has only a header, or every text is "
                        "also a labelled sentence)")
    return texts, skipped


def held_out_by_text(texts: list[str], share: float) -> list[bool]:
    """Which of ``texts`` [n] fall in a held-out ``share`` (0 to 1): those whose SHA-256 of
    text_key, its first 8 bytes read as a fraction of 2**64, is below ``share``.

    A text's side depends on the text alone, not on its row, the file's order or the other
    rows: adding texts to the file moves none of the others, and about ``share`` of any set of
    distinct texts falls in it (the hash's bytes are uniform)."""
    limit = share * 2**64
    return [int.from_bytes(hashlib.sha256(text_key(t).encode("utf-8")).digest()[:8], "big")
            < limit for t in texts]
