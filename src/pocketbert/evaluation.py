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


def report(logits: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...], prefix: str,
           reference_logits: np.ndarray | None = None) -> dict[str, float]:
    """Flat metrics prefix.accuracy, prefix.macro_f1, prefix.f1.<label> (+ agreement)."""
    y_pred = logits.argmax(axis=-1)
    out = {
        f"{prefix}.accuracy": accuracy(y_true, y_pred),
        f"{prefix}.macro_f1": macro_f1(y_true, y_pred, len(labels)),
    }
    for label, f1 in zip(labels, per_class_f1(y_true, y_pred, len(labels)), strict=True):
        out[f"{prefix}.f1.{label}"] = float(f1)
    if reference_logits is not None:
        out[f"{prefix}.agreement_with_teacher"] = accuracy(reference_logits.argmax(-1), y_pred)
    return out
