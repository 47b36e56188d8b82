"""External validation: the final evaluation's trained runs applied to a second cohort, and how
far their numbers move from the internal test patients'.

A second hospital differs in scanner, protocol and patients; a model that only learned the first
site's intensities loses AUROC there. The difference to the internal test split is the number a
reviewer asks for, so it comes with its own interval: the two cohorts are independent samples,
so each is resampled on its own (stratified by label, as for Table 2) and the percentile interval
of the per-resample differences is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss

from idh_pseudocolor.metrics import METRICS, binary_metrics, expected_calibration_error
from idh_pseudocolor.report.stats import bootstrap_ci, resampled_metrics
from idh_pseudocolor.slices import Normalization
from idh_pseudocolor.study import seed_ensemble

PREDICTION_COLUMNS = [
    "config_id",
    "model_name",
    "pretrained",
    "pretrained_loaded",
    "seed",
    "subject_id",
    "label",
    "prob_mutant",
]
ARM = ["model_name", "pretrained"]


def check_normalization(runs: Sequence[Any], normalization: Normalization) -> None:
    """The runs were trained on slices scaled one way; the external slices must be scaled the same
    way, or every probability is computed on inputs the model never saw."""
    recorded = {(r.name, r.normalization) for r in runs if r.normalization != normalization}
    if recorded:
        name, theirs = sorted(recorded, key=lambda x: x[0])[0]
        raise ValueError(
            f"run {name} was trained on slices normalized as {theirs}, but the external cohort's "
            f"slices were extracted with {normalization} (data_engineering.normalization): "
            "extract both cohorts with the same settings"
        )


def score_runs(runs: Sequence[Any], arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """P(IDH mutant) of every run for every extracted subject, one row per run x subject (the
    columns of the final evaluation's ``test_predictions`` that say which run and patient)."""
    from idh_pseudocolor.training import predict_proba, prepare_inputs

    ids = [str(s) for s in arrays.get("subject_ids", np.array([], dtype=str)).tolist()]
    if not ids:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    index = np.arange(len(ids))
    frames = []
    for run in runs:
        x, _ = prepare_inputs(arrays, index, run.config, run.weights)
        frames.append(
            pd.DataFrame(
                {
                    "config_id": run.config.config_id,
                    "model_name": run.config.model_name,
                    "pretrained": bool(run.config.pretrained),
                    "pretrained_loaded": bool(run.weights.pretrained_loaded),
                    "seed": int(run.config.seed),
                    "subject_id": ids,
                    "label": arrays["labels"].astype(int),
                    "prob_mutant": predict_proba(run.model, x).astype(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS]


def _ensemble(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ens = seed_ensemble(part[["subject_id", "label", "seed", "prob_mutant"]])
    return ens["label"].to_numpy().astype(int), ens["prob_mutant"].to_numpy(dtype=float)


def cohort_metrics(
    labels: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int, calibration_bins: int
) -> dict[str, Any]:
    """One arm's seed ensemble on one cohort (one probability per patient, in a fixed patient
    order): every metric with its patient-level bootstrap CI, Brier score and ECE. What both the
    external_validation pipeline and ``idh-pseudocolor predict --labels`` report."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)
    out: dict[str, Any] = {"patients": len(y), "mutant": int(y.sum())}
    values, cis = binary_metrics(y, p), bootstrap_ci(y, p, n_resamples, seed)
    for m in METRICS:
        out[m], out[f"{m}_ci_low"], out[f"{m}_ci_high"] = values[m], cis[m].low, cis[m].high
    out["brier"] = float(brier_score_loss(y, p, labels=[0, 1]))
    out["ece"] = expected_calibration_error(y, p, calibration_bins)
    out["bootstrap_resamples"] = n_resamples
    return out


def external_metrics(
    external: pd.DataFrame,
    internal: pd.DataFrame,
    n_resamples: int,
    seed: int,
    calibration_bins: int,
) -> pd.DataFrame:
    """Per model x pretrained, :func:`cohort_metrics` of the seed ensemble on the external
    cohort; the same arm's values on the internal test patients (``<metric>_internal``); and the
    difference external - internal with a CI from independent resamples of the two cohorts.
    Arms the internal test lacks get NaN there."""
    rows = []
    for (model, pretrained), part in external.groupby(ARM, sort=False):
        y, p = _ensemble(part)
        inside = internal[
            (internal["model_name"] == model)
            & (internal["pretrained"].astype(bool) == bool(pretrained))
        ]
        row: dict[str, Any] = {
            "model_name": model,
            "pretrained": bool(pretrained),
            "pretrained_loaded": bool(part["pretrained_loaded"].astype(bool).all()),
            "seeds": int(part["seed"].nunique()),
            **cohort_metrics(y, p, n_resamples, seed, calibration_bins),
            "internal_patients": int(inside["subject_id"].nunique()),
        }
        external_draws = resampled_metrics(y, p, n_resamples, seed)
        internal_draws = None
        internal_values: dict[str, float] = {m: math.nan for m in METRICS}
        row["brier_internal"] = row["ece_internal"] = math.nan
        if len(inside):
            yi, pi = _ensemble(inside)
            internal_values = binary_metrics(yi, pi)
            internal_draws = resampled_metrics(yi, pi, n_resamples, seed + 1)
            row["brier_internal"] = float(brier_score_loss(yi, pi, labels=[0, 1]))
            row["ece_internal"] = expected_calibration_error(yi, pi, calibration_bins)
        for m in METRICS:
            row[f"{m}_internal"] = internal_values[m]
            row[f"{m}_difference"] = row[m] - internal_values[m]
            low = high = math.nan
            if external_draws is not None and internal_draws is not None:
                diff = external_draws[m] - internal_draws[m]
                if np.isfinite(diff).any():
                    low, high = np.nanpercentile(diff, [2.5, 97.5])
            row[f"{m}_difference_ci_low"], row[f"{m}_difference_ci_high"] = float(low), float(high)
        rows.append(row)
    return pd.DataFrame(rows)


def arm_ensembles(predictions: pd.DataFrame) -> dict[tuple[str, bool], tuple[np.ndarray, ...]]:
    """(labels, seed-ensemble probabilities) per model x pretrained, for the figures."""
    return {
        (str(model), bool(pretrained)): _ensemble(part)
        for (model, pretrained), part in predictions.groupby(ARM, sort=False)
    }
