"""Thin nodes: the work is in idh_pseudocolor.cohort, .slices, .splits and .qc."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from idh_pseudocolor.cohort import FILE_KEYS, LabelError, parse_idh
from idh_pseudocolor.paper import check_cohort
from idh_pseudocolor.pipeline_settings import DataEngineeringSettings, EnvironmentSettings
from idh_pseudocolor.qc import qc_montage, qc_summary, split_counts
from idh_pseudocolor.slices import SubjectError, extract_many, stack_slices
from idh_pseudocolor.splits import split_subjects

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "subject_id",
    "status",
    "reason",
    "label",
    "z_min",
    "z_max",
    "slice_index",
    "volume_shape",
]


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
    normalization = settings.normalization.normalization()
    records = cohort.to_dict("records")
    status: dict[str, dict[str, Any]] = {}
    candidates, labels = [], {}
    for row in records:
        sid = row["subject_id"]
        entry = status.setdefault(sid, {"status": "excluded", "reason": "", "label": pd.NA})
        if row.get("problem"):
            entry["reason"] = row["problem"]
            continue
        try:
            labels[sid] = entry["label"] = parse_idh(row["label_raw"])
        except LabelError as exc:
            entry["reason"] = f"{row.get('label_source', '')}: {exc}"
            continue
        candidates.append((sid, {key: row[f"file_{key}"] for key in FILE_KEYS}))

    slices = []
    for result in extract_many(
        candidates, normalization, settings.n_workers, progress=settings.progress
    ):
        if isinstance(result, SubjectError):
            status[result.subject_id]["reason"] = (
                f"{result.file}: {result.reason}" if result.file else result.reason
            )
            continue
        slices.append(result)
        status[result.subject_id].update(
            status="included",
            z_min=result.z_min,
            z_max=result.z_max,
            slice_index=result.z,
            volume_shape="x".join(map(str, result.volume_shape)),
        )

    manifest = pd.DataFrame([{"subject_id": sid, **entry} for sid, entry in status.items()])
    manifest = manifest.reindex(columns=MANIFEST_COLUMNS).merge(
        cohort.drop(columns=["problem"]).drop_duplicates("subject_id"), on="subject_id", how="left"
    )
    for col in ("label", "z_min", "z_max", "slice_index"):
        manifest[col] = manifest[col].astype("Int64")

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
