"""Thin nodes: the work is in idh_pseudocolor.cohort, .slices, .splits and .qc."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from idh_pseudocolor.paper_path import check_cohort
from idh_pseudocolor.parameters import DataEngineeringSettings, EnvironmentSettings
from idh_pseudocolor.qc import qc_montage, qc_summary, split_counts
from idh_pseudocolor.slices import MANIFEST_COLUMNS, extract_cohort, stack_slices
from idh_pseudocolor.splits import split_subjects

logger = logging.getLogger(__name__)


def extract_slices(
    cohort: pd.DataFrame, params: dict[str, Any], environment: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
    """Validate every subject and extract its mid-tumor slice; exclude bad ones with a reason.

    Fails only when no subject is usable, so that one broken file never costs a cohort run.
    The slices carry a ``phantom`` flag, so a paper run can refuse synthetic data later too;
    the cohort's own record (a phantom's planted cues) goes on to the report.
    """
    settings, env = (
        DataEngineeringSettings.from_params(params),
        EnvironmentSettings.from_params(environment),
    )
    if cohort.attrs.get("absent"):  # an optional cohort (external validation) not given
        logger.info("No cohort to extract (%s)", cohort.attrs["absent"])
        empty = pd.DataFrame(columns=MANIFEST_COLUMNS)
        return empty, {"subject_ids": np.array([], dtype=str)}, {"absent": cohort.attrs["absent"]}
    phantom = bool(cohort["phantom"].any()) if "phantom" in cohort else False
    check_cohort({"phantom": phantom}, env)
    manifest, slices, labels = extract_cohort(
        cohort, settings.normalization.normalization(), settings.n_workers, settings.progress
    )
    excluded = manifest[manifest["status"] == "excluded"]
    for row in excluded.itertuples():
        logger.warning("Excluded subject %s: %s", row.subject_id, row.reason)
    logger.info("Slices extracted: %d included, %d excluded", len(slices), len(excluded))
    if not slices:
        reasons = "; ".join(f"{r.subject_id}: {r.reason}" for r in excluded.head(5).itertuples())
        raise ValueError(
            f"No usable subject in the cohort ({len(manifest)} found, "
            f"all excluded). First reasons: {reasons}"
        )
    record = cohort.attrs.get("cohort_record", {"synthetic": phantom})
    return manifest, {**stack_slices(slices, labels), "phantom": np.array(phantom)}, record


def split_cohort(
    manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Patient-level stratified split of the included subjects.

    Returned as development (train + val) and test datasets, so that the pipeline graph itself
    shows which node may read the test split (only the final evaluation), plus the counts per
    split for reporting.
    """
    cfg = DataEngineeringSettings.from_params(params).splits
    included = manifest[manifest["status"] == "included"]
    splits = split_subjects(
        included["subject_id"].tolist(),
        included["label"].astype(int).tolist(),
        train=cfg.train,
        val=cfg.val,
        test=cfg.test,
        seed=cfg.seed,
    )
    is_test = splits["split"] == "test"
    return (
        splits[~is_test].reset_index(drop=True),
        splits[is_test].reset_index(drop=True),
        split_counts(splits),
    )


def summarize_quality(
    manifest: pd.DataFrame,
    split_sizes: dict[str, Any],
    slice_arrays: dict[str, np.ndarray],
    params: dict[str, Any],
) -> tuple[dict[str, Any], plt.Figure]:
    """QC numbers (JSON) and a montage of slices with tumor outlines (PNG)."""
    settings = DataEngineeringSettings.from_params(params)
    return qc_summary(manifest, split_sizes), qc_montage(slice_arrays, settings.qc_montage_subjects)
