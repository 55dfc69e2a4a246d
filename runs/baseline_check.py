"""Which label weighting does the TF-IDF baseline keep, and what would each have given on test?

The baseline stage fits one logistic regression per (``baseline.class_weights``,
``baseline.c_values``) pair and keeps the best validation macro-F1 (``training.baseline.fit``).
This check fits each weighting alone on the same splits, so the choice can be read beside what
each would score on test, for one or more tokenize folders (the default pipeline's, or those of
the workspaces ``make variants`` leaves, e.g. ``/tmp/rc/two_label/data/tokenize/written``):

    python -m runs.baseline_check [--tokenize DIR ...] [--params params.yaml] [--out F]

The baseline section of ``--params`` applies to every folder (a variant's own params.yaml, in
its workspace, when its section differs). It needs the tokenize stage's output and costs one
baseline fit per weighting per folder (no network is trained). Prints the weighting each folder
keeps as it is done, then a markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert.core import contract, evaluation, params
from pocketbert.core.artifacts import write_json
from pocketbert.core.errors import DataError, reported
from pocketbert.data import dataset, tokenization
from pocketbert.training import baseline


def check(written: Path, baseline_params) -> dict:
    """For the tokenize stage's written folder ``written``: per weighting of
    ``baseline_params.class_weights``, the C kept and the validation and test macro-F1 of that
    weighting's best fit ({'none': {'c', 'validation_macro_f1', 'test_macro_f1'}, ...}); 'kept':
    the weighting the full grid keeps (the first listed on a validation tie, as the stage);
    'same_test_labels': whether every weighting predicts the same test labels; 'seconds'."""
    t0 = time.perf_counter()
    data = tokenization.load(written)
    n_labels = len(dataset.read_labels(written / contract.LABELS_FILE))
    gold = np.asarray(data["test"]["label"])  # [n test texts] label ids
    out: dict = {"weightings": {}}
    predictions = []
    for weighting in baseline_params.class_weights:
        model, info = baseline.fit(
            (data["train"]["text"], data["train"]["label"]),
            (data["validation"]["text"], data["validation"]["label"]), n_labels,
            dataclasses.replace(baseline_params, class_weights=(weighting,)))
        pred = baseline.probabilities(model, data["test"]["text"], n_labels).argmax(1)  # [n]
        predictions.append(pred)
        out["weightings"][weighting] = {
            "c": info["c"], "validation_macro_f1": info["validation.macro_f1"],
            "test_macro_f1": evaluation.macro_f1(gold, pred, n_labels)}
    scores = out["weightings"]
    out["kept"] = max(scores, key=lambda w: (scores[w]["validation_macro_f1"],
                                             -baseline_params.class_weights.index(w)))
    out["same_test_labels"] = all((p == predictions[0]).all() for p in predictions)
    out["seconds"] = time.perf_counter() - t0
    return out


def table(results: dict[str, dict]) -> str:
    """The results of :func:`check` by folder, as a markdown table."""
    lines = ["| tokenize folder | kept (C) | validation macro-F1 per weighting | "
             "test macro-F1 per weighting | same test labels |", "|---|---|---|---|---|"]
    for name, r in results.items():
        w = r["weightings"]
        lines.append(
            f"| `{name}` | {r['kept']} ({w[r['kept']]['c']:g}) | "
            + ", ".join(f"{k} {v['validation_macro_f1']:.3f}" for k, v in w.items()) + " | "
            + ", ".join(f"{k} {v['test_macro_f1']:.3f}" for k, v in w.items())
            + f" | {'yes' if r['same_test_labels'] else 'no'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(prog="python -m runs.baseline_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenize", type=Path, action="append",
                        help="a tokenize stage's written folder; repeat for several "
                             "(default: data/tokenize/written)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="its baseline section sets the model and the weightings "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    folders = args.tokenize or [Path("data/tokenize/written")]
    results: dict[str, dict] = {}
    with reported():
        settings = params.load(args.params, "baseline")
        for folder in folders:
            if not (folder / "dataset").is_dir():
                raise DataError(f"{folder}: no tokenized data; run `dvc repro tokenize` "
                                "there, or pass the written folder of a tokenize stage")
        for folder in folders:
            results[str(folder)] = check(folder, settings)
            r = results[str(folder)]
            print(f"{folder}: keeps {r['kept']}, {r['seconds'] / 60:.1f} min", file=sys.stderr,
                  flush=True)
    print(table(results))
    if args.out is not None:
        write_json(args.out, {"params": params.as_dict(settings), "results": results})
    return results


if __name__ == "__main__":
    main()
