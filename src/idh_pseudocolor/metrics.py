"""Classification metrics from one confusion matrix (IDH mutant = positive class, label 1)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

THRESHOLD = 0.5
METRICS = ("auroc", "accuracy", "f1", "precision", "recall", "specificity")


def binary_metrics(
    labels: np.ndarray, prob_mutant: np.ndarray, threshold: float = THRESHOLD
) -> dict[str, float]:
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
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def auroc_many(labels: np.ndarray, prob_mutant: np.ndarray) -> np.ndarray:
    """AUROC of each row of (resamples, patients) arrays at once (Mann-Whitney U with midranks,
    the value roc_auc_score gives); NaN for a row with one class. Bootstraps need thousands."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    ranks = rankdata(np.asarray(prob_mutant, dtype=float), axis=1)
    n_pos, n_neg = y.sum(axis=1), (~y).sum(axis=1)
    u = np.where(y, ranks, 0).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def binary_metrics_many(
    labels: np.ndarray, prob_mutant: np.ndarray, threshold: float = THRESHOLD
) -> dict[str, np.ndarray]:
    """:func:`binary_metrics` of each row of (resamples, patients) arrays, vectorized (NaN where
    undefined)."""
    y = np.asarray(labels).astype(bool)
    predicted = np.asarray(prob_mutant, dtype=float) >= threshold
    tp, fp = (predicted & y).sum(axis=1), (predicted & ~y).sum(axis=1)
    fn, tn = (~predicted & y).sum(axis=1), (~predicted & ~y).sum(axis=1)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    return {
        "auroc": auroc_many(y, prob_mutant),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
    }


def invariant_violations(m: dict[str, float], tol: float = 1e-6) -> list[str]:
    """Checks a metrics row must pass (the paper's Table 2 fails the first one).

    Accuracy is the prevalence-weighted mean of sensitivity and specificity, so it lies between
    them; F1 is the harmonic mean of precision and recall.
    """
    problems = []
    acc, rec, spec, prec, f1 = (
        m.get(k, math.nan) for k in ("accuracy", "recall", "specificity", "precision", "f1")
    )
    if not any(math.isnan(v) for v in (acc, rec, spec)) and not (
        min(rec, spec) - tol <= acc <= max(rec, spec) + tol
    ):
        problems.append(
            f"accuracy {acc:.3f} is not between recall {rec:.3f} and specificity {spec:.3f}"
        )
    if not any(math.isnan(v) for v in (prec, rec, f1)) and prec + rec > 0:
        expected = 2 * prec * rec / (prec + rec)
        if abs(expected - f1) > max(tol, 1e-3):  # tol also absorbs rounding in printed tables
            problems.append(f"F1 {f1:.3f} != 2PR/(P+R) = {expected:.3f}")
    return problems


def delong_test(
    labels: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, confidence: float = 0.95
) -> dict[str, float]:
    """DeLong's test for two correlated ROC curves on the same patients (as pROC's ``roc.test``).

    AUROC is a two-sample U-statistic; its per-patient structural components (the fraction of
    the other class each patient outranks, from midranks) give the covariance of the two AUROCs
    without resampling (DeLong, DeLong & Clarke-Pearson 1988; the midrank form of Sun & Xu 2014).
    Returns the difference a - b, its standard error, z, the two-sided p-value and a normal CI.
    Identical rankings have zero variance: difference 0 and p = 1.
    """
    from scipy import stats

    y = np.asarray(labels).astype(int)
    scores = np.vstack([np.asarray(prob_a, float), np.asarray(prob_b, float)])
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(
            "DeLong's test needs at least two patients of each class "
            f"(got {m} mutant, {n} wild-type)"
        )
    v10, v01 = np.empty((2, m)), np.empty((2, n))
    for k in range(2):
        combined = stats.rankdata(np.concatenate([pos[k], neg[k]]))  # midranks: ties count one half
        v10[k] = (
            combined[:m] - stats.rankdata(pos[k])
        ) / n  # per mutant: fraction of wild-types below it
        v01[k] = (
            1.0 - (combined[m:] - stats.rankdata(neg[k])) / m
        )  # per wild-type: fraction of mutants above it
    auc = v10.mean(axis=1)
    s = np.cov(v10) / m + np.cov(v01) / n
    difference = float(auc[0] - auc[1])
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    if variance <= 1e-15:
        same = abs(difference) < 1e-12
        return {
            "auroc_a": float(auc[0]),
            "auroc_b": float(auc[1]),
            "difference": difference,
            "se": 0.0,
            "z": 0.0 if same else math.copysign(math.inf, difference),
            "p_value": 1.0 if same else 0.0,
            "ci_low": difference,
            "ci_high": difference,
        }
    se = math.sqrt(variance)
    z = difference / se
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * se
    return {
        "auroc_a": float(auc[0]),
        "auroc_b": float(auc[1]),
        "difference": difference,
        "se": se,
        "z": z,
        "p_value": float(2 * stats.norm.sf(abs(z))),
        "ci_low": difference - half,
        "ci_high": difference + half,
    }


def expected_calibration_error(
    labels: np.ndarray, prob_mutant: np.ndarray, n_bins: int = 5
) -> float:
    """ECE with equal-mass bins: patients sorted by P(mutant) and cut into ``n_bins`` groups of
    (nearly) equal size; the size-weighted mean of |observed fraction mutant - mean prediction|.
    Equal-mass rather than equal-width bins, because a test split of tens of patients leaves
    equal-width bins nearly empty."""
    y = np.asarray(labels).astype(float)
    p = np.asarray(prob_mutant, dtype=float)
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(n_bins, len(p))):
        total += len(part) * abs(y[part].mean() - p[part].mean())
    return float(total / len(p))
