"""metrics.py against hand-counted confusion matrices, scikit-learn and scipy: the threshold,
undefined ratios, the invariants Table 2 is checked with, the vectorized versions, DeLong's test,
the ECE, and the patient-level (stratified) bootstrap that Table 2, the paired comparison,
external validation and cross-validation rest on: its resamples, its intervals and the resamples
where a metric is undefined."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from idh_pseudocolor.metrics import (
    METRICS,
    THRESHOLD,
    arm_metrics,
    auroc_many,
    binary_metrics,
    binary_metrics_many,
    bootstrap_ci,
    delong_test,
    expected_calibration_error,
    invariant_violations,
    paired_auroc_test,
    resampled_metrics,
    stratified_resample_index,
)
from idh_pseudocolor.report import stats
from tests.report_inputs import fixed_predictions, reporting_settings

# 4 mutants, 5 wild-types; at 0.5: tp 3 (0.9, 0.7, 0.5), fn 1 (0.2), fp 1 (0.6), tn 4
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.7, 0.5, 0.2, 0.6, 0.4, 0.3, 0.1, 0.05])


def test_binary_metrics_from_a_hand_counted_confusion_matrix():
    m = binary_metrics(Y, P)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 4, 1)  # 0.5 itself counts as mutant
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # AUROC: of the 20 (mutant, wild-type) pairs the mutant ranks higher in all but 0.5 < 0.6,
    # 0.2 < 0.6, 0.2 < 0.4 and 0.2 < 0.3
    assert m["auroc"] == pytest.approx(16 / 20) == roc_auc_score(Y, P)
    assert THRESHOLD == 0.5 and set(METRICS) <= set(m)
    assert all(type(m[k]) is int for k in ("tp", "fp", "tn", "fn"))
    assert all(type(m[k]) is float for k in METRICS)


def test_another_threshold_moves_the_confusion_matrix_not_the_auroc():
    m = binary_metrics(Y, P, threshold=0.35)  # now 0.4 is a false positive too
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 3, 1)
    assert m["specificity"] == pytest.approx(3 / 5)
    assert m["auroc"] == pytest.approx(16 / 20)
    many = binary_metrics_many(Y[None], P[None], threshold=0.35)
    assert many["specificity"][0] == pytest.approx(3 / 5)
    assert many["precision"][0] == pytest.approx(3 / 5)


def test_undefined_ratios_are_nan_not_zero():
    nobody_positive = binary_metrics([1, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(nobody_positive["precision"])
    assert nobody_positive["recall"] == 0.0 and nobody_positive["f1"] == 0.0
    one_class = binary_metrics([0, 0, 0], [0.1, 0.7, 0.3])
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["recall"])
    assert one_class["specificity"] == pytest.approx(2 / 3)
    nothing_to_find = binary_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(nothing_to_find["f1"]) and nothing_to_find["accuracy"] == 1.0
    many = binary_metrics_many(np.array([[0, 0, 0], [1, 1, 1]]), np.array([[0.1, 0.7, 0.3]] * 2))
    assert np.isnan(many["auroc"]).all() and np.isnan(many["recall"][0])
    assert np.isnan(many["specificity"][1]) and many["recall"][1] == pytest.approx(1 / 3)


def test_auroc_many_is_scikit_learns_row_by_row_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(40, 12))
    y[0], y[1] = 1, 0  # one class: undefined
    p = np.round(rng.random((40, 12)), 1)  # ties between and within classes
    many = auroc_many(y, p)
    assert np.isnan(many[0]) and np.isnan(many[1])
    for row in range(2, 40):
        assert many[row] == pytest.approx(roc_auc_score(y[row], p[row])), row
    assert auroc_many(np.array([[1, 0]]), np.array([[0.3, 0.3]]))[0] == 0.5  # a tie: one half


def test_invariants_accept_a_consistent_row_and_name_what_breaks():
    consistent = binary_metrics(Y, P)
    assert invariant_violations(consistent) == []
    broken = {**consistent, "accuracy": 0.95}  # above both recall (0.75) and specificity (0.8)
    (problem,) = invariant_violations(broken)
    assert problem == "accuracy 0.950 is not between recall 0.750 and specificity 0.800"
    below = {**consistent, "accuracy": 0.70}
    assert invariant_violations(below) == [
        "accuracy 0.700 is not between recall 0.750 and specificity 0.800"
    ]
    at_the_edges = {**consistent, "accuracy": 0.75}, {**consistent, "accuracy": 0.8}
    assert all(invariant_violations(row) == [] for row in at_the_edges)
    f1_off = {**consistent, "f1": 0.70}  # 2PR/(P+R) = 0.75
    assert invariant_violations(f1_off) == ["F1 0.700 != 2PR/(P+R) = 0.750"]
    # precision is read under its own name: a wrong precision breaks the F1 check
    assert invariant_violations({**consistent, "precision": 0.5}) == [
        "F1 0.750 != 2PR/(P+R) = 0.600"
    ]
    assert invariant_violations({**consistent, "recall": 0.95, "specificity": 0.96}) != []


def test_invariant_tolerances():
    row = {"accuracy": 0.8, "recall": 0.75, "specificity": 0.8, "precision": 0.75, "f1": 0.75}
    assert invariant_violations({**row, "accuracy": 0.8 + 5e-7}) == []  # within tol 1e-6
    assert invariant_violations({**row, "accuracy": 0.8 + 5e-6}) != []
    assert invariant_violations({**row, "accuracy": 0.81}, tol=0.02) == []
    assert invariant_violations({**row, "f1": 0.7509}) == []  # printed tables: 1e-3 of rounding
    assert invariant_violations({**row, "f1": 0.7511}) != []
    assert invariant_violations({**row, "f1": 0.76}, tol=0.02) == []


def test_invariants_skip_what_is_undefined():
    nan = math.nan
    assert invariant_violations({"accuracy": 0.9, "recall": nan, "specificity": 0.1}) == []
    assert invariant_violations({"accuracy": 0.9, "recall": 0.1, "specificity": nan}) == []
    assert invariant_violations({"accuracy": nan, "recall": 0.1, "specificity": 0.2}) == []
    assert invariant_violations({"precision": nan, "recall": 0.5, "f1": 0.1}) == []
    assert invariant_violations({"precision": 0.5, "recall": nan, "f1": 0.1}) == []
    assert invariant_violations({"precision": 0.5, "recall": 0.5, "f1": nan}) == []
    assert invariant_violations({"precision": 0.0, "recall": 0.0, "f1": 0.3}) == []  # P + R = 0
    assert invariant_violations({}) == []
    assert invariant_violations({"precision": 0.5, "recall": 0.5, "f1": 0.1}) == [
        "F1 0.100 != 2PR/(P+R) = 0.500"
    ]


def test_undefined_metrics_are_decided_before_dividing():
    """NaN comes from the definition, not from a 0/0 that happens to give NaN (and warn)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nobody_positive = binary_metrics([1, 0, 0], [0.1, 0.2, 0.3])
        one_class = binary_metrics([0, 0, 0], [0.1, 0.7, 0.3])
    assert math.isnan(nobody_positive["precision"]) and math.isnan(one_class["auroc"])


def test_invariants_at_their_exact_edges():
    """With no tolerance, accuracy equal to recall or to specificity is consistent."""
    row = {"accuracy": 0.75, "recall": 0.75, "specificity": 0.8, "precision": 0.5, "f1": 0.6}
    assert invariant_violations(row, tol=0.0) == []
    assert invariant_violations({**row, "accuracy": 0.8}, tol=0.0) == []
    # F1 off by exactly the tolerance (binary fractions: exact) passes, a hair more does not
    half = {"precision": 0.5, "recall": 0.5, "accuracy": 0.5, "specificity": 0.5}
    assert invariant_violations({**half, "f1": 0.5 + 2**-9}, tol=2**-9) == []
    assert invariant_violations({**half, "f1": 0.5 + 2**-8}, tol=2**-9) != []


def test_delong_on_the_smallest_samples_and_without_variance():
    two_each = delong_test([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1], [0.8, 0.7, 0.2, 0.3])
    assert two_each["auroc_a"] == 0.75 and two_each["auroc_b"] == 1.0
    assert two_each["z"] == pytest.approx(two_each["difference"] / two_each["se"])
    half = 1.959963984540054 * two_each["se"]
    assert two_each["ci_low"] == pytest.approx(-0.25 - half)
    assert two_each["ci_high"] == pytest.approx(-0.25 + half)
    # a separates perfectly, b ties everyone: both have zero variance, but they differ
    y = [1, 1, 1, 0, 0, 0]
    apart = delong_test(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0.5] * 6)
    assert apart == {
        "auroc_a": 1.0,
        "auroc_b": 0.5,
        "difference": 0.5,
        "se": 0.0,
        "z": math.inf,
        "p_value": 0.0,
        "ci_low": 0.5,
        "ci_high": 0.5,
    }
    assert delong_test(y, [0.5] * 6, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1])["z"] == -math.inf
    same = delong_test(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    assert (same["z"], same["p_value"], same["difference"]) == (0.0, 1.0, 0.0)


def test_vectorized_ratios_with_exactly_one_in_the_denominator():
    """One predicted mutant (tp + fp = 1) and one true mutant: the ratios are defined, 1 or 0."""
    many = binary_metrics_many(np.array([[1, 0, 0], [0, 1, 0]]), np.array([[0.9, 0.1, 0.2]] * 2))
    assert many["precision"].tolist() == [1.0, 0.0] and many["recall"].tolist() == [1.0, 0.0]
    assert many["auroc"].tolist() == [1.0, 0.0]


def test_ece_has_no_bins_of_its_own_and_uses_the_ones_it_is_told():
    """The bins are the caller's (conf's reporting.calibration_bins): no default in code."""
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0])
    p = np.linspace(0.05, 0.95, 13)
    with pytest.raises(TypeError, match="n_bins"):
        expected_calibration_error(y, p)
    assert expected_calibration_error(y, p, n_bins=5) != expected_calibration_error(y, p, n_bins=6)


def test_arm_metrics_for_one_arm():
    """What Table 2, external validation, cross-validation and predict --labels report."""
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.4, 0.2, 0.6, 0.1, 0.7, 0.3, 0.2])
    m = arm_metrics(y, p, n_resamples=300, seed=0, calibration_bins=2)
    assert m["patients"] == 8 and m["mutant"] == 3 and m["bootstrap_resamples"] == 300
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["recall"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    # two equal-mass bins: {0.1, 0.2, 0.2, 0.3} 0 observed vs 0.2; {0.4, 0.6, 0.7, 0.9} 0.75 vs 0.65
    assert m["ece"] == pytest.approx((4 * 0.2 + 4 * 0.1) / 8)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["auroc_undefined_resamples"] == 0  # stratified: both classes in every resample
    intervals = bootstrap_ci(y, p, 300, 0)
    for metric in METRICS:
        assert (m[f"{metric}_ci_low"], m[f"{metric}_ci_high"]) == intervals[metric][:2]
        assert m[f"{metric}_undefined_resamples"] == intervals[metric].undefined


def delong_reference(y, pa, pb):
    """DeLong's covariance the long way: every (mutant, wild-type) pair, O(n²), no ranks."""
    y = np.asarray(y)
    out = []
    for p in (np.asarray(pa, float), np.asarray(pb, float)):
        x, w = p[y == 1], p[y == 0]
        psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])  # Mann-Whitney kernel
        out.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    (v10a, v01a, auc_a), (v10b, v01b, auc_b) = out
    m, n = len(v10a), len(v01a)

    def cov(u, v):
        return ((u - u.mean()) * (v - v.mean())).sum() / (len(u) - 1)

    var = (cov(v10a, v10a) + cov(v10b, v10b) - 2 * cov(v10a, v10b)) / m + (
        cov(v01a, v01a) + cov(v01b, v01b) - 2 * cov(v01a, v01b)
    ) / n
    return auc_a - auc_b, var


def test_delong_matches_the_pairwise_reference_and_known_answers():
    from scipy import stats

    rng = np.random.default_rng(7)
    y = np.array([1] * 23 + [0] * 37)
    # rounded: ties, which midranks must count as one half
    a = np.round(rng.normal(y * 1.2, 1.0), 1)
    b = np.round(0.5 * a + rng.normal(y * 0.3, 1.0), 1)  # correlated with a, on another scale
    result = delong_test(y, a, b)
    difference, variance = delong_reference(y, a, b)
    assert result["difference"] == pytest.approx(difference, abs=1e-12)
    assert result["se"] ** 2 == pytest.approx(variance, rel=1e-10)
    assert result["auroc_a"] == pytest.approx(roc_auc_score(y, a)) and result[
        "auroc_b"
    ] == pytest.approx(roc_auc_score(y, b))
    z = difference / np.sqrt(variance)
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert result["ci_low"] == pytest.approx(difference - 1.959964 * np.sqrt(variance), abs=1e-6)
    # identical rankings (one a monotone transform of the other): difference 0, p = 1
    same = delong_test(y, a, np.exp(a))
    assert (
        same["difference"] == 0
        and same["p_value"] == 1.0
        and same["ci_low"] == same["ci_high"] == 0
    )
    # symmetric in the order of the two models
    assert delong_test(y, b, a)["difference"] == pytest.approx(-difference) and delong_test(
        y, b, a
    )["p_value"] == pytest.approx(result["p_value"])
    with pytest.raises(ValueError, match="two patients of each class"):
        delong_test([1, 0, 0], [0.2, 0.3, 0.4], [0.1, 0.5, 0.2])


def test_expected_calibration_error_on_hand_made_predictions():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    # 3 equal-mass bins: {0.1,0.2} observed 0 vs 0.15; {0.3,0.6} 0.5 vs 0.45; {0.8,0.9} 1 vs 0.85
    assert expected_calibration_error(y, p, n_bins=3) == pytest.approx(
        (2 * 0.15 + 2 * 0.05 + 2 * 0.15) / 6
    )
    assert expected_calibration_error(y, p, n_bins=1) == pytest.approx(abs(0.5 - p.mean()))
    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0], n_bins=2) == 0.0


def test_vectorized_metrics_equal_the_one_matrix_metrics_on_every_resample():
    """The bootstrap's vectorized metrics are binary_metrics (scikit-learn) row by row, ties and
    undefined ratios included."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=(300, 25))
    y[0] = 0  # one class only: AUROC undefined
    p = np.round(rng.random((300, 25)) * 0.8, 1)  # ties
    p[1:50] *= 0.6  # rows with no predicted positive: precision undefined
    many = binary_metrics_many(y, p)
    for row in range(300):
        one = binary_metrics(y[row], p[row])
        for metric in METRICS:
            assert many[metric][row] == pytest.approx(one[metric], nan_ok=True), (row, metric)
    assert np.isnan(many["auroc"][0]) and np.isnan(many["precision"]).any()


# -- patient-level bootstrap ------------------------------------------------------------------
def test_stratified_resamples_keep_each_class_count_and_draw_only_from_that_class():
    y = np.array([1, 0, 0, 1, 0, 1, 0, 0])  # 3 mutants, 5 wild-types, interleaved
    index = stratified_resample_index(y, n_resamples=400, seed=5)
    assert index.shape == (400, 8) and index.dtype.kind == "i"
    assert (y[index].sum(axis=1) == 3).all()  # every resample: 3 mutants, 5 wild-types
    assert set(np.unique(index[:, :3])) == {0, 3, 5}  # mutants drawn from all the mutants
    assert set(np.unique(index[:, 3:])) == {1, 2, 4, 6, 7}  # and wild-types from the wild-types
    # with replacement: some resample repeats a patient; resamples differ from each other
    assert any(len(set(row)) < 8 for row in index)
    assert len({tuple(row) for row in index}) > 300
    # uniform draws: each mutant about a third of the mutant slots (1200 draws)
    counts = np.bincount(index[:, :3].ravel(), minlength=8)[[0, 3, 5]]
    assert (abs(counts / 1200 - 1 / 3) < 0.05).all()
    np.testing.assert_array_equal(index, stratified_resample_index(y, 400, seed=5))
    assert not np.array_equal(index, stratified_resample_index(y, 400, seed=6))


@pytest.mark.parametrize(
    ("labels", "resampled"),
    [([1, 1, 0, 0], True), ([1, 0, 0, 0], False), ([1, 1, 0], False), ([0, 0, 0, 0], False)],
)
def test_a_class_needs_two_patients_to_be_resampled(labels, resampled):
    y = np.array(labels)
    assert (stratified_resample_index(y, 10, seed=0) is not None) is resampled
    assert (resampled_metrics(y, np.linspace(0.1, 0.9, len(y)), 10, 0) is not None) is (resampled)


def test_resampled_metrics_are_scikit_learns_on_each_resample():
    rng = np.random.default_rng(2)
    y = (np.arange(30) % 3 == 0).astype(int)
    p = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, 30), 0, 1)
    got = resampled_metrics(y, p, n_resamples=60, seed=9)
    assert set(got) == set(METRICS) and all(v.shape == (60,) for v in got.values())
    index = stratified_resample_index(y, 60, seed=9)
    for r in (0, 17, 59):
        yr, pr = y[index[r]], p[index[r]]
        hard = (pr >= 0.5).astype(int)
        assert got["auroc"][r] == pytest.approx(roc_auc_score(yr, pr))
        assert got["accuracy"][r] == pytest.approx(accuracy_score(yr, hard))
        assert got["f1"][r] == pytest.approx(f1_score(yr, hard))
        assert got["recall"][r] == pytest.approx(recall_score(yr, hard))
        assert got["specificity"][r] == pytest.approx(recall_score(yr, hard, pos_label=0))
    # labels given as floats or booleans are read as classes
    again = resampled_metrics(y.astype(float), list(p), 60, 9)
    np.testing.assert_array_equal(again["auroc"], got["auroc"])


def test_bootstrap_ci_agrees_with_a_hand_rolled_patient_bootstrap():
    predictions = fixed_predictions(n=60)
    ens = predictions.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
    y, p = ens["label"].to_numpy(), ens["p"].to_numpy()
    low, high, undefined = bootstrap_ci(y, p, n_resamples=2000, seed=0)["auroc"]
    assert undefined == 0  # stratified: both classes in every resample
    rng = np.random.default_rng(123)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    # patients resampled within each class; AUROC as the Mann-Whitney U of scipy over n1 * n0,
    # all 2000 resamples in one call (sklearn one at a time made this the slowest unit test)
    drawn_pos = rng.choice(pos, (2000, len(pos)))
    drawn_neg = rng.choice(neg, (2000, len(neg)))
    u = mannwhitneyu(p[drawn_pos], p[drawn_neg], axis=1).statistic
    draws = u / (len(pos) * len(neg))
    assert draws[0] == pytest.approx(
        roc_auc_score(y[np.r_[drawn_pos[0], drawn_neg[0]]], p[np.r_[drawn_pos[0], drawn_neg[0]]])
    )
    assert low == pytest.approx(np.percentile(draws, 2.5), abs=0.03)
    assert high == pytest.approx(np.percentile(draws, 97.5), abs=0.03)
    assert low < roc_auc_score(y, p) < high
    # four times the patients, same separation: a narrower interval
    big = bootstrap_ci(np.tile(y, 4), np.tile(p, 4), n_resamples=1000, seed=0)["auroc"]
    assert big.high - big.low < (high - low) * 0.7


def test_bootstrap_intervals_cover_the_sample_value_and_narrow_with_more_patients():
    rng = np.random.default_rng(4)

    def cohort(n):
        y = (np.arange(n) % 2).astype(int)
        return y, np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1)

    small, large = cohort(30), cohort(300)
    ci_small = bootstrap_ci(*small, n_resamples=500, seed=1)
    ci_large = bootstrap_ci(*large, n_resamples=500, seed=1)
    for ci, (y, p) in ((ci_small, small), (ci_large, large)):
        assert ci["auroc"].low < roc_auc_score(y, p) < ci["auroc"].high
    width = {k: ci["auroc"].high - ci["auroc"].low for k, ci in (("s", ci_small), ("l", ci_large))}
    assert width["l"] < width["s"] / 2  # ~1/sqrt(10) of it
    # a 50 % interval lies inside the 95 % one
    half = bootstrap_ci(*small, n_resamples=500, seed=1, confidence=0.5)
    assert ci_small["auroc"].low < half["auroc"].low < half["auroc"].high < ci_small["auroc"].high


def test_bootstrap_intervals_are_the_percentiles_of_the_same_resamples():
    """bootstrap_ci and resampled_metrics draw the same resamples from the same seed (each checked
    against scikit-learn above): the interval is exactly their percentiles, at any confidence."""
    rng = np.random.default_rng(12)
    y = (np.arange(40) % 4 == 0).astype(int)
    p = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, 40), 0, 1)
    draws = resampled_metrics(y, p, n_resamples=500, seed=21)
    for confidence in (0.95, 0.8):
        ci = bootstrap_ci(y, p, n_resamples=500, seed=21, confidence=confidence)
        tail = 100 * (1 - confidence) / 2
        for m in METRICS:
            defined = draws[m][~np.isnan(draws[m])]
            assert ci[m].undefined == len(draws[m]) - len(defined)
            low, high = np.percentile(defined, [tail, 100 - tail])
            assert (ci[m].low, ci[m].high) == pytest.approx((low, high)), (m, confidence)
    # the project's resamples and seed (conf): two reports of one study agree; another seed moves it
    conf = reporting_settings()
    n, seed = conf.bootstrap_resamples, conf.seed
    assert bootstrap_ci(y, p, n, seed) == bootstrap_ci(y, p, n, seed)
    assert bootstrap_ci(y, p, n, seed)["auroc"] != bootstrap_ci(y, p, n, seed + 1)["auroc"]
    # one mutant: nothing to resample, so no interval rather than a made-up one
    nothing = bootstrap_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], 100, 0)
    assert all(np.isnan(i.low) and np.isnan(i.high) and i.undefined == 0 for i in nothing.values())


def test_undefined_resamples_are_counted_and_the_interval_comes_from_the_others():
    # 10 mutants, 20 wild-types; only mutant 0 (0.8) and wild-type 10 (0.6) are predicted mutant, so
    # a resample drawing neither has no predicted positive: precision undefined there, P = 0.9**10 *
    # 0.95**20
    y = np.array([1] * 10 + [0] * 20)
    p = np.full(30, 0.2)
    p[0], p[10] = 0.8, 0.6
    p[:10] += np.linspace(0, 0.25, 10)  # AUROC informative but not perfect
    n = 2000
    ci = bootstrap_ci(y, p, n_resamples=n, seed=1)
    expected = n * 0.9**10 * 0.95**20  # about 250
    assert abs(ci["precision"].undefined - expected) < 4 * np.sqrt(expected)
    assert np.isfinite(ci["precision"].low) and np.isfinite(ci["precision"].high)
    assert 0 <= ci["precision"].low < ci["precision"].high == 1.0
    # stratified: always defined
    assert ci["auroc"].undefined == ci["recall"].undefined == ci["f1"].undefined == 0
    # the same interval by hand: precision over the resamples with a predicted positive only
    rng = np.random.default_rng(5)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    i = np.concatenate([rng.choice(pos, (n, len(pos))), rng.choice(neg, (n, len(neg)))], axis=1)
    predicted = p[i] >= 0.5
    true_positives, positives = (predicted & (y[i] == 1)).sum(axis=1), predicted.sum(axis=1)
    draws = true_positives[positives > 0] / positives[positives > 0]
    k = int(np.argmax(positives > 0))
    assert draws[0] == pytest.approx(precision_score(y[i[k]], predicted[k]))
    assert ci["precision"].low == pytest.approx(np.percentile(draws, 2.5), abs=0.05)
    # Table 2 carries the count and the report says it
    frame = pd.DataFrame(
        {
            "config_id": 15,
            "model_name": "m",
            "pretrained": False,
            "pretrained_loaded": False,
            "seed": 42,
            "subject_id": [f"P{i:02d}" for i in range(30)],
            "label": y,
            "prob_mutant": p,
        }
    )
    # one seed: its chosen-seed row repeats the ensemble
    table = stats.table_2(frame, n_resamples=400, seed=0, calibration_bins=5)
    ours = table[table["estimate"] == "seed ensemble"].iloc[0]
    assert (
        20 < ours["precision_undefined_resamples"] < 90 and ours["auroc_undefined_resamples"] == 0
    )
    notes = stats.undefined_resample_notes(table)
    assert (
        len(notes) == 1
        and f"precision undefined in {int(ours['precision_undefined_resamples'])} of 400 resamples"
        in notes[0]
    )


def _paired_reference(y, pa, pb, n, seed):
    """A paired, stratified bootstrap of AUROC(a) - AUROC(b), AUROC as scipy's Mann-Whitney U."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    i_pos, i_neg = rng.choice(pos, (n, len(pos))), rng.choice(neg, (n, len(neg)))
    scale = len(pos) * len(neg)
    diff = (
        mannwhitneyu(pa[i_pos], pa[i_neg], axis=1).statistic
        - mannwhitneyu(pb[i_pos], pb[i_neg], axis=1).statistic
    ) / scale
    return np.percentile(diff, [2.5, 97.5])


def test_paired_auroc_test_is_delongs_test_and_a_paired_bootstrap_of_the_difference():
    rng = np.random.default_rng(8)
    y = (np.arange(60) % 3 == 0).astype(int)
    a = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 60), 0, 1)  # better
    b = np.clip(0.4 + 0.1 * y + rng.normal(0, 0.2, 60), 0, 1)
    got = paired_auroc_test(y, a, b, n_resamples=3000, seed=3)
    assert set(got) == {
        "auroc_difference",
        "ci_low",
        "ci_high",
        "delong_ci_low",
        "delong_ci_high",
        "delong_se",
        "p_value",
    }
    delong = delong_test(y, a, b)
    assert got["auroc_difference"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert (got["delong_ci_low"], got["delong_ci_high"]) == (delong["ci_low"], delong["ci_high"])
    assert got["delong_se"] == delong["se"] and got["p_value"] == delong["p_value"]
    low, high = _paired_reference(y, a, b, 3000, seed=11)  # other draws, same distribution
    assert got["ci_low"] == pytest.approx(low, abs=0.03)
    assert got["ci_high"] == pytest.approx(high, abs=0.03)
    assert 0 < got["ci_low"] < got["auroc_difference"] < got["ci_high"]
    # swapping the models mirrors the interval
    swapped = paired_auroc_test(y, b, a, n_resamples=3000, seed=3)
    assert swapped["ci_low"] == pytest.approx(-got["ci_high"])
    assert swapped["ci_high"] == pytest.approx(-got["ci_low"])
    # labels and probabilities as Python lists of another type give the same answer
    listed = paired_auroc_test(list(y.astype(float)), list(a), list(b), 3000, 3)
    assert listed == pytest.approx(got)
    # the project's resamples and seed (conf), so two reports of one study agree
    conf = reporting_settings()
    reported = paired_auroc_test(y, a, b, conf.bootstrap_resamples, conf.seed)
    assert reported == paired_auroc_test(y, a, b, conf.bootstrap_resamples, conf.seed)
    assert reported["ci_low"] != got["ci_low"]
    with pytest.raises(ValueError, match="at least two patients of each class"):
        paired_auroc_test(np.array([1, 0, 0, 0]), a[:4], b[:4], 100, 0)
