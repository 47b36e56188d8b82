"""Table 2's numbers against scikit-learn, the bootstrap, the paired test, invariants, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from idh_pseudocolor import reporting


def fixed_predictions(n: int = 40, seeds=(42, 43, 44), shift: float = 0.25, seed: int = 1) -> pd.DataFrame:
    """Three seeds' predictions on the same patients, informative but imperfect."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(int)
    frames = []
    for s in seeds:
        prob = np.clip(0.35 + shift * labels + rng.normal(0, 0.18, n), 0.01, 0.99)
        frames.append(pd.DataFrame({"config_id": 15, "model_name": "m", "pretrained": False, "pretrained_loaded": False,
                                    "seed": s, "subject_id": [f"P{i:03d}" for i in range(n)], "label": labels, "prob_mutant": prob}))
    return pd.concat(frames, ignore_index=True)


def test_table_2_metrics_match_scikit_learn():
    predictions = fixed_predictions()
    table = reporting.table_2(predictions, n_resamples=300)
    ours = table[table["ours"]].iloc[0]
    ens = predictions.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
    y, p = ens["label"].to_numpy(), ens["p"].to_numpy()
    yhat = (p >= 0.5).astype(int)
    assert ours["auroc_ensemble"] == pytest.approx(roc_auc_score(y, p))
    assert ours["accuracy_ensemble"] == pytest.approx(accuracy_score(y, yhat))
    assert ours["f1_ensemble"] == pytest.approx(f1_score(y, yhat))
    assert ours["precision_ensemble"] == pytest.approx(precision_score(y, yhat))
    assert ours["recall_ensemble"] == pytest.approx(recall_score(y, yhat))
    assert ours["specificity_ensemble"] == pytest.approx(recall_score(y, yhat, pos_label=0))
    per_seed = [roc_auc_score(g["label"], g["prob_mutant"]) for _, g in predictions.groupby("seed")]
    assert ours["auroc_mean"] == pytest.approx(np.mean(per_seed)) and ours["auroc_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert ours["invariants"] == "ok" and ours["seeds"] == 3
    assert ours["brier"] == pytest.approx(np.mean((p - y) ** 2))
    bins = np.array_split(np.argsort(p, kind="stable"), 5)  # equal-mass bins, as the docstring says
    assert ours["ece"] == pytest.approx(sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins) / len(p))


def test_bootstrap_ci_agrees_with_a_hand_rolled_patient_bootstrap():
    predictions = fixed_predictions(n=60)
    ens = predictions.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
    y, p = ens["label"].to_numpy(), ens["p"].to_numpy()
    low, high = reporting.bootstrap_ci(y, p, n_resamples=2000, seed=0)["auroc"]
    rng = np.random.default_rng(123)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = []
    for _ in range(2000):  # patients resampled within each class, AUROC by scikit-learn
        i = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        draws.append(roc_auc_score(y[i], p[i]))
    assert low == pytest.approx(np.percentile(draws, 2.5), abs=0.03)
    assert high == pytest.approx(np.percentile(draws, 97.5), abs=0.03)
    assert low < roc_auc_score(y, p) < high
    # four times the patients, same separation: a narrower interval
    big = reporting.bootstrap_ci(np.tile(y, 4), np.tile(p, 4), n_resamples=1000)["auroc"]
    assert big[1] - big[0] < (high - low) * 0.7
    # one mutant: nothing to resample, so no interval rather than a made-up one
    assert all(np.isnan(v) for v in reporting.bootstrap_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], 100)["auroc"])


def test_paired_comparison_of_pretrained_and_scratch():
    scratch = fixed_predictions(shift=0.05, seed=2)
    finetuned = fixed_predictions(shift=0.45, seed=3).assign(pretrained=True, pretrained_loaded=True)
    result = reporting.pretrained_comparison(pd.concat([finetuned, scratch]), n_resamples=500).iloc[0]
    assert result["available"] and result["patients"] == 40
    assert result["auroc_difference"] > 0.2 and result["ci_low"] > 0 and result["p_value"] < 0.01
    same = reporting.paired_auroc_test(np.array([0, 1, 0, 1, 1, 0]), np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.9, 6), 200)
    assert same["auroc_difference"] == 0 and same["p_value"] == pytest.approx(1.0)
    only_scratch = reporting.pretrained_comparison(scratch).iloc[0]
    assert not only_scratch["available"] and "final_evaluation.pretrained" in only_scratch["note"]


def test_invariants_flag_the_papers_table_and_are_enforced_on_ours():
    table = reporting.table_2(fixed_predictions(), n_resamples=200)
    published = table[~table["ours"]].set_index("method")
    assert "accuracy 0.881 is not between" in published.loc["ResNeXt finetuned", "invariants"]  # SPEC's known defect
    assert published.loc["VGG16 finetuned", "invariants"] == "ok"  # rounding alone is not flagged
    assert set(published["data"]) >= {"TCGA-LGG+GBM (other data)", "own cohort (other data)"}


def test_report_states_the_phantom_banner_only_for_phantom_data():
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    predictions = fixed_predictions()
    results = pd.DataFrame([{"config_id": c, "configuration": str(c), "model_name": m, "auroc_mean": 0.6 + c / 100 + k / 50,
                             "auroc_std": 0.02, "f1_mean": 0.5, "f1_std": 0.05, "seeds": 3}
                            for c in range(28) for k, m in enumerate(["a", "b"])])
    fig = plt.figure()
    common = dict(
        figures={"figure_1": fig, "figure_2": fig, "figure_3": fig, "calibration": fig},
        table=reporting.table_2(predictions, 100), comparison=reporting.pretrained_comparison(predictions),
        winner={"config_id": 27, "configuration": "27: gray FLAIR", "sum_mean_val_auroc": 1.8, "per_model_mean_val_auroc": {"a": 0.9, "b": 0.9}},
        study_results=results,
        best_params={"hyperparameters": {"learning_rate": 1e-4}, "provenance": {"trial": 3, "completed_trials": 9, "validation_f1": 0.7, "model_name": "a", "config_id": 21}},
        test_metrics=pd.DataFrame({"x": [1.0]}), search_plots=[go.Figure(), go.Figure()], parameters={"reporting": {"seed": 0}}, generated="now",
    )
    phantom = reporting.render_report(qc_summary={"synthetic_phantom_cohort": True, "included": 10}, **common)
    real = reporting.render_report(qc_summary={"synthetic_phantom_cohort": False, "included": 10}, **common)
    assert 'id="phantom-banner"' in phantom and "not patient data" in phantom
    assert 'id="phantom-banner"' not in real
    assert "ranks 4 of 28" in real  # gray T1 (24) by the winner rule: only 25, 26, 27 score higher
    assert "trained from scratch" in real  # no pretrained run: said, not hidden


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

    var = (cov(v10a, v10a) + cov(v10b, v10b) - 2 * cov(v10a, v10b)) / m + (cov(v01a, v01a) + cov(v01b, v01b) - 2 * cov(v01a, v01b)) / n
    return auc_a - auc_b, var


def test_delong_matches_the_pairwise_reference_and_known_answers():
    from scipy import stats

    from idh_pseudocolor.metrics import delong_test

    rng = np.random.default_rng(7)
    y = np.array([1] * 23 + [0] * 37)
    a = np.round(rng.normal(y * 1.2, 1.0), 1)  # rounded: ties, which midranks must count as one half
    b = np.round(0.5 * a + rng.normal(y * 0.3, 1.0), 1)  # correlated with a, on another scale
    result = delong_test(y, a, b)
    difference, variance = delong_reference(y, a, b)
    assert result["difference"] == pytest.approx(difference, abs=1e-12)
    assert result["se"] ** 2 == pytest.approx(variance, rel=1e-10)
    assert result["auroc_a"] == pytest.approx(roc_auc_score(y, a)) and result["auroc_b"] == pytest.approx(roc_auc_score(y, b))
    z = difference / np.sqrt(variance)
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert result["ci_low"] == pytest.approx(difference - 1.959964 * np.sqrt(variance), abs=1e-6)
    # identical rankings (one a monotone transform of the other): difference 0, p = 1
    same = delong_test(y, a, np.exp(a))
    assert same["difference"] == 0 and same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0
    # symmetric in the order of the two models
    assert delong_test(y, b, a)["difference"] == pytest.approx(-difference) and delong_test(y, b, a)["p_value"] == pytest.approx(result["p_value"])
    with pytest.raises(ValueError, match="two patients of each class"):
        delong_test([1, 0, 0], [0.2, 0.3, 0.4], [0.1, 0.5, 0.2])


def test_expected_calibration_error_on_hand_made_predictions():
    from idh_pseudocolor.metrics import expected_calibration_error

    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    # 3 equal-mass bins: {0.1,0.2} observed 0 vs 0.15; {0.3,0.6} 0.5 vs 0.45; {0.8,0.9} 1 vs 0.85
    assert expected_calibration_error(y, p, n_bins=3) == pytest.approx((2 * 0.15 + 2 * 0.05 + 2 * 0.15) / 6)
    assert expected_calibration_error(y, p, n_bins=1) == pytest.approx(abs(0.5 - p.mean()))
    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0], n_bins=2) == 0.0
