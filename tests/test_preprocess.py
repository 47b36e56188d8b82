"""From raw studies to a cohort: the raw phantom (real DICOM series written by pydicom, NIfTI files
with sidecars), read back, identified and co-registered with SimpleITK, checked against the
phantom's recorded ground truth. No mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner

from idh_pseudocolor.cli import cli
from idh_pseudocolor.cohort import discover_cohort
from idh_pseudocolor.preprocess import RECORD, preprocess_cohort, residual_against_truth
from idh_pseudocolor.raw_phantom import DESCRIPTIONS, export_raw_cohort
from idh_pseudocolor.slices import extract_cohort
from tests.conftest import conf_normalization, made_once, raw_nifti_study


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time: the input, untouched."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one_mm_study(tmp_path_factory) -> tuple[Path, Path]:
    """One raw DICOM study on the EGD grid's 1 mm, preprocessed once for the tests below."""

    def make(root: Path) -> None:
        raw = root / "raw"
        export_raw_cohort(raw, n_subjects=1, seed=3, fmt="dicom", n_workers=1, progress=False)
        before = snapshot(raw)
        report = preprocess_cohort(raw, root / "out", labels_csv=raw / "labels.csv", progress=False)
        assert snapshot(raw) == before  # nothing written into the input
        assert report["status"].tolist() == ["written"]

    root = made_once(tmp_path_factory, "raw1mm", make)  # once per run, not once per worker
    return root / "raw", root / "out"


def test_a_dicom_study_lands_on_the_template_grid_within_a_millimetre(one_mm_study):
    """The acceptance number: the written volumes sit where the recorded truth says, < 1 mm."""
    raw, out = one_mm_study
    residual = residual_against_truth(out / "SUBJECTS/PHANTOM-0001", raw / ".truth/PHANTOM-0001")
    assert sorted(residual) == ["FLAIR", "T1", "T1ce", "T2"]
    medians = [median for median, _ in residual.values()]
    assert np.median(medians) < 1.0 and max(medians) < 1.5, residual
    # and the record says how each registration did
    record = json.loads((out / "SUBJECTS/PHANTOM-0001" / RECORD).read_text())
    assert record["reference"] == "T1"
    for numbers in record["registrations"].values():  # mutual information: higher is better
        assert numbers["mi_after"] > numbers["mi_before"] > 0


def test_the_written_cohort_is_egd_shaped_and_the_pipeline_reads_it(one_mm_study):
    raw, out = one_mm_study
    subject = out / "SUBJECTS/PHANTOM-0001"
    truth = raw / ".truth/PHANTOM-0001"
    for name in ("T1", "T1GD", "T2", "FLAIR"):
        img = nib.load(subject / f"{name}.nii.gz")
        assert img.shape == (197, 233, 189) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(img.affine, nib.load(truth / "MASK.nii.gz").affine, atol=1e-4)
        data = np.asarray(img.dataobj)
        brain = np.asarray(nib.load(truth / "brain_mask.nii.gz").dataobj) > 0
        assert data[~brain].max() == 0 or (data[~brain] > 0).mean() < 0.01  # skull stripped
    label = json.loads((truth / "metadata.json").read_text())["Genetic_and_Histological_labels"]
    written = json.loads((subject / "metadata.json").read_text())
    assert written["Genetic_and_Histological_labels"]["IDH"] == int(label["IDH"])
    assert (out / "qc/PHANTOM-0001.png").stat().st_size > 10_000
    # with an expert mask given (here the phantom's), data_engineering's extraction includes it
    shutil.copy(truth / "MASK.nii.gz", subject / "MASK.nii.gz")
    manifest, slices, _ = extract_cohort(
        discover_cohort(out / "SUBJECTS"), conf_normalization(), 1, False
    )
    assert manifest["status"].tolist() == ["included"], manifest["reason"].tolist()
    assert slices[0].image.shape[0] == 4


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    """Four 2 mm DICOM studies as a PACS export might give them: one missing its FLAIR, one with
    a corrupt file and a second FLAIR, one with only its localizer, one intact. Made once per test
    run (under xdist the other worker waits for it)."""
    root = made_once(tmp_path_factory, "damaged", make_damaged)
    report = pd.read_csv(root / "out" / "preprocessing_report.csv", dtype={"subject_id": str})
    broken = Path((root / "broken.txt").read_text())
    return root / "out", report.set_index("subject_id"), {"broken": broken}


def make_damaged(root: Path) -> None:
    raw = root / "raw"
    export_raw_cohort(raw, n_subjects=4, seed=5, fmt="dicom", voxel_size=2.0, progress=False)

    def series(patient: str, sequence: str) -> Path:
        """The folder of a patient's series of ``sequence`` (descriptions vary by vendor)."""
        names = {vendor[sequence] for vendor in DESCRIPTIONS.values()}
        return next(
            folder
            for folder in (raw / patient).iterdir()
            if pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesDescription
            in names
        )

    shutil.rmtree(series("PHANTOM-0001", "FLAIR"))
    broken = sorted(series("PHANTOM-0002", "T2").glob("*.dcm"))[3]
    broken.write_bytes(broken.read_bytes()[:300])
    flair = series("PHANTOM-0002", "FLAIR")
    extra = raw / "PHANTOM-0002/FLAIR_REPEAT"
    extra.mkdir()
    repeat = pydicom.uid.generate_uid()  # a second acquisition of FLAIR
    for f in sorted(flair.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = repeat
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 99
        ds.save_as(extra / f.name)
    localizer = series("PHANTOM-0003", "localizer")
    for folder in list((raw / "PHANTOM-0003").iterdir()):
        if folder != localizer:
            shutil.rmtree(folder)
    before = snapshot(raw)
    preprocess_cohort(raw, root / "out", voxel_size=2.0, progress=False)
    assert snapshot(raw) == before
    (root / "broken.txt").write_text(str(broken))


def test_a_missing_sequence_is_reported_and_the_other_three_are_written(damaged):
    out, report, _ = damaged
    row = report.loc["PHANTOM-0001"]
    assert row["status"] == "written" and row["missing"] == "FLAIR"
    assert sorted(p.name for p in (out / "SUBJECTS/PHANTOM-0001").glob("*.nii.gz")) == [
        "T1.nii.gz",
        "T1GD.nii.gz",
        "T2.nii.gz",
    ]


def test_a_corrupt_file_and_a_duplicate_series_are_named_never_guessed(damaged):
    out, report, files = damaged
    row = report.loc["PHANTOM-0002"]
    assert str(files["broken"]) in row["problems"]  # the corrupt file, by name
    assert "FLAIR" in row["problems"]  # two series for FLAIR: reported as ambiguous
    assert "FLAIR" in row["missing"].split()  # and neither of them used


def test_a_localizer_only_study_is_excluded_with_the_reason_and_the_others_go_on(damaged):
    out, report, _ = damaged
    row = report.loc["PHANTOM-0003"]
    assert row["status"] == "excluded" and "usable sequence" in row["reason"]
    assert not (out / "SUBJECTS/PHANTOM-0003").exists()
    assert report.loc["PHANTOM-0004", "status"] == "written"
    assert report.loc["PHANTOM-0004", "sequences"] == "T1 T1ce T2 FLAIR"
    written = pd.read_csv(out / "preprocessing_report.csv")
    assert written["subject_id"].tolist() == [f"PHANTOM-000{i}" for i in range(1, 5)]


def test_nifti_studies_through_the_command_line_and_a_rerun_keeps_what_is_done(tmp_path):
    raw, out = raw_nifti_study(tmp_path), tmp_path / "out"
    runner = CliRunner()
    args = ["preprocess", "--in", str(raw), "--out", str(out), "--voxel-size", "2"]
    args += ["--segmentation-model", "none"]  # masks: tests/test_segmentation.py
    first = runner.invoke(cli, [*args, "--labels", str(raw / "labels.csv")])
    assert first.exit_code == 0, first.output
    assert "1 written" in first.output
    assert "no tumor mask for PHANTOM-0001" in first.output
    report = pd.read_csv(out / "preprocessing_report.csv")
    assert report["mask_source"].tolist() == ["none"]
    assert not (out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").exists()
    record = json.loads((out / "SUBJECTS/PHANTOM-0001" / RECORD).read_text())
    assert sorted(record["sources"]) == ["FLAIR", "T1", "T1ce", "T2"]
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "1 kept" in again.output
    inside = runner.invoke(cli, ["preprocess", "--in", str(raw), "--out", str(raw / "x")])
    assert inside.exit_code != 0 and "nothing is written into the input" in str(inside.exception)


def test_the_cohort_record_summarizes_what_preprocessing_did_to_whom(damaged):
    """What the study's report shows of a preprocessed cohort, read back from its report."""
    from idh_pseudocolor.cohort import cohort_record

    out, report, files = damaged
    record = cohort_record(out)["preprocessing"]
    assert record["patients"] == 4 and record["status"] == {"written": 3, "excluded": 1}
    assert [e["subject_id"] for e in record["excluded"]] == ["PHANTOM-0003"]
    assert "usable sequence" in record["excluded"][0]["reason"]
    assert record["missing_sequences"] == {"FLAIR": 1, "T2 FLAIR": 1}  # 0002: a corrupt T2 too
    assert record["mask_sources"] == {"none": 3}  # no model given here
    problems = {p["subject_id"]: p["problems"] for p in record["problems"]}
    assert str(files["broken"]) in problems["PHANTOM-0002"]
    rows = {r["sequence"]: r for r in record["registration"]}
    assert sorted(rows) == ["FLAIR", "T1", "T1ce", "T2"] and rows["FLAIR"]["patients"] == 1
    written = report[report["status"] == "written"]
    assert rows["T1ce"]["mi_after_median"] == pytest.approx(written["T1ce_mi_after"].median())
    assert rows["T2"]["mi_after_min"] == pytest.approx(written["T2_mi_after"].min())
    # the cohort is out/SUBJECTS (EGD's layout): its record finds the report beside it, and
    # knows these are the phantom's patients (the raw phantom's truth says so)
    assert cohort_record(out / "SUBJECTS")["preprocessing"] == cohort_record(out)["preprocessing"]
    assert cohort_record(out / "SUBJECTS")["synthetic"] is True
    assert "preprocessing" not in cohort_record(out / "SUBJECTS" / "PHANTOM-0001")


def _acquired_mask(raw: Path, out: Path, sequence: str, flip: bool) -> nib.Nifti1Image:
    """The phantom's tumor drawn on ``sequence``'s grid as acquired (as another tool would draw
    it on that series), placed there by the *true* motion (the raw phantom's transforms.json),
    optionally stored with its first axis flipped (as some converters write a series)."""
    from idh_pseudocolor.preprocess import _truth_matrix
    from idh_pseudocolor.registration import (
        from_nifti,
        image_from_array,
        resample,
        transform_from_ras,
    )

    record = json.loads((out / "SUBJECTS/PHANTOM-0001" / RECORD).read_text())
    grid = record["acquired_grids"][sequence]
    affine = np.asarray(grid["affine_ras"])
    reference = image_from_array(np.zeros(grid["shape"], np.float32), affine)
    truth = json.loads((raw / ".truth/PHANTOM-0001/transforms.json").read_text())
    acquired_to_template = np.linalg.inv(_truth_matrix(truth, sequence))
    mask = from_nifti(nib.load(raw / ".truth/PHANTOM-0001/MASK.nii.gz"))
    moved = resample(mask, reference, transform_from_ras(acquired_to_template), kind="mask")
    data = (np.asarray(_array(moved)) > 0.5).astype(np.uint8)
    if flip:
        data = data[::-1]
        flipped = affine.copy()
        flipped[:3, 0] *= -1
        flipped[:3, 3] = affine[:3, :3] @ [grid["shape"][0] - 1, 0, 0] + affine[:3, 3]
        affine = flipped
    return nib.Nifti1Image(data, affine)


def _array(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def test_masks_from_another_tool_on_a_series_or_the_template_grid(one_mm_study, tmp_path):
    """preprocess --masks: a mask drawn on a series as acquired (stored flipped) is brought onto
    the template grid through the recorded registration; one on the template grid is taken as
    it is; one on no grid of the patient's is named, never guessed."""
    from idh_pseudocolor.segmentation import dice

    raw, written = one_mm_study
    truth = np.asarray(nib.load(raw / ".truth/PHANTOM-0001/MASK.nii.gz").dataobj) > 0
    masks = tmp_path / "their_masks"
    masks.mkdir()
    _acquired_mask(raw, written, "T2", flip=True).to_filename(masks / "PHANTOM-0001.nii.gz")
    out = tmp_path / "out"
    shutil.copytree(written, out)
    (out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").unlink(missing_ok=True)
    args = ["preprocess", "--in", str(raw), "--out", str(out), "--segmentation-model", "none"]
    done = CliRunner().invoke(cli, [*args, "--masks", str(masks)])
    assert done.exit_code == 0 and "1 kept" in done.output, done.output
    report = pd.read_csv(out / "preprocessing_report.csv")
    assert report["mask_source"].tolist() == ["given"]
    record = json.loads((out / "SUBJECTS/PHANTOM-0001" / RECORD).read_text())["mask"]
    assert record == {"source": "given", "file": str(masks / "PHANTOM-0001.nii.gz"), "grid": "T2"}
    brought = nib.load(out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz")
    np.testing.assert_allclose(
        brought.affine, nib.load(raw / ".truth/PHANTOM-0001/MASK.nii.gz").affine, atol=1e-4
    )
    assert dice(np.asarray(brought.dataobj) > 0, truth) >= 0.85

    from idh_pseudocolor.preprocess import PatientResult, masks_from_folder

    # on the template grid: taken as it is
    (out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").unlink()
    shutil.copy(raw / ".truth/PHANTOM-0001/MASK.nii.gz", masks / "PHANTOM-0001.nii.gz")
    result = PatientResult("PHANTOM-0001", "kept")
    masks_from_folder([result], out / "SUBJECTS", masks)
    again = np.asarray(nib.load(out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(again, truth)
    # on no grid of this patient's: a problem naming the file, no mask written
    (out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").unlink()
    nib.Nifti1Image(truth[::2, ::2, ::2].astype(np.uint8), np.diag([2.0, 2, 2, 1])).to_filename(
        masks / "PHANTOM-0001.nii.gz"
    )
    result = PatientResult("PHANTOM-0001", "kept")
    masks_from_folder([result], out / "SUBJECTS", masks)
    assert not (out / "SUBJECTS/PHANTOM-0001/MASK.nii.gz").exists()
    (problem,) = result.problems
    assert problem.file == masks / "PHANTOM-0001.nii.gz"
    assert "on none of the patient's grids" in problem.reason and "T2" in problem.reason
