"""The automatic tumor masks (idh_pseudocolor.segmentation): real phantom NIfTI files, a real
MONAI U-Net trained here, its Dice measured on held-out phantom patients."""

from __future__ import annotations

import json
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
from tests.conftest import REPO, conf_normalization, made_once, project_parameters, raw_nifti_study

FILES = {"T1": "T1.nii.gz", "T1ce": "T1GD.nii.gz", "T2": "T2.nii.gz", "FLAIR": "FLAIR.nii.gz",
         "mask": "MASK.nii.gz"}  # fmt: skip


def files_of(folder: Path) -> dict[str, str]:
    return {k: str(folder / name) for k, name in FILES.items()}


def settings(**training) -> SegmentationSettings:
    params = project_parameters(REPO)["segmentation"]
    params = {**params, "training": {**params["training"], **training}, "progress": False}
    return SegmentationSettings.from_params(params)


@pytest.fixture(scope="module")
def shared_2mm(tmp_path_factory) -> Path:
    """24 phantom patients on a 2 mm grid (the network's own in-plane spacing: EGD's 1 mm
    averaged 2x2 gives the same pixels, so the model also draws masks for 1 mm and 2 mm
    preprocessed studies) and the project's architecture trained on 18 of them. Made once per
    test run: under xdist the first worker makes it in the run's shared folder, the other waits
    for it (training it twice at once on two cores took 4 minutes each; once, 45 s)."""
    from idh_pseudocolor.phantom import generate_cohort

    def make(root: Path) -> None:
        cohort = root / "egd"
        generate_cohort(cohort, n_subjects=24, seed=3, voxel_size=2.0, n_workers=1, progress=False)
        torch.set_num_threads(2)
        s = settings(epochs=30, slices_per_subject=16)
        ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())[:18]
        volumes, errors = seg.load_volumes(
            [(i, files_of(cohort / i)) for i in ids], s.architecture(), True, n_workers=1
        )
        assert not errors
        seg.save_model(seg.train_model(volumes, s.architecture(), s.training),
                       root / "model.safetensors")  # fmt: skip

    return made_once(tmp_path_factory, "segmentation_2mm", make)


@pytest.fixture(scope="module")
def cohort_2mm(shared_2mm) -> Path:
    return shared_2mm / "egd"


@pytest.fixture(scope="module")
def trained(shared_2mm, cohort_2mm):
    """The model trained on 18 patients (read back from its file) and the other 6, held out."""
    model = seg.load_model(shared_2mm / "model.safetensors")
    ids = sorted(p.name for p in cohort_2mm.iterdir() if p.is_dir())
    held_out, errors = seg.load_volumes(
        [(i, files_of(cohort_2mm / i)) for i in ids[18:]], model.architecture, True, n_workers=1
    )
    assert not errors and [v.subject_id for v in held_out] == ids[18:]
    return model, held_out


def test_held_out_dice_reaches_the_goal(trained):
    model, held_out = trained
    rows, masks = seg.evaluate(model, held_out)
    scores = [r["dice"] for r in rows]
    assert np.median(scores) >= 0.8, scores  # the goal on the phantom
    for row, volume in zip(rows, held_out, strict=True):
        assert row["dice"] == pytest.approx(seg.dice(masks[volume.subject_id], volume.full_mask))
        assert row["expert_ml"] == pytest.approx(volume.full_mask.sum() * 8 / 1000, abs=0.01)
        assert row["slice_shift"] <= 2  # the study's slice lands within 4 mm of the expert's
    assert len(model.record["trained_on"]) == 18
    assert model.record["pixel_mm"] == 2.0 and {v.pixel_mm for v in held_out} == {2.0}
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


# -- masks for patients without one (predict, preprocess) ------------------------------------------
def versioned(model, folder: Path, *versions: str) -> Path:
    """The model saved as the catalog's versioned dataset would: ``<name>/<version>/<name>``."""
    root = folder / seg.MODEL_FILE
    for version in versions:
        seg.save_model(model, root / version / seg.MODEL_FILE)
    return root


def test_the_newest_saved_version_is_used(trained, tmp_path):
    model, _ = trained
    root = versioned(model, tmp_path, "2026-12-05T10.00.00.000Z", "2026-12-05T11.30.00.000Z")
    assert seg.find_model(root) == root / "2026-12-05T11.30.00.000Z" / seg.MODEL_FILE
    assert seg.find_model(root / "2026-12-05T10.00.00.000Z" / seg.MODEL_FILE).is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no saved version"):
        seg.find_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="kedro run --pipelines segmentation"):
        seg.find_model(tmp_path / "absent.safetensors")


def test_predict_draws_a_mask_for_each_patient_without_one(trained, cohort_2mm, tmp_path):
    """Three held-out patients, two without MASK: the model's masks are written beside the
    predictions (never into the input), recorded with the model's digest, and the prediction is
    the run's on the automatic mask's slice."""
    import hashlib

    from click.testing import CliRunner

    from idh_pseudocolor.cli import cli
    from idh_pseudocolor.datasets import ModelBundleDataset
    from tests.test_missing_sequences import entry, expected_prob

    model, held_out = trained
    ids = [v.subject_id for v in held_out[:3]]
    patients = tmp_path / "patients"
    for sid in ids:
        shutil.copytree(cohort_2mm / sid, patients / sid)
    for sid in ids[:2]:
        (patients / sid / "MASK.nii.gz").unlink()
    root = versioned(model, tmp_path / "06_models", "2026-12-05T10.00.00.000Z")
    bundle = tmp_path / "06_models" / "winner_models"
    runs = dict([entry(15, 42, None)])
    ModelBundleDataset(path=str(bundle)).save(runs)
    out = tmp_path / "out"
    args = ["predict", str(patients), "--models", str(bundle), "--no-pictures"]
    done = CliRunner().invoke(cli, [*args, "--out", str(out), "--segmentation-model", str(root)])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "predictions.csv").set_index("subject_id")
    assert table["mask_source"].to_dict() == {
        ids[0]: "automatic",
        ids[1]: "automatic",
        ids[2]: "expert",
    }
    assert not (out / "errors.csv").exists() or pd.read_csv(out / "errors.csv").empty
    assert not (patients / ids[0] / "MASK.nii.gz").exists()  # the input is left as it was
    written = pd.read_csv(out / "masks" / "masks.csv")
    assert written["subject_id"].tolist() == ids[:2]
    model_file = root / "2026-12-05T10.00.00.000Z" / seg.MODEL_FILE
    assert set(written["model_sha256"]) == {hashlib.sha256(model_file.read_bytes()).hexdigest()}
    assert set(written["trained_on_patients"]) == {18}
    for sid in ids[:2]:
        mask_file = out / "masks" / sid / "MASK.nii.gz"
        volume = seg.load_volume(sid, files_of(cohort_2mm / sid), model.architecture)
        drawn = np.asarray(nib.load(str(mask_file)).dataobj) > 0
        automatic = seg.mask_image(model.segment(volume), volume.reference).get_fdata() > 0
        np.testing.assert_array_equal(drawn, automatic)
        expert = np.asarray(nib.load(str(cohort_2mm / sid / "MASK.nii.gz")).dataobj) > 0
        assert seg.dice(drawn, expert) >= 0.6
        expected = expected_prob(patients, sid, next(iter(runs.values())), mask=mask_file)
        assert table.loc[sid, "prob_mutant"] == pytest.approx(expected, abs=1e-6)
    expected = expected_prob(patients, ids[2], next(iter(runs.values())))
    assert table.loc[ids[2], "prob_mutant"] == pytest.approx(expected, abs=1e-6)

    # expert masks required: the two are errors naming what to do, the third is predicted
    out = tmp_path / "expert_only"
    done = CliRunner().invoke(cli, [*args, "--out", str(out), "--segmentation-model", "none"])
    assert done.exit_code == 0, done.output
    errors = pd.read_csv(out / "errors.csv")
    assert errors["subject_id"].tolist() == ids[:2]
    assert errors["reason"].str.contains("no tumor mask, and no segmentation model").all()
    assert pd.read_csv(out / "predictions.csv")["subject_id"].tolist() == [ids[2]]
    # masks from another tool: a folder of <id>.nii.gz, used before any model
    theirs = tmp_path / "their_masks"
    theirs.mkdir()
    shutil.copy(cohort_2mm / ids[0] / "MASK.nii.gz", theirs / f"{ids[0]}.nii.gz")
    out = tmp_path / "their"
    mine = ["--masks", str(theirs), "--segmentation-model", "none"]
    done = CliRunner().invoke(cli, [*args, "--out", str(out), *mine])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "predictions.csv").set_index("subject_id")
    assert table["mask_source"].to_dict() == {ids[0]: "folder", ids[2]: "expert"}
    expected = expected_prob(cohort_2mm, ids[0], next(iter(runs.values())))
    assert table.loc[ids[0], "prob_mutant"] == pytest.approx(expected, abs=1e-6)
    assert pd.read_csv(out / "errors.csv")["subject_id"].tolist() == [ids[1]]
    missing = tmp_path / "absent.safetensors"
    done = CliRunner().invoke(cli, [*args, "--out", str(out), "--segmentation-model", str(missing)])
    assert done.exit_code != 0 and "does not exist" in done.output


def test_a_mask_with_no_tumor_is_refused(trained, cohort_2mm, tmp_path):
    """A model that finds nothing (here: a threshold no probability reaches) never hands an empty
    mask on as if it were one."""
    import dataclasses

    model, held_out = trained
    blind = seg.SegmentationModel(
        dataclasses.replace(model.architecture, threshold=1.01), model.network, model.record
    )
    sid = held_out[0].subject_id
    files = {k: v for k, v in files_of(cohort_2mm / sid).items() if k != "mask"}
    ready, rows, errors = seg.fill_missing_masks([(sid, files)], blind, lambda s: tmp_path / s)
    assert ready == [] and rows == []
    assert [e.subject_id for e in errors] == [sid]
    assert "found no tumor" in errors[0].reason and "give an expert mask" in errors[0].reason
    assert not (tmp_path / sid).exists()


def test_a_patient_at_another_scale_is_refused_not_masked_wrongly(trained, cohort_2mm, tmp_path):
    """The network learnt tumors on 2 mm pixels: a 1 mm patient is averaged to them and gets a
    mask; a 4 mm one would get nonsense, so it is an error that says why."""
    model, held_out = trained
    sid = held_out[2].subject_id
    scaled = {}
    for name, step in (("1mm", 0.5), ("4mm", 2.0)):
        folder = tmp_path / name / sid
        folder.mkdir(parents=True)
        for key, file in FILES.items():
            img = nib.load(str(cohort_2mm / sid / file))
            data = np.asarray(img.dataobj)
            if step < 1:
                data = data.repeat(2, axis=0).repeat(2, axis=1)
            else:
                data = data[::2, ::2]
            affine = img.affine @ np.diag([step, step, 1, 1])
            nib.save(nib.Nifti1Image(data, affine), str(folder / file))
        scaled[name] = {k: v for k, v in files_of(folder).items() if k != "mask"}
    subjects = [(f"{sid}-{name}", files) for name, files in scaled.items()]
    ready, rows, errors = seg.fill_missing_masks(subjects, model, lambda s: tmp_path / s / "M.nii")
    assert [s for s, _ in ready] == [f"{sid}-1mm"] and rows[0]["mask_source"] == "automatic"
    drawn = np.asarray(nib.load(str(tmp_path / f"{sid}-1mm" / "M.nii")).dataobj) > 0
    expert = np.asarray(nib.load(str(tmp_path / "1mm" / sid / "MASK.nii.gz")).dataobj) > 0
    assert seg.dice(drawn, expert) >= 0.6
    assert [e.subject_id for e in errors] == [f"{sid}-4mm"]
    assert "learnt tumors on 2 mm pixels, this patient gives 4 mm" in errors[0].reason


def test_preprocess_draws_the_mask_a_raw_study_lacks(trained, tmp_path):
    """A raw phantom study (no mask, like a PACS export) preprocessed at 2 mm: the model's mask is
    written beside the volumes and recorded, sits on the planted tumor and the pipeline reads it;
    a rerun keeps it."""
    import hashlib

    from click.testing import CliRunner

    from idh_pseudocolor.cli import cli
    from idh_pseudocolor.cohort import discover_cohort
    from idh_pseudocolor.preprocess import RECORD
    from idh_pseudocolor.slices import extract_cohort

    model, _ = trained
    raw, out = raw_nifti_study(tmp_path), tmp_path / "out"
    runner = CliRunner()
    root = versioned(model, tmp_path / "06_models", "2026-12-05T10.00.00.000Z")
    args = ["preprocess", "--in", str(raw), "--out", str(out), "--voxel-size", "2"]
    done = runner.invoke(
        cli, [*args, "--labels", str(raw / "labels.csv"), "--segmentation-model", str(root)]
    )
    assert done.exit_code == 0, done.output
    report = pd.read_csv(out / "preprocessing_report.csv")
    assert report[["status", "mask_source"]].values.tolist() == [["written", "automatic"]]
    subject = out / "SUBJECTS" / "PHANTOM-0001"
    record = json.loads((subject / RECORD).read_text())["mask"]
    model_file = root / "2026-12-05T10.00.00.000Z" / seg.MODEL_FILE
    assert record["source"] == "automatic" and record["trained_on_patients"] == 18
    assert record["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    drawn = nib.load(str(subject / "MASK.nii.gz"))
    truth = nib.load(str(raw / ".truth" / "PHANTOM-0001" / "MASK.nii.gz"))
    np.testing.assert_allclose(drawn.affine, nib.load(str(subject / "T1.nii.gz")).affine)
    assert seg.dice(np.asarray(drawn.dataobj) > 0, np.asarray(truth.dataobj) > 0) >= 0.6
    voxels = (np.asarray(drawn.dataobj) > 0).sum()
    assert record["tumor_ml"] == pytest.approx(voxels * 8 / 1000, abs=0.01)
    manifest, _, _ = extract_cohort(
        discover_cohort(out / "SUBJECTS"), conf_normalization(), 1, False
    )
    assert manifest["status"].tolist() == ["included"], manifest["reason"].tolist()
    # a rerun keeps the patient and its mask as they are
    before = (subject / "MASK.nii.gz").stat().st_mtime_ns
    again = runner.invoke(cli, [*args, "--segmentation-model", str(root)])
    assert again.exit_code == 0 and "1 kept" in again.output
    assert (subject / "MASK.nii.gz").stat().st_mtime_ns == before
    assert pd.read_csv(out / "preprocessing_report.csv")["mask_source"].tolist() == ["automatic"]
