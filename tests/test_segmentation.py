"""The automatic tumor masks (idh_pseudocolor.segmentation): real phantom NIfTI files, a real
MONAI U-Net trained here, its Dice measured on held-out phantom patients."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from idh_pseudocolor import segmentation as seg
from idh_pseudocolor.parameters import SegmentationSettings
from idh_pseudocolor.slices import extract_subject
from tests.conftest import REPO, conf_normalization, project_parameters

FILES = {"T1": "T1.nii.gz", "T1ce": "T1GD.nii.gz", "T2": "T2.nii.gz", "FLAIR": "FLAIR.nii.gz",
         "mask": "MASK.nii.gz"}  # fmt: skip


def files_of(folder: Path) -> dict[str, str]:
    return {k: str(folder / name) for k, name in FILES.items()}


def settings(**training) -> SegmentationSettings:
    params = project_parameters(REPO)["segmentation"]
    params = {**params, "training": {**params["training"], **training}, "progress": False}
    return SegmentationSettings.from_params(params)


@pytest.fixture(scope="module")
def cohort_2mm(tiny_cohort) -> Path:
    """The shared 24-patient phantom on the 4 mm grid (coarser than the network's 2 mm: no
    averaging, and 4x fewer pixels than EGD's grid averaged to 2 mm, so it trains in seconds)."""
    return tiny_cohort


@pytest.fixture(scope="module")
def trained(cohort_2mm):
    """The project's architecture, trained on 18 patients, measured on the other 6."""
    torch.set_num_threads(2)
    ids = sorted(p.name for p in cohort_2mm.iterdir() if p.is_dir())
    s = settings(epochs=30, slices_per_subject=16)
    volumes, errors = seg.load_volumes(
        [(i, files_of(cohort_2mm / i)) for i in ids], s.architecture(), True, n_workers=1
    )
    assert not errors and [v.subject_id for v in volumes] == ids
    model = seg.train_model(volumes[:18], s.architecture(), s.training)
    return model, volumes[18:]


def test_held_out_dice_reaches_the_goal(trained):
    model, held_out = trained
    rows, masks = seg.evaluate(model, held_out)
    scores = [r["dice"] for r in rows]
    # at 4 mm a one-voxel error on the boundary costs more Dice than at EGD's 1 mm, where the
    # pipeline's model reaches >= 0.9 (docs/preprocessing.md); 0.75 here, 0.8 the goal
    assert np.median(scores) >= 0.75, scores
    for row, volume in zip(rows, held_out, strict=True):
        assert row["dice"] == pytest.approx(seg.dice(masks[volume.subject_id], volume.full_mask))
        assert row["expert_ml"] == pytest.approx(volume.full_mask.sum() * 64 / 1000, abs=0.01)
        assert row["slice_shift"] <= 1  # the study's slice lands within 4 mm of the expert's
    assert len(model.record["trained_on"]) == 18
    assert not set(model.record["trained_on"]) & {v.subject_id for v in held_out}


def test_a_missing_sequence_still_gives_a_usable_mask(trained, cohort_2mm):
    model, held_out = trained
    volume = held_out[0]
    files = files_of(cohort_2mm / volume.subject_id)
    del files["T2"]
    three = seg.load_volume(volume.subject_id, files, model.architecture, with_mask=True)
    assert three.present == ("T1", "T1ce", "FLAIR")
    assert not three.image[seg.SEQUENCES.index("T2")].any()
    assert seg.dice(model.segment(three), volume.full_mask) >= 0.6


def test_saved_model_gives_the_same_masks(trained, tmp_path):
    model, held_out = trained
    path = tmp_path / "model.safetensors"
    seg.save_model(model, path)
    again = seg.load_model(path)
    assert again.architecture == model.architecture
    assert again.record["trained_on"] == model.record["trained_on"]
    np.testing.assert_array_equal(again.segment(held_out[0]), model.segment(held_out[0]))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a segmentation model"):
        seg.load_model(tmp_path / "other.safetensors")


def test_written_mask_sits_on_the_patients_grid_in_any_orientation(trained, cohort_2mm, tmp_path):
    """An LPS-stored patient: the mask is written in the file's own orientation, so the study's
    same-grid check and slice extraction accept it beside the sequences."""
    model, held_out = trained
    sid = held_out[1].subject_id
    folder = tmp_path / sid
    folder.mkdir()
    for key, name in FILES.items():
        img = nib.load(str(cohort_2mm / sid / name))
        data = np.asarray(img.dataobj)[::-1, ::-1, :]
        shape = np.array(data.shape[:3]) - 1
        affine = img.affine @ np.array([[-1, 0, 0, shape[0]], [0, -1, 0, shape[1]], [0, 0, 1, 0],
                                         [0, 0, 0, 1]])  # fmt: skip
        assert nib.aff2axcodes(affine) == ("L", "P", "S")
        nib.save(nib.Nifti1Image(data, affine), str(folder / name))
    volume = seg.load_volume(sid, files_of(folder), model.architecture, with_mask=True)
    mask = model.segment(volume)
    image = seg.mask_image(mask, volume.reference)
    assert np.allclose(image.affine, nib.load(str(folder / "T1.nii.gz")).affine)
    nib.save(image, str(folder / "AUTO.nii.gz"))
    expert = extract_subject(sid, files_of(folder), conf_normalization())
    automatic = extract_subject(
        sid, {**files_of(folder), "mask": str(folder / "AUTO.nii.gz")}, conf_normalization()
    )
    assert abs(automatic.z - expert.z) <= 1
    assert seg.dice(automatic.mask, expert.mask) >= 0.6


def test_bad_files_are_named(cohort_2mm, tmp_path):
    sid = sorted(p.name for p in cohort_2mm.iterdir() if p.is_dir())[0]
    folder = tmp_path / sid
    shutil.copytree(cohort_2mm / sid, folder)
    arch = settings().architecture()
    (folder / "FLAIR.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(seg.SegmentationError, match="FLAIR.nii.gz: unreadable"):
        seg.load_volume(sid, files_of(folder), arch)
    for key in ("T1", "T1ce", "T2", "FLAIR"):
        (folder / FILES[key]).unlink(missing_ok=True)
    with pytest.raises(seg.SegmentationError, match="none of T1, T1ce, T2, FLAIR"):
        seg.load_volume(sid, files_of(folder), arch)
    shutil.copytree(cohort_2mm / sid, folder, dirs_exist_ok=True)
    img = nib.load(str(folder / "T2.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[1:], img.affine), str(folder / "T2.nii.gz"))
    with pytest.raises(seg.SegmentationError, match="T2.nii.gz: T2 is not on T1.nii.gz's grid"):
        seg.load_volume(sid, files_of(folder), arch)
    (folder / "MASK.nii.gz").unlink()
    shutil.copy(cohort_2mm / sid / "T2.nii.gz", folder / "T2.nii.gz")
    with pytest.raises(seg.SegmentationError, match="no expert mask"):
        seg.load_volume(sid, files_of(folder), arch, with_mask=True)


def test_largest_component_and_dice_by_hand():
    prob = np.zeros((10, 10, 10))
    prob[1:3, 1:3, 1:3] = 0.9  # 8 voxels
    prob[5:9, 5:9, 5:9] = 0.7  # 64 voxels: the tumor
    prob[0, 9, 9] = 0.4  # below the threshold
    mask = seg.tumor_mask(prob, 0.5)
    assert mask.sum() == 64 and mask[6, 6, 6] and not mask[1, 1, 1]
    assert not seg.tumor_mask(np.zeros((3, 3, 3)), 0.5).any()
    a, b = np.zeros(10, bool), np.zeros(10, bool)
    a[:4], b[2:8] = True, True  # overlap 2, sizes 4 and 6
    assert seg.dice(a, b) == pytest.approx(0.4)
    assert seg.dice(np.zeros(3), np.zeros(3)) == 1.0


def test_scaling_maps_the_brain_percentiles():
    rng = np.random.default_rng(0)
    volume = np.zeros((30, 30, 30), np.float32)
    volume[5:25, 5:25, 5:25] = rng.uniform(100, 200, (20, 20, 20))
    scaled = seg.scale_to_unit(volume, 0.0, 100.0)
    brain = volume != 0
    lo, hi = np.percentile(volume[brain][::7], [0, 100])
    expected = np.clip((volume[brain] - lo) / (hi - lo), 0, 1.5)  # below the lowest sampled: 0
    np.testing.assert_allclose(scaled[brain], expected, atol=1e-5)
    assert (scaled[~brain] == 0).all()
    with pytest.raises(ValueError, match="no non-zero voxel"):
        seg.scale_to_unit(np.zeros((3, 3, 3)), 0.5, 99.5)


def test_training_slices_are_mostly_through_the_tumor():
    image = np.zeros((4, 16, 16, 40), np.float32)
    image[:, 2:14, 2:14, 5:35] = 1.0  # brain on z 5-34
    mask = np.zeros((16, 16, 40), np.uint8)
    mask[6:10, 6:10, 10:20] = 1  # tumor on z 10-19
    volume = seg.Volume("p", image, seg.SEQUENCES, 1, (16, 16, 40), "x", mask=mask)
    x, y = seg.training_slices([volume], 8, seed=0)
    assert x.shape == (8, 4, 16, 16) and y.shape == (8, 1, 16, 16)
    through = y.reshape(8, -1).any(axis=1)
    assert through.sum() == 6  # 3 of 4
    assert (x.reshape(8, -1).max(axis=1) > 0).all()  # the others from the brain, not the air


def test_mask_comparison_is_the_paired_auroc_difference():
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(20)]
    labels = {s: i % 2 for i, s in enumerate(ids)}
    y = np.array([labels[s] for s in ids])
    expert_p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 20), 0, 1)
    auto_p = np.clip(y * 0.2 + rng.uniform(0, 0.8, 20), 0, 1)

    def table(p):
        return pd.DataFrame(
            {"subject_id": ids, "model_name": "m", "pretrained": False, "prob_mutant": p}
        )

    out = seg.mask_comparison(table(expert_p), table(auto_p).iloc[::-1], labels, 200, 0)
    row = out.iloc[0]
    assert row["patients"] == 20 and row["mutant"] == 10
    assert row["auroc_expert"] == pytest.approx(roc_auc_score(y, expert_p))
    assert row["auroc_automatic"] == pytest.approx(roc_auc_score(y, auto_p))
    assert row["auroc_difference"] == pytest.approx(
        roc_auc_score(y, auto_p) - roc_auc_score(y, expert_p)
    )
    assert row["ci_low"] <= row["auroc_difference"] <= row["ci_high"]
    assert row["same_prediction"] == pytest.approx(np.mean((expert_p >= 0.5) == (auto_p >= 0.5)))
