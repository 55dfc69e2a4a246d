"""Classification metrics on numpy arrays: accuracy, macro-F1, per-class F1, agreement, ECE."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """[n_labels, n_labels] counts, rows = true label, columns = predicted label."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    m = confusion(y_true, y_pred, n_labels)
    tp = np.diag(m).astype(float)
    precision_den, recall_den = m.sum(axis=0), m.sum(axis=1)
    denom = precision_den + recall_den
    # F1 = 2TP / (2TP + FP + FN); a class never true nor predicted scores 0 (as sklearn does)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    return float(per_class_f1(y_true, y_pred, n_labels).mean())


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float((np.asarray(y_true) == np.asarray(y_pred)).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)  # no overflow in exp
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def scores(outputs: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...]) -> dict:
    """{'accuracy', 'macro_f1', 'f1': {label: F1}} of the top-1 predictions.

    ``outputs``: logits or probabilities [n, labels] (the same argmax either way)."""
    y_pred = np.asarray(outputs).argmax(axis=-1)
    f1 = per_class_f1(y_true, y_pred, len(labels))
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(labels)),
        "f1": {label: float(v) for label, v in zip(labels, f1, strict=True)},
    }


def flatten(prefix: str, nested: dict) -> dict:
    """Nested dicts as one flat dict with dotted keys (DVC's metrics key form):
    ``flatten("test", {"f1": {"notice": 0.9}}) == {"test.f1.notice": 0.9}``."""
    out = {}
    for key, value in nested.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(full, value) if isinstance(value, dict) else {full: value})
    return out


def report(logits: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...], prefix: str,
           reference_logits: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics prefix.accuracy, prefix.macro_f1, prefix.f1.<label> (+ agreement)."""
    out = flatten(prefix, scores(logits, y_true, labels))
    if reference_logits is not None:
        out[f"{prefix}.agreement_with_teacher"] = accuracy(reference_logits.argmax(-1),
                                                           logits.argmax(-1))
    return out
