"""Measure the distillation recipe on data sets derived from the embedded CSV, and on public sets.

One recipe tuned on one data set can fail on the next. This command builds variants of
``data/raw/sentences.csv`` (text, label, label_id, domain), runs the pipeline's student side on
each (split, augment, tokenize, teacher, soft_label, train_student, export@student, calibrate) with
``dvc repro`` in a scratch copy of this repository per variant, and tabulates the int8 student
against the teacher on each variant's test split:

    python -m runs.recipe_check                       # all variants, current params
    python -m runs.recipe_check -S train_student.alpha=0.9 --variants default,small

Variants (``VARIANTS``): ``default`` (the 4 labels), ``regrouped`` (condition + constraint
become ``rule``; 3 % of rows marked label id -1, dropped by split), ``two_label`` (``notice``
against ``directive``: condition, constraint and process), ``small`` (the default split with a
stratified third of its train rows), ``held_out`` (train and validate on 13 domains, test on all
rows of the 14th: the driver writes that split itself, since the split stage draws its test rows
at random, and runs the stages after split; its unlabelled transfer text, when
soft_label.use_unlabelled is on, leaves that domain out too).

The public sets of ``runs.public_data`` (``tweets``, ``r8``, ``newsgroups``; prepared by
``make datasets`` under data/public/, which git ignores) are variants too, run only when named
(``--variants tweets,r8``): each copies its prepared ``data.csv`` (and ``transfer.csv``) into the
workspace and sets split.labels to [] (the CSV's labels), the set's split.conflicts,
augment.keep_words to [] (the embedded cue words belong to the embedded set), and
soft_label.unlabelled_csv to the set's own transfer text, or soft_label.use_unlabelled to false
where it has none.

Workspaces live under ``--workspace`` (one ``git clone`` of this repository per variant, with this
working tree's files copied over it) and share one DVC cache. Workspaces are kept, so a re-run
after a change to ``train_student`` params re-runs only train_student and export@student (a change
to a file the teacher stage depends on, such as distillation.py, re-trains every variant's
teacher). The int8 student is run one sentence at a
time (onnxruntime's dynamic int8 scales activations per call, so batch-1 is the device's view);
teacher predictions are the stored ``soft_label`` test logits. Intervals are the benchmark's
paired bootstrap intervals over the test sentences (``benchmarking.bootstrap_interval`` with the
``benchmark`` section's resamples, seed and confidence level). Each stage's wall time and peak
resident memory (``workspace.measure``) is printed as it ends and kept in the results file
(``stages``); README's public-sets block shows them.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pocketbert.apps.results import recipe_table
from pocketbert.benchmarks import benchmarking
from pocketbert.core import contract, evaluation, params
from pocketbert.core.artifacts import size_mb
from pocketbert.core.errors import PocketbertError, reported
from pocketbert.data import dataset
from pocketbert.data.soft_labels import SoftLabels
from pocketbert.training import baseline
from runs import public_data, workspace

SOURCE_CSV = Path("data/raw/sentences.csv")
VARIANT_CSV = Path("data/variant.csv")
UNLABELLED_CSV = Path("data/raw/unlabelled.csv")
VARIANT_UNLABELLED_CSV = Path("data/variant_unlabelled.csv")
# split, then the stages the student's numbers depend on, in pipeline order
STAGES = ("augment", "tokenize", "baseline", "teacher", "soft_label", "train_student",
          "export@student", "calibrate")
HELD_OUT_DOMAIN = "legal/contracts"
MINUS_ONE_SHARE = 0.03  # share of rows the regrouped variant marks label id -1
SEED = 7  # seed of every choice this driver makes (rows marked -1, subsample, held-out split)


class RecipeCheckError(PocketbertError):
    """A variant could not be built or run."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    build: Callable[[list[dict[str, str]], Path], dict]
    "writes the variant's data into a workspace; returns params.yaml overrides"
    runs_split: bool = True
    "False: build wrote data/split itself and the split stage is not run"
    after_split: Callable[[Path], None] | None = None
    needs: Path | None = None
    "a file (from the repository root) that must exist before any variant runs"
    needs_fix: str = ""
    "what makes ``needs``"


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label", "label_id"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("text", "label", "label_id")} for r in rows)


def _embedded_extras(ws: Path) -> dict:
    """Overrides for a variant written from the embedded sentences into VARIANT_CSV: the cue
    words and the transfer texts of the embedded data set still fit it, so both are named
    explicitly (with any other split.csv, augment.keep_words auto protects no words and split
    refuses the committed transfer file); the transfer file is copied to
    VARIANT_UNLABELLED_CSV."""
    if (ws / UNLABELLED_CSV).is_file():
        shutil.copyfile(ws / UNLABELLED_CSV, ws / VARIANT_UNLABELLED_CSV)
    return {"augment.keep_words": list(params.CUE_WORDS),
            "soft_label.unlabelled_csv": str(VARIANT_UNLABELLED_CSV)}


def _relabelled(rows: list[dict[str, str]], mapping: dict[str, str], labels: list[str],
                ws: Path) -> dict:
    out = [{"text": r["text"], "label": mapping[r["label"]],
            "label_id": str(labels.index(mapping[r["label"]]))} for r in rows]
    _write_csv(ws / VARIANT_CSV, out)
    return {"split.csv": str(VARIANT_CSV), "split.labels": labels, **_embedded_extras(ws)}


def _default(rows: list[dict[str, str]], ws: Path) -> dict:
    return {}


def _regrouped(rows: list[dict[str, str]], ws: Path) -> dict:
    labels = ["rule", "notice", "process"]
    mapping = {"condition": "rule", "constraint": "rule", "notice": "notice",
               "process": "process"}
    out = [{"text": r["text"], "label": mapping[r["label"]],
            "label_id": str(labels.index(mapping[r["label"]]))} for r in rows]
    rng = random.Random(SEED)
    for i in rng.sample(range(len(out)), round(MINUS_ONE_SHARE * len(out))):
        out[i]["label_id"] = "-1"  # a row the user has not labelled yet: split drops it
    _write_csv(ws / VARIANT_CSV, out)
    return {"split.csv": str(VARIANT_CSV), "split.labels": labels, **_embedded_extras(ws)}


def _two_label(rows: list[dict[str, str]], ws: Path) -> dict:
    mapping = {"condition": "directive", "constraint": "directive", "process": "directive",
               "notice": "notice"}
    return _relabelled(rows, mapping, ["directive", "notice"], ws)


def _subsample_train(ws: Path) -> None:
    """Keep a stratified, seeded third of data/split/train.csv (validation and test as split
    wrote them)."""
    path = ws / "data/split/train.csv"
    rows = dataset.read_examples(path)
    rng = random.Random(SEED)
    kept: list[dataset.Example] = []
    for label in sorted({r.label for r in rows}):
        of_label = [r for r in rows if r.label == label]
        kept += rng.sample(of_label, -(-len(of_label) // 3))
    kept.sort(key=lambda r: r.line)
    dataset.write_examples(path, kept)


def _held_out(rows: list[dict[str, str]], ws: Path) -> dict:
    labels = list(params.LABELS)
    rng = random.Random(SEED)
    examples = {"train": [], "validation": [], "test": []}
    # line of each row in the source CSV (header = line 1), as the split stage records it
    in_domain: dict[str, list[dataset.Example]] = {label: [] for label in labels}
    for r in rows:
        ex = dataset.Example(r["text"], r["label"], int(r["line"]))
        if r["domain"] == HELD_OUT_DOMAIN:
            examples["test"].append(ex)
        else:
            in_domain[r["label"]].append(ex)
    validation_fraction = yaml.safe_load((ws / "params.yaml").read_text())["split"][
        "validation_fraction"]
    for label_rows in in_domain.values():
        rng.shuffle(label_rows)
        n_val = max(1, round(validation_fraction * len(label_rows)))
        examples["validation"] += label_rows[:n_val]
        examples["train"] += label_rows[n_val:]
    out = ws / "data/split"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, part in examples.items():
        part.sort(key=lambda e: e.line)
        dataset.write_examples(out / f"{name}.csv", part)
    dataset.write_labels(out / contract.LABELS_FILE, tuple(labels))
    # no text of the held-out domain anywhere in training, unlabelled transfer text included
    with (ws / UNLABELLED_CSV).open(encoding="utf-8", newline="") as fh:
        unlabelled = [r for r in csv.DictReader(fh) if r["domain"] != HELD_OUT_DOMAIN]
    with (ws / VARIANT_UNLABELLED_CSV).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "domain"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "domain": r["domain"]} for r in unlabelled)
    return {"soft_label.unlabelled_csv": str(VARIANT_UNLABELLED_CSV)}


def _public(spec: public_data.PublicSet) -> Callable[[list[dict[str, str]], Path], dict]:
    """The build of a public set's variant: its prepared files (under the repository root,
    the working directory, where ``make datasets`` wrote them) copied into the workspace."""

    def build(rows: list[dict[str, str]], ws: Path) -> dict:
        folder = public_data.PUBLIC_ROOT / spec.name
        if not (folder / public_data.DATA_FILE).is_file():
            raise RecipeCheckError(f"{folder / public_data.DATA_FILE}: not found; run "
                                   f"{public_data.COMMAND} first")
        (ws / VARIANT_CSV).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / public_data.DATA_FILE, ws / VARIANT_CSV)
        overrides = {"split.csv": str(VARIANT_CSV), "split.labels": [],
                     "split.conflicts": spec.conflicts, "augment.keep_words": [],
                     "soft_label.use_unlabelled": spec.transfer is not None}
        if spec.transfer is not None:
            shutil.copyfile(folder / public_data.TRANSFER_FILE, ws / VARIANT_UNLABELLED_CSV)
            overrides["soft_label.unlabelled_csv"] = str(VARIANT_UNLABELLED_CSV)
        return overrides

    return build


VARIANTS = {
    v.name: v for v in (
        Variant("default", "the embedded CSV, 4 labels", _default),
        Variant("regrouped", "3 labels (condition + constraint = rule), 3% rows label id -1",
                _regrouped),
        Variant("two_label", "notice vs directive (condition, constraint, process)", _two_label),
        Variant("small", "default split, a stratified third of the train rows", _default,
                after_split=_subsample_train),
        Variant("held_out", f"train on 13 domains, test on all of {HELD_OUT_DOMAIN!r}",
                _held_out, runs_split=False),
        *(Variant(spec.name, f"public set: {spec.title}", _public(spec),
                  needs=public_data.PUBLIC_ROOT / spec.name / public_data.DATA_FILE,
                  needs_fix=public_data.COMMAND)
          for spec in public_data.SETS.values()),
    )
}
DEFAULT_VARIANTS = ("default", "regrouped", "two_label", "small", "held_out")
"the variants run when --variants is not given (the public sets run when named)"


def read_source_rows(path: Path = SOURCE_CSV) -> list[dict[str, str]]:
    """Rows of the embedded CSV with their source line; raises when a column is missing."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", "label", "domain"} - set(reader.fieldnames or ())
        if missing:
            raise RecipeCheckError(f"{path}: missing column(s) {sorted(missing)}; the variants "
                                   "need text, label and domain")
        rows = []
        for row in reader:
            row["line"] = str(reader.line_num)  # the line the record ends on
            rows.append(row)
    return rows


def prepare_workspace(source: Path, ws: Path, cache: Path) -> Path:
    """A clone of ``source`` at ``ws`` carrying the source's working-tree files, with DVC's
    cache at ``cache`` (shared by all workspaces). Returns the workspace's log, started anew:
    the output of every dvc command run in it."""
    workspace.scratch_repo(source, ws)
    log = ws / "recipe_check.log"
    log.write_text("", encoding="utf-8")
    _dvc(ws, ["cache", "dir", "--local", str(cache)], log)
    return log


def _set(params: dict, key: str, value: object) -> None:
    section, name = key.split(".", 1)
    params.setdefault(section, {})[name] = value


def _dvc(ws: Path, args: list[str], log: Path) -> dict:
    """``dvc <args>`` in ``ws``, output appended to ``log``; returns its {'wall_s',
    'peak_rss_gib'} (workspace.measure). Raises RecipeCheckError naming the log on failure."""
    dvc = Path(sys.executable).parent / "dvc"
    row = workspace.measure([str(dvc), *args], cwd=ws, env=workspace.environment(ws), log=log,
                            append=True)
    if row.pop("returncode") != 0:
        raise RecipeCheckError(f"{ws}: 'dvc {' '.join(args)}' failed; see {log}")
    return row


def run_variant(variant: Variant, rows: list[dict[str, str]], source: Path, root: Path,
                overrides: list[tuple[str, object]]) -> tuple[Path, dict[str, dict]]:
    """Build and run one variant; returns its workspace and, per stage run, its wall time (s)
    and peak RSS (GiB). A stage DVC found up to date shows the time DVC took to say so."""
    ws = root / variant.name
    log = prepare_workspace(source, ws, root / "cache")
    settings = yaml.safe_load((source / "params.yaml").read_text(encoding="utf-8"))
    for key, value in [*variant.build(rows, ws).items(), *overrides]:
        _set(settings, key, value)
    (ws / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    stages: dict[str, dict] = {}
    if variant.runs_split:
        stages["split"] = _dvc(ws, ["repro", "--single-item", "split"], log)
    if variant.after_split:
        variant.after_split(ws)
    for stage in STAGES:  # one at a time: dvc would otherwise re-run split over our split
        print(f"[{variant.name}] {stage} ...", flush=True)
        stages[stage] = _dvc(ws, ["repro", "--single-item", stage], log)
        print(f"[{variant.name}] {stage}: {stages[stage]['wall_s']:.0f} s, "
              f"{stages[stage]['peak_rss_gib']:.2f} GiB peak", flush=True)
    return ws, stages


def measure(ws: Path) -> dict:
    """Teacher, TF-IDF baseline and int8-student metrics on the workspace's test split: macro-F1
    of each, the student's ratio to the teacher, the share of the teacher's gain over the
    baseline it keeps (None where there is no gain) and its agreement with the teacher, with
    paired bootstrap intervals (benchmarking.paired_ratios); the label whose F1 the student
    keeps least of (benchmarking.worst_class) and every label's F1 for the three
    (``f1_by_label``); and how many disagreements fall on sentences the teacher itself gets
    wrong; the label weighting the baseline stage chose on validation
    (``baseline_class_weight``); the int8 student's size in MB (``student_int8_mb``) and its
    share of the teacher's fp32 weights (``size_ratio``, the benchmark's size ratio; None
    where the teacher stage recorded no size, as for an API teacher)."""
    from datasets import load_from_disk

    from pocketbert.runtime import onnx_runner

    test = load_from_disk(str(ws / "data/tokenize/written/dataset"))["test"]
    gold = np.asarray(test["label"])  # [n] label ids
    labels = dataset.read_labels(ws / "data/tokenize/written" / contract.LABELS_FILE)
    teacher = SoftLabels.read(ws / "data/soft_label", labels, {"test": len(gold)}
                              ).logits["test"].argmax(-1)  # [n], rows as tokenized
    max_length = params.load(ws / "params.yaml", "tokenize").max_length
    bench = params.load(ws / "params.yaml", "benchmark")
    # an int8 model predicts one text per call (onnx_runner.batch_size), as on a device
    int8_file = ws / "models/export/student" / contract.ONNX_INT8_FILE
    model = onnx_runner.load_classifier(int8_file, max_length)
    teacher_metrics = ws / "metrics/teacher.json"
    teacher_mb = (json.loads(teacher_metrics.read_text(encoding="utf-8")).get("size_mb")
                  if teacher_metrics.is_file() else None)
    int8_mb = size_mb(int8_file)
    texts = list(test["text"])
    student = model.logits(texts).argmax(-1)  # [n]
    n_labels = len(model.labels)
    settings = {"resamples": bench.bootstrap_resamples, "seed": bench.bootstrap_seed,
                "level": bench.confidence_level}
    base = baseline.probabilities(baseline.load(ws / "models/baseline" / baseline.MODEL_FILE),
                                  texts, n_labels).argmax(-1)  # [n]
    paired = benchmarking.paired_ratios(gold, student, teacher, base, n_labels=n_labels,
                                        params=bench)
    right = teacher == gold  # [n]: where the teacher is right, a disagreement is a student error
    f1 = {name: dict(zip(labels, evaluation.per_class_f1(gold, ids, n_labels), strict=True))
          for name, ids in (("teacher", teacher), ("student_int8", student), ("baseline", base))}
    return {
        "train_rows": len(dataset.read_examples(ws / "data/split/train.csv")),
        "test_rows": len(gold),
        "epochs_run": json.loads((ws / "metrics/train_student.json").read_text())["epochs_run"],
        "teacher_macro_f1": evaluation.macro_f1(gold, teacher, n_labels),
        "student_int8_macro_f1": evaluation.macro_f1(gold, student, n_labels),
        "baseline_macro_f1": evaluation.macro_f1(gold, base, n_labels),
        "student_int8_mb": int8_mb,
        "size_ratio": None if not teacher_mb else int8_mb / teacher_mb,
        # what the baseline stage chose on validation (older runs tried equal weights only)
        "baseline_class_weight": json.loads((ws / "metrics/baseline.json").read_text(
            encoding="utf-8")).get("class_weight"),  # None: a stage that tried none only
        "ratio": paired["macro_f1_ratio"],
        "ratio_ci": (paired["macro_f1_ratio_ci_low"], paired["macro_f1_ratio_ci_high"]),
        "teacher_gain_over_baseline": paired["teacher_gain_over_baseline"],
        "gain_kept": paired["gain_kept"],
        "gain_kept_ci": (paired["gain_kept_ci_low"], paired["gain_kept_ci_high"]),
        **benchmarking.worst_class(f1["student_int8"], f1["teacher"]),
        "f1_by_label": f1,
        "agreement": evaluation.accuracy(teacher, student),
        "agreement_ci": benchmarking.bootstrap_interval(
            lambda t, p, axis=-1: (t == p).mean(axis=axis), (teacher, student), **settings),
        "teacher_wrong": int((~right).sum()),
        "disagreements": int((teacher != student).sum()),
        "disagreements_where_teacher_wrong": int(((teacher != student) & ~right).sum()),
        **deferral(ws),
    }


DEFERRAL_KEYS = ("test.coverage", "test.coverage_ci_low", "test.coverage_ci_high",
                 "test.agreement", "test.agreement_ci_low", "test.agreement_ci_high",
                 "test.cascade_agreement", "test.coverage_ceiling", "test.disagreements_answered",
                 "validation_rows", "calibration_rows", "score", "threshold",
                 "validation_alone.test.coverage", "validation_alone.test.answered",
                 "validation_alone.test.disagreements_answered")
"the calibrate stage's figures a variant reports (metrics/calibrate.json)"


def deferral(ws: Path) -> dict:
    """The calibrate stage's figures of DEFERRAL_KEYS (answered share, agreement on the answered
    texts, cascade agreement and ceiling on the workspace's test split; the selection texts'
    row counts; with calibration texts, what validation alone would have answered on test),
    under ``deferral.`` keys; {} when the stage has not run there."""
    path = ws / "metrics/calibrate.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text(encoding="utf-8"))
    return {f"deferral.{key}": m.get(key) for key in DEFERRAL_KEYS}


def table(results: dict[str, dict]) -> str:
    """Markdown table of ``measure`` results by variant (apps.results.recipe_table)."""
    return recipe_table(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runs.recipe_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: "
                        f"{', '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override for every variant, e.g. train_student.alpha=0.9")
    parser.add_argument("--workspace", type=Path,
                        default=Path(tempfile.gettempdir()) / "pocketbert-variants",
                        help="folder of the per-variant workspaces and their shared DVC cache")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results file (default: recipe_check.json in --workspace); "
                        "a markdown table is printed")
    args = parser.parse_args(argv)
    with reported():
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = [n for n in names if n not in VARIANTS]
        if not names:
            raise RecipeCheckError(f"--variants: name at least one of {list(VARIANTS)}")
        if unknown:
            raise RecipeCheckError(f"--variants: unknown {unknown}; use {list(VARIANTS)}")
        overrides = [(f"{section}.{key}", value) for (section, key), value
                     in params.parse_overrides(args.set_param, "-S").items()]
        source = Path.cwd()
        if not (source / "dvc.yaml").is_file():
            raise RecipeCheckError(f"{source}: no dvc.yaml; run from the repository root")
        missing = [VARIANTS[n] for n in names
                   if VARIANTS[n].needs and not (source / VARIANTS[n].needs).is_file()]
        if missing:  # before the first variant: a run of several takes hours
            raise RecipeCheckError(
                "; ".join(f"--variants {v.name}: {v.needs} not found" for v in missing)
                + f"; run {missing[0].needs_fix} first")
        rows = read_source_rows(source / SOURCE_CSV)
        out = args.out or args.workspace / "recipe_check.json"
        results: dict[str, dict] = {}
        for name in names:
            start = time.monotonic()
            print(f"[{name}] {VARIANTS[name].description}", flush=True)
            ws, stages = run_variant(VARIANTS[name], rows, source, args.workspace.resolve(),
                                     overrides)
            results[name] = {**measure(ws), "stages": stages}
            results[name]["seconds"] = round(time.monotonic() - start, 1)
            print(f"[{name}] done in {results[name]['seconds']:.0f} s", flush=True)
            # written after every variant: a later failure keeps the variants measured so far
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"overrides": dict(overrides), "variants": results},
                                      indent=2) + "\n", encoding="utf-8")
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
