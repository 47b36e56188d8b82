"""Thin nodes over idh_pseudocolor.runs (the loops and their checks) and
idh_pseudocolor.permutation_study (the arithmetic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from idh_pseudocolor.paper_path import check_cohort, check_one_source, check_weights_files
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.permutation_study import final_metrics_table, summarize, winner
from idh_pseudocolor.runs import (
    checked_best_params,
    checked_winner_inputs,
    configuration_runs,
    fallback_choices,
    fallback_metrics_table,
    fallback_runs,
    node_settings,
    ranked_fallback_predictions,
    study_ranking,
    winner_runs,
)
from idh_pseudocolor.splits import split_ids


def train_configuration(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    best_params: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    *,
    config_id: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All runs (models x seeds) of one configuration; validation metrics, predictions and
    (with ``keep_checkpoints``) each run's best-epoch weights.

    Hyperparameters come from the search's ``best_params`` (refused if this environment's search
    did not produce it), overridable by ``permutation_study.overrides``; the test split is not read.
    """
    settings, data, search, env = node_settings(params, data_params, search_params, environment)
    check_cohort(slice_arrays, env)
    check_weights_files(settings.fixed.weights_file, env)
    source = checked_best_params(best_params, settings, search, f"configuration {config_id}")
    return configuration_runs(
        slice_arrays,
        split_ids(development_split, "train"),
        development_split[development_split["split"] == "val"],
        config_id,
        settings,
        data,
        settings.hyperparameters(best_params),
        source,
    )


def aggregate_study(
    params: dict[str, Any], *validation_runs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All runs in one table, mean/std per configuration and model, and the winner (paper's
    rule)."""
    settings = PermutationStudySettings.from_params(params)
    runs = pd.concat(validation_runs, ignore_index=True)
    sources = (
        runs["best_params_id"]
        if "best_params_id" in runs
        else pd.Series(["unrecorded"] * len(runs))
    )
    check_one_source(sources.fillna("unrecorded"))
    summary = summarize(runs)
    return (
        runs,
        summary,
        {**winner(summary, models=list(settings.models)), "best_params_id": str(sources.iloc[0])},
    )


def evaluate_winner(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    test_split: pd.DataFrame,
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    demo_pretrained_weights: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The only use of the test split: the winning configuration, each model, pretrained and from
    scratch, every seed; trained on train, best epoch chosen on validation, scored on test.

    Returns per-run test predictions (with each run's validation AUROC and best epoch), a
    metrics table per model x pretrained (mean and std over seeds of each metric and the
    seed-ensemble's metrics) and the runs' weights, which ``predict`` applies to new patients.
    The pretrained arm loads ``fixed.weights_file`` (or the hub / HF cache); where none is set and
    the demo pretrained its networks (``demo_pretrained_weights``), it loads those files, through
    the same weights-file path, and every row says so.
    """
    inputs = checked_winner_inputs(
        slice_arrays,
        best_params,
        study_winner,
        (params, data_params, search_params, environment),
        demo_pretrained_weights,
        "the final evaluation",
    )
    predictions_table, models = winner_runs(
        slice_arrays,
        split_ids(development_split, "train"),
        split_ids(development_split, "val"),
        test_split,
        int(study_winner["config_id"]),
        inputs,
        inputs.settings.hyperparameters(best_params),
        study_rank=1,  # the winner, by the study's rule
    )
    return predictions_table, final_metrics_table(predictions_table), models


def train_fallbacks(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    test_split: pd.DataFrame,
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    demo_pretrained_weights: dict[str, Any] | None = None,
    *,
    slot: int = 0,
    slots: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Runs for patients missing sequences (``predict``): for every set of at least
    ``fallback.min_sequences`` present sequences, the best-ranked configuration of the study
    (study_results by the winner's rule: the ranking study_winner records) using only them; each
    one other than the winner is trained exactly as the winner is (same checks, arms, seeds and
    splits; scored on test). This node trains every ``slots``-th of them from the ``slot``-th
    (best rank first), so the fallbacks train in several nodes at once, on several workers or
    GPUs. study_winner, not study_results, keeps kedro-viz's layers acyclic.

    Returns the runs' test predictions and their weights, each recording its configuration's
    study rank.
    """
    inputs = checked_winner_inputs(
        slice_arrays,
        best_params,
        study_winner,
        (params, data_params, search_params, environment),
        demo_pretrained_weights,
        "the fallback runs",
    )
    choices = fallback_choices(study_ranking(study_winner), inputs.settings.fallback.min_sequences)
    return fallback_runs(
        slice_arrays,
        split_ids(development_split, "train"),
        split_ids(development_split, "val"),
        test_split,
        choices,
        inputs,
        inputs.settings.hyperparameters(best_params),
        slot=slot,
        slots=slots,
    )


def collect_fallbacks(
    study_winner: dict[str, Any], params: dict[str, Any], *slot_predictions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which configuration each set of present sequences gets, and each fallback's test metrics
    per model x pretrained (as test_metrics), from the fallback nodes' predictions."""
    settings = PermutationStudySettings.from_params(params)
    choices = fallback_choices(study_ranking(study_winner), settings.fallback.min_sequences)
    predictions = ranked_fallback_predictions(slot_predictions, choices)
    return choices, fallback_metrics_table(predictions, choices)
