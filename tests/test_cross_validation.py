"""Cross-validation's arithmetic checked against scikit-learn and hand-built numbers: folds that
partition and stratify the patients, fold splits the training code can run, per-fold and pooled
seed-ensemble metrics and the sentences placing the single split (the fold figure:
tests/test_figures.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold

from idh_pseudocolor.cross_validation import (
    assign_folds,
    fold_metrics,
    fold_split,
    pooled_metrics,
    single_split_sentence,
)
from idh_pseudocolor.metrics import METRICS, bootstrap_ci
from idh_pseudocolor.splits import split_subjects

N_PATIENTS, N_MUTANT, K = 30, 12, 3


def cohort() -> tuple[list[str], np.ndarray]:
    """30 patients, 12 of them mutant, labels in no particular order."""
    ids = [f"P{i:03d}" for i in range(N_PATIENTS)]
    labels = (np.arange(N_PATIENTS) < N_MUTANT).astype(int)
    return ids, np.random.default_rng(1).permutation(labels)


# -- folds --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_folds_partition_the_patients_and_stratify_them(seed):
    ids, labels = cohort()
    folds = assign_folds(ids, labels, k=K, seed=seed)
    assert list(folds.columns) == ["subject_id", "label", "fold"]
    assert folds["subject_id"].tolist() == sorted(ids)  # everyone once, sorted by id
    assert dict(zip(folds["subject_id"], folds["label"], strict=True)) == dict(
        zip(ids, labels.tolist(), strict=True)
    )
    assert set(folds["fold"]) == set(range(K))
    tested = [
        set(fold_split(folds, f, val=0.2, seed=seed).query("split == 'test'")["subject_id"])
        for f in range(K)
    ]
    assert set().union(*tested) == set(ids)  # every patient is tested ...
    assert sum(len(t) for t in tested) == N_PATIENTS  # ... exactly once
    for f in range(K):
        part = folds[folds["fold"] == f]
        assert abs(part["label"].sum() - N_MUTANT / K) <= 1
        assert abs(len(part) - N_PATIENTS / K) <= 1


def test_folds_are_scikit_learns_stratified_k_fold_on_sorted_ids():
    ids, labels = cohort()
    order = np.argsort(ids)
    sorted_ids, sorted_labels = np.array(ids)[order], labels[order]
    expected = {}
    splitter = StratifiedKFold(n_splits=K, shuffle=True, random_state=5)
    for f, (_, test) in enumerate(splitter.split(sorted_ids, sorted_labels)):
        expected.update({sorted_ids[i]: f for i in test})
    folds = assign_folds(ids, labels, k=K, seed=5)
    assert dict(zip(folds["subject_id"], folds["fold"], strict=True)) == expected


def test_folds_depend_on_the_patients_and_seed_not_their_order():
    ids, labels = cohort()
    a = assign_folds(ids, labels, k=K, seed=3)
    shuffle = np.random.default_rng(9).permutation(N_PATIENTS)
    b = assign_folds([ids[i] for i in shuffle], labels[shuffle], k=K, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(assign_folds(ids, labels, k=K, seed=4)["fold"])


def test_assign_folds_rejects_what_cannot_be_stratified():
    ids, labels = cohort()
    with pytest.raises(ValueError, match="k >= 2"):
        assign_folds(ids, labels, k=1, seed=0)
    with pytest.raises(ValueError, match="at least 13 patients of each class"):
        assign_folds(ids, labels, k=13, seed=0)  # 12 mutants cannot fill 13 folds
    with pytest.raises(ValueError, match="duplicate"):
        assign_folds([*ids[:-1], ids[0]], labels, k=K, seed=0)
    with pytest.raises(ValueError, match="labels"):
        assign_folds(ids, labels[:-1], k=K, seed=0)


# -- fold splits -------------------------------------------------------------------------------
SPLIT_NAMES = ("train", "val", "test")


@pytest.mark.parametrize("seed", range(5))
def test_fold_split_tests_the_fold_and_stratifies_validation(seed):
    ids, labels = cohort()
    folds = assign_folds(ids, labels, k=K, seed=seed)
    for f in range(K):
        split = fold_split(folds, f, val=0.3, seed=seed)
        assert split["subject_id"].tolist() == sorted(ids)
        by_split = {s: set(split.loc[split["split"] == s, "subject_id"]) for s in SPLIT_NAMES}
        in_fold = set(folds.loc[folds["fold"] == f, "subject_id"])
        assert by_split["test"] == in_fold  # the fold's patients and nobody else
        assert not by_split["train"] & by_split["val"]
        assert by_split["train"] | by_split["val"] == set(ids) - in_fold
        rest = folds[folds["fold"] != f]
        n_val = round(0.3 * len(rest))
        assert len(by_split["val"]) == n_val
        val_mutants = split.loc[split["split"] == "val", "label"].sum()
        assert abs(val_mutants - n_val * rest["label"].mean()) <= 1


def test_fold_split_keeps_two_validation_patients_and_the_split_format():
    ids, labels = cohort()
    folds = assign_folds(ids, labels, k=K, seed=0)
    split = fold_split(folds, 1, val=0.01, seed=0)  # 1% of 20 rounds to 0
    assert (split["split"] == "val").sum() == 2
    assert set(split.loc[split["split"] == "val", "label"]) == {0, 1}
    reference = split_subjects(ids, labels, train=0.70, val=0.15, test=0.15, seed=0)
    assert list(split.columns) == list(reference.columns)
    assert split.dtypes.to_dict() == reference.dtypes.to_dict()
    # the row order of the folds table does not matter
    reordered = fold_split(folds.iloc[::-1], 1, val=0.01, seed=0)
    pd.testing.assert_frame_equal(split, reordered)


def test_fold_split_rejects_unknown_folds_and_bad_fractions():
    ids, labels = cohort()
    folds = assign_folds(ids, labels, k=K, seed=0)
    with pytest.raises(ValueError, match="no fold 3"):
        fold_split(folds, 3, val=0.2, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        fold_split(folds, 0, val=1.2, seed=0)


# -- metrics -----------------------------------------------------------------------------------
SEEDS = (42, 43, 44)
ARMS = (("resnet18", True), ("resnet18", False))


def predictions(n_per_fold: int = 10, folds: int = 2) -> tuple[pd.DataFrame, dict]:
    """Out-of-fold predictions of two arms x three seeds, and the seed ensembles built by hand:
    {(fold, model, pretrained): (subject ids, labels, mean probability over seeds)}."""
    rng = np.random.default_rng(7)
    rows, expected = [], {}
    for fold in range(folds):
        subjects = [f"P{fold}{i:02d}" for i in range(n_per_fold)]
        y = np.array([1, 0] * (n_per_fold // 2))
        for model, pretrained in ARMS:
            # a weak signal plus a lot of seed noise: the ensemble differs from every single seed
            probs = np.clip(0.3 * y + rng.uniform(0.1, 0.7, (len(SEEDS), n_per_fold)), 0, 1)
            expected[(fold, model, pretrained)] = (subjects, y, probs.sum(axis=0) / len(SEEDS))
            for s, seed in enumerate(SEEDS):
                for i, subject in enumerate(subjects):
                    rows.append(
                        {
                            "fold": fold,
                            "model_name": model,
                            "pretrained": pretrained,
                            "seed": seed,
                            "subject_id": subject,
                            "label": int(y[i]),
                            "prob_mutant": float(probs[s, i]),
                        }
                    )
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # no reliance on row order
    return frame.reset_index(drop=True), expected


def sklearn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    predicted = (p >= 0.5).astype(int)
    return {
        "auroc": roc_auc_score(y, p),
        "accuracy": accuracy_score(y, predicted),
        "f1": f1_score(y, predicted),
        "precision": precision_score(y, predicted),
        "recall": recall_score(y, predicted),
        "specificity": recall_score(y, predicted, pos_label=0),
    }


def test_fold_metrics_are_scikit_learns_on_the_seed_ensemble():
    preds, expected = predictions()
    table = fold_metrics(preds)
    assert len(table) == len(expected) == 4
    for (fold, model, pretrained), (_, y, p) in expected.items():
        row = table[
            (table["fold"] == fold)
            & (table["model_name"] == model)
            & (table["pretrained"] == pretrained)
        ]
        assert len(row) == 1
        row = row.iloc[0]
        for metric, value in sklearn_metrics(y, p).items():
            assert row[metric] == pytest.approx(value), (fold, pretrained, metric)
        assert row["n_patients"] == len(y) and row["n_seeds"] == len(SEEDS)


def test_fold_metrics_reject_a_duplicated_run_row():
    preds, _ = predictions()
    with pytest.raises(ValueError, match="more than one prediction"):
        fold_metrics(pd.concat([preds, preds.iloc[:1]]))


def test_pooled_metrics_are_scikit_learns_on_all_out_of_fold_ensembles():
    preds, expected = predictions(folds=3)
    table = pooled_metrics(preds, n_resamples=300, seed=11, calibration_bins=4)
    assert len(table) == len(ARMS)
    for model, pretrained in ARMS:
        parts = [v for (f, m, a), v in expected.items() if (m, a) == (model, pretrained)]
        ids = np.concatenate([s for s, _, _ in parts])
        y = np.concatenate([y for _, y, _ in parts])
        p = np.concatenate([p for _, _, p in parts])
        row = table[(table["model_name"] == model) & (table["pretrained"] == pretrained)].iloc[0]
        assert row["n_patients"] == len(ids) == 30 and row["n_folds"] == 3
        for metric, value in sklearn_metrics(y, p).items():
            assert row[f"{metric}_pooled"] == pytest.approx(value), metric
        order = np.argsort(ids)  # the bootstrap draws patients in subject-id order
        ci = bootstrap_ci(y[order], p[order], n_resamples=300, seed=11)
        for metric in METRICS:
            assert row[f"{metric}_ci_low"] == pytest.approx(ci[metric].low)
            assert row[f"{metric}_ci_high"] == pytest.approx(ci[metric].high)
        assert row["auroc_ci_low"] <= row["auroc_pooled"] <= row["auroc_ci_high"]
        assert row["bootstrap_resamples"] == 300
        # calibration of the pooled predictions, as Table 2 states it (4 equal-mass bins here)
        assert row["brier_pooled"] == pytest.approx(brier_score_loss(y, p))
        bins = np.array_split(np.argsort(p[order], kind="stable"), 4)
        yo, po = y[order], p[order]
        assert row["ece_pooled"] == pytest.approx(
            sum(len(b) * abs(yo[b].mean() - po[b].mean()) for b in bins) / len(po)
        )
        per_fold = pd.DataFrame([sklearn_metrics(y_, p_) for _, y_, p_ in parts])
        for metric in METRICS:
            values = per_fold[metric].to_numpy()
            assert row[f"{metric}_fold_mean"] == pytest.approx(values.mean())
            assert row[f"{metric}_fold_std"] == pytest.approx(np.std(values, ddof=1))
            assert row[f"{metric}_fold_min"] == pytest.approx(values.min())
            assert row[f"{metric}_fold_max"] == pytest.approx(values.max())


def test_a_patient_tested_in_two_folds_is_refused():
    preds, _ = predictions()
    leaked = preds[(preds["fold"] == 0) & (preds["subject_id"] == "P000")].assign(fold=1)
    with pytest.raises(ValueError, match="more than one fold"):
        pooled_metrics(pd.concat([preds, leaked]), n_resamples=50, seed=0, calibration_bins=5)
    # the same patient in both arms is fine
    pooled_metrics(preds, n_resamples=50, seed=0, calibration_bins=5)


# -- the sentence -----------------------------------------------------------------------------
def spread(model: str, pretrained: bool, mean: float, std: float, low: float, high: float):
    return {
        "model_name": model,
        "pretrained": pretrained,
        "auroc_fold_mean": mean,
        "auroc_fold_std": std,
        "auroc_fold_min": low,
        "auroc_fold_max": high,
    }


def test_sentences_place_the_single_split_among_the_folds():
    pooled = pd.DataFrame(
        [
            spread("a", True, 0.86, 0.04, 0.81, 0.90),
            spread("a", False, 0.86, 0.04, 0.81, 0.90),
            spread("b", True, 0.86, 0.04, 0.81, 0.90),
            spread("b", False, 0.86, 0.04, 0.81, 0.90),
            spread("c", True, 0.86, 0.06, 0.81, 0.90),
            spread("only_cv", True, 0.7, 0.1, 0.6, 0.8),
        ]
    )
    single = pd.DataFrame(
        {
            "model_name": ["a", "a", "b", "b", "c", "only_single"],
            "pretrained": [True, False, True, False, True, True],
            "auroc": [0.88, 0.93, 0.78, 0.815, 0.91, 0.5],
        }
    )
    sentences = single_split_sentence(pooled, single)
    assert len(sentences) == 5  # arms missing from either table are left out
    assert sentences[0] == (
        "a, finetuned: the single split's test AUROC 0.880 lies within the folds' mean ± 1 std "
        "(0.860 ± 0.040; folds 0.810–0.900)."
    )
    assert sentences[1].startswith("a, no pretraining: the single split's test AUROC 0.930")
    assert "lies above the highest fold (" in sentences[1]
    assert "lies below the lowest fold (" in sentences[2]
    assert "within the folds' range but more than 1 std below their mean" in sentences[3]
    assert "lies above the highest fold, though within the folds' mean ± 1 std" in sentences[4]
    assert not any("only_" in s for s in sentences)


def test_a_single_fold_gives_no_spread_to_place_the_split_in():
    pooled = pd.DataFrame([spread("a", True, 0.86, math.nan, 0.86, 0.86)])
    single = pd.DataFrame({"model_name": ["a"], "pretrained": [True], "auroc": [0.9]})
    (sentence,) = single_split_sentence(pooled, single)
    assert sentence == (
        "a, finetuned: the single split's test AUROC cannot be placed among the folds "
        "(undefined or one fold)."
    )
