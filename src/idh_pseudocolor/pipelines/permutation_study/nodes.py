"""Thin nodes over idh_pseudocolor.training and idh_pseudocolor.study."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from idh_pseudocolor.study import summarize, winner
from idh_pseudocolor.training import RunConfig, train_run


def train_configuration(
    slice_arrays: dict[str, np.ndarray], development_split: pd.DataFrame, best_params: dict[str, Any], params: dict[str, Any], config_id: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All runs (models x seeds) of one configuration; validation metrics and predictions.

    Hyperparameters come from the search's ``best_params``, overridable by
    ``permutation_study.overrides``; the test split is not read.
    """
    hp = {**best_params["hyperparameters"], **(params.get("overrides") or {})}
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
