"""Calibration and deferral (benchmarks.deferral) and the device rule (contract.answers), on
arrays whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pocketbert.benchmarks import deferral
from pocketbert.core import contract, evaluation


def test_calibrated_probabilities_equal_softmax_of_scaled_logits() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [8.0, -3.0, 1.0]])
    for t in (0.5, 1.0, 2.3):
        expected = evaluation.softmax(logits / t)
        got = [contract.calibrated(row, t) for row in evaluation.softmax(logits).tolist()]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)  # float64 round-off
        np.testing.assert_allclose(deferral.scaled(logits, t), expected, rtol=1e-12)


def test_confidence_scores_and_the_rule() -> None:
    p = [0.7, 0.2, 0.1]
    assert contract.confidence(p, "max_probability") == 0.7
    assert contract.confidence(p, "margin") == pytest.approx(0.5)
    assert contract.confidence(p, "entropy") == pytest.approx(sum(x * math.log(x) for x in p))
    assert contract.confidence([1.0, 0.0], "entropy") == 0.0  # 0 log 0 = 0, the surest
    with pytest.raises(ValueError, match="unknown confidence score 'top'"):
        contract.confidence(p, "top")
    rule = {"temperature": 1.0, "score": "max_probability"}
    assert contract.answers(p, threshold=0.7, **rule)
    assert not contract.answers(p, threshold=0.71, **rule)
    assert not contract.answers([1.0, 0.0], threshold=None, **rule)  # no threshold: always ask
    # a temperature above 1 flattens: the same text falls under the threshold
    assert not contract.answers(p, threshold=0.7, temperature=2.0, score="max_probability")
    np.testing.assert_allclose(  # 0.7 - 0.2 in binary floating point
        deferral.confidences(np.array([p, [0.5, 0.5, 0.0]]), "margin"), [0.5, 0.0], atol=1e-16)


def test_the_fitted_temperature_recovers_the_one_that_made_the_labels() -> None:
    # labels drawn from softmax(z / 2): the NLL-optimal temperature for z is near 2
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 4.0, size=(20000, 4))
    p = evaluation.softmax(z / 2.0)
    gold = np.array([rng.choice(4, p=row) for row in p])
    t = deferral.fit_temperature(z, gold)
    assert abs(t - 2.0) < 0.1  # 20,000 draws: the estimate's spread is a few hundredths
    nll = deferral.nll_values(deferral.scaled(z, t), gold).mean()
    assert nll <= deferral.nll_values(deferral.scaled(z, 1.0), gold).mean()


def test_vectorised_ece_matches_the_benchmarks_ece() -> None:
    rng = np.random.default_rng(1)
    probs = evaluation.softmax(rng.normal(0.0, 2.0, size=(300, 3)))
    gold = rng.integers(0, 3, 300)
    conf, correct = probs.max(-1), (probs.argmax(-1) == gold).astype(float)
    assert deferral.ece_along(conf, correct, 10) == pytest.approx(
        evaluation.expected_calibration_error(probs, gold, 10), abs=1e-12)
    stacked = deferral.ece_along(np.stack([conf, conf[::-1]]), np.stack([correct, correct]), 10)
    assert stacked.shape == (2,) and stacked[0] == pytest.approx(
        deferral.ece_along(conf, correct, 10))


def test_the_threshold_is_the_lowest_meeting_the_target() -> None:
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.90, 0.80, 0.70])
    agree = np.array([1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    # 0.8: all eight hold 6 agreements (0.75), the first seven 6 of 7 (0.857)
    chosen = deferral.choose_threshold(scores, agree, 0.8)
    assert (chosen.threshold, chosen.answered, chosen.disagreements) == (0.80, 7, 1)
    assert chosen.coverage == 7 / 8 and chosen.agreement == pytest.approx(6 / 7)
    # 1.0: only the three above the first disagreement
    chosen = deferral.choose_threshold(scores, agree, 1.0)
    assert (chosen.threshold, chosen.answered) == (0.97, 3)
    np.testing.assert_array_equal(deferral.answered(scores, chosen.threshold),
                                  [1, 1, 1, 0, 0, 0, 0, 0])
    # the surest text disagrees: nothing meets 1.0, so every text is deferred
    chosen = deferral.choose_threshold(scores, ~agree, 1.0)
    assert chosen.threshold is None and chosen.coverage == 0 and chosen.agreement is None
    assert not deferral.answered(scores, None).any()
    # equal scores are answered together: the tie at 0.9 cannot be split
    tied = deferral.choose_threshold(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 1], bool), 1.0)
    assert tied.threshold is None


def test_a_margin_keeps_the_chosen_rate_inside_the_target() -> None:
    # 1,000 texts, surest first: one disagreement in every 250 (rate 0.004), then a run of
    # disagreements; at target 0.995 the point estimate takes all 1,000 (5 in 1,000: 0.005)
    scores = np.linspace(1.0, 0.0, 1000)
    agree = np.ones(1000, dtype=bool)
    agree[[249, 499, 749, 999]] = False
    agree[990] = False
    point = deferral.choose_threshold(scores, agree, 0.995)
    assert point.answered == 1000 and point.disagreements == 5
    # one standard error: 3 in 990 is 0.00303 + 0.00175 <= 0.005; 4 in 991 (the run's first
    # disagreement taken) is 0.00404 + 0.00202 > 0.005
    guarded = deferral.choose_threshold(scores, agree, 0.995, margin=1.0)
    assert (guarded.answered, guarded.disagreements) == (990, 3)
    rate = guarded.disagreements / guarded.answered
    assert rate + math.sqrt(rate * (1 - rate) / guarded.answered) <= 0.005
    # no disagreement: the standard error is 0 and the margin changes nothing
    clean = np.ones(50, dtype=bool)
    assert (deferral.choose_threshold(scores[:50], clean, 0.995, margin=2.0).answered
            == deferral.choose_threshold(scores[:50], clean, 0.995).answered == 50)


def test_answered_figures_and_the_curve() -> None:
    gold = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 1, 0, 2, 2])
    answered = np.array([1, 1, 0, 1, 0, 0], dtype=bool)  # labels 0 and 1 only
    # all answered right: labels 0 and 1 score 1; label 2 (all deferred) is not averaged in
    assert deferral.answered_macro_f1_along(gold, pred, answered, 3) == 1.0
    everything = np.ones(6, dtype=bool)
    assert deferral.answered_macro_f1_along(gold, pred, everything, 3) == pytest.approx(
        evaluation.macro_f1(gold, pred, 3))
    assert np.isnan(deferral.answered_macro_f1_along(gold, pred, np.zeros(6, bool), 3))
    agree = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    assert deferral.answered_agreement_along(answered, agree) == 1.0
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    rows = deferral.risk_coverage(scores, agree, gold, pred, 3, (0.5, 1.0))
    assert rows[0] == {"coverage": 0.5, "agreement": 1.0, "macro_f1": 1.0}
    assert rows[1]["agreement"] == pytest.approx(4 / 6)


def test_clopper_pearson_and_auroc() -> None:
    # no failures in n trials: the one-sided bound is (1 - level) ** (1 / n)
    assert deferral.clopper_pearson_lower(200, 200, 0.95) == pytest.approx(0.05 ** (1 / 200))
    assert deferral.clopper_pearson_lower(0, 0, 0.95) is None
    assert deferral.auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert deferral.auroc(np.array([0.5]), np.array([0.5])) == 0.5


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the deferral settings (No such file or directory)"),
    ("{not json", "cannot read the deferral settings (Expecting property name"),
    ("[0.5]", "calibrated for labels None, the student has ['a', 'b']"),
    ('{"labels": ["b", "a"]}', "calibrated for labels ['b', 'a'], the student has ['a', 'b']"),
])
def test_calibration_settings_refused_with_the_file_and_the_fix(tmp_path, content,
                                                               message) -> None:
    from pocketbert.core.errors import DataError

    path = tmp_path / contract.CALIBRATION_FILE
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as exc:
        contract.read_calibration(tmp_path, ("a", "b"))
    assert str(exc.value).startswith(f"{path}: {message}")
    assert str(exc.value).endswith("run `dvc repro calibrate`")
    settings = {"temperature": 1.5, "score": "entropy", "threshold": -0.1, "labels": ["a", "b"]}
    path.write_text(json.dumps(settings))
    assert contract.read_calibration(tmp_path, ("a", "b")) == settings
