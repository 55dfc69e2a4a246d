"""Know when to ask: a calibrated confidence, a deferral threshold chosen for a target, and the
risk-coverage curve.

The student answers a text itself when its calibrated confidence reaches a threshold and
defers it to the teacher otherwise (``core.contract.answers``, the one definition of the rule).
Here the pieces are chosen and measured: a temperature fitted on the validation split (Guo et
al. 2017, "On Calibration of Modern Neural Networks": one scalar T, softmax(logits / T),
fitted by negative log-likelihood), a threshold per confidence score chosen on the validation
split for a target agreement with the teacher on the answered texts, and the answered share
(coverage), agreement and macro-F1 on the test split with bootstrap intervals.

Arrays: logits and probabilities [n, labels]; label ids, scores and masks [n].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketbert.core import contract, evaluation

TEMPERATURE_BOUNDS = (0.05, 20.0)
"the search range of the temperature; a fit at either end is reported as such"


def nll_values(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of the gold label per text [n] (nats); a probability of 0 counts
    as 1e-12 (a finite penalty, as scikit-learn's log_loss clips)."""
    picked = probs[np.arange(len(gold)), np.asarray(gold)]
    return -np.log(np.clip(picked, 1e-12, None))


def fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """The temperature T minimising the mean negative log-likelihood of softmax(logits / T)
    on (``logits`` [n, labels], ``gold`` [n]), searched on log T within TEMPERATURE_BOUNDS
    (scipy.optimize.minimize_scalar, bounded). Guo et al. 2017, section 4.2."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)

    def loss(log_t: float) -> float:
        return float(nll_values(evaluation.softmax(z / math.exp(log_t)), gold).mean())

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))


def scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature) [n, labels] float64."""
    return evaluation.softmax(np.asarray(logits, dtype=np.float64) / temperature)


def confidences(probs: np.ndarray, score: str) -> np.ndarray:
    """``contract.confidence`` of every row of ``probs`` [n, labels] -> [n] float64: the
    device rule itself, row by row, so the choice here is the decision a device makes."""
    return np.array([contract.confidence(row, score) for row in probs.tolist()],
                    dtype=np.float64)


def ece_along(conf: np.ndarray, correct: np.ndarray, bins: int, axis: int = -1) -> np.ndarray:
    """Expected calibration error along ``axis`` (vectorised over bootstrap resamples [..., n]):
    the same equal-width bins and rule as evaluation.expected_calibration_error (a confidence
    in (lo, hi] falls in that bin)."""
    conf, correct = np.moveaxis(conf, axis, -1), np.moveaxis(correct, axis, -1)
    n = conf.shape[-1]
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = np.zeros(conf.shape[:-1])
    for b in range(bins):
        in_bin = index == b
        count = in_bin.sum(-1)
        gap = np.abs((correct * in_bin).sum(-1) - (conf * in_bin).sum(-1))
        total += np.where(count > 0, gap, 0.0) / n
    return total


@dataclass(frozen=True)
class Threshold:
    """A threshold chosen on one split: answer when the score is at least ``threshold``."""

    threshold: float | None
    "None when no answered set reaches the target: every text is deferred"
    coverage: float
    "share of the split's texts answered"
    agreement: float | None
    "agreement with the teacher on the answered texts (None when none is answered)"
    answered: int
    disagreements: int


def choose_threshold(scores: np.ndarray, agree: np.ndarray, target: float,
                     margin: float = 0.0) -> Threshold:
    """The lowest threshold whose answered texts (score >= threshold) agree with the teacher
    on at least ``target`` of them with ``margin`` standard errors to spare: the largest
    answered set of k texts, d of them disagreements, where
    d / k + margin * sqrt((d / k) * (1 - d / k) / k) <= 1 - target (the binomial standard
    error of the disagreement rate; margin 0 is the point estimate). Candidate thresholds are
    the split's own scores (texts of equal score are answered or deferred together).

    The largest set meeting a point estimate sits at the edge of the target, so a new sample
    falls short about half the time; the margin keeps the chosen rate one or more standard
    errors inside it. With no disagreement the standard error is 0: a small split, whose k
    texts can show an agreement of 1 - d / k only, below k = 1 / (1 - target) (200 for
    0.995) needs d = 0 whatever the margin.

    ``scores`` [n] float, ``agree`` [n] bool (student top-1 == teacher top-1)."""
    order = np.argsort(-scores, kind="stable")
    s, a = scores[order], agree[order].astype(np.int64)
    agreed = np.cumsum(a)
    k = np.arange(1, len(s) + 1)
    rate = 1.0 - agreed / k  # disagreement rate of the k surest
    boundary = np.r_[s[1:] != s[:-1], True]  # the last text of each run of equal scores
    ok = boundary & (rate + margin * np.sqrt(rate * (1.0 - rate) / k) <= 1.0 - target + 1e-12)
    if not ok.any():
        return Threshold(None, 0.0, None, 0, 0)
    last = int(np.flatnonzero(ok)[-1])
    answered = last + 1
    return Threshold(float(s[last]), answered / len(s), float(agreed[last] / answered),
                     answered, int(answered - agreed[last]))


def clopper_pearson_lower(successes: int, trials: int, level: float) -> float | None:
    """One-sided ``level`` lower confidence bound of a binomial proportion (Clopper and Pearson
    1934, exact; scipy.stats.binomtest's 'exact' interval at 2 * level - 1 two-sided). None
    when there are no trials."""
    if trials == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=2 * level - 1,
                                                    method="exact")
    return float(ci.low)


def answered(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which texts the student answers [n] bool: score >= threshold (none when None), the
    rule of contract.answers."""
    if threshold is None:
        return np.zeros(len(scores), dtype=bool)
    return scores >= threshold


def answered_macro_f1_along(gold: np.ndarray, pred: np.ndarray, answered: np.ndarray,
                            n_labels: int, axis: int = -1) -> np.ndarray:
    """Macro-F1 on the answered texts along ``axis`` (vectorised over resamples [..., n]),
    averaged over the labels present among them (true or predicted): a label whose texts
    were all deferred is not scored 0, since nothing of it was answered. NaN where nothing is
    answered."""
    f1_sum, present = 0.0, 0
    for label in range(n_labels):
        true, hit = (gold == label) & answered, (pred == label) & answered
        tp = (true & hit).sum(axis=axis)
        denom = true.sum(axis=axis) + hit.sum(axis=axis)
        f1_sum = f1_sum + np.divide(2.0 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)
        present = present + (denom > 0)
    return np.divide(f1_sum, present, out=np.full(np.shape(present), np.nan),
                     where=np.asarray(present) > 0)


def answered_agreement_along(answered: np.ndarray, agree: np.ndarray,
                             axis: int = -1) -> np.ndarray:
    """Agreement on the answered texts along ``axis``; NaN where nothing is answered."""
    count = answered.sum(axis=axis)
    hits = (answered & agree).sum(axis=axis)
    return np.divide(hits, count, out=np.full(np.shape(count), np.nan, dtype=np.float64),
                     where=count > 0)


def risk_coverage(scores: np.ndarray, agree: np.ndarray, gold: np.ndarray, pred: np.ndarray,
                  n_labels: int, coverages: Sequence[float]) -> list[dict[str, float]]:
    """Agreement with the teacher and macro-F1 (answered_macro_f1_along) of the ``c`` share of
    texts with the highest scores, for each ``c`` in ``coverages`` (ties broken by row order):
    [{'coverage', 'agreement', 'macro_f1'}, ...]."""
    order = np.argsort(-scores, kind="stable")
    rows = []
    for c in coverages:
        answered = np.zeros(len(scores), dtype=bool)
        answered[order[:max(1, round(c * len(scores)))]] = True
        rows.append({"coverage": round(float(c), 4),
                     "agreement": float(answered_agreement_along(answered, agree)),
                     "macro_f1": float(answered_macro_f1_along(gold, pred, answered,
                                                               n_labels))})
    return rows


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling in-distribution texts (``in_scores``, positives)
    from out-of-distribution ones (``out_scores``) by their confidence: the probability that
    a random in-distribution text scores above a random out-of-distribution one (ties count
    half; scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    return float(roc_auc_score(y, np.r_[in_scores, out_scores]))
