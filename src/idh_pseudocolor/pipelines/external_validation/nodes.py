"""Thin nodes: the work is in idh_pseudocolor.external, .qc and .report."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from idh_pseudocolor import tracking
from idh_pseudocolor.arms import arm_slug
from idh_pseudocolor.external import (
    PREDICTION_COLUMNS,
    arm_ensembles,
    check_normalization,
    external_metrics,
    score_runs,
)
from idh_pseudocolor.parameters import DataEngineeringSettings, ReportingSettings
from idh_pseudocolor.qc import qc_montage, qc_summary, split_counts
from idh_pseudocolor.report.figures import figure_external, figure_placeholder

logger = logging.getLogger(__name__)


def _absent(cohort_record: dict[str, Any]) -> str | None:
    return cohort_record.get("absent")


def external_quality(
    manifest: pd.DataFrame,
    slice_arrays: dict[str, np.ndarray],
    cohort_record: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], Figure]:
    """The development cohort's QC numbers and montage, for the external cohort (one "split")."""
    settings = DataEngineeringSettings.from_params(params)
    if _absent(cohort_record):
        return {"absent": _absent(cohort_record)}, figure_placeholder(
            f"External validation not run: {_absent(cohort_record)}"
        )
    included = manifest[manifest["status"] == "included"]
    counts = split_counts(included.assign(split="external", label=included["label"].astype(int)))
    return qc_summary(manifest, counts), qc_montage(slice_arrays, settings.qc_montage_subjects)


def score_external_cohort(
    winner_models: dict[str, dict[str, Any]],
    slice_arrays: dict[str, np.ndarray],
    cohort_record: dict[str, Any],
    params: dict[str, Any],
) -> pd.DataFrame:
    """Every final-evaluation run's P(IDH mutant) for every external patient."""
    from idh_pseudocolor.runs import load_runs  # torch and timm: only when there are runs

    if _absent(cohort_record):
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    runs = load_runs(winner_models)
    check_normalization(
        runs, DataEngineeringSettings.from_params(params).normalization.normalization()
    )
    predictions = score_runs(runs, slice_arrays)
    logger.info(
        "External cohort scored: %d patients x %d runs",
        predictions["subject_id"].nunique(),
        len(runs),
    )
    return predictions


def _arms(predictions: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"model_name": m, "pretrained": pretrained, "labels": y.tolist(), "prob": p.tolist()}
        for (m, pretrained), (y, p) in arm_ensembles(predictions).items()
    ]


def evaluate_external(
    external_predictions: pd.DataFrame,
    test_predictions: pd.DataFrame,
    cohort_record: dict[str, Any],
    qc: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, Figure, dict[str, Any]]:
    """Metrics with CIs, calibration and the difference to the internal test; their figure; and
    the summary the report's section is drawn from (the seed ensembles of both cohorts)."""
    settings = ReportingSettings.from_params(params)
    if _absent(cohort_record):
        message = f"External validation not run: {_absent(cohort_record)}"
        return (
            pd.DataFrame({"absent": [_absent(cohort_record)]}),
            figure_placeholder(message),
            {"absent": _absent(cohort_record)},
        )
    table = external_metrics(
        external_predictions,
        test_predictions,
        settings.bootstrap_resamples,
        settings.seed,
        settings.calibration_bins,
    )
    # MLflow: one nested run per arm (model x pretrained) with its external metrics
    tracking.log_table(
        "external",
        table,
        lambda row: f"external-{row['model_name']}-{arm_slug(bool(row['pretrained']))}",
    )
    figure = figure_external(
        arm_ensembles(external_predictions),
        arm_ensembles(test_predictions),
        settings.calibration_bins,
    )
    summary = {
        "metrics": table.to_dict("records"),
        "qc": qc,
        "external": _arms(external_predictions),
        "internal": _arms(test_predictions),
        "calibration_bins": settings.calibration_bins,
    }
    return table, figure, summary
