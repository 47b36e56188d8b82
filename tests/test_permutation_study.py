"""The permutation study's rules on hand-computed examples."""

import math

import numpy as np
import pandas as pd
import pytest

from idh_pseudocolor.permutation_study import (
    ensemble_metrics,
    rank_of,
    seed_ensemble,
    summarize,
    validation_choice,
    winner,
)


def runs_table(aurocs: dict[tuple[int, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (config_id, model), values in aurocs.items():
        for seed, auroc in zip((42, 43, 44), values, strict=True):
            rows.append(
                {
                    "config_id": config_id,
                    "model_name": model,
                    "seed": seed,
                    "auroc": auroc,
                    "accuracy": 0.8,
                    "f1": 0.7,
                    "precision": 0.75,
                    "recall": 0.65,
                    "specificity": 0.9,
                }
            )
    return pd.DataFrame(rows)


def test_winner_rule_by_hand():
    # config 15: A mean 0.90, B mean 0.98 -> 1.88 (the paper's winner and value)
    # config 21: A mean 0.95, B mean 0.90 -> 1.85;  config 24: A 0.60, B 0.55 -> 1.15
    table = runs_table(
        {
            (15, "A"): [0.89, 0.90, 0.91],
            (15, "B"): [0.97, 0.98, 0.99],
            (21, "A"): [0.95, 0.95, 0.95],
            (21, "B"): [0.88, 0.90, 0.92],
            (24, "A"): [0.50, 0.60, 0.70],
            (24, "B"): [0.55, 0.55, 0.55],
        }
    )
    summary = summarize(table)
    row = summary[(summary.config_id == 15) & (summary.model_name == "A")].iloc[0]
    assert row["auroc_mean"] == pytest.approx(0.90) and row["auroc_std"] == pytest.approx(0.01)
    assert row["seeds"] == 3 and row["configuration"] == "15: T2-T1ce-FLAIR"
    result = winner(summary)
    assert result["config_id"] == 15 and result["sum_mean_val_auroc"] == pytest.approx(1.88)
    assert result["ranking"] == [15, 21, 24]
    assert rank_of(summary, 24) == (3, 3)


def test_a_configuration_missing_a_model_cannot_win():
    table = runs_table(
        {(3, "A"): [0.99, 0.99, 0.99], (5, "A"): [0.6, 0.6, 0.6], (5, "B"): [0.6, 0.6, 0.6]}
    )
    assert winner(summarize(table), models=["A", "B"])["config_id"] == 5
    with pytest.raises(ValueError, match="lacks columns"):
        summarize(table.drop(columns=["f1"]))


def test_seed_ensemble_averages_probabilities_per_subject():
    preds = pd.DataFrame(
        {
            "subject_id": ["a", "a", "a", "b", "b", "b"],
            "label": [1, 1, 1, 0, 0, 0],
            "seed": [42, 43, 44] * 2,
            "prob_mutant": [0.3, 0.7, 0.8, 0.1, 0.3, 0.8],
        }
    )
    ens = seed_ensemble(preds).set_index("subject_id")
    assert ens.loc["a", "prob_mutant"] == pytest.approx(0.6) and ens.loc[
        "b", "prob_mutant"
    ] == pytest.approx(0.4)
    m = ensemble_metrics(preds)
    assert m["tp"] == 1 and m["tn"] == 1 and m["auroc"] == 1.0 and not math.isnan(m["f1"])


def test_final_metrics_table_means_over_seeds_and_ensemble():
    from idh_pseudocolor.permutation_study import final_metrics_table

    rows = []
    probs = {42: [0.9, 0.8, 0.2, 0.1], 43: [0.6, 0.4, 0.3, 0.7]}
    for seed, p in probs.items():
        for sid, label, prob in zip("abcd", [1, 1, 0, 0], p, strict=True):
            rows.append(
                {
                    "model_name": "A",
                    "pretrained": False,
                    "pretrained_loaded": False,
                    "seed": seed,
                    "subject_id": sid,
                    "label": label,
                    "prob_mutant": prob,
                }
            )
    table = final_metrics_table(pd.DataFrame(rows)).iloc[0]
    # by hand: seed 42 ranks both mutants above both wild-types (AUROC 1, F1 1 at 0.5);
    # seed 43 orders 2 of the 4 mutant/wild-type pairs right (AUROC 0.5) and at 0.5 calls
    # a (TP), b (FN), d (FP): F1 = 2/(2+1+1) = 0.5
    assert table["auroc_mean"] == pytest.approx(0.75) and table["seeds"] == 2
    assert table["f1_mean"] == pytest.approx(0.75)
    # the ensemble averages probabilities per subject: a 0.75, b 0.6, c 0.25, d 0.4 -> perfect
    assert table["ensemble_auroc"] == pytest.approx(1.0) and table["ensemble_f1"] == pytest.approx(
        1.0
    )
    assert table["invariant_violations"] == ""


def test_validation_choice_takes_the_highest_validation_auroc_and_breaks_ties_by_seed():
    rows = []
    # A: seed 43 has the best validation AUROC; B: 42 and 44 tie, so the lower seed; C: not recorded
    val = {
        ("A", 42): 0.71,
        ("A", 43): 0.83,
        ("A", 44): 0.79,
        ("B", 42): 0.90,
        ("B", 43): 0.60,
        ("B", 44): 0.90,
    }
    for (model, seed), auroc in val.items():
        for sid in "abc":
            rows.append(
                {
                    "model_name": model,
                    "pretrained": False,
                    "seed": seed,
                    "subject_id": sid,
                    "val_auroc": auroc,
                    "best_epoch": seed - 40,
                    "prob_mutant": 0.5,
                }
            )
    rows += [
        {
            "model_name": "C",
            "pretrained": True,
            "seed": 42,
            "subject_id": "a",
            "val_auroc": math.nan,
            "best_epoch": 1,
            "prob_mutant": 0.5,
        }
    ]
    chosen = validation_choice(pd.DataFrame(rows)).set_index("model_name")
    assert (
        chosen.loc["A", "seed"] == 43
        and chosen.loc["A", "val_auroc"] == 0.83
        and chosen.loc["A", "best_epoch"] == 3
    )
    assert chosen.loc["B", "seed"] == 42 and chosen.loc["B", "seeds_compared"] == 3
    assert "C" not in chosen.index  # no validation AUROC: nothing to choose by
    broken = pd.DataFrame(rows).assign(
        val_auroc=lambda d: d["val_auroc"] + 0.01 * (d["subject_id"] == "b")
    )
    with pytest.raises(ValueError, match="differs within one run"):
        validation_choice(broken)


def test_summary_columns_name_the_configuration_second():
    summary = summarize(runs_table({(15, "a"): [0.6, 0.7, 0.8], (3, "a"): [0.5, 0.5, 0.5]}))
    assert summary.columns[:3].tolist() == ["config_id", "configuration", "model_name"]
    assert summary.loc[summary["config_id"] == 15, "configuration"].item() == "15: T2-T1ce-FLAIR"
    assert summary.loc[summary["config_id"] == 15, "auroc_std"].item() == pytest.approx(0.1)
    assert summary["seeds"].tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"lacks columns \['f1'\]"):
        summarize(runs_table({(15, "a"): [0.6, 0.7, 0.8]}).drop(columns="f1"))


def test_winner_record_names_everything_the_report_reads():
    table = runs_table(
        {
            (15, "A"): [0.89, 0.90, 0.91],
            (15, "B"): [0.97, 0.98, 0.99],
            (21, "A"): [0.95, 0.95, 0.95],
            (21, "B"): [0.92, 0.93, 0.94],  # 21: 0.95 + 0.93 = 1.88, a tie with 15
            (24, "A"): [0.6, 0.6, 0.6],
            (24, "B"): [0.5, 0.5, 0.5],
            (3, "A"): [0.7, 0.7, 0.7],
            (3, "B"): [0.5, 0.5, 0.5],  # 3: 1.2
        }
    )
    result = winner(summarize(table))
    assert result["config_id"] == 15  # ties go to the lower id
    assert result["configuration"] == "15: T2-T1ce-FLAIR"
    assert result["per_model_mean_val_auroc"] == {"A": pytest.approx(0.9), "B": pytest.approx(0.98)}
    assert result["ranking"] == [15, 21, 3, 24]  # the tie keeps id order (a stable sort)
    with pytest.raises(ValueError, match=r"no results for model\(s\) \['C'\]"):
        winner(summarize(table), models=["A", "C"])


def test_the_seed_ensemble_is_one_row_per_subject_with_its_columns():
    preds = pd.DataFrame(
        {
            "subject_id": ["b", "b", "a", "a"],
            "label": [0, 0, 1, 1],
            "seed": [42, 43, 42, 43],
            "prob_mutant": [0.2, 0.4, 0.6, 1.0],
        }
    )
    ens = seed_ensemble(preds)
    assert ens.columns.tolist() == ["subject_id", "label", "prob_mutant"]
    assert ens.values.tolist() == [["a", 1, pytest.approx(0.8)], ["b", 0, pytest.approx(0.3)]]


def final_rows(arms: dict[tuple[str, bool], dict[int, list[float]]], loaded=True) -> pd.DataFrame:
    rows = []
    for (model, pretrained), per_seed in arms.items():
        for seed, probs in per_seed.items():
            for sid, label, prob in zip("abcd", [1, 1, 0, 0], probs, strict=True):
                rows.append(
                    {
                        "model_name": model,
                        "pretrained": pretrained,
                        "pretrained_loaded": loaded,
                        "seed": seed,
                        "subject_id": sid,
                        "label": label,
                        "prob_mutant": prob,
                    }
                )
    return pd.DataFrame(rows)


def test_final_metrics_table_rows_columns_and_spread():
    from idh_pseudocolor.permutation_study import final_metrics_table

    arms = {
        ("Z", True): {42: [0.9, 0.8, 0.2, 0.1], 43: [0.6, 0.4, 0.3, 0.7], 44: [0.9, 0.6, 0.4, 0.2]},
        ("A", False): {42: [0.9, 0.8, 0.2, 0.1]},
    }
    table = final_metrics_table(final_rows(arms))
    # in the order the arms come, not sorted
    assert table[["model_name", "pretrained"]].values.tolist() == [["Z", True], ["A", False]]
    z, a = table.iloc[0], table.iloc[1]
    assert z["seeds"] == 3 and z["subjects"] == 4 and z["pretrained_loaded"]
    # per-seed AUROC 1, 0.5, 1: std with ddof 1 is sqrt(1/12)
    assert z["auroc_std"] == pytest.approx(np.std([1, 0.5, 1], ddof=1))
    assert math.isnan(a["auroc_std"]) and a["auroc_mean"] == 1.0  # one seed: no spread
    without = final_metrics_table(final_rows(arms).drop(columns="pretrained_loaded"))
    assert without["pretrained_loaded"].isna().all()
    not_loaded = final_metrics_table(final_rows(arms, loaded=False))
    assert not_loaded["pretrained_loaded"].tolist() == [False, False]


def test_validation_choice_keeps_one_row_per_arm_in_arm_order_and_skips_unrecorded_runs():
    rows = [
        {
            "model_name": m,
            "pretrained": p,
            "seed": s,
            "subject_id": sid,
            "val_auroc": v,
            "best_epoch": 1,
            "prob_mutant": 0.5,
        }
        for m, p, s, v in [
            ("Z", False, 42, 0.6),
            ("Z", False, 43, math.nan),  # not recorded: never chosen, never counted
            ("A", True, 42, 0.7),
            ("A", True, 43, 0.8),
        ]
        for sid in "ab"
    ]
    chosen = validation_choice(pd.DataFrame(rows))
    assert chosen[["model_name", "seed"]].values.tolist() == [["A", 43], ["Z", 42]]
    assert chosen.index.tolist() == [0, 1] and "index" not in chosen.columns
    assert chosen["seeds_compared"].tolist() == [2, 1]
    mixed = pd.DataFrame(rows)
    mixed.loc[(mixed["seed"] == 43) & (mixed["subject_id"] == "a"), "val_auroc"] = 0.5
    with pytest.raises(ValueError, match="differs within one run"):  # NaN and 0.5 in one run
        validation_choice(mixed[mixed["model_name"] == "Z"])
