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

from idh_pseudocolor.arms import ARM_KEYS
from idh_pseudocolor.metrics import METRICS, arm_metrics, resampled_metrics
from idh_pseudocolor.permutation_study import seed_ensemble
from idh_pseudocolor.slices import Normalization

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


def external_metrics(
    external: pd.DataFrame,
    internal: pd.DataFrame,
    n_resamples: int,
    seed: int,
    calibration_bins: int,
) -> pd.DataFrame:
    """Per model x pretrained, :func:`~idh_pseudocolor.metrics.arm_metrics` of the seed ensemble on
    the external cohort; the same arm's values on the internal test patients
    (``<metric>_internal``, ``brier_internal``, ``ece_internal``); and the difference external -
    internal with a CI from independent resamples of the two cohorts. Arms the internal test
    lacks get NaN there."""
    rows = []
    for (model, pretrained), part in external.groupby(list(ARM_KEYS), sort=False):
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
            **arm_metrics(y, p, n_resamples, seed, calibration_bins),
            "internal_patients": int(inside["subject_id"].nunique()),
        }
        internal_draws = None
        values: dict[str, Any] = {k: math.nan for k in (*METRICS, "brier", "ece")}
        if len(inside):
            yi, pi = _ensemble(inside)
            values = arm_metrics(yi, pi, n_resamples, seed + 1, calibration_bins)
            internal_draws = resampled_metrics(yi, pi, n_resamples, seed + 1)
        row["brier_internal"], row["ece_internal"] = values["brier"], values["ece"]
        external_draws = resampled_metrics(y, p, n_resamples, seed)
        for m in METRICS:
            row[f"{m}_internal"] = values[m]
            row[f"{m}_difference"] = row[m] - values[m]
            low, high = _difference_interval(external_draws, internal_draws, m)
            row[f"{m}_difference_ci_low"], row[f"{m}_difference_ci_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


def _difference_interval(
    external: dict[str, np.ndarray] | None, internal: dict[str, np.ndarray] | None, metric: str
) -> tuple[float, float]:
    """95% percentile interval of external - internal over paired draws of two independent
    bootstraps (NaN when either cohort has a class of fewer than two patients)."""
    if external is None or internal is None:
        return math.nan, math.nan
    diff = external[metric] - internal[metric]
    if not np.isfinite(diff).any():
        return math.nan, math.nan
    low, high = np.nanpercentile(diff, [2.5, 97.5])
    return float(low), float(high)


def arm_ensembles(predictions: pd.DataFrame) -> dict[tuple[str, bool], tuple[np.ndarray, ...]]:
    """(labels, seed-ensemble probabilities) per model x pretrained, for the figures."""
    return {
        (str(model), bool(pretrained)): _ensemble(part)
        for (model, pretrained), part in predictions.groupby(list(ARM_KEYS), sort=False)
    }
