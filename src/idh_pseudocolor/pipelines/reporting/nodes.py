"""Thin nodes over idh_pseudocolor.report: ``stats`` (numbers), ``figures`` (matplotlib) and
``html`` (the report). ``params:reporting`` arrives as a :class:`ReportingSettings`."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from idh_pseudocolor import tracking
from idh_pseudocolor.paper_path import check_winner_source
from idh_pseudocolor.parameters import ReportingSettings
from idh_pseudocolor.planted import planted_truth_check
from idh_pseudocolor.report import figures, html, stats
from idh_pseudocolor.splits import split_ids


def plot_composition(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    study_winner: dict[str, Any],
    params: dict[str, Any],
) -> Figure:
    """Figure 1 for a training patient (never a test patient), in the winning configuration."""
    wanted = ReportingSettings.from_params(params).figure_1_subject
    if wanted is None:
        wanted = sorted(split_ids(development_split, "train"))[0]
    ids = slice_arrays["subject_ids"].tolist()
    if wanted not in ids:
        raise KeyError(f"figure_1_subject {wanted!r} has no slice in slice_arrays")
    i = ids.index(wanted)
    return figures.figure_composition(
        slice_arrays["images"][i], slice_arrays["masks"][i], int(study_winner["config_id"]), wanted
    )


def plot_configurations(study_results: pd.DataFrame) -> Figure:
    return figures.figure_configurations(study_results)


def plot_model_agreement(study_results: pd.DataFrame, study_params: dict[str, Any]) -> Figure:
    return figures.figure_model_agreement(study_results, list(study_params["models"]))


def plot_calibration(test_predictions: pd.DataFrame, params: dict[str, Any]) -> Figure:
    settings = ReportingSettings.from_params(params)
    return figures.figure_calibration(
        stats.calibration_curves(test_predictions, settings.calibration_bins)
    )


def make_table_2(
    test_predictions: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2 (ours with CIs + published rows) and the paired finetuned-vs-scratch comparison."""
    settings = ReportingSettings.from_params(params)
    n, seed = settings.bootstrap_resamples, settings.seed
    return (
        stats.table_2(test_predictions, n, seed, settings.calibration_bins),
        stats.pretrained_comparison(test_predictions, n, seed),
    )


def compare_retrained_runs(
    test_predictions: pd.DataFrame, study_runs: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """The final evaluation's retrained runs against the sweep's runs (validation AUROC)."""
    return stats.retrain_agreement(
        test_predictions, study_runs, ReportingSettings.from_params(params).retrain_tolerance
    )


def check_planted_truth(
    study_winner: dict[str, Any], cohort_record: dict[str, Any], environment: dict[str, Any]
) -> dict[str, Any]:
    """Whether the study's ranking recovered the phantom's planted truth (not applicable to real
    data, nor to a paper-path rehearsal's toy-scale training)."""
    rehearsal = stats.study_kind(environment) == "rehearsal"
    return planted_truth_check(study_winner["ranking"], cohort_record, rehearsal=rehearsal)


def build_report(
    figure_1,
    figure_2,
    figure_3,
    calibration,
    table_2: pd.DataFrame,
    pretrained_comparison: pd.DataFrame,
    retrain_agreement: pd.DataFrame,
    study_winner: dict[str, Any],
    study_results: pd.DataFrame,
    best_params: dict[str, Any],
    qc_summary: dict[str, Any],
    test_metrics: pd.DataFrame,
    search_history_plot,
    search_importance_plot,
    parameters: dict[str, Any],
    planted_truth: dict[str, Any] | None = None,
    demo_pretrained_weights: dict[str, Any] | None = None,
    external_validation_summary: dict[str, Any] | None = None,
    cross_validation_summary: dict[str, Any] | None = None,
    segmentation_summary: dict[str, Any] | None = None,
    fallback_configurations: pd.DataFrame | None = None,
    fallback_test_metrics: pd.DataFrame | None = None,
    cohort_record: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """One self-contained HTML page, saved twice: versioned (history) and as report.html (latest).

    Refused when the winner was chosen with another best_params than the one shown (the search
    was rerun after the sweep): the report would describe two different studies.
    """
    check_winner_source(study_winner, best_params, "the report (and rerun the final evaluation)")
    page = html.render_report(
        figures={
            "figure_1": figure_1,
            "figure_2": figure_2,
            "figure_3": figure_3,
            "calibration": calibration,
        },
        table=table_2,
        comparison=pretrained_comparison,
        agreement=retrain_agreement,
        winner=study_winner,
        study_results=study_results,
        best_params=best_params,
        qc_summary=qc_summary,
        test_metrics=test_metrics,
        search_plots=[search_history_plot, search_importance_plot],
        parameters=parameters,
        planted=planted_truth,
        demo_pretraining=(demo_pretrained_weights or {}).get("record"),
        external_validation=external_validation_summary,
        cross_validation=cross_validation_summary,
        segmentation=segmentation_summary,
        fallback_configurations=fallback_configurations,
        fallback_test_metrics=fallback_test_metrics,
        cohort_record=cohort_record,
        tracking=tracking.report_link(),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return page, page
