"""Thin nodes over idh_pseudocolor.search."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd

from idh_pseudocolor import tracking
from idh_pseudocolor.paper_path import check_cohort, check_weights_files
from idh_pseudocolor.parameters import EnvironmentSettings
from idh_pseudocolor.search import (
    SearchSettings,
    StudyLocation,
    best_params,
    open_study,
    run_search,
    trials_table,
)
from idh_pseudocolor.splits import split_ids


def search_hyperparameters(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    search_study: StudyLocation,
    params: dict[str, Any],
    environment: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], Any, Any]:
    """Run (or resume) the search on train/validation; the test split is never read here.

    Returns the trials table, ``best_params`` and Optuna's optimization-history and
    parameter-importance figures.
    """
    settings, env = SearchSettings.from_params(params), EnvironmentSettings.from_params(environment)
    check_cohort(slice_arrays, env)
    check_weights_files(settings.fixed.weights_file, env)
    study = open_study(search_study, settings)
    train_ids, val_ids = (split_ids(development_split, s) for s in ("train", "val"))
    # MLflow: a study run with each trial nested under it (nothing where tracking is off)
    study_run = tracking.start_study_run(
        f"search-{study.study_name}",
        {
            "study": study.study_name,
            "model_name": settings.model_name,
            "config_id": settings.config_id,
            "n_trials": settings.n_trials,
            "pruning": settings.pruning,
            "worker": settings.worker,
        },
    )
    try:
        run_search(
            study,
            slice_arrays,
            train_ids,
            val_ids,
            settings,
            callbacks=[tracking.TrialTracker(study_run)],
        )
    except BaseException:
        tracking.end_study_run(study_run, {}, status="FAILED")
        raise
    trials = trials_table(study)
    states = trials["state"].value_counts() if "state" in trials else {}
    tracking.end_study_run(
        study_run,
        {"best_val_f1": study.best_value, **{f"trials_{k.lower()}": n for k, n in states.items()}},
    )
    history = optuna.visualization.plot_optimization_history(study, target_name="validation F1")
    try:
        importance = optuna.visualization.plot_param_importances(study, target_name="validation F1")
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # too few or identical trials
        importance = _placeholder_figure(f"Parameter importance unavailable: {exc}")
    return trials, best_params(study, settings), history, importance


def _placeholder_figure(message: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
