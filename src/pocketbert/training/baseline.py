"""The classical baseline: TF-IDF word and character n-grams with logistic regression.

What a user who does not distil would train instead (scikit-learn): the benchmark measures it
beside the teacher and the student, on the same test sentences. It reads raw text, so it needs
no tokenizer; its "parameters" are the numbers it learned (idf weights and coefficients).

Serialised with the standard library's pickle (protocol 5), whose bytes are the size on disk
the benchmark reports: scikit-learn's own persistence advice names pickle/joblib for models
reloaded by the code that wrote them. skops' secure format was measured and rejected here: it
writes the fitted n-gram vocabulary (about 40,000 entries) as JSON, 34.5 MB against pickle's
2.1 MB for the same model, and takes seconds to load. Pickle runs code on load, so
:func:`load` is only for files the baseline stage wrote (models/baseline, a DVC output).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from pocketbert.core import evaluation
from pocketbert.core.errors import ModelError

MODEL_FILE = "model.pkl"
"the fitted scikit-learn pipeline in a baseline folder"


def features(params: Any) -> Any:
    """An unfitted feature union: word (1..``params.word_ngram_max``) and character
    (``char_ngram_min``..``char_ngram_max``, within word boundaries) TF-IDF features side by
    side, each vectorizer keeping at most ``params.max_features`` n-grams (the most frequent
    in train; None keeps all)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, params.word_ngram_max),
                        sublinear_tf=params.sublinear_tf, max_features=params.max_features),
        TfidfVectorizer(analyzer="char_wb",
                        ngram_range=(params.char_ngram_min, params.char_ngram_max),
                        sublinear_tf=params.sublinear_tf, max_features=params.max_features))


def classifier(params: Any, c: float,
               class_weight: Literal["none", "balanced"] = "none") -> Any:
    """An unfitted multinomial logistic regression (lbfgs) with inverse regularisation ``c``;
    ``class_weight`` 'balanced' weighs each label's rows by n / (labels x its rows)
    (scikit-learn's rule), 'none' weighs every row alike."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=params.max_iter, random_state=params.seed,
                              class_weight=None if class_weight == "none" else class_weight)


def build(params: Any, c: float) -> Any:
    """An unfitted pipeline: :func:`features`, then :func:`classifier` with ``c``."""
    from sklearn.pipeline import make_pipeline

    return make_pipeline(features(params), classifier(params, c))


def fit(train: tuple[Sequence[str], Sequence[int]],
        validation: tuple[Sequence[str], Sequence[int]], n_labels: int,
        params: Any) -> tuple[Any, dict[str, float | str]]:
    """Fit the features once on ``train`` (texts, label ids), then one classifier per
    (``params.class_weights``, ``params.c_values``) pair, and keep the one with the best
    ``validation`` macro-F1 (the first on a tie: unweighted before balanced as listed by
    default, then the most regularised when c_values increase), as the student keeps its best
    validation epoch. Balanced weights are in the grid because macro-F1 counts a rare label as
    much as a common one, and a user scoring by macro-F1 would try them: without them the
    baseline finds rare labels poorly and the student's gain over it is overstated. The
    features depend on neither, so they are computed once: the fit costs one vectorization plus
    len(class_weights) x len(c_values) solver runs.

    Returns the fitted pipeline (features, classifier) and {'c', 'class_weight',
    'validation.macro_f1', 'validation.accuracy', 'features'}. Raises scikit-learn's ValueError
    when train holds fewer than two labels.
    """
    from sklearn.pipeline import make_pipeline

    union = features(params)
    x_train = union.fit_transform(list(train[0]))
    for _, vectorizer in union.transformer_list:
        # with max_features scikit-learn re-indexes the vocabulary with numpy integers, which
        # pickle at about three times the size of Python ints: the size on disk the benchmark
        # reports would grow with no change to the model
        vectorizer.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
    x_val = union.transform(list(validation[0]))
    y_train, y_val = np.asarray(train[1]), np.asarray(validation[1])
    best: tuple[float, Any, dict[str, float]] | None = None
    grid = [(weighting, c) for weighting in params.class_weights for c in params.c_values]
    # minutes on 10,000 long texts: a bar with an ETA over the solver runs
    for weighting, c in tqdm(grid, desc="baseline: C and label weights", unit="fit",
                             mininterval=2):
        clf = classifier(params, c, weighting).fit(x_train, y_train)
        pred = clf.predict(x_val)
        f1 = evaluation.macro_f1(y_val, pred, n_labels)
        if best is None or f1 > best[0]:
            best = (f1, clf, {"c": float(c), "class_weight": weighting,
                              "validation.macro_f1": f1,
                              "validation.accuracy": evaluation.accuracy(y_val, pred)})
    assert best is not None  # BaselineParams requires a c value and a class weight
    _, clf, info = best
    info["features"] = sum(len(v.vocabulary_) for _, v in union.transformer_list)
    return make_pipeline(union, clf), info


def count_parameters(model: Any) -> int:
    """Learned numbers of a fitted pipeline: one idf weight per feature of each vectorizer,
    and the logistic regression's coefficients [labels or 1, features] and intercepts."""
    union, clf = model[0], model[-1]
    return (sum(v.idf_.size for _, v in union.transformer_list)
            + clf.coef_.size + clf.intercept_.size)


def probabilities(model: Any, texts: Sequence[str], n_labels: int) -> np.ndarray:
    """Probabilities [len(texts), n_labels] float64 in label-id order; a label absent from the
    training rows (not in ``model.classes_``) gets probability 0."""
    proba = model.predict_proba(list(texts))  # [n, len(classes_)]
    out = np.zeros((len(texts), n_labels), dtype=np.float64)
    out[:, np.asarray(model.classes_, dtype=np.int64)] = proba
    return out


def save(model: Any, path: Path) -> None:
    """Pickle ``model`` to ``path`` (protocol 5)."""
    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=5)


def load(path: Path) -> Any:
    """The pipeline the baseline stage wrote to ``path``.

    Raises ModelError naming the file when it is missing or is not a fitted pipeline."""
    if not path.is_file():
        raise ModelError(f"{path}: baseline model not found; build it with "
                         "`dvc repro baseline`")
    try:
        with open(path, "rb") as fh:
            model = pickle.load(fh)  # noqa: S301 - only the baseline stage's own output
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelError(f"{path}: cannot load the baseline model ({exc}); run "
                         "`dvc repro baseline` again") from None
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise ModelError(f"{path}: not a fitted scikit-learn classifier; run "
                         "`dvc repro baseline` again")
    return model
