"""Classification metrics from one confusion matrix (IDH mutant = positive class, label 1)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

THRESHOLD = 0.5
METRICS = ("auroc", "accuracy", "f1", "precision", "recall", "specificity")


def binary_metrics(labels: np.ndarray, prob_mutant: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """AUROC from the probabilities; the rest from the confusion matrix at ``threshold``.

    Undefined ratios (no predicted positives, a single class) are NaN rather than a silent 0.
    """
    y = np.asarray(labels).astype(int)
    p = np.asarray(prob_mutant, dtype=float)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "auroc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan,
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }


def invariant_violations(m: dict[str, float], tol: float = 1e-6) -> list[str]:
    """Checks a metrics row must pass (the paper's Table 2 fails the first one).

    Accuracy is the prevalence-weighted mean of sensitivity and specificity, so it lies between
    them; F1 is the harmonic mean of precision and recall.
    """
    problems = []
    acc, rec, spec, prec, f1 = (m.get(k, math.nan) for k in ("accuracy", "recall", "specificity", "precision", "f1"))
    if not any(math.isnan(v) for v in (acc, rec, spec)) and not (min(rec, spec) - tol <= acc <= max(rec, spec) + tol):
        problems.append(f"accuracy {acc:.3f} is not between recall {rec:.3f} and specificity {spec:.3f}")
    if not any(math.isnan(v) for v in (prec, rec, f1)) and prec + rec > 0:
        expected = 2 * prec * rec / (prec + rec)
        if abs(expected - f1) > max(tol, 1e-3):  # tol also absorbs rounding in printed tables
            problems.append(f"F1 {f1:.3f} != 2PR/(P+R) = {expected:.3f}")
    return problems
