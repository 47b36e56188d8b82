"""Classification metrics from one confusion matrix (IDH mutant = positive class, label 1), their
patient-level bootstrap intervals, calibration (Brier, ECE) and DeLong's paired test.

:func:`arm_metrics` is the one place an arm's numbers on a set of patients are computed: Table 2,
external validation, cross-validation and ``idh-pseudocolor predict --labels`` all report it.
The bootstrap is stratified by IDH status (mutants and wild-types resampled separately, as pROC
does), so AUROC is defined in every resample; a metric undefined in a resample (precision when no
patient is predicted mutant) is left out of its interval and counted, never silently zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

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


def expected_calibration_error(labels: np.ndarray, prob_mutant: np.ndarray, n_bins: int) -> float:
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


# -- patient-level bootstrap ------------------------------------------------------------------
class Interval(NamedTuple):
    """A percentile bootstrap interval over the resamples where the metric is defined, and how
    many of the resamples left it undefined (precision when no patient is predicted mutant)."""

    low: float
    high: float
    undefined: int


def stratified_resample_index(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray | None:
    """(resamples, patients) positions: mutants and wild-types drawn with replacement separately,
    so every resample keeps the class counts; None when a class has fewer than two patients."""
    y = np.asarray(labels).astype(int)
    groups = (np.flatnonzero(y == 1), np.flatnonzero(y == 0))
    if min(len(g) for g in groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [g[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups], axis=1
    )


def resampled_metrics(
    labels: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int
) -> dict[str, np.ndarray] | None:
    """Every metric on each stratified resample of patients (NaN where undefined), for intervals
    of differences between independent cohorts; None when a class has fewer than two patients."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)
    index = stratified_resample_index(y, n_resamples, seed)
    if index is None:
        return None
    return {m: v for m, v in binary_metrics_many(y[index], p[index]).items() if m in METRICS}


def _stratified_bootstrap(
    labels: np.ndarray,
    statistic: Callable[[np.ndarray], Any],
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Percentile bootstrap over patients, mutants and wild-types resampled separately (as pROC
    does), so every resample has both classes and AUROC is always defined.

    The resamples are drawn here (numpy's Generator) rather than by ``scipy.stats.bootstrap``,
    whose percentiles turn one undefined resample into an undefined interval: a component of
    ``statistic`` that is NaN in a resample is left out of that component's percentiles and
    counted. ``statistic`` takes the (resamples, patients) index matrix and returns one row per
    resample (vectorized: thousands of resamples in milliseconds). Returns (low, high, undefined)
    per component, or None when a class has fewer than two patients: nothing to resample, so no
    interval rather than a made-up one.
    """
    index = stratified_resample_index(labels, n_resamples, seed)
    if index is None:
        return None
    draws = np.asarray(statistic(index), dtype=float).reshape(n_resamples, -1)
    undefined = np.isnan(draws).sum(axis=0)
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # never defined: a NaN interval, and the count says why
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return low, high, undefined


def bootstrap_ci(
    labels: np.ndarray,
    prob: np.ndarray,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Patient-level (stratified) percentile bootstrap CI of every metric over the resamples where
    it is defined, with the number where it is not (NaN interval when a class has < 2 patients)."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)

    def statistic(index: np.ndarray) -> np.ndarray:
        m = binary_metrics_many(y[index], p[index])
        return np.stack([m[k] for k in METRICS], axis=1)

    result = _stratified_bootstrap(y, statistic, n_resamples, seed, confidence)
    if result is None:
        return {k: Interval(math.nan, math.nan, 0) for k in METRICS}
    return {
        k: Interval(float(lo), float(hi), int(u))
        for k, lo, hi, u in zip(METRICS, *result, strict=True)
    }


def paired_auroc_test(
    labels: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    n_resamples: int,
    seed: int,
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same patients: DeLong's test (p-value, normal CI of the
    difference) and a paired, stratified bootstrap 95% CI of the difference.

    Not a permutation test swapping a's and b's probabilities within patients: two models'
    scores live on different scales, so swapping them does not give the null distribution of
    equal AUROCs.
    """
    y = np.asarray(labels).astype(int)
    pa, pb = np.asarray(prob_a, float), np.asarray(prob_b, float)
    delong = delong_test(y, pa, pb)
    ci = _stratified_bootstrap(
        y, lambda i: auroc_many(y[i], pa[i]) - auroc_many(y[i], pb[i]), n_resamples, seed
    )
    # AUROC: defined in every resample
    low, high = (ci[0][0], ci[1][0]) if ci is not None else (np.nan, np.nan)
    return {
        "auroc_difference": delong["difference"],
        "ci_low": float(low),
        "ci_high": float(high),
        "delong_ci_low": delong["ci_low"],
        "delong_ci_high": delong["ci_high"],
        "delong_se": delong["se"],
        "p_value": delong["p_value"],
    }


# -- one arm on one set of patients ---------------------------------------------------------------
def arm_metrics(
    labels: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int, calibration_bins: int
) -> dict[str, Any]:
    """One arm's predictions on one set of patients (one probability per patient, in a fixed
    patient order): ``patients``, ``mutant``, every metric of :data:`METRICS` with its bootstrap
    CI ``<m>_ci_low``/``<m>_ci_high`` and ``<m>_undefined_resamples`` of ``bootstrap_resamples``,
    the Brier score and the ECE (``calibration_bins`` equal-mass bins)."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)
    values, intervals = binary_metrics(y, p), bootstrap_ci(y, p, n_resamples, seed)
    out: dict[str, Any] = {"patients": len(y), "mutant": int(y.sum())}
    for m in METRICS:
        out[m] = values[m]
        out[f"{m}_ci_low"], out[f"{m}_ci_high"], out[f"{m}_undefined_resamples"] = intervals[m]
    out["brier"] = float(brier_score_loss(y, p, labels=[0, 1]))
    out["ece"] = expected_calibration_error(y, p, calibration_bins)
    out["bootstrap_resamples"] = n_resamples
    return out
