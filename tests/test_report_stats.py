"""idh_pseudocolor.report.stats beyond Table 2's own tests (tests/test_reporting.py): the
resampling that Table 2, the paired comparison and the external-validation differences rest on,
the reliability diagrams, and what the report says about weights, the demo and the retrain check,
each against scipy, scikit-learn or a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from idh_pseudocolor.metrics import (
    METRICS,
    delong_test,
    expected_calibration_error,
    invariant_violations,
)
from idh_pseudocolor.report import stats


def test_stratified_resamples_keep_each_class_count_and_draw_only_from_that_class():
    y = np.array([1, 0, 0, 1, 0, 1, 0, 0])  # 3 mutants, 5 wild-types, interleaved
    index = stats.stratified_resample_index(y, n_resamples=400, seed=5)
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
    np.testing.assert_array_equal(index, stats.stratified_resample_index(y, 400, seed=5))
    assert not np.array_equal(index, stats.stratified_resample_index(y, 400, seed=6))


@pytest.mark.parametrize(
    ("labels", "resampled"),
    [([1, 1, 0, 0], True), ([1, 0, 0, 0], False), ([1, 1, 0], False), ([0, 0, 0, 0], False)],
)
def test_a_class_needs_two_patients_to_be_resampled(labels, resampled):
    y = np.array(labels)
    assert (stats.stratified_resample_index(y, 10, seed=0) is not None) is resampled
    assert (stats.resampled_metrics(y, np.linspace(0.1, 0.9, len(y)), 10, 0) is not None) is (
        resampled
    )


def test_resampled_metrics_are_scikit_learns_on_each_resample():
    rng = np.random.default_rng(2)
    y = (np.arange(30) % 3 == 0).astype(int)
    p = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, 30), 0, 1)
    got = stats.resampled_metrics(y, p, n_resamples=60, seed=9)
    assert set(got) == set(METRICS) and all(v.shape == (60,) for v in got.values())
    index = stats.stratified_resample_index(y, 60, seed=9)
    for r in (0, 17, 59):
        yr, pr = y[index[r]], p[index[r]]
        hard = (pr >= 0.5).astype(int)
        assert got["auroc"][r] == pytest.approx(roc_auc_score(yr, pr))
        assert got["accuracy"][r] == pytest.approx(accuracy_score(yr, hard))
        assert got["f1"][r] == pytest.approx(f1_score(yr, hard))
        assert got["recall"][r] == pytest.approx(recall_score(yr, hard))
        assert got["specificity"][r] == pytest.approx(recall_score(yr, hard, pos_label=0))
    # labels given as floats or booleans are read as classes
    again = stats.resampled_metrics(y.astype(float), list(p), 60, 9)
    np.testing.assert_array_equal(again["auroc"], got["auroc"])


def test_bootstrap_intervals_cover_the_sample_value_and_narrow_with_more_patients():
    rng = np.random.default_rng(4)

    def cohort(n):
        y = (np.arange(n) % 2).astype(int)
        return y, np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1)

    small, large = cohort(30), cohort(300)
    ci_small = stats.bootstrap_ci(*small, n_resamples=500, seed=1)
    ci_large = stats.bootstrap_ci(*large, n_resamples=500, seed=1)
    for ci, (y, p) in ((ci_small, small), (ci_large, large)):
        assert ci["auroc"].low < roc_auc_score(y, p) < ci["auroc"].high
    width = {k: ci["auroc"].high - ci["auroc"].low for k, ci in (("s", ci_small), ("l", ci_large))}
    assert width["l"] < width["s"] / 2  # ~1/sqrt(10) of it
    # a 50 % interval lies inside the 95 % one
    half = stats.bootstrap_ci(*small, n_resamples=500, seed=1, confidence=0.5)
    assert ci_small["auroc"].low < half["auroc"].low < half["auroc"].high < ci_small["auroc"].high


def _ensemble_predictions() -> pd.DataFrame:
    """Two arms x three seeds on ten patients; the ensemble (mean over seeds) is known exactly."""
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1])
    frames = []
    for arm, pretrained in (("pretrained", True), ("scratch", False)):  # not sorted order
        base = np.linspace(0.05, 0.95, 10) if pretrained else np.linspace(0.6, 0.15, 10)
        for k, seed in enumerate((42, 43, 44)):
            frames.append(
                pd.DataFrame(
                    {
                        "model_name": "m",
                        "pretrained": pretrained,
                        "demo_pretraining": pretrained,
                        "seed": seed,
                        "subject_id": [f"P{i}" for i in range(10)],
                        "label": labels,
                        "prob_mutant": base + (k - 1) * 0.02,  # seeds -0.02, 0, +0.02
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_calibration_curves_are_the_seed_ensembles_equal_mass_bins_by_hand():
    predictions = _ensemble_predictions()
    curves = stats.calibration_curves(predictions, n_bins=5)
    assert [(c.model_name, c.pretrained) for c in curves] == [("m", True), ("m", False)]
    assert [c.demo_pretraining for c in curves] == [True, False]
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1])
    for curve, base in zip(curves, (np.linspace(0.05, 0.95, 10), np.linspace(0.6, 0.15, 10))):
        order = np.argsort(base)  # the seed ensemble is the middle seed's probabilities
        np.testing.assert_allclose(np.sort(curve.probabilities), np.sort(base))
        # five equal-mass bins of two patients each, in order of predicted probability
        expected_predicted = base[order].reshape(5, 2).mean(axis=1)
        expected_observed = labels[order].reshape(5, 2).mean(axis=1)
        np.testing.assert_allclose(curve.predicted, expected_predicted)
        np.testing.assert_allclose(curve.observed, expected_observed)
        assert curve.brier == pytest.approx(np.mean((base - labels) ** 2))
        assert curve.ece == pytest.approx(np.mean(np.abs(expected_observed - expected_predicted)))
    assert curves[0].brier != pytest.approx(curves[1].brier)
    fewer = stats.calibration_curves(predictions, n_bins=2)[0]  # halves: ECE over 2 bins
    low, high = np.argsort(fewer.probabilities)[:5], np.argsort(fewer.probabilities)[5:]
    p, y = fewer.probabilities, labels
    assert len(fewer.predicted) == 2 and fewer.ece == pytest.approx(
        (abs(p[low].mean() - y[low].mean()) + abs(p[high].mean() - y[high].mean())) / 2
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
    got = stats.paired_auroc_test(y, a, b, n_resamples=3000, seed=3)
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
    swapped = stats.paired_auroc_test(y, b, a, n_resamples=3000, seed=3)
    assert swapped["ci_low"] == pytest.approx(-got["ci_high"])
    assert swapped["ci_high"] == pytest.approx(-got["ci_low"])
    # labels and probabilities as Python lists of another type give the same answer
    listed = stats.paired_auroc_test(list(y.astype(float)), list(a), list(b), 3000, 3)
    assert listed == pytest.approx(got)
    # Table 2's defaults: 2000 resamples from seed 0, so two reports of one study agree
    assert stats.paired_auroc_test(y, a, b) == stats.paired_auroc_test(y, a, b, 2000, 0)
    assert stats.paired_auroc_test(y, a, b)["ci_low"] != got["ci_low"]
    with pytest.raises(ValueError, match="at least two patients of each class"):
        stats.paired_auroc_test(np.array([1, 0, 0, 0]), a[:4], b[:4], 100)


def _arm(model, pretrained, shift, subjects, seed):
    rng = np.random.default_rng(seed)
    labels = np.array([int(s[1:]) % 3 == 0 for s in subjects], dtype=int)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "model_name": model,
                    "pretrained": pretrained,
                    "seed": k,
                    "subject_id": subjects,
                    "label": labels,
                    "prob_mutant": np.clip(
                        0.35 + shift * labels + rng.normal(0, 0.2, len(subjects)), 0, 1
                    ),
                }
            )
            for k in (42, 43)
        ]
    )


def test_pretrained_comparison_pairs_each_models_arms_on_their_common_patients():
    everyone = [f"P{i}" for i in range(45)]
    predictions = pd.concat(
        [
            _arm("vgg", False, 0.3, everyone, 1),  # only one arm for this model, listed first
            _arm("resnext", True, 0.5, everyone[:-3], 2),  # three patients without a prediction
            _arm("resnext", False, 0.2, everyone, 3),
        ],
        ignore_index=True,
    )
    table = stats.pretrained_comparison(predictions, n_resamples=400, seed=5)
    assert table["model_name"].tolist() == ["vgg", "resnext"]  # the order of the predictions
    vgg, resnext = table.iloc[0], table.iloc[1]
    assert not vgg["available"]
    assert vgg["note"] == (
        "needs final_evaluation.pretrained: [true, false] (this run had only from-scratch runs)"
    )
    only_finetuned = stats.pretrained_comparison(predictions[predictions["pretrained"]], 10)
    assert only_finetuned["note"].iloc[0].endswith("(this run had only pretrained runs)")
    assert resnext["available"] and resnext["patients"] == 42
    ensemble = {
        flag: part.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
        for flag, part in predictions[predictions["model_name"] == "resnext"].groupby("pretrained")
    }
    common = ensemble[True].index
    expected = stats.paired_auroc_test(
        ensemble[True]["label"].to_numpy(),
        ensemble[True]["p"].to_numpy(),
        ensemble[False].loc[common, "p"].to_numpy(),
        400,
        5,
    )
    assert {k: resnext[k] for k in expected} == pytest.approx(expected)
    assert resnext["auroc_difference"] > 0  # finetuned minus scratch
    assert stats.pretrained_comparison(predictions, 400, seed=6).iloc[1]["ci_low"] != pytest.approx(
        resnext["ci_low"]
    )
    default = stats.pretrained_comparison(predictions).iloc[1]
    assert default["ci_low"] == stats.pretrained_comparison(predictions, 2000, 0).iloc[1]["ci_low"]


def _ours(pretrained, loaded, demo=None) -> pd.DataFrame:
    table = pd.DataFrame(
        {"ours": [True] * len(pretrained) + [False], "pretrained": [*pretrained, True]}
    )
    table["pretrained_loaded"] = [*loaded, False]  # the paper's own row: never ours
    if demo is not None:
        table["demo_pretraining"] = [*demo, True]
    return table


@pytest.mark.parametrize(
    ("pretrained", "loaded", "status"),
    [
        ([False, False], [False, False], "none requested"),
        ([True, False], [True, False], "loaded"),
        ([True, True], [True, False], "not loaded"),
        ([False, True], [True, False], "not loaded"),
    ],
)
def test_pretrained_weights_status_of_our_rows(pretrained, loaded, status):
    assert stats.pretrained_weights_status(_ours(pretrained, loaded)) == status


def test_a_demo_arm_is_named_only_when_one_of_our_rows_used_the_demo_pretraining():
    assert stats.any_demo_arm(_ours([True, False], [True, False], demo=[True, False]))
    assert not stats.any_demo_arm(_ours([True, False], [True, False], demo=[False, False]))
    assert not stats.any_demo_arm(_ours([True, False], [True, False]))  # not recorded


def test_retrain_summary_and_notes_at_their_edges():
    one = pd.DataFrame({"tolerance": [0.03], "status": ["differs"]})
    assert stats.retrain_summary(one) == (0.03, 1)
    tolerance, differing = stats.retrain_summary(one.iloc[:0])
    assert np.isnan(tolerance) and differing == 0
    row = {"ours": True, "method": "m", "bootstrap_resamples": 400}
    table = pd.DataFrame([{**row, **{f"{m}_undefined_resamples": 0 for m in METRICS}}])
    assert stats.undefined_resample_notes(table) == []
    table["precision_undefined_resamples"] = 1  # one of 400 is still said
    assert stats.undefined_resample_notes(table) == [
        "m: precision undefined in 1 of 400 resamples (no patient predicted mutant); "
        "its 95% CI is over the other 399."
    ]


def test_the_retrain_check_ignores_the_sweeps_other_columns():
    """study_runs carries every metric of every run: only the run keys, AUROC and best epoch are
    compared, so a column both tables have (f1, prob_mutant) cannot collide in the merge."""
    keys = {"config_id": 15, "model_name": "m", "pretrained": False, "seed": 42}
    final = pd.DataFrame([{**keys, "val_auroc": 0.8, "best_epoch": 3, "f1": 0.5, "label": 1}])
    sweep = pd.DataFrame([{**keys, "auroc": 0.79, "best_epoch": 3, "f1": 0.4, "label": 0}])
    table = stats.retrain_agreement(final, sweep, tolerance=0.02)
    assert table.loc[0, "status"] == "agrees" and table.loc[0, "difference"] == pytest.approx(0.01)
    assert "f1" not in table and "f1_x" not in table
    with pytest.raises(ValueError, match=r"^study_runs lacks columns \['seed'\]$"):
        stats.retrain_agreement(final, sweep.drop(columns="seed"), 0.02)
    with pytest.raises(ValueError, match=r"^test_predictions lacks columns \['model_name'\]$"):
        stats.retrain_agreement(final.drop(columns="model_name"), sweep, 0.02)


def test_bootstrap_intervals_are_the_percentiles_of_the_same_resamples():
    """bootstrap_ci and resampled_metrics draw the same resamples from the same seed (each checked
    against scikit-learn above): the interval is exactly their percentiles, at any confidence."""
    rng = np.random.default_rng(12)
    y = (np.arange(40) % 4 == 0).astype(int)
    p = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, 40), 0, 1)
    draws = stats.resampled_metrics(y, p, n_resamples=500, seed=21)
    for confidence in (0.95, 0.8):
        ci = stats.bootstrap_ci(y, p, n_resamples=500, seed=21, confidence=confidence)
        tail = 100 * (1 - confidence) / 2
        for m in METRICS:
            defined = draws[m][~np.isnan(draws[m])]
            assert ci[m].undefined == len(draws[m]) - len(defined)
            low, high = np.percentile(defined, [tail, 100 - tail])
            assert (ci[m].low, ci[m].high) == pytest.approx((low, high)), (m, confidence)
    assert stats.bootstrap_ci(y, p) == stats.bootstrap_ci(y, p, 2000, 0)  # Table 2's defaults
    assert stats.bootstrap_ci(y, p)["auroc"] != stats.bootstrap_ci(y, p, 2000, 1)["auroc"]
    nothing = stats.bootstrap_ci([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], 100)
    assert all(np.isnan(i.low) and np.isnan(i.high) and i.undefined == 0 for i in nothing.values())


ARMS = [("vgg", True, 43), ("resnext", False, 44), ("vgg", False, 42), ("resnext", True, 43)]


def _study_predictions(with_validation: bool = True) -> pd.DataFrame:
    """Two models x two arms x three seeds on 30 phantom patients, listed in ARMS' order (not
    sorted); each arm's best validation seed is the third item of its ARMS entry."""
    rng = np.random.default_rng(0)
    labels = (np.arange(30) % 3 == 0).astype(int)
    frames = []
    for model, pretrained, best in ARMS:
        for seed in (42, 43, 44):
            frame = pd.DataFrame(
                {
                    "config_id": 15,
                    "model_name": model,
                    "pretrained": pretrained,
                    "pretrained_loaded": pretrained,
                    # the demo's photograph pretraining for vgg; resnext brought its own weights
                    "demo_pretraining": pretrained and model == "vgg",
                    "seed": seed,
                    "subject_id": [f"PHANTOM-{i:04d}" for i in range(30)],
                    "label": labels,
                    "prob_mutant": np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.2, 30), 0, 1),
                }
            )
            if with_validation:
                frame["val_auroc"] = 0.9 if seed == best else 0.7 + (seed - 42) / 100
                frame["best_epoch"] = seed - 40
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_table_2_rows_per_arm_in_study_order_with_each_arms_own_chosen_seed():
    predictions = _study_predictions()
    table = stats.table_2(predictions, n_resamples=300, seed=4, calibration_bins=3)
    ours = table[table["ours"]]
    assert list(zip(ours["model_name"], ours["pretrained"], ours["estimate"])) == [
        (model, pretrained, estimate)
        for model, pretrained, _ in ARMS
        for estimate in ("seed ensemble", "seed chosen on validation")
    ]
    assert set(ours["data"]) == {"phantom test split, 30 patients"}
    assert ours["demo_pretraining"].tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
    ]
    methods = ours["method"].tolist()
    assert methods[0] == "vgg, finetuned from demo pretraining (photographs, not ImageNet)"
    assert methods[6] == "resnext, finetuned"
    for (model, pretrained, best), (_, ensemble), (_, chosen) in zip(
        ARMS, ours.iloc[::2].iterrows(), ours.iloc[1::2].iterrows()
    ):
        part = predictions[
            (predictions["model_name"] == model) & (predictions["pretrained"] == pretrained)
        ]
        assert chosen["chosen_seed"] == best and chosen["chosen_best_epoch"] == best - 40
        run = part[part["seed"] == best]
        assert chosen["auroc_best_seed"] == pytest.approx(
            roc_auc_score(run["label"], run["prob_mutant"])
        )
        # each row's interval and calibration from its own probabilities, seed and bins
        own = stats.bootstrap_ci(run["label"], run["prob_mutant"], 300, seed=4)
        assert (chosen["auroc_ci_low"], chosen["auroc_ci_high"]) == (
            own["auroc"].low,
            own["auroc"].high,
        )
        ens = part.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
        # the ensemble row's numbers are this arm's, not another arm's of the same model
        assert ensemble["auroc_ensemble"] == pytest.approx(roc_auc_score(ens["label"], ens["p"]))
        per_seed = [roc_auc_score(g["label"], g["prob_mutant"]) for _, g in part.groupby("seed")]
        assert ensemble["auroc_mean"] == pytest.approx(np.mean(per_seed))
        assert ensemble["pretrained_loaded"] == pretrained and ensemble["seeds"] == 3
        own = stats.bootstrap_ci(ens["label"], ens["p"], 300, seed=4)
        assert ensemble["f1_ci_low"] == own["f1"].low
        assert ensemble["ece"] == pytest.approx(
            expected_calibration_error(ens["label"], ens["p"], 3)
        )
    default = stats.table_2(predictions)
    explicit = stats.table_2(predictions, 2000, 0, 5)
    pd.testing.assert_frame_equal(default, explicit)
    assert not np.isclose(default["auroc_ci_low"].iloc[0], table["auroc_ci_low"].iloc[0])


def test_table_2_without_recorded_validation_keeps_every_arm_and_says_why():
    table = stats.table_2(_study_predictions(with_validation=False), n_resamples=50)
    chosen = table[table["estimate"] == "seed chosen on validation"]
    assert chosen["method"].tolist() == [
        f"{model}, {arm}, seed chosen on validation: not recorded (rerun the final evaluation)"
        for model, arm in (
            ("vgg", "finetuned from demo pretraining (photographs, not ImageNet)"),
            ("resnext", "no pretraining"),
            ("vgg", "no pretraining"),
            ("resnext", "finetuned"),
        )
    ]


def test_published_rows_are_marked_and_checked_to_their_printed_precision():
    table = stats.table_2(_study_predictions(), n_resamples=50)
    published = table[~table["ours"].astype(bool)]
    assert len(published) == len(stats.PUBLISHED_ROWS)
    assert set(published["estimate"]) == {"as published"}
    assert published["data"].tolist() == [r["data"] for r in stats.PUBLISHED_ROWS]
    by_method = published.set_index("method")["invariants"]
    for row in stats.PUBLISHED_ROWS:
        violations = invariant_violations(row, tol=0.003)
        assert by_method[row["method"]] == ("; ".join(violations) if violations else "ok")
    # ResNeXt finetuned: accuracy 0.881 is not between recall 0.731 and specificity 0.864
    assert "not between" in by_method["ResNeXt finetuned"]
    # rounding to the printed decimals is not a contradiction: some row fails only without it
    rounding_only = [
        r["method"]
        for r in stats.PUBLISHED_ROWS
        if invariant_violations(r) and not invariant_violations(r, tol=0.003)
    ]
    assert rounding_only and all(by_method[m] == "ok" for m in rounding_only)


def test_the_retrain_check_matches_runs_across_csv_types_and_at_the_tolerance():
    keys = {"config_id": 15, "model_name": "m", "pretrained": False}
    final = pd.DataFrame(
        [{**keys, "seed": s, "val_auroc": 0.75, "best_epoch": 3} for s in (42, 43)]
    )
    sweep = pd.DataFrame(
        [{**keys, "seed": s, "auroc": a, "best_epoch": 3} for s, a in ((42, 0.5),)]
    )
    # read back from CSV by other means: ids as text, seeds as floats, flags as 0/1
    final_csv = final.assign(
        config_id=final["config_id"].astype(str), seed=final["seed"].astype(float), pretrained=0
    )
    table = stats.retrain_agreement(final_csv, sweep, tolerance=0.25)
    assert "index" not in table.columns and list(table.index) == [0, 1]
    assert table["status"].tolist() == ["agrees", "no sweep run"]  # |0.75 - 0.5| == 0.25: agrees
    assert table["config_id"].tolist() == [15, 15] and table["seed"].tolist() == [42, 43]
    assert stats.retrain_agreement(final, sweep, tolerance=0.2)["status"].iloc[0] == "differs"
    twice = pd.concat([sweep, sweep], ignore_index=True)  # the sweep ran a run twice: ambiguous
    with pytest.raises(pd.errors.MergeError):
        stats.retrain_agreement(final, twice, tolerance=0.25)
