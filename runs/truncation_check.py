"""Would a longer tokenize.max_length help? What a bag-of-words model loses at the cut.

The teacher and the student read the first ``tokenize.max_length`` tokens of a text; the TF-IDF
baseline reads all of it. This check fits the baseline stage's model (the same features, C
values and validation choice: ``training.baseline.fit``, params.yaml's ``baseline`` section) on
texts cut where their first N tokens end, for each N asked, beside the whole texts:

    python -m runs.truncation_check --lengths 64,128,256 [--tokenize data/tokenize/written]

When the words past the cut carry the labels, the cut model loses macro-F1 against the whole
one, and a longer max_length (whose cost in the teacher and train_student stages grows faster
than the length: attention is quadratic in it) can pay off; when it loses nothing, it will not.
It needs the tokenize stage's output (`dvc repro tokenize`) and costs one baseline fit per
length (minutes on 10,000 long texts; no network is trained). Prints each length's figures as
it is done, then a markdown table; ``--out`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert.core import evaluation, params
from pocketbert.core.artifacts import write_json
from pocketbert.core.errors import ParamsError, reported
from pocketbert.data import tokenization
from pocketbert.training import baseline


def cut_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[str]:
    """Each text up to the last character its first ``max_length`` tokens cover ([CLS] and
    [SEP] included; the fast tokenizer's character offsets): tokenized with truncation at
    ``max_length``, it gives the same ids as the whole text, as long as no word of it is one
    WordPiece cannot split (those become one [UNK]). Characters the tokenizer drops at the
    end (spaces) are dropped too."""
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length,
                    return_offsets_mapping=True)
    return [text[: max((end for _, end in offsets), default=0)]
            for text, offsets in zip(texts, enc["offset_mapping"], strict=True)]


def check(written: Path, lengths: Sequence[int], baseline_params) -> list[dict]:
    """One row per length of ``lengths`` and one for the whole texts ('all'): {'length',
    'test_truncated' (share of test texts longer than it), 'test_macro_f1', 'c',
    'class_weight' (the label weighting kept), 'validation_macro_f1', 'seconds'}.
    ``written``: the tokenize stage's written folder. Prints each row as it is done, with the
    time left at the pace so far."""
    data = tokenization.load(written)
    tokenizer = tokenization.load_tokenizer(written / "tokenizer")
    n_labels = len(set(data["train"]["label"]) | set(data["test"]["label"]))
    full = np.asarray(data["test"]["full_length"])
    rows: list[dict] = []
    started = time.perf_counter()
    todo = [*sorted(lengths), None]
    for i, length in enumerate(todo):
        t0 = time.perf_counter()
        texts = {split: list(data[split]["text"]) for split in ("train", "validation", "test")}
        if length is not None:
            texts = {split: cut_texts(tokenizer, t, length) for split, t in texts.items()}
        model, info = baseline.fit((texts["train"], data["train"]["label"]),
                                   (texts["validation"], data["validation"]["label"]),
                                   n_labels, baseline_params)
        pred = baseline.probabilities(model, texts["test"], n_labels).argmax(1)
        row = {"length": "all" if length is None else length,
               "test_truncated": 0.0 if length is None else float((full > length).mean()),
               "test_macro_f1": evaluation.macro_f1(np.asarray(data["test"]["label"]), pred,
                                                    n_labels),
               "c": info["c"], "class_weight": info["class_weight"],
               "validation_macro_f1": info["validation.macro_f1"],
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        left = (time.perf_counter() - started) / (i + 1) * (len(todo) - i - 1)
        print(f"length {row['length']}: test macro-F1 {row['test_macro_f1']:.3f}, "
              f"{row['test_truncated']:.1%} of test texts cut, {row['seconds'] / 60:.1f} min"
              + (f"; about {left / 60:.0f} min left" if left else ""), file=sys.stderr,
              flush=True)
    return rows


def table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| tokens read | test texts cut | TF-IDF test macro-F1 | C | label weights |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['length']} | {r['test_truncated']:.1%} | {r['test_macro_f1']:.3f} | "
              f"{r['c']:g} | {r['class_weight']} |" for r in rows]
    return "\n".join(lines)


def lengths_arg(value: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give whole numbers, e.g. 64,128,256") \
            from None
    if not out or min(out) < 3:
        raise argparse.ArgumentTypeError(f"{value!r}: give lengths of at least 3 tokens")
    return out


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m runs.truncation_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=lengths_arg, default=[64, 128, 256],
                        help="token counts to cut at, comma-separated (default: 64,128,256)")
    parser.add_argument("--tokenize", type=Path, default=Path("data/tokenize/written"),
                        help="the tokenize stage's written folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="its baseline section sets the model (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    with reported():
        if not (args.tokenize / "dataset").is_dir():
            raise ParamsError(f"{args.tokenize}: no tokenized data; run `dvc repro tokenize` "
                              "or pass --tokenize")
        rows = check(args.tokenize, args.lengths, params.load(args.params, "baseline"))
    print(table(rows))
    if args.out is not None:
        write_json(args.out, {"tokenize": str(args.tokenize), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
