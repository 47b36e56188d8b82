"""Quality-control summary and picture of the extracted slices."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt  # no backend forced: notebooks keep theirs, headless runs get Agg
import numpy as np
import pandas as pd

from idh_pseudocolor.configurations import PAPER_WINNER_ID, configuration_label


def reason_kind(reason: str) -> str:
    """Coarse category of an exclusion reason, for counting (the full reason stays in the
    manifest)."""
    text = reason.lower()
    for kind in (
        "missing",
        "unreadable",
        "corrupt",
        "not 3-d",
        "differs",
        "empty",
        "non-finite",
        "contrast",
        "idh",
        "label",
        "metadata",
    ):
        if kind in text:
            return kind
    return "other"


def split_counts(splits: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Subjects and labels per split: all that reporting needs to know about the test split."""
    return {
        name: {
            "subjects": int(len(part)),
            "mutant": int(part["label"].sum()),
            "wildtype": int((part["label"] == 0).sum()),
        }
        for name, part in splits.groupby("split")
    }


def qc_summary(manifest: pd.DataFrame, by_split: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Counts a reader checks first: who was excluded and why, label balance, split sizes."""
    excluded = manifest[manifest["status"] == "excluded"]
    included = manifest[manifest["status"] == "included"]
    return {
        "synthetic_phantom_cohort": bool(manifest.get("phantom", pd.Series([False])).any()),
        "subjects_found": int(len(manifest)),
        "included": int(len(included)),
        "excluded": int(len(excluded)),
        "exclusions_by_kind": {
            k: int(v) for k, v in excluded["reason"].map(reason_kind).value_counts().items()
        },
        "exclusions": [
            {"subject_id": r.subject_id, "reason": r.reason} for r in excluded.itertuples()
        ],
        "labels": {
            "mutant": int((included["label"] == 1).sum()),
            "wildtype": int((included["label"] == 0).sum()),
        },
        "splits": by_split,
        "tumor_z_extent": {
            "median": float((included["z_max"] - included["z_min"] + 1).median())
            if len(included)
            else None,
            "min": int((included["z_max"] - included["z_min"] + 1).min())
            if len(included)
            else None,
        },
    }


def qc_montage(
    slice_arrays: dict[str, np.ndarray], n_subjects: int, composite_id: int = PAPER_WINNER_ID
) -> plt.Figure:
    """One row per subject: the four normalized sequences with the tumor outline, and the
    pseudo-color composite of ``composite_id`` (the paper's winner) as the model will see it."""
    from idh_pseudocolor.pseudocolor import composite_rgb

    images, masks = slice_arrays["images"], slice_arrays["masks"]
    ids, labels = slice_arrays["subject_ids"], slice_arrays["labels"]
    sequences = [str(s) for s in slice_arrays["sequences"]]
    # show both classes: alternate mutant and wild-type subjects where possible
    order = [
        i
        for pair in zip(np.flatnonzero(labels == 1), np.flatnonzero(labels == 0), strict=False)
        for i in pair
    ]
    rows = (order or list(range(len(ids))))[:n_subjects]
    fig, axes = plt.subplots(
        len(rows),
        len(sequences) + 1,
        figsize=(2.2 * (len(sequences) + 1), 2.4 * len(rows)),
        squeeze=False,
    )
    for r, i in enumerate(rows):
        ax = axes[r, -1]
        ax.imshow(composite_rgb(images[i], composite_id))
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title(f"composite {configuration_label(composite_id)}", fontsize=9)
        for c, name in enumerate(sequences):
            ax = axes[r, c]
            ax.imshow(images[i, c], cmap="gray", vmin=0, vmax=1)
            if masks[i].any():
                ax.contour(masks[i], levels=[0.5], colors="orange", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
            if c == 0:
                ax.set_ylabel(
                    f"{ids[i]}\n{'IDH mutant' if labels[i] else 'IDH wild-type'}", fontsize=8
                )
    fig.suptitle("Mid-tumor axial slices after normalization (orange: tumor mask)", fontsize=10)
    fig.tight_layout()
    return fig
