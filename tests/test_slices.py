"""Slice selection, orientation invariance and every kind of bad input, on real NIfTI files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform

from idh_pseudocolor.configurations import SEQUENCES
from idh_pseudocolor.slices import (
    Normalization,
    SubjectError,
    SubjectSlice,
    extract_many,
    extract_subject,
    midpoint_slice,
    normalize_plane,
    stack_slices,
    to_display,
    tumor_z_range,
)
from tests.conftest import SEQUENCE_FILES, conf_normalization, write_subject

SHAPE = (20, 24, 16)
AFFINE = np.array([[1.5, 0, 0, -14.0], [0, 1.5, 0, -17.0], [0, 0, 2.0, -15.0], [0, 0, 0, 1]])
RAW = conf_normalization(method="none")


def make_volumes(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    volumes = {
        seq: (100 + 10 * x + 3 * y * (i + 1) + 50 * z + rng.uniform(0, 1, SHAPE)).astype(np.float32)
        for i, seq in enumerate(SEQUENCE_FILES)
    }
    mask = np.zeros(SHAPE, np.uint8)
    mask[6:12, 8:15, 4:12] = 1  # tumor z-range 4..11 -> slice 7
    return volumes, mask


def files_of(folder: Path) -> dict[str, str]:
    return {
        **{seq: str(folder / name) for seq, name in SEQUENCE_FILES.items()},
        "mask": str(folder / "MASK.nii.gz"),
    }


@pytest.fixture()
def subject(tmp_path) -> Path:
    volumes, mask = make_volumes()
    return write_subject(tmp_path / "S1", volumes, mask, AFFINE)


def test_slice_is_the_tumor_z_midpoint(subject):
    volumes, mask = make_volumes()
    result = extract_subject("S1", files_of(subject), RAW)
    assert (result.z_min, result.z_max, result.z) == (4, 11, 7)
    assert result.image.shape == (4, SHAPE[1], SHAPE[0])  # display: rows = A->P, cols = L->R
    for c, seq in enumerate(SEQUENCE_FILES):
        np.testing.assert_allclose(result.image[c], to_display(volumes[seq][:, :, 7]), rtol=1e-6)
    np.testing.assert_array_equal(result.mask, to_display(mask[:, :, 7]))
    assert result.volume_shape == SHAPE


def test_z_range_helpers():
    mask = np.zeros((3, 3, 10), bool)
    mask[1, 1, [2, 3, 8]] = True
    assert tumor_z_range(mask) == (2, 8)
    assert midpoint_slice(2, 8) == 5
    assert midpoint_slice(2, 9) == 5  # floor, as (z_min + z_max) // 2
    with pytest.raises(ValueError):
        tumor_z_range(np.zeros((3, 3, 3), bool))


@pytest.mark.parametrize(
    "codes", [("L", "P", "S"), ("P", "S", "L"), ("S", "R", "P"), ("A", "L", "I")]
)
def test_orientation_does_not_change_the_slice(tmp_path, subject, codes):
    reference = extract_subject("S1", files_of(subject), conf_normalization())
    out = tmp_path / "reoriented"
    out.mkdir()
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    for path in Path(subject).glob("*.nii.gz"):
        img = nib.load(path).as_reoriented(transform)
        assert nib.aff2axcodes(img.affine) == codes
        nib.save(img, out / path.name)
    result = extract_subject("S1", files_of(out), conf_normalization())
    assert (result.z_min, result.z_max, result.z) == (reference.z_min, reference.z_max, reference.z)
    np.testing.assert_allclose(result.image, reference.image, atol=1e-6)
    np.testing.assert_array_equal(result.mask, reference.mask)


def _reason(folder: Path, normalization: Normalization = RAW) -> SubjectError:
    with pytest.raises(SubjectError) as info:
        extract_subject("S1", files_of(folder), normalization)
    return info.value


def test_missing_file(subject):
    (subject / "T2.nii.gz").unlink()
    err = _reason(subject)
    assert err.file.endswith("T2.nii.gz") and "missing T2 file" in err.reason
    assert "S1" in str(err)


def test_garbage_file(subject):
    (subject / "FLAIR.nii.gz").write_bytes(b"this is not a NIfTI file")
    err = _reason(subject)
    assert err.file.endswith("FLAIR.nii.gz") and "unreadable FLAIR" in err.reason


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file_is_detected_even_beyond_the_slice(subject, keep):
    path = subject / "T1GD.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    err = _reason(subject)
    assert err.file.endswith("T1GD.nii.gz") and "corrupt T1ce" in err.reason


def test_multimember_gzip_is_not_mistaken_for_corruption(subject):
    path = subject / "T1.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    half = len(raw) // 2
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))  # valid, two members
    assert extract_subject("S1", files_of(subject), RAW).z == 7


def test_not_3d(subject):
    volumes, _ = make_volumes()
    four_d = np.stack([volumes["T2"], volumes["T2"]], axis=-1)
    nib.save(nib.Nifti1Image(four_d, AFFINE), subject / "T2.nii.gz")
    err = _reason(subject)
    assert "not 3-D" in err.reason and err.file.endswith("T2.nii.gz")


def test_trailing_singleton_dimension_is_accepted(subject):
    volumes, _ = make_volumes()
    nib.save(nib.Nifti1Image(volumes["T2"][..., None], AFFINE), subject / "T2.nii.gz")
    result = extract_subject("S1", files_of(subject), RAW)
    np.testing.assert_allclose(result.image[2], to_display(volumes["T2"][:, :, 7]), rtol=1e-6)


def test_shape_mismatch(subject):
    nib.save(nib.Nifti1Image(np.ones((20, 24, 15), np.float32), AFFINE), subject / "T1.nii.gz")
    err = _reason(subject)
    assert "shape" in err.reason and "differs" in err.reason and err.file.endswith("T1.nii.gz")


def test_affine_mismatch(subject):
    volumes, _ = make_volumes()
    shifted = AFFINE.copy()
    shifted[0, 3] += 3.0
    nib.save(nib.Nifti1Image(volumes["T1ce"], shifted), subject / "T1GD.nii.gz")
    err = _reason(subject)
    assert "affine differs" in err.reason and err.file.endswith("T1GD.nii.gz")


def test_empty_mask(subject):
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), subject / "MASK.nii.gz")
    err = _reason(subject)
    assert "empty tumor mask" in err.reason and err.file.endswith("MASK.nii.gz")


def test_non_finite_values(subject):
    volumes, _ = make_volumes()
    volumes["FLAIR"][:, :, 7][3, 3] = np.nan
    nib.save(nib.Nifti1Image(volumes["FLAIR"], AFFINE), subject / "FLAIR.nii.gz")
    err = _reason(subject)
    assert "non-finite" in err.reason and err.file.endswith("FLAIR.nii.gz")


def test_a_float_mask_is_read_like_an_integer_one_and_refused_with_nan(subject):
    # segmentation tools often save float32 masks: 0.0/1.0 must select the same slice, and a NaN
    # in one is an error naming the mask, not a silently dropped voxel
    expected = extract_subject("S1", files_of(subject), RAW)
    _, mask = make_volumes()
    nib.save(nib.Nifti1Image(mask.astype(np.float32), AFFINE), subject / "MASK.nii.gz")
    got = extract_subject("S1", files_of(subject), RAW)
    assert (
        (got.z, got.z_min, got.z_max) == (expected.z, expected.z_min, expected.z_max) == (7, 4, 11)
    )
    np.testing.assert_array_equal(got.mask, expected.mask)
    np.testing.assert_array_equal(got.image, expected.image)
    broken = mask.astype(np.float32)
    broken[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(broken, AFFINE), subject / "MASK.nii.gz")
    err = _reason(subject)
    assert err.reason == "non-finite values in mask" and err.file.endswith("MASK.nii.gz")


def test_constant_slice_has_no_contrast(subject):
    nib.save(nib.Nifti1Image(np.full(SHAPE, 5.0, np.float32), AFFINE), subject / "T1.nii.gz")
    err = _reason(subject, conf_normalization())
    assert "no contrast" in err.reason


def test_percentile_normalization_is_robust_and_keeps_background():
    rng = np.random.default_rng(1)
    plane = np.zeros((40, 40), np.float32)
    plane[5:35, 5:35] = rng.uniform(100, 200, (30, 30))
    plane[10, 10] = 1e6  # one hot voxel must not squash the rest
    out = normalize_plane(plane, Normalization("percentile", lower=1, upper=99))
    assert out[0, 0] == 0.0 and out.max() == 1.0 and out.min() == 0.0
    assert 0.3 < np.median(out[5:35, 5:35]) < 0.7
    z = normalize_plane(plane, conf_normalization(method="zscore"))
    assert z[0, 0] == 0.0
    with pytest.raises(ValueError):
        conf_normalization(method="bogus")


def test_extract_many_runs_in_parallel_and_reports_errors(tmp_path):
    volumes, mask = make_volumes()
    good = write_subject(tmp_path / "good", volumes, mask, AFFINE)
    bad = write_subject(tmp_path / "bad", volumes, np.zeros_like(mask), AFFINE)
    results = list(
        extract_many(
            [("good", files_of(good)), ("bad", files_of(bad))],
            RAW,
            n_workers=2,
            progress=False,
        )
    )
    assert results[0].subject_id == "good" and results[0].z == 7
    assert isinstance(results[1], SubjectError) and results[1].subject_id == "bad"
    stacked = stack_slices([results[0]], {"good": 1})
    assert stacked["images"].shape == (1, 4, SHAPE[1], SHAPE[0]) and stacked["labels"].tolist() == [
        1
    ]


def test_uncompressed_nifti_is_read_and_truncation_detected(tmp_path):
    volumes, mask = make_volumes()
    folder = tmp_path / "plain"
    folder.mkdir()
    names = {
        "T1": "t1.nii",
        "T1ce": "t1ce.nii",
        "T2": "t2.nii",
        "FLAIR": "flair.nii",
        "mask": "mask.nii",
    }
    for key, name in names.items():
        nib.save(nib.Nifti1Image(mask if key == "mask" else volumes[key], AFFINE), folder / name)
    files = {key: str(folder / name) for key, name in names.items()}
    result = extract_subject("P", files, RAW)
    np.testing.assert_allclose(result.image[3], to_display(volumes["FLAIR"][:, :, 7]), rtol=1e-6)
    data = (folder / "t2.nii").read_bytes()
    (folder / "t2.nii").write_bytes(data[:-100])
    with pytest.raises(SubjectError, match="truncated"):
        extract_subject("P", files, RAW)


def test_scaled_integer_storage_matches_nibabel(tmp_path, subject):
    """int16 with scl_slope/inter (how the phantom and many scanners store data) reads as nibabel
    does."""
    img = nib.load(subject / "T2.nii.gz")
    scaled = nib.Nifti1Image(np.rint(img.get_fdata() * 7).astype(np.int16), AFFINE)
    scaled.header.set_slope_inter(1 / 7, 2.5)
    nib.save(scaled, subject / "T2.nii.gz")
    expected = nib.load(subject / "T2.nii.gz").get_fdata()[:, :, 7]
    result = extract_subject("S1", files_of(subject), RAW)
    np.testing.assert_allclose(result.image[2], to_display(expected), rtol=1e-5)


def test_stack_slices_centres_smaller_slices_in_zero_padding():
    """Mixed grids (e.g. two sites) stack into the largest shape, each slice centred: a 2x3 slice
    in a 5x6 frame starts at row (5-2)//2 = 1 and column (6-3)//2 = 1, zeros around it."""
    big = SubjectSlice("big", np.ones((4, 5, 6), np.float32), np.ones((5, 6), np.uint8), 0, 0, 0)
    small_image = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3) + 1
    small = SubjectSlice("small", small_image, np.array([[1, 0, 1], [0, 1, 0]], np.uint8), 3, 5, 4)
    stacked = stack_slices([big, small], {"big": 0, "small": 1})
    assert stacked["images"].shape == (2, 4, 5, 6) and stacked["masks"].shape == (2, 5, 6)
    expected = np.zeros((4, 5, 6), np.float32)
    expected[:, 1:3, 1:4] = small_image
    np.testing.assert_array_equal(stacked["images"][1], expected)
    expected_mask = np.zeros((5, 6), np.uint8)
    expected_mask[1:3, 1:4] = [[1, 0, 1], [0, 1, 0]]
    np.testing.assert_array_equal(stacked["masks"][1], expected_mask)
    np.testing.assert_array_equal(stacked["images"][0], 1.0)
    assert stacked["labels"].tolist() == [0, 1] and stacked["slice_index"].tolist() == [0, 4]
    assert stacked["subject_ids"].tolist() == ["big", "small"]


def test_each_normalization_by_hand():
    """Every method on a plane whose foreground is 25 voxels 1..25 and whose background is 0."""
    plane = np.zeros((7, 7), np.float32)
    plane[1:6, 1:6] = np.arange(1, 26, dtype=np.float32).reshape(5, 5)
    fg = plane > 0
    values = plane[fg]
    none = normalize_plane(plane, conf_normalization(method="none"))
    assert none.dtype == np.float32 and np.array_equal(none, plane)
    minmax = normalize_plane(plane, conf_normalization(method="minmax"))
    np.testing.assert_allclose(minmax[fg], (values - 1) / 24, rtol=1e-6)
    assert (minmax[~fg] == 0).all() and minmax.dtype == np.float32
    lo, hi = np.percentile(values, [10, 90])  # 3.4 and 22.6: the ends are clipped
    pct = normalize_plane(plane, Normalization("percentile", lower=10, upper=90))
    np.testing.assert_allclose(pct[fg], np.clip((values - lo) / (hi - lo), 0, 1), rtol=1e-6)
    assert pct[1, 1] == 0.0 and pct[5, 5] == 1.0 and (pct[~fg] == 0).all()
    z = normalize_plane(plane, conf_normalization(method="zscore"))
    # (x - mean) / std over the foreground, not clipped: 1 is 1.66 std below the mean of 13
    np.testing.assert_allclose(z[fg], (values - values.mean()) / values.std(), rtol=1e-5)
    assert z.min() < -1.5 and z.max() > 1.5 and (z[~fg] == 0).all()


def test_a_small_foreground_is_normalized_over_the_whole_plane():
    """Fewer than 16 non-zero voxels: the percentiles come from every voxel (zeros too)."""
    plane = np.zeros((4, 4), np.float32)
    plane[0, :3] = [2.0, 4.0, 6.0]
    out = normalize_plane(plane, conf_normalization(method="minmax"))  # over 0..6, not 2..6
    np.testing.assert_allclose(out[0, :3], [2 / 6, 4 / 6, 1.0], rtol=1e-6)
    sixteen = np.zeros((5, 5), np.float32)
    sixteen[:4, :4] = np.arange(2, 18, dtype=np.float32).reshape(4, 4)
    out = normalize_plane(sixteen, conf_normalization(method="minmax"))  # 16 voxels: 2..17
    assert out[0, 0] == 0.0 and out[3, 3] == 1.0


def test_normalization_settings_are_checked():
    Normalization("percentile", lower=0, upper=100)  # the widest range is allowed
    conf_normalization(method="minmax")
    conf_normalization(method="zscore")
    conf_normalization(method="none")
    for bad in (
        dict(lower=-1),
        dict(upper=100.5),
        dict(lower=50, upper=50),
        dict(lower=60, upper=40),
    ):
        with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
            Normalization(**{"method": "percentile", "lower": 0.5, "upper": 99.5, **bad})
    with pytest.raises(ValueError, match="Unknown normalization method 'bogus'"):
        conf_normalization(method="bogus")


def test_prefix_reader_on_plain_gzip_and_multimember_files(tmp_path):
    from idh_pseudocolor.slices import _decompressed_prefix

    data = bytes(range(256)) * 40
    plain, packed, two = tmp_path / "a.nii", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    two.write_bytes(gzip.compress(data[:3000]) + gzip.compress(data[3000:]))
    for path in (plain, packed, two):
        assert _decompressed_prefix(path, 5000) == data[:5000]
        assert _decompressed_prefix(path, len(data)) == data
        assert _decompressed_prefix(path, 1) == data[:1]
        with pytest.raises(ValueError, match=f"file ends after {len(data)} of {len(data) + 1}"):
            _decompressed_prefix(path, len(data) + 1)
    assert _decompressed_prefix(two, 3001) == data[:3001]  # into the second member


def test_axial_plane_when_the_axial_axis_is_not_the_slowest_on_disk(tmp_path, subject):
    """A volume stored with S first (axes S, R, A): the plane is gathered, not read as a block."""
    from idh_pseudocolor.slices import read_axial_plane

    img = nib.load(subject / "T1.nii.gz")
    data = np.asarray(img.dataobj)
    turned = nib.Nifti1Image(np.transpose(data, (2, 0, 1)).copy(), img.affine[:, [2, 0, 1, 3]])
    nib.save(turned, tmp_path / "sra.nii.gz")
    back = nib.load(tmp_path / "sra.nii.gz")
    ornt = ornt_transform(nib.io_orientation(back.affine), axcodes2ornt("RAS"))
    for z in (0, 7, SHAPE[2] - 1):
        np.testing.assert_array_equal(read_axial_plane(back, z, ornt), data[:, :, z])


def _break(path: Path, how: str) -> None:
    """Damage one file of a subject the way real data arrives damaged."""
    replacement = {
        "4-D": np.ones((*SHAPE, 2), np.float32),
        "empty": np.zeros(SHAPE, np.uint8),
        "NaN": np.full(SHAPE, np.nan, np.float32),
        "constant": np.full(SHAPE, 5.0, np.float32),
    }
    if how == "delete":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"not a NIfTI")
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:-500])
    else:
        nib.save(nib.Nifti1Image(replacement[how], AFFINE), path)


@pytest.mark.parametrize(
    ("file", "how", "reason"),
    [
        ("T2.nii.gz", "delete", "missing T2 file"),
        ("FLAIR.nii.gz", "garbage", "unreadable FLAIR volume"),
        ("T1GD.nii.gz", "truncate", "corrupt T1ce volume"),
        ("T2.nii.gz", "4-D", "not 3-D"),
        ("MASK.nii.gz", "empty", "empty tumor mask"),
        ("MASK.nii.gz", "NaN", "non-finite values in mask"),
        ("T1.nii.gz", "constant", "T1 slice z=7: no contrast"),
    ],
)
def test_every_error_names_the_subject_and_the_file(subject, file, how, reason):
    """What the manifest and `predict`'s errors.csv show: who, which file, why."""
    path = subject / file
    _break(path, how)
    err = _reason(subject, conf_normalization())
    assert err.subject_id == "S1" and err.file == str(path)
    assert reason in err.reason
    assert str(err) == f"subject S1: {path}: {err.reason}"
    assert str(SubjectError("S2", None, "no label")) == "subject S2: no label"
    assert SubjectError("S2", "", "x").file == ""


def test_slope_only_scaling_is_applied(tmp_path, subject):
    """int16 with a slope and no intercept (how the phantom stores volumes) reads scaled."""
    img = nib.load(subject / "T2.nii.gz")
    scaled = nib.Nifti1Image(np.rint(img.get_fdata() * 7).astype(np.int16), AFFINE)
    scaled.header.set_slope_inter(1 / 7, 0.0)
    nib.save(scaled, subject / "T2.nii.gz")
    expected = nib.load(subject / "T2.nii.gz").get_fdata()[:, :, 7]
    result = extract_subject("S1", files_of(subject), RAW)
    np.testing.assert_allclose(result.image[2], to_display(expected), rtol=1e-5)
    offset_only = nib.Nifti1Image(np.rint(img.get_fdata()).astype(np.int16), AFFINE)
    offset_only.header.set_slope_inter(1.0, 100.0)
    nib.save(offset_only, subject / "T2.nii.gz")
    expected = nib.load(subject / "T2.nii.gz").get_fdata()[:, :, 7]
    np.testing.assert_allclose(
        extract_subject("S1", files_of(subject), RAW).image[2], to_display(expected), rtol=1e-5
    )


def test_display_orientation_by_hand():
    """Canonical [x, y] (x: left to right, y: posterior to anterior) -> rows anterior first,
    columns left to right (neurological convention)."""
    plane = np.array([[1, 2, 3], [4, 5, 6]])  # x = 0, 1; y = 0, 1, 2
    np.testing.assert_array_equal(to_display(plane), [[3, 6], [2, 5], [1, 4]])
    assert to_display(plane).flags["C_CONTIGUOUS"]


def test_stacked_arrays_have_the_documented_types_and_centring():
    big = SubjectSlice("big", np.ones((4, 6, 7), np.float64), np.ones((6, 7), np.int64), 0, 9, 4)
    small = SubjectSlice("small", np.full((4, 2, 3), 2.0), np.ones((2, 3), bool), 3, 5, 4)
    stacked = stack_slices([big, small], {"big": 0, "small": 1})
    assert stacked["images"].dtype == np.float32 and stacked["masks"].dtype == np.uint8
    assert stacked["labels"].dtype == np.int8 and stacked["labels"].tolist() == [0, 1]
    assert stacked["slice_index"].dtype == np.int32 and stacked["slice_index"].tolist() == [4, 4]
    assert stacked["sequences"].tolist() == ["T1", "T1ce", "T2", "FLAIR"]
    assert stacked["subject_ids"].tolist() == ["big", "small"]
    # a 2x3 slice in a 6x7 frame: rows (6-2)//2 = 2.., columns (7-3)//2 = 2..
    assert np.argwhere(stacked["masks"][1]).min(axis=0).tolist() == [2, 2]
    assert np.argwhere(stacked["images"][1, 0]).max(axis=0).tolist() == [3, 4]


def test_serial_and_parallel_extraction_give_the_same_results(tmp_path):
    volumes, mask = make_volumes()
    good = write_subject(tmp_path / "good", volumes, mask, AFFINE)
    bad = write_subject(tmp_path / "bad", volumes, np.zeros_like(mask), AFFINE)
    subjects = [("good", files_of(good)), ("bad", files_of(bad))]
    serial = list(
        extract_many(subjects, conf_normalization(method="minmax"), n_workers=1, progress=False)
    )
    parallel = list(
        extract_many(subjects, conf_normalization(method="minmax"), n_workers=2, progress=False)
    )
    assert [r.subject_id for r in serial] == ["good", "bad"]
    np.testing.assert_array_equal(serial[0].image, parallel[0].image)
    assert serial[0].image.max() == 1.0  # minmax, as asked
    assert isinstance(serial[1], SubjectError) and serial[1].file == str(bad / "MASK.nii.gz")
    assert str(serial[1]) == str(parallel[1])


# ---- patients missing sequences (predict) ---------------------------------------------------


def test_an_absent_sequence_is_a_zero_channel_when_allowed(subject):
    full = extract_subject("S1", files_of(subject), RAW)
    (subject / "T2.nii.gz").unlink()
    assert "missing T2 file" in _reason(subject).reason  # data_engineering: all four required
    partial = extract_subject("S1", files_of(subject), RAW, required=())
    assert partial.present == ("T1", "T1ce", "FLAIR") and full.present == SEQUENCES
    assert not partial.image[2].any() and partial.image.shape == full.image.shape
    np.testing.assert_array_equal(partial.image[[0, 1, 3]], full.image[[0, 1, 3]])
    assert (partial.z, partial.volume_shape) == (full.z, full.volume_shape)
    (subject / "T1.nii.gz").unlink()  # the rest is still required when named
    with pytest.raises(SubjectError, match="missing T1 file"):
        extract_subject("S1", files_of(subject), RAW, required=("T1",))
    results = list(extract_many([("S1", files_of(subject))], RAW, 1, False, required=()))
    assert results[0].present == ("T1ce", "FLAIR")


def test_a_broken_or_misplaced_file_is_an_error_even_when_sequences_may_be_absent(subject):
    truncated = subject / "T2.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(SubjectError) as info:
        extract_subject("S1", files_of(subject), RAW, required=())
    assert info.value.file == str(truncated) and "T2" in info.value.reason
    (subject / "T2.nii.gz").unlink()
    volumes, mask = make_volumes()
    nib.save(nib.Nifti1Image(volumes["FLAIR"][:-1], AFFINE), subject / "FLAIR.nii.gz")
    with pytest.raises(SubjectError, match="FLAIR shape"):  # geometry of the present ones
        extract_subject("S1", files_of(subject), RAW, required=())


def test_the_mask_and_one_sequence_stay_required(subject):
    (subject / "MASK.nii.gz").unlink()
    with pytest.raises(SubjectError, match="missing mask file"):
        extract_subject("S1", files_of(subject), RAW, required=())
    for name in SEQUENCE_FILES.values():
        (subject / name).unlink()
    with pytest.raises(SubjectError, match="no sequence file"):
        extract_subject("S1", files_of(subject), RAW, required=())
