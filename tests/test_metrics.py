"""metrics.py against hand-counted confusion matrices and scikit-learn: the threshold, undefined
ratios, the invariants Table 2 is checked with, and the vectorized bootstrap versions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from idh_pseudocolor.metrics import (
    METRICS,
    THRESHOLD,
    auroc_many,
    binary_metrics,
    binary_metrics_many,
    invariant_violations,
)

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
    from idh_pseudocolor.metrics import delong_test

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


def test_ece_uses_five_bins_unless_told():
    from idh_pseudocolor.metrics import expected_calibration_error

    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0])
    p = np.linspace(0.05, 0.95, 13)
    assert expected_calibration_error(y, p) == expected_calibration_error(y, p, n_bins=5)
    assert expected_calibration_error(y, p) != expected_calibration_error(y, p, n_bins=6)
