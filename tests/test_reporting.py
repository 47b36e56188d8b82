"""Table 2's numbers against scikit-learn, the bootstrap, the paired test, invariants, the report
(idh_pseudocolor.report: stats and html)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from idh_pseudocolor.metrics import METRICS
from idh_pseudocolor.report import html, stats


def render_macro(name: str, *args, **kwargs) -> str:
    """One macro of templates/macros.j2, rendered as the report renders it."""
    return str(getattr(html.environment().get_template("macros.j2").module, name)(*args, **kwargs))


def fixed_predictions(
    n: int = 40, seeds=(42, 43, 44), shift: float = 0.25, seed: int = 1
) -> pd.DataFrame:
    """Three seeds' predictions on the same patients, informative but imperfect."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(int)
    frames = []
    for s in seeds:
        prob = np.clip(0.35 + shift * labels + rng.normal(0, 0.18, n), 0.01, 0.99)
        frames.append(
            pd.DataFrame(
                {
                    "config_id": 15,
                    "model_name": "m",
                    "pretrained": False,
                    "pretrained_loaded": False,
                    "seed": s,
                    "subject_id": [f"P{i:03d}" for i in range(n)],
                    "label": labels,
                    "prob_mutant": prob,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_table_2_metrics_match_scikit_learn():
    predictions = fixed_predictions()
    table = stats.table_2(predictions, n_resamples=300)
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
    assert ours["auroc_mean"] == pytest.approx(np.mean(per_seed)) and ours[
        "auroc_std"
    ] == pytest.approx(np.std(per_seed, ddof=1))
    assert ours["invariants"] == "ok" and ours["seeds"] == 3
    assert ours["brier"] == pytest.approx(np.mean((p - y) ** 2))
    bins = np.array_split(np.argsort(p, kind="stable"), 5)  # equal-mass bins, as the docstring says
    assert ours["ece"] == pytest.approx(
        sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in bins) / len(p)
    )


def test_bootstrap_ci_agrees_with_a_hand_rolled_patient_bootstrap():
    predictions = fixed_predictions(n=60)
    ens = predictions.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
    y, p = ens["label"].to_numpy(), ens["p"].to_numpy()
    low, high, undefined = stats.bootstrap_ci(y, p, n_resamples=2000, seed=0)["auroc"]
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
    big = stats.bootstrap_ci(np.tile(y, 4), np.tile(p, 4), n_resamples=1000)["auroc"]
    assert big.high - big.low < (high - low) * 0.7
    # one mutant: nothing to resample, so no interval rather than a made-up one
    none = stats.bootstrap_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], 100)["auroc"]
    assert np.isnan(none.low) and np.isnan(none.high)


def test_undefined_resamples_are_counted_and_the_interval_comes_from_the_others():
    # 10 mutants, 20 wild-types; only mutant 0 (0.8) and wild-type 10 (0.6) are predicted mutant, so
    # a resample drawing neither has no predicted positive: precision undefined there, P = 0.9**10 *
    # 0.95**20
    y = np.array([1] * 10 + [0] * 20)
    p = np.full(30, 0.2)
    p[0], p[10] = 0.8, 0.6
    p[:10] += np.linspace(0, 0.25, 10)  # AUROC informative but not perfect
    n = 2000
    ci = stats.bootstrap_ci(y, p, n_resamples=n, seed=1)
    expected = n * 0.9**10 * 0.95**20  # about 250
    assert abs(ci["precision"].undefined - expected) < 4 * np.sqrt(expected)
    assert np.isfinite(ci["precision"].low) and np.isfinite(ci["precision"].high)
    assert 0 <= ci["precision"].low < ci["precision"].high == 1.0
    assert (
        ci["auroc"].undefined == ci["recall"].undefined == ci["f1"].undefined == 0
    )  # stratified: always defined
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
    table = stats.table_2(
        frame, n_resamples=400
    )  # one seed: its chosen-seed row repeats the ensemble
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


def test_chosen_seed_row_is_the_seed_with_the_best_validation_auroc():
    predictions = fixed_predictions()
    # validation picks seed 44, the worst on test: the choice must not look at the test
    test_auroc = {
        s: roc_auc_score(g["label"], g["prob_mutant"]) for s, g in predictions.groupby("seed")
    }
    assert min(test_auroc, key=test_auroc.get) == 44
    predictions["val_auroc"] = predictions["seed"].map({42: 0.61, 43: 0.70, 44: 0.77})
    predictions["best_epoch"] = predictions["seed"].map({42: 2, 43: 5, 44: 4})
    table = stats.table_2(predictions, n_resamples=200)
    ours = table[table["ours"]]
    assert list(ours["estimate"]) == ["seed ensemble", "seed chosen on validation"]
    row = ours.iloc[1]
    assert (
        row["chosen_seed"] == 44
        and row["chosen_val_auroc"] == 0.77
        and row["chosen_best_epoch"] == 4
    )
    assert "seed 44" in row["method"] and "chosen on validation AUROC 0.770" in row["method"]
    run = predictions[predictions["seed"] == 44]
    assert row["auroc_best_seed"] == pytest.approx(test_auroc[44])
    assert row["f1_best_seed"] == pytest.approx(f1_score(run["label"], run["prob_mutant"] >= 0.5))
    assert row["auroc_ci_low"] <= row["auroc_best_seed"] <= row["auroc_ci_high"]
    assert row["brier"] == pytest.approx(np.mean((run["prob_mutant"] - run["label"]) ** 2))
    page = render_macro("table_2", html.table_2_rows(table), list(METRICS))
    assert page.count('<tr class="ours chosen">') == 1 and "chosen before the test was read" in page
    assert f"<b>{row['auroc_best_seed']:.3f}</b>" in page
    # without recorded validation AUROCs the row says so instead of guessing
    old = stats.table_2(predictions.drop(columns=["val_auroc", "best_epoch"]), n_resamples=50)
    assert (
        old[old["estimate"] == "seed chosen on validation"]["method"]
        .str.contains("not recorded")
        .all()
    )


def sweep_and_final():
    """A sweep of the scratch arm and a final evaluation of both arms, seeds 42 and 43."""
    final = pd.concat(
        [fixed_predictions(seeds=(42, 43)).assign(pretrained=flag) for flag in (False, True)],
        ignore_index=True,
    )
    final["val_auroc"] = final["seed"].map({42: 0.800, 43: 0.900})
    final["best_epoch"] = final["seed"].map({42: 6, 43: 9})
    sweep = pd.DataFrame(
        {
            "config_id": [15, 15, 15, 3],
            "model_name": "m",
            "seed": [42, 43, 44, 42],
            "pretrained": False,
            "auroc": [0.810, 0.850, 0.7, 0.5],
            "best_epoch": [6, 7, 3, 1],
        }
    )
    return final, sweep


def test_retrain_agreement_flags_differences_beyond_the_tolerance():
    final, sweep = sweep_and_final()
    table = stats.retrain_agreement(final, sweep, tolerance=0.02).set_index(["pretrained", "seed"])
    assert len(table) == 4  # one row per final-evaluation run
    assert table.loc[(False, 42), "status"] == "agrees" and table.loc[
        (False, 42), "difference"
    ] == pytest.approx(-0.01)
    assert table.loc[(False, 43), "status"] == "differs" and table.loc[
        (False, 43), "difference"
    ] == pytest.approx(0.05)
    assert (
        table.loc[(False, 43), "sweep_best_epoch"] == 7
        and table.loc[(False, 43), "final_best_epoch"] == 9
    )
    assert (
        table.loc[True, "status"] == "no sweep run"
    ).all()  # the sweep trained only the scratch arm
    assert (
        stats.retrain_agreement(final, sweep, tolerance=0.06)["status"].tolist().count("agrees")
        == 2
    )
    unrecorded = stats.retrain_agreement(
        final.drop(columns=["val_auroc", "best_epoch"]), sweep, 0.02
    )
    assert set(unrecorded["status"]) == {"not recorded"}


def test_paired_comparison_of_pretrained_and_scratch():
    scratch = fixed_predictions(shift=0.05, seed=2)
    finetuned = fixed_predictions(shift=0.45, seed=3).assign(
        pretrained=True, pretrained_loaded=True
    )
    result = stats.pretrained_comparison(pd.concat([finetuned, scratch]), n_resamples=500).iloc[0]
    assert result["available"] and result["patients"] == 40
    assert result["auroc_difference"] > 0.2 and result["ci_low"] > 0 and result["p_value"] < 0.01
    same = stats.paired_auroc_test(
        np.array([0, 1, 0, 1, 1, 0]), np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.9, 6), 200
    )
    assert same["auroc_difference"] == 0 and same["p_value"] == pytest.approx(1.0)
    only_scratch = stats.pretrained_comparison(scratch).iloc[0]
    assert not only_scratch["available"] and "final_evaluation.pretrained" in only_scratch["note"]


def test_invariants_flag_the_papers_table_and_are_enforced_on_ours():
    table = stats.table_2(fixed_predictions(), n_resamples=200)
    published = table[~table["ours"]].set_index("method")
    assert (
        "accuracy 0.881 is not between" in published.loc["ResNeXt finetuned", "invariants"]
    )  # SPEC's known defect
    assert published.loc["VGG16 finetuned", "invariants"] == "ok"  # rounding alone is not flagged
    assert set(published["data"]) >= {"TCGA-LGG+GBM (other data)", "own cohort (other data)"}


def test_report_states_the_phantom_banner_only_for_phantom_data():
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    predictions, sweep = sweep_and_final()
    results = pd.DataFrame(
        [
            {
                "config_id": c,
                "configuration": str(c),
                "model_name": m,
                "auroc_mean": 0.6 + c / 100 + k / 50,
                "auroc_std": 0.02,
                "f1_mean": 0.5,
                "f1_std": 0.05,
                "seeds": 3,
            }
            for c in range(28)
            for k, m in enumerate(["a", "b"])
        ]
    )
    fig = plt.figure()
    common = dict(
        figures={"figure_1": fig, "figure_2": fig, "figure_3": fig, "calibration": fig},
        table=stats.table_2(predictions, 100),
        comparison=stats.pretrained_comparison(predictions, 100),
        agreement=stats.retrain_agreement(predictions, sweep, 0.02),
        winner={
            "config_id": 27,
            "configuration": "27: gray FLAIR",
            "sum_mean_val_auroc": 1.8,
            "per_model_mean_val_auroc": {"a": 0.9, "b": 0.9},
        },
        study_results=results,
        best_params={
            "hyperparameters": {"learning_rate": 1e-4},
            "provenance": {
                "trial": 3,
                "completed_trials": 9,
                "validation_f1": 0.7,
                "model_name": "a",
                "config_id": 21,
            },
        },
        test_metrics=pd.DataFrame({"x": [1.0]}),
        search_plots=[go.Figure(), go.Figure()],
        parameters={"environment": {"kind": "demo", "rehearsal": False}, "reporting": {"seed": 0}},
        generated="now",
    )
    phantom = html.render_report(
        qc_summary={"synthetic_phantom_cohort": True, "included": 10}, **common
    )
    real = html.render_report(
        qc_summary={"synthetic_phantom_cohort": False, "included": 10}, **common
    )
    assert 'id="phantom-banner"' in phantom and "not patient data" in phantom
    assert 'id="phantom-banner"' not in real
    assert "ranks 4 of 28" in real  # gray T1 (24) by the winner rule: only 25, 26, 27 score higher
    assert "Some runs asked for pretrained weights that were not loaded" in real  # said, not hidden
    # Table 2: per arm the seed ensemble, then the seed chosen on validation (43: val AUROC 0.900)
    assert real.count('<tr class="ours">') == 2 and real.count('<tr class="ours chosen">') == 2
    assert "m, no pretraining, seed 43 (chosen on validation AUROC 0.900, best of 2 seeds)" in real
    # the retrain check: seed 43 of the scratch arm differs from the sweep by 0.05 > 0.02, flagged
    assert 'id="retrain-flag"' in real and "1 of 4 retrained runs differ" in real
    assert (
        real.count('<tr class="differs">') == 1 and real.count("<td>no sweep run</td>") == 2 * 2
    )  # sweep and status cells
    agrees = {**common, "agreement": stats.retrain_agreement(predictions, sweep, 0.06)}
    assert 'id="retrain-flag"' not in html.render_report(qc_summary={"included": 10}, **agrees)


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

    from idh_pseudocolor.metrics import delong_test

    rng = np.random.default_rng(7)
    y = np.array([1] * 23 + [0] * 37)
    a = np.round(
        rng.normal(y * 1.2, 1.0), 1
    )  # rounded: ties, which midranks must count as one half
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
    from idh_pseudocolor.metrics import expected_calibration_error

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
    from idh_pseudocolor.metrics import METRICS, binary_metrics, binary_metrics_many

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
