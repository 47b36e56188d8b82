"""Thin nodes: the work is in idh_pseudocolor.segmentation (and .predict for the comparison)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from idh_pseudocolor import segmentation as seg
from idh_pseudocolor.parameters import (
    DataEngineeringSettings,
    ReportingSettings,
    SegmentationSettings,
)
from idh_pseudocolor.splits import split_ids

logger = logging.getLogger(__name__)


def train_segmentation(
    subject_manifest: pd.DataFrame, development_split: pd.DataFrame, params: dict[str, Any]
) -> tuple[seg.SegmentationModel, dict[str, Any]]:
    """Train on the development split's training patients (their expert masks); the validation
    and test patients are not read, so the held-out Dice is honest."""
    settings = SegmentationSettings.from_params(params)
    torch.set_num_threads(settings.torch_threads)
    ids = sorted(split_ids(development_split, "train"))[: settings.max_train_subjects]
    volumes, errors = seg.load_volumes(
        seg.manifest_subjects(subject_manifest, ids),
        settings.architecture(),
        with_mask=True,
        n_workers=settings.n_workers,
        progress=settings.progress,
    )
    for error in errors:
        logger.warning("Segmentation training skips %s", error)
    if not volumes:
        raise ValueError(f"no training patient could be read for segmentation: {errors[:3]}")
    model = seg.train_model(volumes, settings.architecture(), settings.training, settings.progress)
    logger.info(
        "Segmentation model: %d patients, %d slices, loss %.3f -> %.3f, %.0f s",
        len(volumes),
        model.record["training_slices"],
        model.record["loss_per_epoch"][0],
        model.record["loss_per_epoch"][-1],
        model.record["seconds"],
    )
    skipped = [{"subject_id": e.subject_id, "reason": str(e)} for e in errors]
    return model, {**model.record, "skipped": skipped}


def evaluate_segmentation(
    segmentation_model: seg.SegmentationModel,
    subject_manifest: pd.DataFrame,
    test_split: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], Any]:
    """Dice on the held-out test patients; their automatic masks (NIfTI, beside nothing else)
    and a picture of both outlines."""
    settings = SegmentationSettings.from_params(params)
    torch.set_num_threads(settings.torch_threads)
    volumes, errors = seg.load_volumes(
        seg.manifest_subjects(subject_manifest, sorted(test_split["subject_id"].astype(str))),
        segmentation_model.architecture,
        with_mask=True,
        n_workers=settings.n_workers,
        progress=settings.progress,
    )
    rows, masks = seg.evaluate(segmentation_model, volumes, settings.progress)
    rows += [{"subject_id": e.subject_id, "dice": None, "problem": str(e)} for e in errors]
    table = pd.DataFrame(rows)
    logger.info(
        "Segmentation on %d held-out patients: median Dice %.3f",
        len(volumes),
        table["dice"].median(),
    )
    figure = seg.overlay_figure(volumes[:8], masks, rows)
    return table, seg.mask_images(masks, volumes), figure


def compare_masks(
    automatic_masks: dict[str, str],
    subject_manifest: pd.DataFrame,
    test_split: pd.DataFrame,
    winner_models: dict[str, Any],
    data_params: dict[str, Any],
    reporting_params: dict[str, Any],
) -> pd.DataFrame:
    """The final evaluation's runs on the same test patients, once with the expert masks and
    once with the automatic ones: the AUROC difference per model x arm, with its CI."""
    from idh_pseudocolor.predict import load_runs, predict_subjects

    data = DataEngineeringSettings.from_params(data_params)
    reporting = ReportingSettings.from_params(reporting_params)
    ids = [s for s in sorted(test_split["subject_id"].astype(str)) if s in automatic_masks]
    expert = seg.manifest_subjects(subject_manifest, ids)
    automatic = [(sid, {**files, "mask": automatic_masks[sid]}) for sid, files in expert]
    runs = load_runs(winner_models)
    tables = {}
    for name, subjects in (("expert", expert), ("automatic", automatic)):
        tables[name], _, errors = predict_subjects(subjects, runs, data.n_workers)
        for error in errors:
            logger.warning("Mask comparison (%s masks) skips %s", name, error)
    labels = dict(zip(test_split["subject_id"].astype(str), test_split["label"], strict=True))
    return seg.mask_comparison(
        tables["expert"],
        tables["automatic"],
        {k: int(v) for k, v in labels.items()},
        reporting.bootstrap_resamples,
        reporting.seed,
    )


def summarize_segmentation(
    segmentation_training: dict[str, Any],
    segmentation_dice: pd.DataFrame,
    mask_comparison: pd.DataFrame,
    segmentation_overlays: Any,
) -> dict[str, Any]:
    """What the report's "Automatic tumor masks" section shows (the picture inline, so the
    report reads one optional file)."""
    from idh_pseudocolor.report.html import png_data_uri

    dice = pd.to_numeric(segmentation_dice["dice"], errors="coerce").dropna()
    return {
        "trained_on": len(segmentation_training["trained_on"]),
        "training_slices": segmentation_training["training_slices"],
        "seconds": segmentation_training["seconds"],
        "test_patients": int(len(dice)),
        "dice_median": float(dice.median()) if len(dice) else None,
        "dice_q1": float(dice.quantile(0.25)) if len(dice) else None,
        "dice_q3": float(dice.quantile(0.75)) if len(dice) else None,
        "dice_min": float(dice.min()) if len(dice) else None,
        "at_least_0_8": int((dice >= 0.8).sum()),
        "same_slice": int((segmentation_dice.get("slice_shift") == 0).sum()),
        "comparison": mask_comparison.to_dict("records"),
        "overlays": png_data_uri(segmentation_overlays),
    }
