"""The CSV loader (pocketbert.data.dataset.load_csv), the stratified split and the split stage."""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

from pocketbert.core import params
from pocketbert.core.errors import DataError, PocketbertError
from pocketbert.data import dataset
from stages import split

LABELS = ("condition", "constraint", "notice", "process")


def _run_split(tmp_path: Path, params_path: Path, capsys) -> tuple[int, str]:
    """Run the split stage expecting failure; return (exit code, the 'error:' line)."""
    out, metrics = tmp_path / "out" / "split", tmp_path / "metrics" / "split.json"
    with pytest.raises(SystemExit) as info:
        split.main(["--params", str(params_path), "--out", str(out), "--metrics", str(metrics)])
    err_lines = capsys.readouterr().err.strip().splitlines()
    # nothing left behind: no output folder, no metrics, no half-written temp folders
    assert not out.exists()
    assert not metrics.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert err_lines, "the stage printed nothing on stderr"
    assert err_lines[-1].startswith("error: "), err_lines[-1]
    return info.value.code, err_lines[-1]


# ---- each bad input: one case = how to build it + what the message must name -----------------

def _missing_file(tmp_path, make_csv, rows):
    return tmp_path / "raw" / "nowhere.csv", {}, ["nowhere.csv", "file not found", "split.csv"]


def _empty_file(tmp_path, make_csv, rows):
    path = tmp_path / "raw" / "empty.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return path, {}, ["empty.csv", "empty"]


def _whitespace_only_file(tmp_path, make_csv, rows):
    path = tmp_path / "raw" / "blank.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n \n\n", encoding="utf-8")
    return path, {}, ["blank.csv", "empty"]


def _no_text_column(tmp_path, make_csv, rows):
    renamed = [{"sentence": r["text"], "label": r["label"]} for r in rows]
    return (make_csv(renamed, columns=("sentence", "label")), {},
            ["sentences.csv", "no 'text' column", "sentence"])


def _no_label_column(tmp_path, make_csv, rows):
    renamed = [{"text": r["text"], "category": r["label"]} for r in rows]
    return (make_csv(renamed, columns=("text", "category")), {},
            ["sentences.csv", "no 'label' column", "category"])


def _unknown_label(tmp_path, make_csv, rows):
    rows[4]["label"] = "warning"  # data row 5 = line 6 (header is line 1)
    return make_csv(rows), {"labels": list(LABELS)}, [
        "sentences.csv", "line 6", "column 'label'", "'warning'", "split.labels"]


def _many_unknown_labels(tmp_path, make_csv, rows):
    # a user's CSV against the embedded set's label list: every row named once, 20 listed
    for i in range(25):
        rows[i]["label"] = ("sports", "world")[i % 2]  # lines 2..26
    return make_csv(rows), {"labels": list(LABELS)}, [
        "sentences.csv", "25 rows have a label (column 'label') that is not one of",
        "('sports': 13 rows, 'world': 12 rows): line 2 'sports', line 3 'world'",
        "line 21 'world', and 5 more;", "split.labels", "[] to take the labels from the CSV"]


def _empty_text(tmp_path, make_csv, rows):
    rows[2]["text"] = "   "  # line 4
    return make_csv(rows), {}, ["sentences.csv", "line 4", "column 'text'", "empty"]


def _nan_text(tmp_path, make_csv, rows):
    rows[7]["text"] = "NaN"  # line 9
    return make_csv(rows), {}, ["sentences.csv", "line 9", "column 'text'", "empty"]


def _non_utf8(tmp_path, make_csv, rows):
    path = make_csv(rows)
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"the", b"th\xe9", 1)  # Latin-1 'é' on line 6
    path.write_bytes(b"\n".join(lines))
    return path, {}, ["sentences.csv", "line 6", "not UTF-8", "b'\\xe9'"]


def _conflict(tmp_path, make_csv, rows):
    copy = dict(rows[3], label="notice")  # line 5 is 'process'; its copy becomes line 14
    rows.insert(12, copy)
    return make_csv(rows), {}, ["sentences.csv", "the text of line 5", "appears under 2 labels",
                                "'process' (line 5), 'notice' (line 14)", "split.conflicts",
                                "drop", "majority"]


def _conflict_differs_in_case_and_spaces(tmp_path, make_csv, rows):
    copy = dict(rows[0], label="notice")  # line 2 is 'condition'
    copy["text"] = "  " + copy["text"].upper().replace(" ", "   ") + " "
    rows.append(dict(rows[0]))  # line 42: a plain repeat of line 2 (same label)
    rows.append(copy)  # line 43: the same text up to case and whitespace, another label
    return make_csv(rows), {}, ["the text of line 2", "ignoring case and runs of spaces",
                                "'condition' (lines 2, 42), 'notice' (line 43)"]


def _many_conflicts(tmp_path, make_csv, rows):
    # 24 texts each copied under the next label: one message, 20 named, 4 counted
    for i in range(24):
        rows.append(dict(rows[i], label=LABELS[(LABELS.index(rows[i]["label"]) + 1) % 4]))
    return make_csv(rows), {}, [
        "sentences.csv", "24 texts appear under more than one label",
        "line 2 'If the boiler starts to rattle, switch it off at once.': 'condition' (line 2), "
        "'constraint' (line 42); line 3 ", "line 21 ", "; and 4 more", "split.conflicts"]


def _too_few_to_stratify(tmp_path, make_csv, rows):
    notice = [i for i, r in enumerate(rows) if r["label"] == "notice"]
    for i in reversed(notice[2:]):
        del rows[i]  # 2 notice rows left: one each for test and validation, none for train
    return make_csv(rows), {"labels": list(LABELS)}, [
        "sentences.csv", "'notice' has 2 rows", "too few", "at least 3", "split.labels"]


def _too_few_to_stratify_labels_from_csv(tmp_path, make_csv, rows):
    rows += [{"text": "Gates close at six.", "label": "schedule"},
             {"text": "Gates open at nine.", "label": "schedule"},
             {"text": "Is the pool heated?", "label": "question"}]
    return make_csv(rows), {}, [
        "sentences.csv", "2 labels have too few rows", "'question' has 1 row, 'schedule' has 2 "
        "rows", "give each at least 3 rows", "delete their rows", "split.labels is empty"]


def _one_label_in_the_csv(tmp_path, make_csv, rows):
    return (make_csv([r for r in rows if r["label"] == "notice"]), {},
            ["sentences.csv", "every usable row has the label 'notice'", "at least two labels"])


def _label_without_rows(tmp_path, make_csv, rows):
    return make_csv(rows), {"labels": [*LABELS, "question"]}, ["'question' has 0 rows"]


def _bad_label_id(tmp_path, make_csv, rows):
    rows[0]["label_id"] = "two"
    return make_csv(rows), {}, ["line 2", "column 'label_id'", "'two' is not an integer",
                                "-1 to drop the row"]


def _several_kinds_at_once(tmp_path, make_csv, rows):
    rows[0]["label_id"] = "two"  # line 2
    rows[3]["label_id"] = "x"  # line 5
    for i in (5, 8, 30):
        rows[i]["text"] = ""  # lines 7, 10, 32
    rows[11]["text"] = "\u200b"  # line 13
    rows[12]["label"] = "warning"  # line 14
    return make_csv(rows), {"labels": list(LABELS)}, [
        "sentences.csv: 2 rows have a column 'label_id' that is not an integer: line 2 'two', "
        "line 5 'x'; write the label's integer id",
        "Also, 3 rows have an empty column 'text': line 7, line 10, line 32; write the sentences "
        "or delete the rows",
        "Also, line 13, column 'text' is empty after normalisation: it holds only U+200B",
        "Also, line 14, column 'label': 'warning' is not one of"]


def _infinite_label_id(tmp_path, make_csv, rows):
    rows[1]["label_id"] = "inf"
    return make_csv(rows), {}, ["line 3", "column 'label_id'", "'inf' is not an integer"]


def _too_many_cells(tmp_path, make_csv, rows):
    path = make_csv(rows)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("Stop, then wait,notice,2\n")  # unquoted comma: line 42
    return path, {}, ["line 42", "more cells than the header"]


def _too_many_cells_on_several_lines(tmp_path, make_csv, rows):
    path = make_csv(rows)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(f"Stop, then wait {i},notice,2\n" for i in range(23)))  # lines 42-64
    return path, {}, ["sentences.csv: 23 lines have more cells than the header: line 42, "
                      "line 43", "line 61, and 3 more; quote texts that contain commas"]


def _non_utf8_on_several_lines(tmp_path, make_csv, rows):
    path = make_csv(rows)
    lines = path.read_bytes().split(b"\n")
    for i in (5, 9, 30):
        lines[i] = lines[i].replace(b"the", b"th\xe9", 1)  # lines 6, 10, 31
    path.write_bytes(b"\n".join(lines))
    return path, {}, ["sentences.csv: 3 lines have bytes that are not UTF-8: line 6 (byte ",
                      "line 10 (byte ", "line 31 (byte ", "b'\\xe9'", "re-save the file as UTF-8"]


def _embedded_transfer_texts_with_another_csv(tmp_path, make_csv, rows):
    # the committed transfer texts belong to the embedded sentences, not to this CSV
    return make_csv(rows), {"soft_label": {"use_unlabelled": True}}, [
        "split.csv is ", "not the embedded data set", params.EMBEDDED_UNLABELLED_CSV,
        "soft_label.unlabelled_csv", "soft_label.use_unlabelled: false"]


def _bad_transfer_csv(tmp_path, make_csv, rows):
    transfer = tmp_path / "raw" / "mine_unlabelled.csv"
    transfer.parent.mkdir(parents=True)
    transfer.write_text("text\nOpen the gate.\n\u200b\nopen  the GATE.\nShut it.\n"
                        "shut it.\n", encoding="utf-8")
    return make_csv(rows), {"soft_label": {"use_unlabelled": True,
                                           "unlabelled_csv": str(transfer)}}, [
        "mine_unlabelled.csv: line 3, column 'text' is empty after normalisation",
        "Also, 2 rows repeat an earlier text: line 4 (of line 2), line 6 (of line 5); delete "
        "the repeats"]


def _zero_width_text(tmp_path, make_csv, rows):
    rows[2]["text"] = "\u200b\u200b"  # line 4: the issue's row; str.strip() keeps it
    return make_csv(rows), {}, ["sentences.csv", "line 4", "column 'text'",
                                "empty after normalisation", "U+200B ZERO WIDTH SPACE"]


def _control_text(tmp_path, make_csv, rows):
    rows[5]["text"] = "\x00\x01"  # line 7
    return make_csv(rows), {}, ["line 7", "empty after normalisation", "U+0000 (control)",
                                "U+0001 (control)"]


def _format_and_mark_text(tmp_path, make_csv, rows):
    rows[8]["text"] = "\ufeff \u2060\u0301 \u00ad"  # line 10: BOM, word joiner, lone accent
    return make_csv(rows), {}, ["line 10", "empty after normalisation",
                                "U+FEFF ZERO WIDTH NO-BREAK SPACE", "U+2060 WORD JOINER",
                                "U+0301 COMBINING ACUTE ACCENT", "and 1 more"]


def _semicolon_header_without_text(tmp_path, make_csv, rows):
    path = tmp_path / "raw" / "export.csv"
    path.parent.mkdir(parents=True)
    path.write_text("Sentence;Category\nThe door is open;notice\n", encoding="utf-8")
    return path, {}, ["export.csv", "no 'text' column", "['Sentence', 'Category']",
                      "read as semicolon-separated", "commas, semicolons or tabs"]


def _too_many_cells_semicolon(tmp_path, make_csv, rows):
    path = make_csv(rows)
    path.write_text(path.read_text(encoding="utf-8").replace(",", ";") +
                    "Stop; then wait;notice;2\n", encoding="utf-8")  # line 42
    return path, {}, ["line 42", "more cells than the header", "quote texts that contain "
                      "semicolons"]


def _encoded(encoding: str, bom: bytes):
    def case(tmp_path, make_csv, rows):
        path = make_csv(rows)
        path.write_bytes(bom + path.read_text(encoding="utf-8").encode(encoding))
        name = encoding[:6].upper()
        return path, {}, ["sentences.csv", f"the file is {name}", "byte-order mark",
                          "re-save it as UTF-8", f"iconv -f {name} -t UTF-8"]
    return case


def _utf16_without_bom(tmp_path, make_csv, rows):
    path = make_csv(rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16-le"))
    return path, {}, ["sentences.csv", "looks like UTF-16 or UTF-32 without a byte-order mark",
                      "re-save it as UTF-8"]


CASES = {
    "missing file": _missing_file,
    "empty file": _empty_file,
    "whitespace-only file": _whitespace_only_file,
    "no text column": _no_text_column,
    "no label column": _no_label_column,
    "label not in params": _unknown_label,
    "empty text": _empty_text,
    "NaN text": _nan_text,
    "many labels not in params": _many_unknown_labels,
    "non-UTF-8 bytes": _non_utf8,
    "non-UTF-8 bytes on several lines": _non_utf8_on_several_lines,
    "same text, two labels": _conflict,
    "same text up to case/space, two labels": _conflict_differs_in_case_and_spaces,
    "24 conflicting texts": _many_conflicts,
    "too few rows to stratify": _too_few_to_stratify,
    "too few rows to stratify, labels from the CSV": _too_few_to_stratify_labels_from_csv,
    "one label in the CSV": _one_label_in_the_csv,
    "label with no rows": _label_without_rows,
    "label_id not an integer": _bad_label_id,
    "label_id inf": _infinite_label_id,
    "several kinds of bad rows": _several_kinds_at_once,
    "too many cells": _too_many_cells,
    "too many cells on several lines": _too_many_cells_on_several_lines,
    "embedded transfer texts with another CSV": _embedded_transfer_texts_with_another_csv,
    "bad rows in the transfer CSV": _bad_transfer_csv,
    "zero-width text": _zero_width_text,
    "control-character text": _control_text,
    "format characters and a lone accent": _format_and_mark_text,
    "semicolon header without text": _semicolon_header_without_text,
    "too many cells, semicolon-separated": _too_many_cells_semicolon,
    "UTF-16 LE with BOM": _encoded("utf-16-le", codecs.BOM_UTF16_LE),
    "UTF-16 BE with BOM": _encoded("utf-16-be", codecs.BOM_UTF16_BE),
    "UTF-32 LE with BOM": _encoded("utf-32-le", codecs.BOM_UTF32_LE),
    "UTF-16 without BOM": _utf16_without_bom,
}


@pytest.mark.parametrize("case", list(CASES))
def test_split_main_rejects_bad_csv(case, tmp_path, make_csv, make_rows, write_params, capsys):
    csv_path, overrides, expected = CASES[case](tmp_path, make_csv, make_rows(10))
    soft_label = overrides.pop("soft_label", {})
    before = csv_path.read_bytes() if csv_path.exists() else None
    params_path = write_params(split={"csv": str(csv_path), **overrides}, soft_label=soft_label)
    code, error = _run_split(tmp_path, params_path, capsys)
    assert code == 2
    for fragment in expected:
        assert fragment in error, f"{fragment!r} missing from {error!r}"
    if before is not None:
        assert csv_path.read_bytes() == before  # the user's file is never rewritten


@pytest.mark.parametrize(("section", "expected"), [
    ({"sed": 1}, ["unknown key 'split.sed'", "seed", "Fix the spelling"]),
    ({"seed": "forty-two"}, ["'split.seed' must be an integer", "'forty-two'"]),
    ({"labels": "condition"}, ["'split.labels' must be a list"]),
    ({"validation_fraction": 0.7}, ["'split.validation_fraction'", "(0, 0.5)"]),
    ({"labels": ["notice", "notice", "process"]}, ["'split.labels'", "repeated label"]),
    ({"labels": ["notice"]}, ["'split.labels'", "at least two label names", "none ([])"]),
    ({"labels": ["notice ", "process"]}, ["'split.labels[0]'", "trailing spaces"]),
    ({"conflicts": "keep"}, ["'split.conflicts' is 'keep'", "'stop', 'drop', 'majority'"]),
])
def test_split_main_rejects_bad_params(section, expected, tmp_path, small_csv, write_params,
                                       capsys):
    params_path = write_params(split={"csv": str(small_csv), **section})
    code, error = _run_split(tmp_path, params_path, capsys)
    assert code == 2
    for fragment in expected:
        assert fragment in error, f"{fragment!r} missing from {error!r}"


def test_split_main_missing_params_file(tmp_path, capsys):
    code, error = _run_split(tmp_path, tmp_path / "nope.yaml", capsys)
    assert code == 2
    assert "nope.yaml" in error and "not found" in error


def test_errors_are_typed_value_errors(tmp_path, make_csv, make_rows):
    rows = make_rows(10)
    rows[0]["label"] = "other"
    with pytest.raises(DataError, match=r"line 2, column 'label'") as info:
        dataset.load_csv(make_csv(rows), LABELS)
    assert isinstance(info.value, PocketbertError) and isinstance(info.value, ValueError)


# ---- what the loader accepts ---------------------------------------------------------------------

@pytest.mark.parametrize("id_column", ["label_id", "label id"])
def test_dropped_rows_are_counted(id_column, tmp_path, make_csv, make_rows, write_params):
    rows = [{"text": r["text"], "label": r["label"], id_column: r["label_id"]}
            for r in make_rows(10)]
    rows.insert(3, {"text": "Unlabelled sentence one.", "label": "notice", id_column: -1})
    rows.insert(9, {"text": "Unlabelled sentence two.", "label": "", id_column: -1})
    rows.insert(15, {"text": "Unlabelled sentence three.", "label": "", id_column: ""})
    rows.insert(20, {"text": "Unlabelled sentence four.", "label": "NaN", id_column: 2})
    rows.insert(25, {"text": "Unlabelled sentence five.", "label": "oops", id_column: "-1.0"})
    path = make_csv(rows, columns=("text", "label", id_column))

    report = dataset.load_csv(path, LABELS)
    assert report.dropped_label_id_minus_one == 3
    assert report.dropped_missing_label == 2
    assert len(report.examples) == 40
    assert not any(ex.text.startswith("Unlabelled") for ex in report.examples)

    out, metrics_path = tmp_path / "split", tmp_path / "split.json"
    metrics = split.main(["--params", str(write_params(split={"csv": str(path)})),
                          "--out", str(out), "--metrics", str(metrics_path)])
    assert metrics["rows_read"] == 45
    assert metrics["dropped_label_id_minus_one"] == 3
    assert metrics["dropped_missing_label"] == 2
    assert json.loads(metrics_path.read_text()) == metrics
    assert sum(metrics[f"{s}.rows"] for s in dataset.SPLITS) == 40


def _split_main(tmp_path: Path, params_path: Path) -> tuple[dict, Path]:
    out = tmp_path / "out" / "split"
    metrics = split.main(["--params", str(params_path), "--out", str(out),
                          "--metrics", str(tmp_path / "metrics" / "split.json")])
    assert json.loads((tmp_path / "metrics" / "split.json").read_text()) == metrics
    return metrics, out


def _written(out: Path) -> list[dataset.Example]:
    rows = [e for name in dataset.SPLITS for e in dataset.read_examples(out / f"{name}.csv")]
    return sorted(rows, key=lambda e: e.line)


def test_repeats_under_the_same_label_are_kept_once_and_counted(tmp_path, make_csv, make_rows,
                                                                write_params):
    # the issue: a real file repeats texts; each repeat used to stop the stage, one per run
    rows = make_rows(10)
    repeats = [dict(rows[i]) for i in range(0, 30, 2)]  # 15 exact copies, appended
    repeats[0]["text"] = "  " + repeats[0]["text"].upper().replace(" ", "   ")  # case, spaces
    path = make_csv(rows + repeats)
    before = path.read_bytes()

    report = dataset.load_csv(path)
    assert report.duplicates_dropped == 15 and report.conflicting_texts == 0
    assert [(e.text, e.line) for e in report.examples] == [
        (r["text"], i + 2) for i, r in enumerate(rows)]  # the first row and its spelling

    metrics, out = _split_main(tmp_path, write_params(split={"csv": str(path)}))
    assert metrics["rows_read"] == 55 and metrics["rows_used"] == 40
    assert metrics["duplicates_dropped"] == 15
    assert (metrics["conflicting_texts"], metrics["conflict_rows_dropped"]) == (0, 0)
    written = _written(out)
    assert len({dataset.text_key(e.text) for e in written}) == len(written) == 40
    assert path.read_bytes() == before  # the user's file is never rewritten


def _conflicted_rows(make_rows) -> list[dict]:
    rows = make_rows(10)
    a, b = rows[0]["text"], rows[1]["text"]  # lines 2 (condition) and 3 (constraint)
    rows.append({"text": a.lower(), "label": "notice"})       # line 42: a, a second label
    rows.append({"text": a, "label": "condition"})            # line 43: a, its first label again
    rows.append({"text": b, "label": "process"})              # line 44: b, a tie of 1 to 1
    return rows


@pytest.mark.parametrize(("mode", "kept_lines", "rows_dropped", "ties"), [
    ("drop", set(range(4, 42)), 5, 0),             # every row of a and of b goes
    ("majority", {2} | set(range(4, 42)), 4, 1),   # a keeps 'condition' (2 of 3); b ties, goes
])
def test_conflicts_drop_or_majority(mode, kept_lines, rows_dropped, ties, tmp_path, make_csv,
                                    make_rows, write_params):
    path = make_csv(_conflicted_rows(make_rows))
    metrics, out = _split_main(tmp_path, write_params(split={"csv": str(path),
                                                             "conflicts": mode}))
    written = _written(out)
    assert {e.line for e in written} == kept_lines
    assert all(e.label == "condition" for e in written if e.line == 2)
    assert metrics["conflicting_texts"] == 2
    assert metrics["conflict_rows_dropped"] == rows_dropped
    assert metrics["conflict_ties_dropped"] == ties
    assert metrics["duplicates_dropped"] == 0
    assert metrics["rows_read"] == 43 == metrics["rows_used"] + rows_dropped


def test_conflicts_stop_is_the_default(tmp_path, make_csv, make_rows):
    path = make_csv(_conflicted_rows(make_rows))
    with pytest.raises(DataError, match=r"2 texts appear under more than one label .*: line 2 "
                                        r".*'condition' \(lines 2, 43\), 'notice' \(line 42\); "
                                        r"line 3 .*'constraint' \(line 3\), 'process' \(line 44\)"):
        dataset.load_csv(path)
    with pytest.raises(ValueError, match="conflicts must be one of"):
        dataset.load_csv(path, conflicts="first")


def test_labels_come_from_the_csv_when_split_labels_is_empty(tmp_path, make_csv, write_params):
    rows = [{"text": f"{topic} headline number {i}", "label": topic}
            for topic in ("world", "Sports", "business") for i in range(4 + len(topic))]
    path = make_csv(rows, columns=("text", "label"))
    metrics, out = _split_main(tmp_path, write_params(split={"csv": str(path), "labels": []}))
    assert dataset.read_labels(out / "labels.json") == ("Sports", "business", "world")
    assert metrics["labels_from"] == "csv"
    assert (metrics["used.Sports"], metrics["used.business"], metrics["used.world"]) == (10, 12, 9)
    assert metrics["train.world"] + metrics["validation.world"] + metrics["test.world"] == 9

    # a list in params wins, in its order, and the metrics say so
    metrics, out = _split_main(tmp_path, write_params(
        split={"csv": str(path), "labels": ["world", "business", "Sports"]}))
    assert dataset.read_labels(out / "labels.json") == ("world", "business", "Sports")
    assert metrics["labels_from"] == "params"


def test_the_held_out_share_depends_on_each_text_alone() -> None:
    texts = [f"Text number {i} of the transfer file." for i in range(2000)]
    held = dataset.held_out_by_text(texts, 0.3)
    # a binomial(2000, 0.3) count: 600 +- 20.5 (one standard deviation); 5 of them here
    assert abs(sum(held) - 600) < 5 * 20.5
    # another order, fewer rows or other casing: each text keeps its side
    flipped = dataset.held_out_by_text([t.upper() for t in reversed(texts[:500])], 0.3)
    assert flipped == list(reversed(held[:500]))
    # a larger share holds a superset; 0 holds nothing
    assert all(b for a, b in zip(held, dataset.held_out_by_text(texts, 0.5), strict=True) if a)
    assert not any(dataset.held_out_by_text(texts, 0.0))


def test_transfer_texts_are_checked_and_counted(tmp_path, make_csv, make_rows, write_params):
    rows = make_rows(10)
    path = make_csv(rows)
    transfer = make_csv([{"text": "Open the side gate first."}, {"text": rows[5]["text"].upper()},
                         {"text": "Staff park behind the shed."}], name="mine_unlabelled.csv",
                        columns=("text",))
    metrics, _ = _split_main(tmp_path, write_params(
        split={"csv": str(path)},
        soft_label={"use_unlabelled": True, "unlabelled_csv": str(transfer)}))
    assert metrics["transfer.csv"] == str(transfer)
    assert metrics["transfer.texts"] == 2  # the copy of a labelled sentence is left out
    assert metrics["transfer.skipped_labelled_texts"] == 1

    metrics, _ = _split_main(tmp_path, write_params(split={"csv": str(path)},
                                                    soft_label={"use_unlabelled": False}))
    assert (metrics["transfer.csv"], metrics["transfer.texts"]) == (None, 0)


def test_the_committed_params_on_the_embedded_data(tmp_path, monkeypatch):
    # what `dvc repro split` runs: the embedded CSV keeps its transfer texts, and nothing
    # in it is a repeat or a conflict
    monkeypatch.chdir(ROOT)
    metrics = split.main(["--params", "params.yaml", "--out", str(tmp_path / "split"),
                          "--metrics", str(tmp_path / "split.json")])
    assert metrics["rows_read"] == metrics["rows_used"] == 1417
    assert metrics["duplicates_dropped"] == metrics["conflicting_texts"] == 0
    assert metrics["labels_from"] == "params"
    assert metrics["transfer.csv"] == params.EMBEDDED_UNLABELLED_CSV
    assert (metrics["transfer.texts"], metrics["transfer.skipped_labelled_texts"]) == (1260, 0)


def test_same_file_and_text_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset.same_file("data/raw/sentences.csv", "./data/raw/../raw/sentences.csv")
    assert dataset.same_file(tmp_path / "data/raw/sentences.csv", "data/raw/sentences.csv")
    assert not dataset.same_file("data/raw/mine.csv", "data/raw/sentences.csv")
    assert dataset.text_key("Stop the Pump") == dataset.text_key("stop the pump")
    assert dataset.text_key("Straße") == dataset.text_key("STRASSE")  # casefold, not lower


def test_csv_without_label_id_column(make_csv, make_rows):
    path = make_csv(make_rows(3), columns=("text", "label"))
    report = dataset.load_csv(path, LABELS)
    assert len(report.examples) == 12
    assert Counter(ex.label for ex in report.examples) == dict.fromkeys(LABELS, 3)


def test_line_numbers_follow_the_file(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_bytes(
        "\ufefftext , label\n"                         # BOM and spaces around header names
        "first sentence,notice\n"                      # line 2
        "\n"                                           # blank line 3
        '"a quoted\ntwo-line  sentence",process\n'     # lines 4-5
        "Last   one,condition\r\n"                     # line 6, CRLF
        "last one,process\n".encode()                  # line 7 repeats line 6
    )
    with pytest.raises(DataError, match=r"the text of line 6 \('Last one'\) appears under 2 "
                                        r"labels .*'condition' \(line 6\), 'process' \(line 7\)"):
        dataset.load_csv(path, LABELS)
    path.write_bytes(path.read_bytes().rsplit(b"last one", 1)[0])
    report = dataset.load_csv(path, LABELS)
    assert [(ex.text, ex.line) for ex in report.examples] == [
        ("first sentence", 2), ("a quoted two-line sentence", 4), ("Last one", 6)]


def test_non_utf8_line_is_counted_after_a_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nfine,notice\ncaf\xe9 open,notice\n")
    with pytest.raises(DataError, match=r"bom\.csv: line 3 has bytes that are not UTF-8 "
                                        r"\(byte 29: b'\\xe9'\)"):
        dataset.load_csv(path, LABELS)


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_files_load_like_the_comma_file(delimiter, tmp_path,
                                                                   make_csv, make_rows):
    rows = make_rows(10)
    rows[0]["text"] = "If it rains, stay in; then wait"  # both separators inside a text
    comma = make_csv(rows)
    other = make_csv(rows, name="other.csv")
    with other.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(["text", "label", "label_id"])
        writer.writerows([r["text"], r["label"], r["label_id"]] for r in rows)
    assert delimiter in other.read_text(encoding="utf-8").splitlines()[0]
    assert dataset.load_csv(other, LABELS) == dataset.load_csv(comma, LABELS)


def test_the_issue_semicolon_header_is_read(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("text;label\nThe door is open, mind the step;notice\n"
                    "\"If it rains; stay in\";condition\n", encoding="utf-8")
    report = dataset.load_csv(path, LABELS)
    assert [(e.text, e.label, e.line) for e in report.examples] == [
        ("The door is open, mind the step", "notice", 2), ("If it rains; stay in", "condition", 3)]


def test_comma_file_with_semicolons_in_every_text_stays_comma_separated(tmp_path):
    # unquoted semicolons outnumber the commas: the header decides, not the counts
    path = tmp_path / "semis.csv"
    path.write_text("text,label\n" + "".join(f"step {i}; then {i + 1}; done,process\n"
                                             for i in range(8)), encoding="utf-8")
    assert [e.text for e in dataset.load_csv(path, LABELS).examples][:2] == [
        "step 0; then 1; done", "step 1; then 2; done"]


def test_unlabelled_csv_follows_the_same_rules(tmp_path):
    path = tmp_path / "unlabelled.csv"
    path.write_text("text;domain\nOpen the valve, then wait;plant\n\u200b;plant\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3, column 'text' is empty after normalisation"):
        dataset.load_unlabelled_csv(path)
    path.write_text("text;domain\nOpen the valve, then wait;plant\n", encoding="utf-8")
    assert dataset.load_unlabelled_csv(path) == (["Open the valve, then wait"], 0)
    path.write_bytes(codecs.BOM_UTF16_LE + "text\nOpen it\n".encode("utf-16-le"))
    with pytest.raises(DataError, match="the file is UTF-16"):
        dataset.load_unlabelled_csv(path)


def test_words_without_visible_characters_are_dropped_from_the_text(tmp_path):
    # "Stop \u200b": deleting "Stop" in augmentation would leave a text of nothing
    path = tmp_path / "zw.csv"
    path.write_text("text,label\nStop \u200b,notice\n\u2060 Turn\u200bleft \ufeff,process\n",
                    encoding="utf-8")
    assert [e.text for e in dataset.load_csv(path, LABELS).examples] == [
        "Stop", "Turn\u200bleft"]


@pytest.mark.parametrize(("text", "expected"), [
    ("\u200b\u200b", "only U+200B ZERO WIDTH SPACE"),
    ("\x00\x01", "only U+0000 (control), U+0001 (control)"),
    ("\u2028 \ufffd", "only U+2028 LINE SEPARATOR, U+FFFD REPLACEMENT CHARACTER"),
    (" \u3000\t", "empty"),
    ("\ue000\U000e0001", "only U+E000 (private use), U+E0001 LANGUAGE TAG"),
    ("ok", None), ("\u200bok\u200b", None), ("e\u0301", None), ("?", None), ("\U0001f44d", None),
    ("中", None), ("٣", None),
])
def test_blank_reason(text, expected):
    assert dataset.blank_reason(text) == expected


def test_every_character_blank_reason_keeps_survives_the_bert_normaliser():
    # blank_reason's rule against the tokenizer's own code: every letter, digit, punctuation
    # mark and symbol it calls visible is kept by BERT's normaliser and pre-tokenizer, cased
    # and uncased, so a text that passes the loader never encodes to [CLS] [SEP] alone
    from tokenizers import normalizers, pre_tokenizers

    visible = [chr(cp) for cp in range(sys.maxunicode + 1)
               if not 0xD800 <= cp <= 0xDFFF and dataset.blank_reason(chr(cp)) is None]
    assert len(visible) > 100_000
    words = pre_tokenizers.BertPreTokenizer()
    for lowercase in (False, True):
        normaliser = normalizers.BertNormalizer(lowercase=lowercase)
        for start in range(0, len(visible), 5000):
            chunk = visible[start:start + 5000]
            # one character per word: each one kept gives exactly one pre-token
            kept = words.pre_tokenize_str(normaliser.normalize_str(" ".join(chunk)))
            assert len(kept) == len(chunk), (lowercase, start)
    # and what it calls blank is what the normaliser deletes (the issue's characters)
    normaliser = normalizers.BertNormalizer(lowercase=True)
    for text in ("\u200b\u200b", "\x00\x01", "\ufeff\u2060\u00ad", "\u0301"):
        assert dataset.blank_reason(text) is not None
        assert words.pre_tokenize_str(normaliser.normalize_str(text)) == []


# ---- the split -----------------------------------------------------------------------------------

def _examples(counts: dict[str, int]) -> list[dataset.Example]:
    rows, line = [], 2
    for label, n in counts.items():
        for i in range(n):
            rows.append(dataset.Example(f"{label} sentence number {i}", label, line))
            line += 1
    return rows


COUNTS = {"condition": 100, "constraint": 37, "notice": 53, "process": 11}


def test_split_is_stratified():
    parts = dataset.stratified_split(_examples(COUNTS), LABELS, 0.15, 0.2, seed=1)
    fractions = {"validation": 0.15, "test": 0.2, "train": 0.65}
    for name, rows in parts.items():
        per_class = Counter(ex.label for ex in rows)
        for label, n in COUNTS.items():
            # each class's share of each split is its fraction, up to one row of rounding
            assert abs(per_class[label] - n * fractions[name]) <= 1, (name, label, per_class)
    # the rows of each split stay in file order
    for rows in parts.values():
        assert [ex.line for ex in rows] == sorted(ex.line for ex in rows)


def test_split_is_disjoint_and_complete():
    examples = _examples(COUNTS)
    parts = dataset.stratified_split(examples, LABELS, 0.15, 0.15, seed=3)
    texts = {name: [ex.text for ex in rows] for name, rows in parts.items()}
    assert sum(len(t) for t in texts.values()) == len(examples)
    assert set().union(*map(set, texts.values())) == {ex.text for ex in examples}
    assert not set(texts["train"]) & set(texts["validation"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["validation"]) & set(texts["test"])


def test_split_is_seeded():
    examples = _examples(COUNTS)

    def test_texts(seed):
        parts = dataset.stratified_split(examples, LABELS, 0.15, 0.15, seed=seed)
        return [ex.text for ex in parts["test"]], [ex.text for ex in parts["validation"]]

    assert test_texts(42) == test_texts(42)
    assert test_texts(42) != test_texts(43)


def test_split_stage_outputs(tmp_path, small_csv, write_params):
    order = ("process", "notice", "constraint", "condition")  # not alphabetical on purpose
    out = tmp_path / "split"

    def run(seed: int, where: Path) -> dict:
        params_path = write_params(split={"csv": str(small_csv), "labels": list(order),
                                          "seed": seed})
        return split.main(["--params", str(params_path), "--out", str(where),
                           "--metrics", str(tmp_path / f"split-{where.name}.json")])

    metrics = run(7, out)
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "test.csv", "train.csv",
                                                     "validation.csv"]
    assert json.loads((out / "labels.json").read_text()) == {"labels": list(order)}
    assert dataset.read_labels(out / "labels.json") == order

    parts = {name: dataset.read_examples(out / f"{name}.csv") for name in dataset.SPLITS}
    source = dataset.load_csv(small_csv, LABELS).examples
    assert sorted((e.text, e.label, e.line) for rows in parts.values() for e in rows) == \
        sorted((e.text, e.label, e.line) for e in source)
    for name, rows in parts.items():
        # 10 per class: 2 test, 2 validation, 6 train
        expected = 6 if name == "train" else 2
        assert Counter(e.label for e in rows) == dict.fromkeys(order, expected)
        assert metrics[f"{name}.rows"] == 4 * expected
        assert all(metrics[f"{name}.{label}"] == expected for label in order)
    assert metrics["rows_read"] == 40

    assert run(7, tmp_path / "again") == metrics
    assert (tmp_path / "again" / "test.csv").read_bytes() == (out / "test.csv").read_bytes()
    run(8, tmp_path / "other")
    assert (tmp_path / "other" / "test.csv").read_bytes() != (out / "test.csv").read_bytes()
    # no temp folders left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
