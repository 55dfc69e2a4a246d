"""The Model2Vec alternative: distillation from a local folder, the head as model2vec runs it,
soft targets, the stage's two pipelines."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import LABELS, run_model2vec_stage, sentences, write_random_soft_labels

from pocketbert.core import params
from pocketbert.core.errors import ModelError
from pocketbert.data import dataset
from pocketbert.training import model2vec_model

PARAMS = SimpleNamespace(**{**dataclasses.asdict(params.Model2VecParams()), "pca_dims": 8,
                            "c_values": (0.5, 5.0)})


def _rows() -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for i, label in enumerate(LABELS):
        for text in sentences(label, 8):
            texts.append(text)
            labels.append(i)
    return texts, np.asarray(labels)


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    """A Model2Vec model distilled from a tiny random BERT folder."""
    from conftest import tiny_classifier, tiny_tokenizer

    folder = tmp_path_factory.mktemp("backbone")
    tokenizer = tiny_tokenizer()
    tiny_classifier(len(tokenizer)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model2vec_model.distill(folder, PARAMS)


def test_the_head_is_logistic_regression_run_by_model2vec(static, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    texts, labels = _rows()
    x = model2vec_model.encode(static, texts)
    assert x.shape == (len(texts), 8) and x.dtype == np.float32
    head, c = model2vec_model.fit_head(x, labels, x, lambda pred: float((pred == labels).mean()),
                                       PARAMS, len(LABELS))
    assert c in PARAMS.c_values
    # the same probabilities as scikit-learn's model, up to the float32 rounding of its weights
    reference = LogisticRegression(C=c, max_iter=PARAMS.max_iter).fit(x, labels)
    np.testing.assert_allclose(head.predict_proba(x), reference.predict_proba(x), atol=1e-5)
    # saved as a model2vec pipeline, which reads the raw text and gives the same numbers
    model2vec_model.save(static, head, tmp_path / "p")
    pipeline = model2vec_model.load(tmp_path / "p")
    probs = model2vec_model.probabilities(pipeline, texts)
    np.testing.assert_allclose(probs, head.predict_proba(x), atol=1e-6)
    assert model2vec_model.count_parameters(pipeline) == static.embedding.size + 4 * 8 + 4


def test_two_labels_and_a_label_missing_from_the_targets(static) -> None:
    from sklearn.linear_model import LogisticRegression

    texts, labels = _rows()
    keep = labels < 2  # labels 0 and 1 only, in a 4-label space
    kept = [t for t, k in zip(texts, keep, strict=True) if k]
    x, y = model2vec_model.encode(static, kept), labels[keep]
    head, c = model2vec_model.fit_head(x, y, x, lambda pred: 0.0, PARAMS, len(LABELS))
    assert c == PARAMS.c_values[0]  # a tie keeps the first
    probs = head.predict_proba(x)
    reference = LogisticRegression(C=c, max_iter=PARAMS.max_iter).fit(x, y).predict_proba(x)
    # one logit z: softmax([0, z]) over the two labels is scikit-learn's sigmoid of z
    np.testing.assert_allclose(probs[:, :2], reference, atol=1e-5)
    assert (probs[:, 2:] < 1e-30).all()  # bias -1e4: the missing labels get exp(-1e4) = 0


def test_soft_targets_are_fitted_as_cross_entropy(static) -> None:
    texts, labels = _rows()
    x = model2vec_model.encode(static, texts)
    # one-hot soft targets are the hard labels: the same weighted log-loss, the same optimum.
    # The two fits reach it by different paths and lbfgs stops once the largest gradient entry
    # is under scikit-learn's tol of 1e-4, so they agree to that order, not to round-off: 1e-3
    hard, _ = model2vec_model.fit_head(x, labels, x, lambda p: 0.0, PARAMS, len(LABELS))
    soft, _ = model2vec_model.fit_head(x, np.eye(len(LABELS))[labels], x, lambda p: 0.0,
                                       PARAMS, len(LABELS))
    np.testing.assert_allclose(soft.predict_proba(x), hard.predict_proba(x), atol=1e-3)
    # a target of 0.9 on label 3 for every text is learnt as such: at the optimum the
    # (unpenalised) intercept's gradient, the sum of probability minus target, is 0, so the
    # fit's mean probability is 0.9 up to the solver's tolerance
    target = np.full((len(texts), len(LABELS)), 0.1 / 3)
    target[:, 3] = 0.9
    fitted, _ = model2vec_model.fit_head(x, target, x, lambda p: 0.0, PARAMS, len(LABELS))
    assert fitted.predict_proba(x)[:, 3].mean() == pytest.approx(0.9, abs=0.01)


def test_missing_or_broken_folders_are_named(tmp_path) -> None:
    with pytest.raises(ModelError, match=r"none: no Model2Vec pipeline .*dvc repro model2vec"):
        model2vec_model.load(tmp_path / "none")
    with pytest.raises(ModelError, match=r"^'model2vec\.backbone': .*empty holds no "
                                         r"model and tokenizer to distil Model2Vec from"):
        (tmp_path / "empty").mkdir()
        model2vec_model.distill(tmp_path / "empty", PARAMS)


def test_the_stage_writes_the_plain_and_the_distilled_pipeline(tiny_world) -> None:
    w = tiny_world
    unlabelled = ["An unlabelled text about the boiler.", "Another one about the pump."]
    write_random_soft_labels(w["root"] / "soft", w["tokenize"], w["augmented"], unlabelled)
    out = w["root"] / "m2v"
    m = run_model2vec_stage(w["params"], w["given_teacher"],
                            {"tokenize": w["tokenize"], "augmented": w["augmented"],
                             "soft_label": w["root"] / "soft"}, out)
    from pocketbert.data import tokenization

    written = tokenization.load(w["tokenize"])
    # plain: the written train rows; distilled: those, the 6 augmented variants, the unlabelled
    assert m["plain.train_rows"] == len(written["train"])
    assert m["distilled.train_rows"] == len(written["train"]) + 6 + 2
    assert m["dim"] == 8 and m["vocabulary"] > 0
    for name in (model2vec_model.PLAIN, model2vec_model.DISTILLED):
        pipeline = model2vec_model.load(out / name)
        probs = model2vec_model.probabilities(pipeline, written["validation"]["text"])
        assert probs.shape == (len(written["validation"]), len(LABELS))
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # float32 softmax
        assert m[f"{name}.parameters"] == model2vec_model.count_parameters(pipeline)
        assert 0 <= m[f"{name}.validation.agreement_with_teacher"] <= 1
        # the label names travel inside each folder; no hub model card
        assert dataset.read_labels(out / name / "labels.json") == tuple(LABELS)
        assert not (out / name / "README.md").exists()
