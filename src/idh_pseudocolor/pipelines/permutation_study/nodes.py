"""Thin nodes over idh_pseudocolor.training and idh_pseudocolor.study."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from idh_pseudocolor.study import final_metrics_table, summarize, winner
from idh_pseudocolor.training import RunConfig, train_run


def hyperparameters(best_params: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """best_params' hyperparameters with ``overrides`` applied (an override of null keeps best_params')."""
    overrides = {k: v for k, v in (params.get("overrides") or {}).items() if v is not None}
    return {**best_params["hyperparameters"], **overrides}


def train_configuration(
    slice_arrays: dict[str, np.ndarray], development_split: pd.DataFrame, best_params: dict[str, Any], params: dict[str, Any], config_id: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All runs (models x seeds) of one configuration; validation metrics and predictions.

    Hyperparameters come from the search's ``best_params``, overridable by
    ``permutation_study.overrides``; the test split is not read.
    """
    hp = hyperparameters(best_params, params)
    train_ids = development_split.loc[development_split["split"] == "train", "subject_id"].tolist()
    val = development_split[development_split["split"] == "val"]
    runs, predictions = [], []
    for model_name in params["models"]:
        for seed in params["seeds"]:
            cfg = RunConfig(model_name=model_name, config_id=config_id, seed=int(seed), **{**params.get("fixed", {}), **hp})
            result = train_run(slice_arrays, train_ids, val["subject_id"].tolist(), cfg)
            runs.append({
                "config_id": config_id, "model_name": model_name, "seed": int(seed), "pretrained": cfg.pretrained,
                **result.metrics,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "pretrained_loaded": result.weights.pretrained_loaded, "weights_source": result.weights.source,
            })
            predictions.append(pd.DataFrame({
                "config_id": config_id, "model_name": model_name, "seed": int(seed),
                "subject_id": result.val_subject_ids, "label": val["label"].to_numpy(), "prob_mutant": result.val_prob_mutant,
            }))
    return pd.DataFrame(runs), pd.concat(predictions, ignore_index=True)


def aggregate_study(params: dict[str, Any], *validation_runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All runs in one table, mean/std per configuration and model, and the winner (paper's rule)."""
    runs = pd.concat(validation_runs, ignore_index=True)
    summary = summarize(runs)
    return runs, summary, winner(summary, models=list(params["models"]))


def evaluate_winner(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    test_split: pd.DataFrame,
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The only use of the test split: the winning configuration, each model, pretrained and from
    scratch, every seed; trained on train, best epoch chosen on validation, scored on test.

    Returns per-run test predictions and a metrics table per model x pretrained: mean and std over
    seeds of each metric and the seed-ensemble's metrics.
    """
    config_id = int(study_winner["config_id"])
    hp = hyperparameters(best_params, params)
    train_ids = development_split.loc[development_split["split"] == "train", "subject_id"].tolist()
    val_ids = development_split.loc[development_split["split"] == "val", "subject_id"].tolist()
    test_ids, test_labels = test_split["subject_id"].tolist(), test_split["label"].to_numpy()
    predictions = []
    for model_name in params["models"]:
        for pretrained in params["final_evaluation"]["pretrained"]:
            for seed in params["seeds"]:
                cfg = RunConfig(
                    model_name=model_name, config_id=config_id, seed=int(seed),
                    **{**params.get("fixed", {}), **hp, "pretrained": bool(pretrained)},
                )
                result = train_run(slice_arrays, train_ids, val_ids, cfg, evaluate_ids=test_ids)
                predictions.append(pd.DataFrame({
                    "config_id": config_id, "model_name": model_name, "pretrained": bool(pretrained),
                    "pretrained_loaded": result.weights.pretrained_loaded, "seed": int(seed),
                    "subject_id": test_ids, "label": test_labels, "prob_mutant": result.eval_prob_mutant,
                }))
    predictions_table = pd.concat(predictions, ignore_index=True)
    return predictions_table, final_metrics_table(predictions_table)
