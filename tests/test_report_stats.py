"""idh_pseudocolor.report.stats: Table 2 (its numbers against scikit-learn, the seed chosen on
validation, each arm's own rows, the published rows and their invariants), the paired comparison
of the finetuned and the scratch arm, the retrain check, the reliability diagrams, and what the
report says about weights, the demo and the retrain check, each against scipy, scikit-learn or a
hand computation. The bootstrap and the metrics they rest on: tests/test_metrics.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from idh_pseudocolor.metrics import (
    METRICS,
    bootstrap_ci,
    expected_calibration_error,
    invariant_violations,
    paired_auroc_test,
)
from idh_pseudocolor.report import html, stats
from tests.report_inputs import (
    fixed_predictions,
    render_macro,
    reporting_settings,
    sweep_and_final,
)


# -- Table 2 ----------------------------------------------------------------------------------
def test_table_2_metrics_match_scikit_learn():
    predictions = fixed_predictions()
    table = stats.table_2(predictions, n_resamples=300, seed=0, calibration_bins=5)
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


def test_chosen_seed_row_is_the_seed_with_the_best_validation_auroc():
    predictions = fixed_predictions()
    # validation picks seed 44, the worst on test: the choice must not look at the test
    test_auroc = {
        s: roc_auc_score(g["label"], g["prob_mutant"]) for s, g in predictions.groupby("seed")
    }
    assert min(test_auroc, key=test_auroc.get) == 44
    predictions["val_auroc"] = predictions["seed"].map({42: 0.61, 43: 0.70, 44: 0.77})
    predictions["best_epoch"] = predictions["seed"].map({42: 2, 43: 5, 44: 4})
    table = stats.table_2(predictions, n_resamples=200, seed=0, calibration_bins=5)
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
    old = stats.table_2(
        predictions.drop(columns=["val_auroc", "best_epoch"]),
        n_resamples=50,
        seed=0,
        calibration_bins=5,
    )
    assert (
        old[old["estimate"] == "seed chosen on validation"]["method"]
        .str.contains("not recorded")
        .all()
    )


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
        own = bootstrap_ci(run["label"], run["prob_mutant"], 300, seed=4)
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
        own = bootstrap_ci(ens["label"], ens["p"], 300, seed=4)
        assert ensemble["f1_ci_low"] == own["f1"].low
        assert ensemble["ece"] == pytest.approx(
            expected_calibration_error(ens["label"], ens["p"], 3)
        )
    # the project's settings (conf): two reports of one study agree; the arguments are used
    conf = reporting_settings()
    reported = stats.table_2(
        predictions, conf.bootstrap_resamples, conf.seed, conf.calibration_bins
    )
    again = stats.table_2(predictions, conf.bootstrap_resamples, conf.seed, conf.calibration_bins)
    pd.testing.assert_frame_equal(reported, again)
    assert not np.isclose(reported["auroc_ci_low"].iloc[0], table["auroc_ci_low"].iloc[0])


def test_table_2_without_recorded_validation_keeps_every_arm_and_says_why():
    table = stats.table_2(
        _study_predictions(with_validation=False), n_resamples=50, seed=0, calibration_bins=5
    )
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


def test_invariants_flag_the_papers_table_and_are_enforced_on_ours():
    table = stats.table_2(fixed_predictions(), n_resamples=200, seed=0, calibration_bins=5)
    published = table[~table["ours"]].set_index("method")
    # SPEC's known defect
    assert "accuracy 0.881 is not between" in published.loc["ResNeXt finetuned", "invariants"]
    assert published.loc["VGG16 finetuned", "invariants"] == "ok"  # rounding alone is not flagged
    assert set(published["data"]) >= {"TCGA-LGG+GBM (other data)", "own cohort (other data)"}


def test_published_rows_are_marked_and_checked_to_their_printed_precision():
    table = stats.table_2(_study_predictions(), n_resamples=50, seed=0, calibration_bins=5)
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


# -- finetuned vs. scratch -----------------------------------------------------------------------
def test_paired_comparison_of_pretrained_and_scratch():
    scratch = fixed_predictions(shift=0.05, seed=2)
    finetuned = fixed_predictions(shift=0.45, seed=3).assign(
        pretrained=True, pretrained_loaded=True
    )
    result = stats.pretrained_comparison(
        pd.concat([finetuned, scratch]), n_resamples=500, seed=0
    ).iloc[0]
    assert result["available"] and result["patients"] == 40
    assert result["auroc_difference"] > 0.2 and result["ci_low"] > 0 and result["p_value"] < 0.01
    same = paired_auroc_test(
        np.array([0, 1, 0, 1, 1, 0]), np.linspace(0.1, 0.9, 6), np.linspace(0.1, 0.9, 6), 200, 0
    )
    assert same["auroc_difference"] == 0 and same["p_value"] == pytest.approx(1.0)
    only_scratch = stats.pretrained_comparison(scratch, 2000, 0).iloc[0]
    assert not only_scratch["available"] and "final_evaluation.pretrained" in only_scratch["note"]


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
        "needs final_evaluation.pretrained: [true, false] (this run had only no pretraining runs)"
    )
    only_finetuned = stats.pretrained_comparison(predictions[predictions["pretrained"]], 10, 0)
    assert only_finetuned["note"].iloc[0].endswith("(this run had only finetuned runs)")
    assert resnext["available"] and resnext["patients"] == 42
    ensemble = {
        flag: part.groupby("subject_id").agg(label=("label", "first"), p=("prob_mutant", "mean"))
        for flag, part in predictions[predictions["model_name"] == "resnext"].groupby("pretrained")
    }
    common = ensemble[True].index
    expected = paired_auroc_test(
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
    # the project's settings (conf): two reports of one study agree
    conf = reporting_settings()
    reported = stats.pretrained_comparison(predictions, conf.bootstrap_resamples, conf.seed)
    again = stats.pretrained_comparison(predictions, conf.bootstrap_resamples, conf.seed)
    assert reported.iloc[1]["ci_low"] == again.iloc[1]["ci_low"]


# -- the retrain check --------------------------------------------------------------------------
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


# -- calibration ------------------------------------------------------------------------------
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


# -- what the report says -----------------------------------------------------------------------
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
