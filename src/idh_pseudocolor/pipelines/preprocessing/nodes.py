"""The preprocessing pipeline's node: thin; the steps live in idh_pseudocolor.preprocess."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from idh_pseudocolor.parameters import PreprocessingSettings

logger = logging.getLogger(__name__)


def preprocess_raw_studies(params: dict[str, Any]) -> pd.DataFrame:
    """Every patient folder of ``preprocessing.raw`` into the cohort at ``preprocessing.out``
    (volumes, masks, QC pictures and the report at its root, which the study's report shows once
    the study reads that cohort); returns the preprocessing report. A bad study is a row with the
    file and the reason, never a failed run; a run with no patient written fails."""
    from idh_pseudocolor.preprocess import preprocess_cohort, summary
    from idh_pseudocolor.raw_studies import load_mapping

    settings = PreprocessingSettings.from_params(params)
    if settings.raw is None:
        raise ValueError(
            "preprocessing.raw is not set: kedro run --pipelines preprocessing --params "
            "preprocessing.raw=/path/to/raw_studies,preprocessing.out=/path/to/cohort"
        )
    model = settings.segmentation_model
    if model is not None and not Path(model).exists():
        logger.warning(
            "No segmentation model at %s: patients without a tumor mask get none (kedro run "
            "--pipelines segmentation trains one; the report's mask_source says who)",
            model,
        )
        model = None
    report = preprocess_cohort(
        Path(settings.raw),
        Path(settings.out),
        labels_csv=Path(settings.labels) if settings.labels else None,
        mapping=load_mapping(settings.mapping) if settings.mapping else None,
        voxel_size=settings.voxel_size,
        seed=settings.seed,
        redo=settings.redo,
        n_workers=settings.n_workers,
        progress=settings.progress,
        segmentation_model=model,
        mask_folder=Path(settings.masks) if settings.masks else None,
    )
    logger.info("Preprocessing: %s -> %s", summary(report), Path(settings.out) / "SUBJECTS")
    if not (report["status"] != "excluded").any():
        raise ValueError(
            f"No patient of {settings.raw} could be preprocessed: "
            + "; ".join(f"{r.subject_id}: {r.reason}" for r in report.itertuples())
        )
    return report
