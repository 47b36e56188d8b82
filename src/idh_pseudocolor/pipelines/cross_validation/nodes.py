"""Thin nodes over idh_pseudocolor.cross_validation and the final evaluation's loop."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from idh_pseudocolor.cross_validation import (
    assign_folds,
    fold_metrics,
    fold_split,
    pooled_metrics,
    single_split_sentence,
)
from idh_pseudocolor.parameters import CrossValidationSettings, ReportingSettings
from idh_pseudocolor.report.figures import fold_auroc_figure
from idh_pseudocolor.runs import checked_winner_inputs, winner_runs
from idh_pseudocolor.splits import split_ids

logger = logging.getLogger(__name__)

#: fold nodes in the graph (built before parameters are read); cross_validation.folds <= this
MAX_FOLDS = 10
FOLD_COLUMNS = ["fold", "config_id", "model_name", "pretrained", "seed", "subject_id", "label"]


def assign_cross_validation_folds(
    subject_manifest: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Every included patient's outer test fold (stratified by IDH status, independent of the
    manifest's order): the development split and the test split alike."""
    settings = CrossValidationSettings.from_params(params)
    if not 2 <= settings.folds <= MAX_FOLDS:
        raise ValueError(
            f"cross_validation.folds is {settings.folds}; it must be 2..{MAX_FOLDS} "
            "(conf/base/parameters_cross_validation.yml)"
        )
    included = subject_manifest[subject_manifest["status"] == "included"]
    return assign_folds(
        included["subject_id"].astype(str).tolist(),
        included["label"].astype(int).tolist(),
        settings.folds,
        settings.seed,
    )


def train_fold(
    slice_arrays: dict[str, np.ndarray],
    folds: pd.DataFrame,
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    cv_params: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    demo_pretrained_weights: dict[str, Any] | None = None,
    *,
    fold: int,
) -> pd.DataFrame:
    """The final evaluation with fold ``fold`` as the test patients: the winner configuration,
    each model, arm and seed, trained on the other folds' train part, best epoch on their
    validation part. An empty table for a fold node beyond ``cross_validation.folds``."""
    cv = CrossValidationSettings.from_params(cv_params)
    if fold >= cv.folds:
        return pd.DataFrame(columns=[*FOLD_COLUMNS, "prob_mutant"])
    inputs = checked_winner_inputs(
        slice_arrays,
        best_params,
        study_winner,
        (params, data_params, search_params, environment),
        demo_pretrained_weights,
        f"cross-validation fold {fold}",
    )
    split = fold_split(folds, fold, cv.val_fraction, cv.seed)
    logger.info(
        "Cross-validation fold %d of %d: %s",
        fold + 1,
        cv.folds,
        ", ".join(f"{n} {s}" for s, n in split["split"].value_counts().sort_index().items()),
    )
    predictions, _ = winner_runs(
        slice_arrays,
        split_ids(split, "train"),
        split_ids(split, "val"),
        split[split["split"] == "test"],
        int(study_winner["config_id"]),
        inputs,
        inputs.settings.hyperparameters(best_params),
        kind="fold",
        tags={"fold": str(fold)},
    )
    return predictions.assign(fold=fold)[[*FOLD_COLUMNS, "prob_mutant", "val_auroc"]]


def summarize_cross_validation(
    folds: pd.DataFrame,
    test_metrics: pd.DataFrame,
    cv_params: dict[str, Any],
    reporting_params: dict[str, Any],
    *fold_predictions: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """All folds' out-of-fold predictions, metrics per fold and pooled (bootstrap CIs), one
    sentence per model x arm placing the single split's test AUROC among the folds, and the
    per-fold AUROC figure; the summary is what the report shows."""
    cv = CrossValidationSettings.from_params(cv_params)
    report = ReportingSettings.from_params(reporting_params)
    used = [p for p in fold_predictions if len(p)]
    predictions = pd.concat(used, ignore_index=True)
    predictions["pretrained"] = predictions["pretrained"].astype(bool)
    tested = set(predictions["subject_id"].astype(str))
    untested = sorted(set(folds["subject_id"].astype(str)) - tested)
    if len(used) != cv.folds or untested:
        raise ValueError(
            f"{len(used)} of {cv.folds} folds have predictions and {len(untested)} patients were "
            f"never tested (e.g. {untested[:3]}): rerun the cross_validation pipeline whole"
        )
    per_fold = fold_metrics(predictions[[*FOLD_COLUMNS, "prob_mutant"]])
    pooled = pooled_metrics(
        predictions[[*FOLD_COLUMNS, "prob_mutant"]],
        report.bootstrap_resamples,
        report.seed,
        report.calibration_bins,
    )
    single = test_metrics.rename(columns={"ensemble_auroc": "auroc"})[
        ["model_name", "pretrained", "auroc"]
    ]
    sentences = single_split_sentence(pooled, single)
    summary = {
        "folds": cv.folds,
        "seed": cv.seed,
        "patients": int(folds["subject_id"].nunique()),
        "fold_metrics": per_fold.to_dict("records"),
        "pooled": pooled.to_dict("records"),
        "single_split": single.to_dict("records"),
        "sentences": sentences,
    }
    for sentence in sentences:
        logger.info("Cross-validation: %s", sentence)
    return predictions, per_fold, pooled, summary, fold_auroc_figure(per_fold, single)
