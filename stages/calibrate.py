"""calibrate: a calibrated confidence for the shipped student, and when it should ask the teacher.

The shipped student (ONNX int8, one text per call, as a device runs it) is scored on the
validation and test splits, on the calibration texts (the share of the unlabelled texts the
soft_label stage kept from training, soft_label.calibration_share, with the teacher's labels)
and on a set of texts unlike any training data (calibrate.ood_csv).
On validation a temperature is fitted to the gold labels (benchmarks.deferral). On the
selection texts (validation and calibration together: agreement with the teacher needs no gold
label, so the unlabelled texts add to the few validation ones), for each confidence score of
calibrate.scores, the lowest threshold whose answered texts agree with the teacher on at least
calibrate.target_agreement of them, calibrate.selection_margin standard errors inside it
(deferral.choose_threshold); the score answering the most selection texts wins (ties: the
larger area under its validation agreement-coverage curve). With calibration texts, the
choice validation alone would have made is reported beside it (``validation_alone.*``).
On test, never used for a choice: ECE and negative log-likelihood before and after the
temperature, and per score the coverage (share answered), agreement and macro-F1 on the
answered texts, each with the benchmark's bootstrap intervals, and the coverage ceiling (the
most any threshold on that score could answer on test at the target); the TF-IDF baseline gets a
threshold the same way, for comparison. Writes the deferral settings (contract.CALIBRATION_FILE)
and the risk-coverage curves of the student and the baseline (the plots dvc.yaml declares).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketbert.benchmarks import benchmarking, deferral
from pocketbert.core import contract, evaluation, stage
from pocketbert.core.artifacts import atomic_path, write_json
from pocketbert.core.errors import DataError
from pocketbert.data import dataset, tokenization
from pocketbert.data.soft_labels import CALIBRATION, SoftLabels
from pocketbert.runtime import onnx_runner
from pocketbert.training import baseline

PARAMS = ("calibrate", "benchmark.bootstrap_resamples",
          "benchmark.bootstrap_seed", "benchmark.confidence_level", "benchmark.ece_bins")
INPUTS = ("export_student", "tokenize", "soft_label", "baseline")
OUTPUTS = ("out", "metrics", "plots")
COVERAGES = tuple(round(0.01 * i, 2) for i in range(1, 101))
"coverage levels of the risk-coverage curve: 1% to 100%"
BASELINE_SCORE = "max_probability"
"the baseline's confidence: its top probability (logistic regression's own, uncalibrated)"


def run(params: stage.Params, *, inputs: stage.Paths, outputs: stage.Paths) -> dict:
    p, b = params.calibrate, params.benchmark
    ood_texts = _ood_texts(Path(p.ood_csv))
    labels = dataset.read_labels(inputs["tokenize"] / contract.LABELS_FILE)
    splits, teacher, calibration = _splits(inputs, labels)
    model = onnx_runner.load_classifier(inputs["export_student"] / contract.ONNX_INT8_FILE,
                                        tokenization.read_max_length(inputs["tokenize"]))
    logits = {name: model.logits(texts) for name, (texts, _) in splits.items()}
    logits[CALIBRATION] = (model.logits(calibration) if calibration
                           else np.zeros((0, len(labels))))
    logits["ood"] = model.logits(ood_texts)
    temperature = deferral.fit_temperature(logits["validation"], splits["validation"][1])
    probs = {name: deferral.scaled(z, temperature) for name, z in logits.items()}
    settings = {"resamples": b.bootstrap_resamples, "seed": b.bootstrap_seed,
                "level": b.confidence_level}
    per_score = {score: _score(score, probs, splits, teacher, len(labels), p, settings)
                 for score in p.scores}
    best = _winner(per_score, "selection.coverage")
    base_probs, base_rows = _baseline(inputs["baseline"], splits, calibration, teacher,
                                      len(labels), p, settings)
    metrics = {"temperature": temperature, "target_agreement": p.target_agreement,
               "confidence_level": b.confidence_level, "selection_margin": p.selection_margin,
               "validation_rows": len(splits["validation"][1]),
               "calibration_rows": len(calibration),
               "test_rows": len(splits["test"][1]), "ood_rows": len(ood_texts),
               **_calibration(logits["test"], probs["test"], splits["test"][1], b.ece_bins,
                              settings),
               **{f"scores.{score}.{key}": value for score, row in per_score.items()
                  for key, value in row.items()},
               "score": best, "threshold": per_score[best]["threshold"],
               **{key: value for key, value in per_score[best].items()
                  if key.startswith(("test.", "ood."))},
               **{f"baseline.{key}": value for key, value in base_rows.items()},
               **(_validation_alone(per_score) if calibration else {})}
    _write_curves(outputs["plots"], {"student_int8": (probs["test"], best),
                                      "baseline": (base_probs, BASELINE_SCORE)},
                  teacher["test"], splits["test"][1], len(labels))
    with atomic_path(outputs["out"], directory=True) as tmp:
        write_json(tmp / contract.CALIBRATION_FILE,
                   {"temperature": temperature, "score": best, "threshold": metrics["threshold"],
                    "target_agreement": p.target_agreement, "labels": list(labels)})
    write_json(outputs["metrics"], metrics)
    return metrics


def _write_curves(folder: Path, models: dict[str, tuple[np.ndarray, str]],
                  teacher: np.ndarray, gold: np.ndarray, n_labels: int) -> None:
    """risk_coverage.json in ``folder``: per coverage level (COVERAGES), each model's agreement
    with ``teacher`` and macro-F1 on its surest texts; ``models``: {name: (test probabilities
    [n, labels], confidence score)}."""
    curves = {name: deferral.risk_coverage(deferral.confidences(q, score),
                                           q.argmax(-1) == teacher, gold, q.argmax(-1),
                                           n_labels, COVERAGES)
              for name, (q, score) in models.items()}
    rows = [{"coverage": c, **{f"{name}_{key}": curve[i][key] for name, curve in curves.items()
                               for key in ("agreement", "macro_f1")}}
            for i, c in enumerate(COVERAGES)]
    with atomic_path(folder, directory=True) as tmp:
        write_json(tmp / "risk_coverage.json", rows)


def _splits(inputs: stage.Paths, labels: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """The validation and test splits as {name: (texts, gold label ids [n])}; the teacher's
    top-1 label ids [n] (its stored soft labels) as {validation, test, calibration: ids}, the
    calibration group empty when the soft_label folder has none; and the calibration texts."""
    data = tokenization.load(inputs["tokenize"])
    splits = {name: (list(data[name]["text"]), np.asarray(data[name]["label"]))
              for name in ("validation", "test")}
    stored = SoftLabels.read(inputs["soft_label"], labels,
                             {name: len(gold) for name, (_, gold) in splits.items()},
                             text_groups=(CALIBRATION,))
    teacher = {name: logits.argmax(-1) for name, logits in stored.logits.items()}
    teacher.setdefault(CALIBRATION, np.zeros(0, dtype=np.int64))
    return splits, teacher, list(stored.texts.get(CALIBRATION, []))


def _ood_texts(path: Path) -> list[str]:
    """The texts of calibrate.ood_csv. Raises DataError naming the file and the params key."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; set calibrate.ood_csv in params.yaml to a CSV "
                        "with a 'text' column of texts unlike your data (random characters, "
                        "another language, a URL alone)")
    texts, _ = dataset.load_unlabelled_csv(path)
    return texts


def _calibration(logits: np.ndarray, probs: np.ndarray, gold: np.ndarray, bins: int,
                 settings: dict) -> dict:
    """ECE and negative log-likelihood on test, before (T = 1) and after the temperature,
    each with its bootstrap interval."""
    out: dict = {}
    for when, p in (("before", evaluation.softmax(logits)), ("after", probs)):
        conf, correct = p.max(-1), (p.argmax(-1) == gold).astype(np.float64)
        nll = deferral.nll_values(p, gold)
        out[f"test.ece_{when}"] = evaluation.expected_calibration_error(p, gold, bins)
        low, high = benchmarking.bootstrap_interval(
            lambda c, k, axis=-1: deferral.ece_along(c, k, bins, axis), (conf, correct),
            **settings)
        out.update({f"test.ece_{when}_ci_low": low, f"test.ece_{when}_ci_high": high,
                    f"test.nll_{when}": float(nll.mean())})
        low, high = benchmarking.bootstrap_interval(lambda v, axis=-1: v.mean(axis=axis),
                                                    (nll,), **settings)
        out.update({f"test.nll_{when}_ci_low": low, f"test.nll_{when}_ci_high": high})
    return out


def _selective(scores: dict[str, np.ndarray], probs: dict[str, np.ndarray],
               splits: dict, teacher: dict[str, np.ndarray], n_labels: int, p,
               settings: dict) -> dict:
    """A threshold chosen on the selection texts (validation and calibration) for
    calibrate.target_agreement with calibrate.selection_margin (``p``), verified on test:
    coverage, agreement and macro-F1 of the answered test texts with intervals; the selection
    texts' own figures; with calibration texts, the threshold validation alone gives and what it
    answers on test (``validation_alone.*``, for comparison)."""
    agree = {name: probs[name].argmax(-1) == teacher[name]
             for name in ("validation", CALIBRATION, "test")}
    chosen = deferral.choose_threshold(
        np.concatenate([scores["validation"], scores[CALIBRATION]]),
        np.concatenate([agree["validation"], agree[CALIBRATION]]),
        p.target_agreement, p.selection_margin)
    alone = {}
    if len(scores[CALIBRATION]):
        by_validation = deferral.choose_threshold(scores["validation"], agree["validation"],
                                                  p.target_agreement, p.selection_margin)
        on_test = deferral.answered(scores["test"], by_validation.threshold)
        alone = {"validation_alone.threshold": by_validation.threshold,
                 "validation_alone.validation.coverage": by_validation.coverage,
                 "validation_alone.test.coverage": float(on_test.mean()),
                 "validation_alone.test.answered": int(on_test.sum()),
                 "validation_alone.test.disagreements_answered": int(
                     (on_test & ~agree["test"]).sum())}
    gold, pred = splits["test"][1], probs["test"].argmax(-1)
    answered = deferral.answered(scores["test"], chosen.threshold)
    aurc = float(np.mean([r["agreement"] for r in deferral.risk_coverage(
        scores["validation"], agree["validation"], splits["validation"][1],
        probs["validation"].argmax(-1), n_labels, COVERAGES)]))

    def interval(name: str, statistic, samples) -> dict:
        low, high = (benchmarking.bootstrap_interval(statistic, samples, **settings)
                     if answered.any() else (None, None))
        return {f"{name}_ci_low": low, f"{name}_ci_high": high}

    n_answered = int(answered.sum())
    return {
        "threshold": chosen.threshold,
        "selection.coverage": chosen.coverage,
        "selection.agreement": chosen.agreement,
        "selection.answered": chosen.answered,
        "selection.disagreements": chosen.disagreements,
        "selection.agreement_lower_bound": deferral.clopper_pearson_lower(
            chosen.answered - chosen.disagreements, chosen.answered, settings["level"]),
        "validation.aurc_agreement": aurc,
        "test.coverage": float(answered.mean()),
        **interval("test.coverage", lambda a, axis=-1: a.mean(axis=axis), (answered,)),
        "test.answered": n_answered,
        # never used for a choice: the most any threshold on this score answers on test at the
        # target (chosen on test itself, no margin). Far above test.coverage: the threshold
        # choice is what loses coverage; close to it: the student's ranking is; below it: the
        # validation threshold answers more than the target allows on test (test.agreement)
        "test.coverage_ceiling": deferral.choose_threshold(scores["test"], agree["test"],
                                                           p.target_agreement).coverage,
        "test.disagreements_answered": int((answered & ~agree["test"]).sum()),
        # the cascade: answered texts keep the student's label, the rest get the teacher's
        "test.cascade_agreement": 1.0 - float((answered & ~agree["test"]).mean()),
        "test.agreement": (float(deferral.answered_agreement_along(answered, agree["test"]))
                           if n_answered else None),
        **interval("test.agreement", deferral.answered_agreement_along,
                   (answered, agree["test"])),
        "test.macro_f1": (float(deferral.answered_macro_f1_along(gold, pred, answered,
                                                                 n_labels))
                          if n_answered else None),
        **interval("test.macro_f1", lambda y, q, a, axis=-1: deferral.answered_macro_f1_along(
            y, q, a, n_labels, axis), (gold, pred, answered)),
        **alone,
    }


def _score(score: str, probs: dict[str, np.ndarray], splits: dict,
           teacher: dict[str, np.ndarray], n_labels: int, p, settings: dict) -> dict:
    """One confidence score's threshold and figures (_selective), with the share of the
    out-of-distribution texts it defers and how well it tells them from test texts (AUROC)."""
    scores = {name: deferral.confidences(p, score) for name, p in probs.items()}
    row = _selective(scores, probs, splits, teacher, n_labels, p, settings)
    row["ood.deferred_share"] = float((~deferral.answered(scores["ood"], row["threshold"])
                                       ).mean())
    row["ood.auroc"] = deferral.auroc(scores["test"], scores["ood"])
    return row


def _winner(per_score: dict[str, dict], coverage_key: str) -> str:
    """The confidence score answering the most texts by ``coverage_key`` of its row; ties go to
    the larger area under its validation agreement-coverage curve (that curve needs gold
    labels, so it is validation's even when the choice is on the calibration texts too)."""
    return max(per_score, key=lambda s: (per_score[s][coverage_key],
                                         per_score[s]["validation.aurc_agreement"]))


def _validation_alone(per_score: dict[str, dict]) -> dict:
    """The choice validation alone would make, without the calibration texts: the winner by
    validation coverage (_winner) and its row's ``validation_alone.*`` figures (_selective),
    with its name as ``validation_alone.score``."""
    best = _winner(per_score, "validation_alone.validation.coverage")
    return {"validation_alone.score": best,
            **{key: value for key, value in per_score[best].items()
               if key.startswith("validation_alone.")}}


def _baseline(folder: Path, splits: dict, calibration: list[str], teacher: dict[str, np.ndarray],
              n_labels: int, p, settings: dict) -> tuple[np.ndarray, dict]:
    """The TF-IDF baseline's test probabilities and its threshold for the same target on its
    top probability, chosen on the same selection texts (_selective), for comparison."""
    model = baseline.load(folder / baseline.MODEL_FILE)
    probs = {name: baseline.probabilities(model, texts, n_labels)
             for name, (texts, _) in splits.items()}
    probs[CALIBRATION] = (baseline.probabilities(model, calibration, n_labels) if calibration
                          else np.zeros((0, n_labels)))
    scores = {name: deferral.confidences(p, BASELINE_SCORE) for name, p in probs.items()}
    row = _selective(scores, probs, splits, teacher, n_labels, p, settings)
    return probs["test"], {k: v for k, v in row.items() if not k.startswith("validation.aurc")}


def main(argv: Sequence[str] | None = None) -> dict:
    return stage.cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
