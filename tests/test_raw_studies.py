"""raw_studies.py on real files: DICOM series written by pydicom (and read back by SimpleITK),
NIfTI files with dcm2niix-style sidecars; grouping, checking, geometry, identification and
assignment, each problem reported with the file or series it is about."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from idh_pseudocolor.raw_studies import (
    Series,
    assign_sequences,
    check_series,
    find_series,
    identify,
    load_mapping,
    read_series,
)

SHAPE = (16, 24, 24)  # (slices, rows, columns): small, so a series is written in milliseconds
STUDY_UID = generate_uid()


def volume(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A value that tells every voxel apart: 1000 * slice + 24 * row + column."""
    z, y, x = np.indices(shape)
    return (1000 * z + 24 * y + x).astype(np.uint16)


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def ds_numbers(values: Any) -> list[str]:
    return [f"{float(v):.6f}" for v in values]


def write_series(
    folder: Path,
    data: np.ndarray | None = None,
    *,
    description: str = "",
    tr: float | None = None,
    te: float | None = None,
    ti: float | None = None,
    agent: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    modality: str = "MR",
    origin: tuple[float, float, float] = (-30.0, -40.0, -20.0),
    spacing: tuple[float, float, float] = (1.0, 1.2, 2.0),
    direction: np.ndarray | None = None,
    series_uid: str | None = None,
    random_names: bool = False,
    tamper: Callable[[int, Dataset], None] | None = None,
) -> str:
    """A volume (slices, rows, columns) as an MR Image Storage series, one file per slice.

    ``direction``'s columns are the LPS directions of the column index, the row index and the
    slice index (the third may be minus the row x column normal: a stack written downwards).
    Returns the SeriesInstanceUID."""
    data = volume() if data is None else data
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    series_uid = series_uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate(data):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.PatientID = "P001"
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.Manufacturer = "TEST"
        ds.MagneticFieldStrength = "3"
        for keyword, value in (("RepetitionTime", tr), ("EchoTime", te), ("InversionTime", ti)):
            if value is not None:
                setattr(ds, keyword, f"{value:g}")
        if agent is not None:
            ds.ContrastBolusAgent = agent
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = ds_numbers(np.asarray(origin) + k * spacing[2] * d[:, 2])
        ds.ImageOrientationPatient = ds_numbers([*d[:, 0], *d[:, 1]])
        ds.PixelSpacing = ds_numbers([spacing[1], spacing[0]])  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(plane, dtype=np.uint16).tobytes()
        if tamper is not None:
            tamper(k, ds)
        name = f"{random.getrandbits(40):010x}" if random_names else f"IM{k:04d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return series_uid


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def only(series: list[Series], uid: str) -> Series:
    (match,) = [s for s in series if s.uid == uid]
    return match


# --------------------------------------------------------------------------- finding series


def test_a_nested_export_is_grouped_by_series_and_a_corrupt_file_is_named(tmp_path):
    study = tmp_path / "export"
    t1 = write_series(study / "a" / "b", description="t1_mprage", tr=2300, te=2.3, ti=900)
    t1ce = write_series(
        study / "a", description="t1_mprage KM", tr=2300, te=2.3, ti=900, random_names=True
    )
    t2 = write_series(study / "c" / "d" / "e", description="t2_tse_tra", tr=5000, te=100)
    flair = write_series(study / "c", description="AX T2 FLAIR", tr=9000, te=120, ti=2500)
    # one series split over two folders
    split_uid = generate_uid()
    write_series(study / "f", volume()[:8], description="localizer", series_uid=split_uid)
    write_series(
        study / "g",
        volume()[8:],
        description="localizer",
        series_uid=split_uid,
        origin=(-30.0, -40.0, -20.0 + 8 * 2.0),
        tamper=lambda k, ds: setattr(ds, "InstanceNumber", k + 9),
    )
    write_series(study / ".trash", description="hidden, never seen")
    (study / "notes.txt").write_text("exported by PACS\n")
    (study / "c" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff")
    before = snapshot(study)

    series, problems = find_series(study)

    assert {s.uid for s in series} == {t1, t1ce, t2, flair, split_uid}
    assert [len(only(series, uid).files) for uid in (t1, t1ce, split_uid)] == [16, 16, 16]
    assert [(p.file.name, p.kind) for p in problems] == [("broken.dcm", "unreadable")]
    header = only(series, flair).header
    assert header["RepetitionTime"] == 9000 and header["InversionTime"] == 2500
    assert header["dims"] == (24, 24, 16) and header["spacing"] == pytest.approx((1, 1.2, 2))
    assert header["Modality"] == "MR" and header["ImageType"][0] == "ORIGINAL"

    assigned, problems = assign_sequences(series)
    assert {k: s.uid for k, s in assigned.items()} == {
        "T1": t1,
        "T1ce": t1ce,
        "T2": t2,
        "FLAIR": flair,
    }
    # the localizer is refused by its keyword (all 16 of its slices form a valid stack)
    assert [p.kind for p in problems] == ["unidentified"]
    assert "localizer" in problems[0].reason
    image = read_series(only(series, split_uid))
    assert image.GetSize() == (24, 24, 16) and image[3, 2, 12] == 12000 + 48 + 3
    assert snapshot(study) == before  # nothing written into the input folder


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "direction",
    [
        pytest.param(np.eye(3), id="axial"),
        pytest.param(rotation((1, 1, 0.5), 25), id="oblique"),
        pytest.param(rotation((0.3, 1, 0), 40) @ np.diag([1, 1, -1]), id="oblique-downwards"),
    ],
)
def test_read_series_puts_every_voxel_at_its_written_world_point(tmp_path, direction):
    origin, spacing = (-31.5, 12.25, 40.0), (0.9, 1.1, 2.5)
    uid = write_series(
        tmp_path, origin=origin, spacing=spacing, direction=direction, random_names=True
    )
    (series,), problems = find_series(tmp_path)
    assert series.uid == uid and problems == []
    random.Random(0).shuffle(series.files)
    random.Random(1).shuffle(series.instances)

    image = read_series(series)

    assert image.GetPixelID() == sitk.sitkFloat32
    n = SHAPE[0]
    # SimpleITK's third axis is the row x column normal: a downward stack starts at its last slice
    upwards = np.linalg.det(direction) > 0
    expected_origin = (
        np.asarray(origin) + (0 if upwards else (n - 1) * spacing[2]) * direction[:, 2]
    )
    expected_direction = direction @ np.diag([1, 1, 1 if upwards else -1])
    assert image.GetOrigin() == pytest.approx(tuple(expected_origin), abs=1e-4)
    assert image.GetSpacing() == pytest.approx(spacing, abs=1e-5)
    assert image.GetDirection() == pytest.approx(tuple(expected_direction.ravel()), abs=1e-5)
    written = volume()
    for i, j, k in [(0, 0, 0), (3, 5, 7), (23, 1, 15), (11, 22, 2)]:
        world = np.asarray(origin) + direction @ (np.array([i, j, k]) * spacing)
        index = image.TransformPhysicalPointToIndex(tuple(world))
        assert image[index] == written[k, j, i]


# --------------------------------------------------------------------------- identification


def header(description: str = "", tr=None, te=None, ti=None, agent=None, **more) -> dict:
    return {
        "SeriesDescription": description,
        "ProtocolName": "",
        "RepetitionTime": tr,
        "EchoTime": te,
        "InversionTime": ti,
        "ContrastBolusAgent": agent,
        "ImageType": ("ORIGINAL", "PRIMARY", "M", "ND"),
        **more,
    }


IDENTIFICATION = [
    # description and parameters agree
    ("AX T2 FLAIR", 9000, 120, 2500, None, "FLAIR", "agree"),
    ("t2_tirm_tra_dark-fluid", 9000, 81, 2500, None, "FLAIR", "DARK FLUID"),
    ("t2_tse_tra", 5000, 100, None, None, "T2", "agree"),
    ("t1_mprage_sag_p2_iso", 2300, 2.3, 900, None, "T1", "no contrast agent"),
    ("t1_mprage_sag_p2_iso", 2300, 2.3, 900, "Gadovist", "T1ce", "Gadovist"),
    ("AX T1 +C", 500, 10, None, None, "T1ce", "+C"),
    ("T1W_3D_TFE+Gd", 8, 3.7, None, None, "T1ce", "+GD"),
    ("AX SPGR", 25, 4, None, None, "T1", "SPGR"),
    ("T1 W/O contrast", 500, 10, None, None, "T1", "pre-contrast"),
    # keywords alone: the parameters are missing
    ("T2W_TSE", None, None, None, None, "T2", "do not decide"),
    ("3D T1 BRAVO POST", None, None, None, None, "T1ce", "POST"),
    # a T1-weighted FLAIR exists: the parameters decide
    ("Sag T1 FLAIR", 2200, 12, 860, None, "T1", "inversion-prepared"),
    ("Sag T1 FLAIR +C", 2200, 12, 860, None, "T1ce", "+C"),
    ("T1 FLAIR", None, None, None, None, None, "T1- or T2-weighted FLAIR"),
    # parameters alone (blank description)
    ("", 9000, 120, 2500, None, "FLAIR", "parameters only"),
    ("", 5000, 100, None, None, "T2", "parameters only"),
    ("", 600, 12, None, None, "T1", "parameters only"),
    ("", 600, 12, None, "Dotarem", "T1ce", "Dotarem"),
    ("", 2500, 15, None, None, None, "fits none"),
    ("", None, None, None, None, None, "no TR/TE"),
    # conflicts are reported, not guessed
    ("AX T1", 5000, 100, None, None, None, "conflict"),
    ("T2 AX", 500, 10, None, None, None, "conflict"),
    ("T1 PRE", 500, 10, None, "Dotarem", None, "Dotarem"),
    ("T1/T2", 500, 10, None, None, None, "conflicting keywords"),
    # none of the four
    ("T2* GRE", 650, 20, None, None, None, "not one of the four"),
    ("ep2d_diff_3scan_trace", 5000, 90, None, None, None, "not one of the four"),
    ("SWI_Images", 28, 20, None, None, None, "not one of the four"),
]


@pytest.mark.parametrize(
    ("description", "tr", "te", "ti", "agent", "expected", "evidence"),
    IDENTIFICATION,
    ids=[f"{row[0] or 'blank'}-{row[5]}" for row in IDENTIFICATION],
)
def test_identify(description, tr, te, ti, agent, expected, evidence):
    sequence, words = identify(header(description, tr, te, ti, agent))
    assert sequence == expected, words
    assert evidence.lower() in words.lower()


def test_identify_reads_image_type_and_a_nifti_file_name():
    adc = header("Ax T2", 5000, 90, ImageType=("DERIVED", "PRIMARY", "ADC"))
    assert identify(adc) == (None, "ImageType ADC: not one of the four")
    named = header(FileName="sub-01_ses-pre_FLAIR.nii.gz", tr=9000, te=120, ti=2500)
    sequence, words = identify(named)
    assert sequence == "FLAIR" and 'file name "sub-01_ses-pre_FLAIR.nii.gz"' in words


def test_four_series_without_descriptions_are_identified_by_their_parameters(tmp_path):
    uids = {
        "T1": write_series(tmp_path / "1", tr=600, te=12),
        "T1ce": write_series(tmp_path / "2", tr=600, te=12, agent="Gadovist"),
        "T2": write_series(tmp_path / "3", tr=5000, te=100),
        "FLAIR": write_series(tmp_path / "4", tr=9000, te=120, ti=2500),
    }
    assigned, problems = assign_sequences(find_series(tmp_path)[0])
    assert problems == []
    assert {k: s.uid for k, s in assigned.items()} == uids


def test_two_candidates_are_ambiguous_and_a_missing_sequence_is_reported(tmp_path):
    write_series(tmp_path / "1", description="t1_se", tr=600, te=12)
    write_series(tmp_path / "2", description="t1_se KM", tr=600, te=12)
    first = write_series(tmp_path / "3", description="t2_tse_tra", tr=5000, te=100)
    again = write_series(tmp_path / "4", description="t2_tse_tra", tr=5000, te=100)
    assigned, problems = assign_sequences(find_series(tmp_path)[0])
    assert sorted(assigned) == ["T1", "T1ce"]
    assert [p.kind for p in problems] == ["ambiguous", "missing"]
    assert "2 series identified as T2, none chosen" in problems[0].reason
    assert first in problems[0].reason and again in problems[0].reason
    assert problems[1].file is None and "FLAIR" in problems[1].reason


# --------------------------------------------------------------------------- refused series


def _orientation_of_slice_5(k: int, ds: Dataset) -> None:
    if k == 5:
        ds.ImageOrientationPatient = ds_numbers([1, 0, 0, 0, 0.8, 0.6])


def _no_position_in_slice_3(k: int, ds: Dataset) -> None:
    if k == 3:
        del ds.ImagePositionPatient


def _gantry_tilt(k: int, ds: Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = ds_numbers([x, y + 0.5 * k, z])


def _missing_slice(k: int, ds: Dataset) -> None:
    if k >= 8:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = ds_numbers([x, y, z + 2.0])


REFUSED = {
    "localizer": ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, "localizer"),
    "few-slices": ({"data": volume((4, 24, 24))}, "only 4 slice(s)"),
    "not-mr": ({"modality": "CT"}, "not MR (Modality CT)"),
    "orientation": ({"tamper": _orientation_of_slice_5}, "2 different ImageOrientationPatient"),
    "no-position": ({"tamper": _no_position_in_slice_3}, "no ImagePositionPatient in 1 of 16"),
    "gantry-tilt": ({"tamper": _gantry_tilt}, "sheared stack"),
    "missing-slice": ({"tamper": _missing_slice}, "non-uniform slice spacing"),
}


@pytest.mark.parametrize(("options", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_an_unusable_series_is_refused_with_its_reason(tmp_path, options, reason):
    write_series(tmp_path, description="t1_se", tr=600, te=12, **options)
    (series,), _ = find_series(tmp_path)
    assert reason in (check_series(series) or "")
    with pytest.raises(ValueError, match="t1_se"):
        read_series(series)
    assigned, problems = assign_sequences([series])
    assert "T1" not in assigned and problems[0].kind == "unusable"


@pytest.mark.parametrize(
    ("second", "differing"),
    [
        ({"TemporalPositionIdentifier": 2}, "TemporalPositionIdentifier"),
        ({"EchoTime": "90"}, "EchoTime"),
    ],
    ids=["time-points", "echoes"],
)
def test_several_images_per_slice_position_are_4d(tmp_path, second, differing):
    def first(k: int, ds: Dataset) -> None:
        ds.TemporalPositionIdentifier = 1

    def repeat(k: int, ds: Dataset) -> None:
        first(k, ds)
        for keyword, value in second.items():
            setattr(ds, keyword, value)

    uid = generate_uid()
    for folder, tamper in (("one", first), ("two", repeat)):
        write_series(tmp_path / folder, volume((12, 24, 24)), te=12, series_uid=uid, tamper=tamper)
    (series,), _ = find_series(tmp_path)
    reason = check_series(series)
    assert reason.startswith("4-D: 24 images at 12 slice position(s)")
    assert differing in reason


# --------------------------------------------------------------------------- NIfTI


def write_nifti(path: Path, sidecar: dict | None = None, size=(24, 24, 16)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).random(size[2::-1]).astype(np.float32))
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(tuple(rotation((1, 0, 0), 20).ravel()))
    if len(size) == 4:  # time points
        image = sitk.JoinSeries([image] * size[3])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    if sidecar is not None:
        path.with_name(path.name.split(".nii")[0] + ".json").write_text(json.dumps(sidecar))
    return image


def test_a_nifti_folder_with_sidecars_in_seconds(tmp_path):
    mr = {"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "Siemens"}
    t1 = {"SeriesDescription": "t1_mprage", "RepetitionTime": 2.3, "EchoTime": 0.00232}
    write_nifti(tmp_path / "a.nii.gz", {**mr, **t1, "InversionTime": 0.9})
    t1ce = {"RepetitionTime": 0.6, "EchoTime": 0.012, "ContrastBolusAgent": "Gadovist"}
    write_nifti(tmp_path / "b.nii.gz", {**mr, **t1ce})
    written = write_nifti(tmp_path / "x" / "c.nii", {**mr, "RepetitionTime": 5, "EchoTime": 0.1})
    write_nifti(tmp_path / "patient7_flair.nii.gz")  # no sidecar: the file name speaks
    write_nifti(tmp_path / "dwi.nii.gz", {**mr, "SeriesDescription": "x"}, size=(24, 24, 16, 3))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    before = snapshot(tmp_path)

    series, problems = find_series(tmp_path)

    assert [p.file.name for p in problems] == ["broken.nii.gz"]
    by_name = {s.path.name: s for s in series}
    assert all(s.source == "nifti" for s in series) and len(series) == 5
    h = by_name["a.nii.gz"].header
    assert (h["RepetitionTime"], h["EchoTime"], h["InversionTime"]) == pytest.approx(
        (2300, 2.32, 900)
    )
    assert by_name["a.nii.gz"].files == [tmp_path / "a.nii.gz", tmp_path / "a.json"]
    assert by_name["c.nii"].uid == "x/c.nii" and by_name["c.nii"].header["dims"] == (24, 24, 16)
    assert "4-D NIfTI (size 24x24x16x3)" == check_series(by_name["dwi.nii.gz"])

    assigned, problems = assign_sequences(series)
    assert {k: s.path.name for k, s in assigned.items()} == {
        "T1": "a.nii.gz",
        "T1ce": "b.nii.gz",
        "T2": "c.nii",
        "FLAIR": "patient7_flair.nii.gz",
    }
    assert [p.kind for p in problems] == ["unusable"]
    image = read_series(assigned["T2"])
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetOrigin() == pytest.approx(written.GetOrigin(), abs=1e-4)
    assert image.GetDirection() == pytest.approx(written.GetDirection(), abs=1e-5)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("form", ["yaml", "csv"])
def test_a_user_mapping_overrides_identification(tmp_path, form):
    study = tmp_path / "study"
    write_series(study / "1", description="Sequence A", tr=600, te=12)  # plain T1 by the rules
    repeat = write_series(study / "2", description="t1_se", tr=600, te=12)
    write_series(study / "3", description="mystery", tr=2500, te=15)  # fits none of the four
    entries = {"sequence a*": "t1ce", repeat: "ignore", "MYSTERY": "FLAIR"}
    path = tmp_path / f"mapping.{form}"
    if form == "yaml":
        path.write_text("".join(f'"{k}": {v}\n' for k, v in entries.items()))
    else:
        path.write_text("pattern,sequence\n" + "".join(f"{k},{v}\n" for k, v in entries.items()))
    mapping = load_mapping(path)
    assert mapping == {"sequence a*": "T1ce", repeat: "ignore", "MYSTERY": "FLAIR"}

    series, _ = find_series(study)
    without, problems = assign_sequences(series)
    assert sorted(without) == [] and "ambiguous" in [p.kind for p in problems]
    assigned, problems = assign_sequences(series, mapping)
    assert {k: s.description for k, s in assigned.items()} == {
        "T1ce": "Sequence A",
        "FLAIR": "mystery",
    }
    assert [p.reason for p in problems] == [
        "no usable series identified as T1",
        "no usable series identified as T2",
    ]


def test_a_bad_mapping_is_refused_and_disagreeing_entries_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('"t1*": T3\n')
    with pytest.raises(ValueError, match="'T3' is not one of T1, T1ce, T2, FLAIR or ignore"):
        load_mapping(bad)
    no_header = tmp_path / "bad.csv"
    no_header.write_text("t1*,T1\n")
    with pytest.raises(ValueError, match="'pattern' and 'sequence'"):
        load_mapping(no_header)
    write_series(tmp_path / "s", description="t1_se", tr=600, te=12)
    series, _ = find_series(tmp_path / "s")
    assigned, problems = assign_sequences(series, {"t1*": "T1", "*_se": "T1ce"})
    assert assigned == {} and problems[0].kind == "mapping"
