"""Raw phantom studies (idh_pseudocolor.raw_phantom): real DICOM and NIfTI files, read back the
way a converter or a preprocessing step reads them (SimpleITK, pydicom, nibabel), checked against
the ground truth the export leaves in ``.truth``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from scipy import ndimage

from idh_pseudocolor.cli import cli
from idh_pseudocolor.phantom import generate_cohort
from idh_pseudocolor.raw_phantom import (
    TRANSFORM_CONVENTION,
    acquire_subject,
    export_raw_cohort,
    raw_cohort_is_complete,
)

SEED = 4
TRUTH_NAMES = {"T1": "T1", "T1ce": "T1GD", "T2": "T2", "FLAIR": "FLAIR"}
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: the tags a DICOM converter and sequence identification read
REQUIRED_TAGS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "ProtocolName",
    "Modality",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "InstanceNumber",
    "Rows",
    "Columns",
    "MagneticFieldStrength",
    "Manufacturer",
    "RepetitionTime",
    "EchoTime",
    "ScanningSequence",
    "SequenceVariant",
    "RescaleSlope",
    "RescaleIntercept",
    "FrameOfReferenceUID",
)


@pytest.fixture(scope="module")
def dicom_export(tmp_path_factory) -> Path:
    """Two patients on the 4 mm grid as DICOM (shared, do not modify)."""
    out = tmp_path_factory.mktemp("raw") / "dicom"
    export_raw_cohort(
        out, n_subjects=2, seed=SEED, fmt="dicom", voxel_size=4.0, n_workers=1, progress=False
    )
    return out


@pytest.fixture(scope="module")
def nifti_export(tmp_path_factory) -> Path:
    """One patient on the 2 mm grid as NIfTI (2 mm: thin enough slices for the correlations)."""
    out = tmp_path_factory.mktemp("raw") / "nifti"
    export_raw_cohort(
        out, n_subjects=1, seed=SEED, fmt="nifti", voxel_size=2.0, n_workers=1, progress=False
    )
    return out


def _transforms(root: Path, subject: str) -> dict:
    return json.loads((root / ".truth" / subject / "transforms.json").read_text())


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(ids) == 1, f"{folder.name}: {len(ids)} series"
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return reader.Execute()


def _series_folders(root: Path, subject: str) -> dict[str, Path]:
    info = _transforms(root, subject)["sequences"]
    return {seq: root / subject / s["location"][0] for seq, s in info.items()}


def _expected_at(root: Path, subject: str, seq: str, ras_points: np.ndarray):
    """What the acquired image must hold at acquired-world points (RAS, (n, 3)): the truth
    volume, interpolated (linear) where the recorded transform puts them in the template world,
    averaged over the slice's samples; and whether every sample lies deep in the brain (where
    no head tissue mixes in)."""
    truth = root / ".truth" / subject
    geometry = _transforms(root, subject)["sequences"][seq]
    to_template = np.array(geometry["acquired_to_template_ras"])
    acquisition = geometry["acquisition"]
    grid = acquisition["grids"][0]
    normal_ras = (LPS[:3, :3] @ np.array(grid["direction_lps"]))[:, 2]
    samples = acquisition["slice_samples"]
    volume_img = nib.load(truth / f"{TRUTH_NAMES[seq]}.nii.gz")
    volume = volume_img.get_fdata(dtype=np.float32)
    brain = nib.load(truth / "brain_mask.nii.gz").get_fdata(dtype=np.float32)
    to_voxel = np.linalg.inv(volume_img.affine) @ to_template
    total = np.zeros(len(ras_points))
    deep = np.ones(len(ras_points), bool)
    for m in range(samples):
        shift = ((m + 0.5) / samples - 0.5) * grid["slice_thickness_mm"] * normal_ras
        ijk = (to_voxel @ np.c_[ras_points + shift, np.ones(len(ras_points))].T)[:3]
        total += ndimage.map_coordinates(volume, ijk, order=1)
        deep &= ndimage.map_coordinates(brain, ijk, order=1, cval=0.0) > 1 - 1e-6
    return total / samples, deep


def test_dicom_series_per_sequence_and_a_localizer(dicom_export):
    truth = json.loads((dicom_export / ".truth" / "cohort.json").read_text())
    assert truth["format"] == "dicom" and truth["seed"] == SEED and truth["synthetic"]
    studies = set()
    for subject in ("PHANTOM-0001", "PHANTOM-0002"):
        meta = json.loads((dicom_export / ".truth" / subject / "metadata.json").read_text())
        scanner = meta["Scan_characteristics"]
        folders = sorted(p for p in (dicom_export / subject).iterdir())
        assert len(folders) == 5 and all(p.is_dir() for p in folders)
        by_type = {}
        for folder in folders:
            files = sorted(folder.iterdir())
            datasets = [pydicom.dcmread(f) for f in files]
            assert len({d.SeriesInstanceUID for d in datasets}) == 1
            assert sorted(int(d.InstanceNumber) for d in datasets) == list(range(1, len(files) + 1))
            for ds in datasets:
                missing = [t for t in REQUIRED_TAGS if t not in ds]
                assert not missing, f"{folder.name}: {missing}"
                assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
                assert ds.SOPClassUID == pydicom.uid.MRImageStorage
                assert ds.Modality == "MR" and ds.PatientID == subject
                assert ds.Manufacturer == scanner["Manufacturer"]
                assert float(ds.MagneticFieldStrength) == scanner["Field"]
                assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1
            studies.add(datasets[0].StudyInstanceUID)
            assert len({d.StudyInstanceUID for d in datasets}) == 1
            by_type[folder.name] = datasets
        localizers = [n for n, ds in by_type.items() if "LOCALIZER" in ds[0].ImageType]
        assert len(localizers) == 1
        planes = by_type[localizers[0]]
        assert len(planes) == 3
        assert len({tuple(float(x) for x in d.ImageOrientationPatient) for d in planes}) == 3
        with_contrast = {n for n, ds in by_type.items() if "ContrastBolusAgent" in ds[0]}
        sequences = {seq: path.name for seq, path in _series_folders(dicom_export, subject).items()}
        assert with_contrast == {sequences["T1ce"]}
        inversion = {
            seq: float(by_type[sequences[seq]][0].InversionTime) for seq in ("T1", "T1ce", "FLAIR")
        }
        assert inversion == {"T1": 900.0, "T1ce": 900.0, "FLAIR": 2500.0}
        assert "InversionTime" not in by_type[sequences["T2"]][0]
    assert len(studies) == 2  # one StudyInstanceUID per patient


def test_dicom_geometry_as_designed(dicom_export):
    folders = _series_folders(dicom_export, "PHANTOM-0001")
    info = _transforms(dicom_export, "PHANTOM-0001")["sequences"]
    spacing = {"T1": (4, 4, 4), "T1ce": (4, 4, 4), "T2": (3.6, 3.6, 13.2), "FLAIR": (4, 4, 17.6)}
    # columns: the LPS directions of i (along a row), j (down a column), k (across slices)
    directions = {
        "T1": [[0, 0, -1], [1, 0, 0], [0, -1, 0]],  # sagittal: P, I, R
        "T1ce": np.eye(3),  # axial: L, P, S
        "FLAIR": [[1, 0, 0], [0, 0, 1], [0, -1, 0]],  # coronal: L, I, P
    }
    for seq, spacing_mm in spacing.items():
        image = _read_series(folders[seq])
        np.testing.assert_allclose(image.GetSpacing(), spacing_mm, atol=1e-6)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        grid = info[seq]["acquisition"]["grids"][0]
        np.testing.assert_allclose(direction, grid["direction_lps"], atol=1e-9)
        np.testing.assert_allclose(image.GetOrigin(), grid["origin_lps"], atol=1e-6)
        assert list(image.GetSize()) == grid["size"]
        if seq in directions:
            np.testing.assert_allclose(direction, directions[seq], atol=1e-12)
    t2 = np.array(_read_series(folders["T2"]).GetDirection()).reshape(3, 3)
    tilt = info["T2"]["acquisition"]["obliquity_deg"]
    np.testing.assert_allclose(t2[:, 0], [1, 0, 0], atol=1e-12)  # angled about left-right only
    assert np.degrees(np.arccos(t2[2, 2])) == pytest.approx(abs(tilt), abs=1e-6)
    thickness = {
        seq: float(pydicom.dcmread(next(folders[seq].iterdir())).SliceThickness)
        for seq in ("T2", "FLAIR")
    }
    assert thickness == {"T2": 12.0, "FLAIR": 16.0}  # thinner than the spacing: a gap


def test_dicom_read_back_matches_memory_and_truth_in_lps(dicom_export):
    """The DICOM patient coordinates are LPS: read back by SimpleITK, each voxel's world point
    holds the in-memory intensity, and (through the recorded transform) the truth volume's."""
    raw = acquire_subject(1, _label(dicom_export, "PHANTOM-0001"), SEED, voxel_size=4.0)
    folders = _series_folders(dicom_export, "PHANTOM-0001")
    for series in raw.series:
        seq = series.protocol.sequence
        if seq == "localizer":
            continue
        image = _read_series(folders[seq])
        memory = series.images[0]
        for attr in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(image, attr)(), getattr(memory, attr)(), atol=1e-6)
        slope = float(pydicom.dcmread(next(folders[seq].iterdir())).RescaleSlope)
        read, held = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(memory)
        np.testing.assert_allclose(read, held, atol=slope / 2 + 1e-3)
        rng = np.random.default_rng(0)
        k, j, i = (rng.integers(0, n, 4000) for n in read.shape)
        lps = np.array(
            [
                image.TransformIndexToPhysicalPoint((int(a), int(b), int(c)))
                for a, b, c in zip(i, j, k)
            ]
        )
        ras = lps * [-1, -1, 1]
        expected, deep = _expected_at(dicom_export, "PHANTOM-0001", seq, ras)
        assert deep.sum() > 50, seq
        np.testing.assert_allclose(read[k, j, i][deep], expected[deep], atol=0.5)
        # the other reading of the coordinates (as if they were RAS) does not fit
        wrong, deep_wrong = _expected_at(dicom_export, "PHANTOM-0001", seq, lps)
        both = deep & deep_wrong
        assert both.sum() > 20 and np.abs(read[k, j, i][both] - wrong[both]).mean() > 20.0


def _label(root: Path, subject: str) -> bool:
    for line in (root / "labels.csv").read_text().splitlines()[1:]:
        sid, idh = line.split(",")
        if sid == subject:
            return idh == "1"
    raise KeyError(subject)


def test_recorded_transform_registers_each_sequence_onto_the_template(nifti_export):
    """Resampled onto the template grid through the recorded transform, every sequence matches
    its truth volume inside the brain; without it (the patient moved), much less."""
    subject = "PHANTOM-0001"
    truth = nifti_export / ".truth" / subject
    info = _transforms(nifti_export, subject)["sequences"]
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(truth / "brain_mask.nii.gz"))) > 0
    for seq, name in TRUTH_NAMES.items():
        reference = sitk.ReadImage(str(truth / f"{name}.nii.gz"), sitk.sitkFloat32)
        acquired = sitk.ReadImage(str(nifti_export / subject / info[seq]["location"][0]))
        to_acquired_lps = LPS @ np.array(info[seq]["template_to_acquired_ras"]) @ LPS
        corr = {}
        for label, matrix in (("aligned", to_acquired_lps), ("moved", np.eye(4))):
            transform = sitk.AffineTransform(3)
            transform.SetMatrix(matrix[:3, :3].ravel().tolist())
            transform.SetTranslation(matrix[:3, 3].tolist())
            moved = sitk.Resample(acquired, reference, transform, sitk.sitkLinear, 0.0)
            a = sitk.GetArrayFromImage(moved)[brain]
            b = sitk.GetArrayFromImage(reference)[brain]
            corr[label] = np.corrcoef(a, b)[0, 1]
        # 2-D series (8.8 mm apart at this grid) lose detail to their thick slices, not to
        # the registration: their partial volume caps the correlation with the thin truth
        assert corr["aligned"] > (0.9 if seq in ("T1", "T1ce") else 0.85), (seq, corr)
        assert corr["moved"] < corr["aligned"] - 0.15, (seq, corr)
        if seq in ("T1", "T1ce"):  # misfit without the transform: many times the one with it
            assert 1 - corr["moved"] > 10 * (1 - corr["aligned"]), (seq, corr)


def test_nifti_names_sidecars_and_geometry(nifti_export):
    subject = "PHANTOM-0001"
    folder = nifti_export / subject
    info = _transforms(nifti_export, subject)["sequences"]
    images = sorted(folder.glob("*.nii.gz"))
    assert len(images) == 4 + 3  # four sequences and the localizer's three planes
    standard = {"t1", "t1gd", "t1ce", "t2", "flair", "mask", "seg"}
    for path in images:
        stem = path.name[: -len(".nii.gz")]
        assert stem.lower() not in standard
        sidecar = json.loads((folder / f"{stem}.json").read_text())
        for key in ("SeriesDescription", "ProtocolName", "RepetitionTime", "EchoTime"):
            assert key in sidecar
        assert 0 < sidecar["EchoTime"] < 0.2 and 0.001 < sidecar["RepetitionTime"] < 10
        assert sidecar["Manufacturer"] and sidecar["MagneticFieldStrength"] in (1.5, 3.0)
    for seq, sequence in info.items():
        sidecar = json.loads(
            (folder / sequence["location"][0].replace(".nii.gz", ".json")).read_text()
        )
        assert ("ContrastBolusAgent" in sidecar) == (seq == "T1ce")
        if seq in ("T1", "T1ce"):
            assert sidecar["InversionTime"] == pytest.approx(0.9)
        if seq == "FLAIR":
            assert sidecar["InversionTime"] == pytest.approx(2.5)
        for name, grid in zip(sequence["location"], sequence["acquisition"]["grids"], strict=True):
            img = nib.load(folder / name)
            np.testing.assert_allclose(img.affine, grid["affine_ras"], atol=1e-4)
            assert list(img.shape) == grid["size"]
            assert img.header.get_data_dtype() == np.int16
    localizer = json.loads(
        (folder / info["localizer"]["location"][0].replace(".nii.gz", ".json")).read_text()
    )
    assert "LOCALIZER" in localizer["ImageType"]
    assert nib.aff2axcodes(nib.load(folder / info["T1"]["location"][0]).affine) == ("P", "I", "R")
    # the NIfTI's world is RAS: its voxels hold the truth through the recorded transform
    for seq in ("T1", "FLAIR"):
        img = nib.load(folder / info[seq]["location"][0])
        data = img.get_fdata(dtype=np.float32)
        rng = np.random.default_rng(1)
        ijk = np.stack([rng.integers(0, n, 3000) for n in data.shape])
        ras = (img.affine @ np.r_[ijk, np.ones((1, ijk.shape[1]))])[:3].T
        expected, deep = _expected_at(nifti_export, subject, seq, ras)
        assert deep.sum() > 100
        np.testing.assert_allclose(data[tuple(ijk)][deep], expected[deep], atol=0.5)


def test_same_patients_and_labels_as_the_egd_phantom(dicom_export, tmp_path):
    egd = tmp_path / "egd"
    generate_cohort(egd, n_subjects=2, seed=SEED, voxel_size=4.0, n_workers=1, progress=False)
    labels = (dicom_export / "labels.csv").read_text().splitlines()
    assert labels[0] == "ID,IDH"
    cohort = json.loads((dicom_export / ".truth" / "cohort.json").read_text())
    for line, row in zip(labels[1:], cohort["labels"], strict=True):
        subject, idh = line.split(",")
        meta = json.loads((egd / subject / "metadata.json").read_text())
        assert int(meta["Genetic_and_Histological_labels"]["IDH"]) == int(idh) == row["IDH"]
        truth = dicom_export / ".truth" / subject
        assert (truth / "metadata.json").read_text() == (
            egd / subject / "metadata.json"
        ).read_text()
        for name in ("T1", "T1GD", "T2", "FLAIR", "MASK"):
            a, b = nib.load(truth / f"{name}.nii.gz"), nib.load(egd / subject / f"{name}.nii.gz")
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)


def test_deterministic_whatever_the_workers(dicom_export, tmp_path):
    again = tmp_path / "again"
    export_raw_cohort(again, 2, SEED, "dicom", voxel_size=4.0, n_workers=2, progress=False)
    first = sorted(p.relative_to(dicom_export) for p in dicom_export.rglob("*.dcm"))
    second = sorted(p.relative_to(again) for p in again.rglob("*.dcm"))
    assert first == second and len(first) > 100
    for rel in first:  # pixel data, UIDs, everything
        assert (dicom_export / rel).read_bytes() == (again / rel).read_bytes()
    assert (dicom_export / "labels.csv").read_text() == (again / "labels.csv").read_text()


def test_no_mask_beside_the_images_truth_hidden(dicom_export):
    subjects = sorted(p.name for p in dicom_export.iterdir() if p.is_dir())
    assert subjects == [".truth", "PHANTOM-0001", "PHANTOM-0002"]
    for subject in subjects[1:]:
        files = [p.name.lower() for p in (dicom_export / subject).rglob("*") if p.is_file()]
        assert files and not [
            f for f in files if "mask" in f or "seg" in f or f.endswith(".nii.gz")
        ]
        truth = dicom_export / ".truth" / subject
        for name in ("MASK", "T1", "T1GD", "T2", "FLAIR", "brain_mask"):
            assert (truth / f"{name}.nii.gz").is_file()
        transforms = _transforms(dicom_export, subject)
        assert transforms["convention"] == TRANSFORM_CONVENTION
        assert set(transforms["sequences"]) == {"localizer", "T1", "T1ce", "T2", "FLAIR"}
        for sequence in transforms["sequences"].values():
            matrix = np.array(sequence["template_to_acquired_ras"])
            np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-12)
            assert max(abs(a) for a in sequence["rotation_deg"]) <= 8
            assert max(abs(t) for t in sequence["translation_mm"]) <= 10
    cohort = json.loads((dicom_export / ".truth" / "cohort.json").read_text())
    assert {"seed", "format", "generator_version", "raw_version", "labels"} <= set(cohort)
    assert raw_cohort_is_complete(dicom_export, 2, SEED, "dicom", 4.0)
    assert not raw_cohort_is_complete(dicom_export, 2, SEED, "nifti", 4.0)


def test_reexport_drops_stale_patients_and_refuses_a_phantom_cohort(tmp_path):
    out = tmp_path / "raw"
    export_raw_cohort(out, 2, 1, "nifti", voxel_size=4.0, n_workers=1, progress=False)
    export_raw_cohort(out, 1, 1, "nifti", voxel_size=4.0, n_workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".truth", "PHANTOM-0001", "labels.csv"]
    assert sorted(p.name for p in (out / ".truth").iterdir()) == ["PHANTOM-0001", "cohort.json"]
    with pytest.raises(ValueError, match="fmt"):
        export_raw_cohort(tmp_path / "x", 1, 1, "analyze", voxel_size=4.0, progress=False)
    egd = tmp_path / "egd"
    generate_cohort(egd, n_subjects=1, seed=1, voxel_size=4.0, n_workers=1, progress=False)
    with pytest.raises(ValueError, match="phantom cohort"):
        export_raw_cohort(egd, 1, 1, "dicom", voxel_size=4.0, progress=False)


def test_cli_raw_export_and_refused_options(tmp_path):
    out = tmp_path / "raw"
    args = ["phantom", "--raw", "nifti", "--subjects", "1", "--seed", "2", "--voxel-size", "4"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "raw" in result.output and (out / ".truth" / "cohort.json").is_file()
    assert (out / "PHANTOM-0001" / "3d_sag_1mm.nii.gz").is_file()
    again = CliRunner().invoke(cli, [*args, "--out", str(out), "--if-absent"])
    assert again.exit_code == 0 and "nothing to do" in again.output
    for extra in (["--layout", "brats"], ["--site", "b"]):
        refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x"), *extra])
        assert refused.exit_code != 0
        assert "--raw" in refused.output and extra[0] in refused.output
        assert not (tmp_path / "x").exists()


def test_skull_and_scalp_around_the_brain(nifti_export):
    """What skull stripping must remove is there: by distance from the (template) brain, a dark
    bone shell, then bright scalp fat on T1 and T2, then air holding only noise."""
    subject = "PHANTOM-0001"
    truth = nifti_export / ".truth" / subject
    info = _transforms(nifti_export, subject)["sequences"]
    brain_img = nib.load(truth / "brain_mask.nii.gz")
    voxel = float(np.linalg.norm(brain_img.affine[:3, 0]))
    distance = ndimage.distance_transform_edt(brain_img.get_fdata() == 0, sampling=voxel)
    for seq in ("T1", "T2"):
        img = nib.load(nifti_export / subject / info[seq]["location"][0])
        data = img.get_fdata(dtype=np.float32).ravel()
        ijk = np.indices(img.shape).reshape(3, -1)
        to_template = np.linalg.inv(brain_img.affine) @ np.array(
            info[seq]["acquired_to_template_ras"]
        )
        template_ijk = (to_template @ img.affine @ np.r_[ijk, np.ones((1, ijk.shape[1]))])[:3]
        mm = ndimage.map_coordinates(distance, template_ijk, order=0, cval=99.0)
        brain = np.median(data[mm == 0])

        def shell(lo: float, hi: float, values=data, mm=mm, brain=brain) -> float:
            return float(np.median(values[(mm > lo) & (mm <= hi)]) / brain)

        assert shell(20, 40) < 0.15, seq  # air: noise and offset only
        if seq == "T1":
            assert shell(3, 7) < 0.3 and shell(9, 13) > 1.0  # dark bone, bright fat
        else:  # T2's 6 mm slices blur the thin bone between bright CSF and bright fat
            assert shell(13, 16) > 1.0 and shell(0.5, 2.5) > 1.0
            assert shell(3, 7) < min(shell(0.5, 2.5), shell(13, 16)) - 0.3
