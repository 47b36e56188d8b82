"""qc.py on small hand-built manifests, splits and slice arrays: the numbers and the picture."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from idh_pseudocolor.configurations import SEQUENCES
from idh_pseudocolor.qc import qc_montage, qc_summary, reason_kind, split_counts


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("T2 missing", "missing"),
        ("FLAIR.nii.gz unreadable: not a gzip file", "unreadable"),
        ("MASK.nii.gz is CORRUPT", "corrupt"),
        ("T1 is not 3-D (4 dimensions)", "not 3-d"),
        ("shape of T2 differs from T1", "differs"),
        ("empty tumor mask", "empty"),
        ("Non-finite values in FLAIR", "non-finite"),
        ("no contrast in T1ce", "contrast"),
        ("IDH status unknown", "idh"),
        ("label 2 is neither 0 nor 1", "label"),
        ("metadata.json has no genetic section", "metadata"),
        ("the scanner caught fire", "other"),
        ("", "other"),
        # the first kind in the list wins where a reason names two
        ("metadata.json missing", "missing"),
        ("IDH label is not 0/1", "idh"),
    ],
)
def test_reason_kind_is_the_first_listed_kind_the_reason_names(reason, kind):
    assert reason_kind(reason) == kind


def test_split_counts_per_split_as_plain_ints():
    splits = pd.DataFrame(
        {
            "subject_id": [f"s{i}" for i in range(7)],
            "label": [1, 0, 0, 1, 1, 0, 0],
            "split": ["train", "train", "train", "val", "test", "test", "test"],
        }
    )
    counts = split_counts(splits)
    assert counts == {
        "train": {"subjects": 3, "mutant": 1, "wildtype": 2},
        "val": {"subjects": 1, "mutant": 1, "wildtype": 0},
        "test": {"subjects": 3, "mutant": 1, "wildtype": 2},
    }
    assert all(type(v) is int for part in counts.values() for v in part.values())
    assert split_counts(splits.iloc[:0]) == {}


def manifest(phantom: bool | None = None) -> pd.DataFrame:
    """Five subjects as extract_slices writes them: excluded ones have no label or z-range."""
    frame = pd.DataFrame(
        {
            "subject_id": ["EGD-1", "EGD-2", "EGD-3", "EGD-4", "EGD-5"],
            "status": ["included", "excluded", "included", "excluded", "included"],
            "reason": ["", "FLAIR missing", "", "T2 missing", ""],
            "label": [1.0, np.nan, 0.0, np.nan, 0.0],
            "z_min": [10.0, np.nan, 4.0, np.nan, 20.0],
            "z_max": [19.0, np.nan, 6.0, np.nan, 40.0],
        }
    )
    if phantom is not None:
        frame["phantom"] = phantom
    return frame


def test_qc_summary_counts_exclusions_labels_and_tumor_extent():
    by_split = {"train": {"subjects": 2, "mutant": 1, "wildtype": 1}}
    summary = qc_summary(manifest(), by_split)
    assert summary == {
        "synthetic_phantom_cohort": False,  # no phantom column: a real cohort
        "subjects_found": 5,
        "included": 3,
        "excluded": 2,
        "exclusions_by_kind": {"missing": 2},
        "exclusions": [
            {"subject_id": "EGD-2", "reason": "FLAIR missing"},
            {"subject_id": "EGD-4", "reason": "T2 missing"},
        ],
        "labels": {"mutant": 1, "wildtype": 2},  # of the included subjects only
        "splits": by_split,
        # extents 10, 3 and 21 slices (both ends count)
        "tumor_z_extent": {"median": 10.0, "min": 3},
    }
    json.dumps(summary)  # it is saved as JSON: no numpy scalars


def test_qc_summary_flags_the_phantom_and_survives_a_cohort_with_nobody_included():
    assert qc_summary(manifest(phantom=True), {})["synthetic_phantom_cohort"] is True
    assert qc_summary(manifest(phantom=False), {})["synthetic_phantom_cohort"] is False
    nobody = manifest().assign(status="excluded", reason="empty tumor mask")
    summary = qc_summary(nobody, {})
    assert summary["included"] == 0 and summary["excluded"] == 5
    assert summary["exclusions_by_kind"] == {"empty": 5}
    assert summary["labels"] == {"mutant": 0, "wildtype": 0}
    assert summary["tumor_z_extent"] == {"median": None, "min": None}
    json.dumps(summary)


def slice_arrays(labels: list[int], size: int = 8) -> dict[str, np.ndarray]:
    """Slices whose every pixel says which subject and sequence it is: 0.1 * subject + 0.02 *
    channel, so a drawn image can be traced back."""
    n = len(labels)
    images = np.empty((n, len(SEQUENCES), size, size), dtype=np.float32)
    for i in range(n):
        for c in range(len(SEQUENCES)):
            images[i, c] = 0.1 * i + 0.02 * c
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[:, 2:5, 2:5] = 1
    masks[1] = 0  # subject 1 has no tumor pixels in this slice: nothing to outline
    return {
        "images": images,
        "masks": masks,
        "subject_ids": np.array([f"S{i}" for i in range(n)]),
        "labels": np.array(labels),
        "sequences": np.array(SEQUENCES),
    }


def test_qc_montage_alternates_classes_and_draws_each_subjects_slices():
    arrays = slice_arrays([0, 0, 1, 0, 1, 1, 0])
    fig = qc_montage(arrays, n_subjects=4)
    try:
        axes = np.array(fig.axes).reshape(4, len(SEQUENCES) + 1)
        # mutant, wild-type, mutant, wild-type: subjects 2, 0, 4, 1
        rows = [2, 0, 4, 1]
        assert [ax.get_ylabel() for ax in axes[:, 0]] == [
            "S2\nIDH mutant",
            "S0\nIDH wild-type",
            "S4\nIDH mutant",
            "S1\nIDH wild-type",
        ]
        assert [ax.get_title() for ax in axes[0]] == [*SEQUENCES, "composite 15: T2-T1ce-FLAIR"]
        assert all(ax.get_title() == "" for ax in axes[1:].ravel())
        for r, i in enumerate(rows):
            for c in range(len(SEQUENCES)):
                shown = axes[r, c].images[0]
                np.testing.assert_array_equal(shown.get_array(), arrays["images"][i, c])
                assert shown.get_clim() == (0, 1) and shown.get_cmap().name == "gray"
                # the tumor outline, where the slice has tumor pixels
                assert len(axes[r, c].collections) == (0 if i == 1 else 1)
            # the composite of the paper's winner: (T2, T1ce, FLAIR) as (R, G, B)
            np.testing.assert_allclose(
                axes[r, -1].images[0].get_array(),
                np.moveaxis(arrays["images"][i, [2, 1, 3]], 0, -1),
            )
        assert "tumor mask" in fig.get_suptitle()
    finally:
        plt.close(fig)


def test_qc_montage_of_one_class_takes_subjects_in_order_and_draws_the_asked_composite():
    arrays = slice_arrays([1, 1, 1])
    fig = qc_montage(arrays, n_subjects=6, composite_id=24)  # gray T1
    try:
        axes = np.array(fig.axes).reshape(3, len(SEQUENCES) + 1)
        assert [ax.get_ylabel().split("\n")[0] for ax in axes[:, 0]] == ["S0", "S1", "S2"]
        assert axes[0, -1].get_title() == "composite 24: gray T1"
        composite = np.asarray(axes[2, -1].images[0].get_array())
        assert composite.shape == (8, 8, 3)
        np.testing.assert_allclose(composite, np.repeat(arrays["images"][2, 0][..., None], 3, -1))
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="4 channels"):
        qc_montage(arrays, 4, composite_id=28)  # four channels are not a picture
    plt.close("all")
