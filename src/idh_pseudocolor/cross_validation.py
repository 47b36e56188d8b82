"""Patient-level stratified k-fold cross-validation of the final evaluation: folds, each fold's
train/val/test split, per-fold and pooled out-of-fold metrics, and how the paper's single
70:15:15 split compares with the folds' spread.

The study's conclusion rests on one split of a few hundred patients; one test split of ~70 can
land a few AUROC points high or low by chance alone. Cross-validation tests every patient once,
so the folds show how much the test AUROC moves with the split. Plain pandas/numpy/scikit-learn;
no Kedro, no training, no figures (the fold figure is in ``report.figures``); a run consumes
:func:`fold_split` exactly like ``splits.split_subjects``'s frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from idh_pseudocolor.arms import ARM_KEYS, arm_label
from idh_pseudocolor.metrics import METRICS, arm_metrics, binary_metrics
from idh_pseudocolor.permutation_study import seed_ensemble

PREDICTION_COLUMNS = ("fold", "model_name", "pretrained", "seed", "subject_id", "label")


# -- folds and splits -------------------------------------------------------------------------
def assign_folds(
    subject_ids: Sequence[str], labels: Sequence[int], k: int, seed: int
) -> pd.DataFrame:
    """Each patient's test fold (0..k-1), label-stratified, so every fold has the cohort's share
    of mutants and its AUROC is comparable to the others'.

    Ids are sorted before the split, so the folds depend on the patients and the seed, not on
    the order they are listed in. Returns ``subject_id``, ``label``, ``fold`` sorted by id.
    """
    ids = np.asarray(subject_ids, dtype=str)
    y = np.asarray(labels, dtype=int)
    if len(ids) != len(y):
        raise ValueError(f"{len(ids)} subject ids but {len(y)} labels")
    if k < 2:
        raise ValueError(f"cross-validation needs k >= 2 folds, got k={k}")
    order = np.argsort(ids, kind="stable")
    ids, y = ids[order], y[order]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate subject ids: a patient may appear only once")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(
            f"labels must be 0 (wild-type) or 1 (mutant), got {[int(v) for v in np.unique(y)]}"
        )
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    if min(counts.values()) < k:
        raise ValueError(
            f"cannot stratify into k={k} folds: need at least {k} patients of each class, "
            f"have {counts[1]} mutant and {counts[0]} wild-type"
        )
    fold = np.empty(len(ids), dtype=int)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, test_index) in enumerate(splitter.split(ids, y)):
        fold[test_index] = i
    return pd.DataFrame({"subject_id": ids, "label": y, "fold": fold})


def fold_split(folds: pd.DataFrame, fold: int, val: float, seed: int) -> pd.DataFrame:
    """The train/val/test split of one fold: its patients are the test set, the other folds are
    cut into train and validation (``val`` of them, at least 2), stratified by label.

    Same columns as ``splits.split_subjects`` (``subject_id``, ``label``, ``split``), so the
    training code runs a fold as it runs the single split. The val cut uses ``seed + fold``:
    reproducible, and not the same draw in every fold.
    """
    if missing := {"subject_id", "label", "fold"} - set(folds.columns):
        raise ValueError(f"folds table lacks columns {sorted(missing)}")
    if not 0 < val < 1:
        raise ValueError(f"val must be a fraction in (0, 1), got {val}")
    table = folds.sort_values("subject_id", kind="stable").reset_index(drop=True)
    if not table["subject_id"].is_unique:
        raise ValueError("duplicate subject ids: a patient may be in one fold only")
    if fold not in set(table["fold"].astype(int)):
        raise ValueError(f"no fold {fold}; folds are {sorted(set(table['fold'].astype(int)))}")
    ids = table["subject_id"].astype(str).to_numpy()
    y = table["label"].astype(int).to_numpy()
    is_test = table["fold"].astype(int).to_numpy() == fold
    rest_ids, rest_y = ids[~is_test], y[~is_test]
    n_val = max(2, int(round(val * len(rest_ids))))
    rest_counts = {c: int((rest_y == c).sum()) for c in (0, 1)}
    if min(rest_counts.values()) < 2 or len(rest_ids) - n_val < 2:
        raise ValueError(
            f"fold {fold}: the other folds' {len(rest_ids)} patients ({rest_counts[1]} mutant, "
            f"{rest_counts[0]} wild-type) are too few for a stratified validation set of {n_val}"
        )
    _, val_ids = train_test_split(
        rest_ids, test_size=n_val, stratify=rest_y, random_state=seed + fold
    )
    split = np.where(is_test, "test", np.where(np.isin(ids, val_ids), "val", "train"))
    return pd.DataFrame({"subject_id": ids, "label": y, "split": split})


# -- metrics ----------------------------------------------------------------------------------
def _check_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The columns, one row per run x patient, and one label per patient: averaging over seeds
    would otherwise hide a duplicated or mislabelled row."""
    if missing := {*PREDICTION_COLUMNS, "prob_mutant"} - set(predictions.columns):
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    frame = predictions[[*PREDICTION_COLUMNS, "prob_mutant"]].copy()
    frame["pretrained"] = frame["pretrained"].astype(bool)
    for column, kind in (("fold", int), ("seed", int), ("label", int), ("subject_id", str)):
        frame[column] = frame[column].astype(kind)
    if frame.duplicated(["fold", *ARM_KEYS, "seed", "subject_id"]).any():
        raise ValueError("more than one prediction for a run x patient")
    if frame.groupby("subject_id")["label"].nunique().gt(1).any():
        raise ValueError("a patient has different labels in different rows")
    return frame


def _ensembles(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per fold x arm x patient: the mean P(mutant) over the seeds."""
    return seed_ensemble(frame[["fold", *ARM_KEYS, "subject_id", "label", "seed", "prob_mutant"]])


def fold_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per fold x model x pretrained, the seed ensemble's metrics on that fold's test patients:
    one number per fold, whose spread over folds is the split-to-split variation.

    ``predictions`` has one row per run x test patient (``fold``, ``model_name``, ``pretrained``,
    ``seed``, ``subject_id``, ``label``, ``prob_mutant``). Returns the keys, every metric of
    :data:`METRICS`, ``n_patients`` and ``n_seeds``.
    """
    frame = _check_predictions(predictions)
    seeds = frame.groupby(["fold", *ARM_KEYS])["seed"].nunique()
    rows = []
    for (fold, model_name, pretrained), part in _ensembles(frame).groupby(
        ["fold", *ARM_KEYS], sort=True
    ):
        m = binary_metrics(part["label"].to_numpy(), part["prob_mutant"].to_numpy())
        rows.append(
            {
                "fold": int(fold),
                "model_name": str(model_name),
                "pretrained": bool(pretrained),
                **{k: float(m[k]) for k in METRICS},
                "n_patients": len(part),
                "n_seeds": int(seeds.loc[(fold, model_name, pretrained)]),
            }
        )
    return pd.DataFrame(rows, columns=["fold", *ARM_KEYS, *METRICS, "n_patients", "n_seeds"])


def pooled_metrics(
    predictions: pd.DataFrame, n_resamples: int, seed: int, calibration_bins: int
) -> pd.DataFrame:
    """Per model x pretrained: metrics of all patients' out-of-fold seed-ensemble predictions
    pooled, with a patient-level stratified bootstrap 95% CI, beside the mean and std (ddof=1)
    over folds of the per-fold metrics.

    Both are reported because they answer different questions: the pooled value uses every
    patient once (a narrower CI than any one fold), but mixes k models whose probabilities need
    not share a scale; the fold mean/std/min/max show how much one test split moves. Columns per
    metric: ``<m>_pooled``, ``<m>_ci_low``, ``<m>_ci_high``, ``<m>_undefined_resamples``,
    ``<m>_fold_mean``, ``<m>_fold_std``, ``<m>_fold_min``, ``<m>_fold_max``; plus ``n_folds``,
    ``n_patients``, ``n_seeds`` (the fewest in a fold), ``bootstrap_resamples`` and the pooled
    ``brier_pooled``/``ece_pooled`` (:func:`~idh_pseudocolor.metrics.arm_metrics`, as Table 2).
    Raises when a patient is in the test set of two folds: out-of-fold means each patient is
    tested once.
    """
    frame = _check_predictions(predictions)
    per_fold = fold_metrics(frame)
    ensembles = _ensembles(frame)
    rows = []
    for (model_name, pretrained), part in ensembles.groupby(list(ARM_KEYS), sort=False):
        folds_of = part.groupby("subject_id")["fold"].nunique()
        if (twice := folds_of[folds_of > 1]).any():
            raise ValueError(
                f"{model_name} (pretrained={bool(pretrained)}): {len(twice)} patient(s) are in "
                f"the test set of more than one fold, e.g. {sorted(twice.index)[:3]}"
            )
        part = part.sort_values("subject_id", kind="stable")  # the bootstrap's draws: by patient
        y, p = part["label"].to_numpy(), part["prob_mutant"].to_numpy()
        pooled = arm_metrics(y, p, n_resamples, seed, calibration_bins)
        folds = per_fold[
            (per_fold["model_name"] == model_name) & (per_fold["pretrained"] == bool(pretrained))
        ]
        row: dict[str, object] = {
            "model_name": str(model_name),
            "pretrained": bool(pretrained),
            "n_folds": len(folds),
            "n_patients": len(part),
            "n_seeds": int(folds["n_seeds"].min()),
            "bootstrap_resamples": int(n_resamples),
            "brier_pooled": pooled["brier"],
            "ece_pooled": pooled["ece"],
        }
        for m in METRICS:
            values = folds[m]
            row[f"{m}_pooled"] = float(pooled[m])
            for end in ("ci_low", "ci_high", "undefined_resamples"):
                row[f"{m}_{end}"] = pooled[f"{m}_{end}"]
            row[f"{m}_fold_mean"] = float(values.mean())
            row[f"{m}_fold_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{m}_fold_min"], row[f"{m}_fold_max"] = float(values.min()), float(values.max())
        rows.append(row)
    return pd.DataFrame(rows)


# -- what the report says ---------------------------------------------------------------------
def _position(value: float, mean: float, std: float, low: float, high: float) -> str:
    """Where ``value`` sits among the folds: outside their range first (the plainer fact), then
    relative to mean ± 1 std (which, with few folds, can reach past the range)."""
    within_std = mean - std <= value <= mean + std
    if value > high:
        return "lies above the highest fold" + (
            ", though within the folds' mean ± 1 std" if within_std else ""
        )
    if value < low:
        return "lies below the lowest fold" + (
            ", though within the folds' mean ± 1 std" if within_std else ""
        )
    if within_std:
        return "lies within the folds' mean ± 1 std"
    side = "above" if value > mean else "below"
    return f"lies within the folds' range but more than 1 std {side} their mean"


def single_split_sentence(
    pooled: pd.DataFrame, single_split: pd.DataFrame, metric: str = "auroc"
) -> list[str]:
    """Per model x arm in both tables, one sentence placing the single split's test value of
    ``metric`` (``single_split``: ``model_name``, ``pretrained``, ``metric``) among the folds'
    (``pooled``: :func:`pooled_metrics`): is the paper's one split typical or a lucky draw?"""
    single = single_split.assign(pretrained=single_split["pretrained"].astype(bool))
    if single.duplicated(list(ARM_KEYS)).any():
        raise ValueError("single_split has more than one row for a model x pretrained")
    single = single.set_index(list(ARM_KEYS))[metric]
    name = metric.upper() if metric == "auroc" else metric
    sentences = []
    for _, r in pooled.iterrows():
        key = (r["model_name"], bool(r["pretrained"]))
        if key not in single.index:
            continue
        value = float(single.loc[key])
        mean, std = float(r[f"{metric}_fold_mean"]), float(r[f"{metric}_fold_std"])
        low, high = float(r[f"{metric}_fold_min"]), float(r[f"{metric}_fold_max"])
        head = f"{r['model_name']}, {arm_label(key[1])}: the single split's test {name}"
        if any(math.isnan(v) for v in (value, mean, std, low, high)):
            sentences.append(f"{head} cannot be placed among the folds (undefined or one fold).")
            continue
        sentences.append(
            f"{head} {value:.3f} {_position(value, mean, std, low, high)} "
            f"({mean:.3f} ± {std:.3f}; folds {low:.3f}–{high:.3f})."
        )
    return sentences
