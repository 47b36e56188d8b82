"""Validating one subject's volumes and extracting the axial slice at the tumor's z-midpoint.

Speed and memory come from reading only what the slice needs: the mask is read whole (its
z-range decides the slice), each sequence only up to and including the chosen plane
(decompressed with ISA-L), and no volume is ever converted to float64. Orientation is handled on the
header (nibabel's orientation tools), so a file stored LPS or RAS yields the same canonical slice.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from isal import isal_zlib
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from idh_pseudocolor.cohort import FILE_KEYS, LabelError, parse_idh
from idh_pseudocolor.configurations import SEQUENCES

_RAS = axcodes2ornt(("R", "A", "S"))
_AFFINE_TOLERANCE_MM = 1e-3


class SubjectError(Exception):
    """One subject cannot be used; names the file and the reason, for the manifest."""

    def __init__(self, subject_id: str, file: str | os.PathLike | None, reason: str) -> None:
        self.subject_id = subject_id
        self.file = str(file) if file else ""
        self.reason = reason
        where = f"{self.file}: " if self.file else ""
        super().__init__(f"subject {subject_id}: {where}{reason}")

    def __reduce__(self):  # picklable across worker processes
        return (SubjectError, (self.subject_id, self.file, self.reason))


@dataclass(frozen=True)
class Normalization:
    """How slice intensities are scaled to [0, 1].

    ``percentile`` (the project's choice, conf/base/parameters_data_engineering.yml) maps the
    ``lower``/``upper`` percentiles of the slice's non-zero voxels to 0/1 and clips: robust to the
    scanner-dependent scale and the few hot voxels of skull-stripped MRI. ``zscore`` standardises
    the foreground; ``minmax`` uses its extremes; ``none`` keeps scanner units.
    """

    method: str
    lower: float
    upper: float

    def __post_init__(self) -> None:
        if self.method not in {"percentile", "zscore", "minmax", "none"}:
            raise ValueError(f"Unknown normalization method {self.method!r}")
        if not 0 <= self.lower < self.upper <= 100:
            raise ValueError(
                "Normalization percentiles must satisfy 0 <= lower < upper <= 100, "
                f"got {self.lower}, {self.upper}"
            )


@dataclass(frozen=True)
class SubjectSlice:
    """The extracted data for one subject, in display orientation (anterior up, right on the
    right)."""

    subject_id: str
    image: np.ndarray  # (4, H, W) float32, channels in SEQUENCES order
    mask: np.ndarray  # (H, W) uint8, 1 = tumor
    z_min: int  # tumor z-range and chosen slice, canonical RAS voxel indices
    z_max: int
    z: int
    volume_shape: tuple[int, int, int] = field(default=(0, 0, 0))  # canonical RAS shape
    # the sequences whose files were there; an absent one's channel is zeros (predict only)
    present: tuple[str, ...] = SEQUENCES


# --------------------------------------------------------------------------- geometry


def canonical_geometry(
    img: nib.spatialimages.SpatialImage,
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """(orientation transform to RAS, canonical shape, canonical affine), from the header alone."""
    shape = img.shape[:3]
    ornt = ornt_transform(io_orientation(img.affine), _RAS)
    canonical_shape = tuple(int(shape[int(ax)]) for ax in np.argsort(ornt[:, 0]))
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return ornt, canonical_shape, affine


def tumor_z_range(mask: np.ndarray) -> tuple[int, int]:
    """First and last axial (z) index holding tumor in a canonical RAS mask."""
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    if zs.size == 0:
        raise ValueError("empty mask")
    return int(zs[0]), int(zs[-1])


def midpoint_slice(z_min: int, z_max: int) -> int:
    """SPEC: the axial slice at the midpoint of the tumor's z-range."""
    return (z_min + z_max) // 2


def _decompressed_prefix(path: Path, nbytes: int) -> bytes:
    """The first ``nbytes`` of a (possibly gzipped) file, decompressing no further.

    One C call with ISA-L (2x zlib's speed) instead of Python's chunked gzip reader; handles
    multi-member gzip. Raises ValueError when the file ends early.
    """
    raw = path.read_bytes()
    if not path.name.endswith(".gz"):
        out = raw[:nbytes]
    else:
        parts, have = [], 0
        while raw and have < nbytes:
            decoder = isal_zlib.decompressobj(31)
            part = decoder.decompress(raw, nbytes - have)
            parts.append(part)
            have += len(part)
            if decoder.unconsumed_tail or not decoder.eof:
                break
            raw = decoder.unused_data
        out = b"".join(parts)
    if len(out) < nbytes:
        raise ValueError(f"file ends after {len(out)} of {nbytes} bytes")
    return out


def _read_voxels(img: nib.spatialimages.SpatialImage, start: int, count: int) -> np.ndarray:
    """``count`` voxels from flat (Fortran-order) index ``start``, scaled like nibabel does."""
    dtype = img.get_data_dtype()
    offset = int(img.dataobj.offset) + start * dtype.itemsize
    buffer = _decompressed_prefix(Path(img.get_filename()), offset + count * dtype.itemsize)
    values = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if slope != 1.0 or inter != 0.0:
        return values.astype(np.float32) * np.float32(slope) + np.float32(inter)
    return values


def read_volume(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The whole 3-D array as stored (scaled), decompressed in one call."""
    shape = img.shape[:3]
    return _read_voxels(img, 0, int(np.prod(shape))).reshape(shape, order="F")


def read_axial_plane(img: nib.spatialimages.SpatialImage, z: int, ornt: np.ndarray) -> np.ndarray:
    """Canonical axial plane z as float32 [x, y], reading only up to that plane.

    The array axis that maps to the S axis is indexed directly (flipped if stored I->S
    reversed); the remaining two axes are permuted/flipped with the 2-D part of the orientation
    transform. When that axis is the slowest on disk (RAS, LPS, ...: the usual case) the plane
    is one contiguous block read straight from the stream; otherwise nibabel's array proxy
    gathers it.
    """
    axial_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    n = img.shape[axial_axis]
    index = z if ornt[axial_axis, 1] == 1 else n - 1 - z
    if axial_axis == 2:
        nx, ny = img.shape[:2]
        plane = (
            _read_voxels(img, index * nx * ny, nx * ny)
            .reshape((nx, ny), order="F")
            .astype(np.float32)
        )
    else:
        slicer: list[int | slice] = [slice(None)] * 3 + [0] * (len(img.shape) - 3)
        slicer[axial_axis] = index
        plane = np.asarray(img.dataobj[tuple(slicer)], dtype=np.float32)
    rest = [i for i in range(3) if i != axial_axis]
    return apply_orientation(plane, ornt[rest])


def to_display(plane: np.ndarray) -> np.ndarray:
    """[x, y] canonical plane -> rows anterior-to-posterior, columns left-to-right
    (neurological)."""
    return np.ascontiguousarray(plane.T[::-1])


# --------------------------------------------------------------------------- checks


def check_integrity(path: Path, img: nib.spatialimages.SpatialImage) -> None:
    """Detect truncated files without decompressing them.

    A gzip stream ends with its uncompressed size (mod 2**32); a truncated file ends with
    something else. Only when that trailer disagrees (multi-member gzip, trailing data) is the
    stream decompressed fully, which verifies every CRC.
    """
    header = img.header
    expected = int(img.dataobj.offset) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
    if path.name.endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            (isize,) = struct.unpack("<I", fh.read(4))
        if isize == expected % 2**32:
            return
        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValueError(f"truncated or corrupt gzip stream ({exc})") from None
    elif path.stat().st_size < expected:
        raise ValueError(f"truncated: {path.stat().st_size} bytes, header needs {expected}")


def _open_volume(subject_id: str, key: str, path: Path) -> nib.spatialimages.SpatialImage:
    if not path.is_file():
        raise SubjectError(subject_id, path, f"missing {key} file")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for garbage input
        raise SubjectError(
            subject_id, path, f"unreadable {key} volume ({type(exc).__name__}: {exc})"
        ) from None
    if len(img.shape) < 3 or any(s != 1 for s in img.shape[3:]):
        raise SubjectError(subject_id, path, f"{key} volume is not 3-D (shape {img.shape})")
    try:
        check_integrity(path, img)
    except (ValueError, OSError) as exc:
        raise SubjectError(subject_id, path, f"corrupt {key} volume: {exc}") from None
    return img


def normalize_plane(plane: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Scale one sequence's slice; raises ValueError when the slice has no contrast."""
    if normalization.method == "none":
        return plane.astype(np.float32, copy=False)
    foreground = plane != 0
    values = plane[foreground] if foreground.sum() >= 16 else plane.ravel()
    if normalization.method == "percentile":
        lo, hi = np.percentile(values, [normalization.lower, normalization.upper])
    elif normalization.method == "minmax":
        lo, hi = values.min(), values.max()
    else:  # zscore
        lo, hi = values.mean(), values.mean() + values.std()
    if not hi > lo:
        raise ValueError("no contrast in the slice (constant intensity)")
    scaled = (plane - lo) / (hi - lo)
    if normalization.method != "zscore":
        scaled = np.clip(scaled, 0.0, 1.0)
    scaled[~foreground] = 0.0
    return scaled.astype(np.float32, copy=False)


# --------------------------------------------------------------------------- per subject


def extract_subject(
    subject_id: str,
    files: Mapping[str, str | os.PathLike | None],
    normalization: Normalization,
    required: Collection[str] = SEQUENCES,
) -> SubjectSlice:
    """Validate one subject's sequences and mask and return its normalized mid-tumor slice.

    Every sequence in ``required`` must have its file (data_engineering: all four); a sequence
    outside it whose file is absent becomes a channel of zeros and is left out of
    ``SubjectSlice.present`` (``predict`` then picks a configuration without it). A file that
    exists is checked whatever ``required`` says. Raises :class:`SubjectError` naming the file
    for: a missing required, unreadable, truncated or non-3-D file; no sequence at all; a sequence
    whose canonical shape or affine differs from the mask's; an empty or non-finite mask;
    non-finite values or no contrast in a sequence's slice.
    """
    unknown = set(required) - set(SEQUENCES)
    if unknown:
        raise ValueError(f"required sequences {sorted(unknown)} are not among {SEQUENCES}")
    paths = {key: Path(files[key]) for key in (*SEQUENCES, "mask") if files.get(key)}
    present = tuple(
        key for key in SEQUENCES if key in required or (key in paths and paths[key].exists())
    )
    if not present:
        raise SubjectError(subject_id, None, f"no sequence file ({', '.join(SEQUENCES)})")
    for key in (*present, "mask"):
        paths.setdefault(key, Path(f"<no {key} file given>"))
    images = {key: _open_volume(subject_id, key, paths[key]) for key in (*present, "mask")}
    geometry = {key: canonical_geometry(img) for key, img in images.items()}
    _check_geometry(subject_id, paths, geometry, present)
    mask, z_min, z_max = _tumor_range(subject_id, paths["mask"], images["mask"], geometry)
    z = midpoint_slice(z_min, z_max)
    planes = {
        key: _channel(subject_id, key, paths[key], images[key], geometry[key][0], z, normalization)
        for key in present
    }
    shape = next(iter(planes.values())).shape
    channels = [planes.get(key, np.zeros(shape, np.float32)) for key in SEQUENCES]
    return SubjectSlice(
        subject_id=subject_id,
        image=np.stack(channels).astype(np.float32, copy=False),
        mask=to_display(mask[:, :, z]).astype(np.uint8),
        z_min=z_min,
        z_max=z_max,
        z=z,
        volume_shape=geometry["mask"][1],  # type: ignore[arg-type]
        present=present,
    )


def _check_geometry(
    subject_id: str,
    paths: Mapping[str, Path],
    geometry: Mapping[str, tuple[np.ndarray, tuple[int, ...], np.ndarray]],
    present: Iterable[str],
) -> None:
    """Every present sequence on the mask's grid (canonical shape and affine)."""
    _, ref_shape, ref_affine = geometry["mask"]
    for key in present:
        _, shape, affine = geometry[key]
        if shape != ref_shape:
            raise SubjectError(
                subject_id,
                paths[key],
                f"{key} shape {shape} differs from mask shape {ref_shape} (RAS)",
            )
        if not np.allclose(affine, ref_affine, atol=_AFFINE_TOLERANCE_MM):
            raise SubjectError(
                subject_id,
                paths[key],
                f"{key} affine differs from the mask's (RAS): not co-registered",
            )


def _tumor_range(
    subject_id: str,
    path: Path,
    mask_img: nib.spatialimages.SpatialImage,
    geometry: Mapping[str, tuple[np.ndarray, tuple[int, ...], np.ndarray]],
) -> tuple[np.ndarray, int, int]:
    """The canonical boolean mask and its tumor z-range; the mask decides the slice."""
    try:
        raw = read_volume(mask_img)
    except Exception as exc:
        raise SubjectError(subject_id, path, f"unreadable mask data ({exc})") from None
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise SubjectError(subject_id, path, "non-finite values in mask")
    mask = apply_orientation(raw > 0, geometry["mask"][0])
    try:
        z_min, z_max = tumor_z_range(mask)
    except ValueError:
        raise SubjectError(subject_id, path, "empty tumor mask (no voxel > 0)") from None
    return mask, z_min, z_max


def _channel(
    subject_id: str,
    key: str,
    path: Path,
    img: nib.spatialimages.SpatialImage,
    ornt: np.ndarray,
    z: int,
    normalization: Normalization,
) -> np.ndarray:
    """One sequence's normalized axial plane z, in display orientation."""
    try:
        plane = read_axial_plane(img, z, ornt)
    except Exception as exc:
        raise SubjectError(
            subject_id, path, f"unreadable {key} data ({type(exc).__name__}: {exc})"
        ) from None
    bad = int((~np.isfinite(plane)).sum())
    if bad:
        raise SubjectError(
            subject_id, path, f"{bad} non-finite values (NaN/inf) in {key} slice z={z}"
        )
    try:
        return to_display(normalize_plane(plane, normalization))
    except ValueError as exc:
        raise SubjectError(subject_id, path, f"{key} slice z={z}: {exc}") from None


def _extract_or_error(
    subject_id: str,
    files: Mapping[str, str],
    normalization: Normalization,
    required: Collection[str] = SEQUENCES,
) -> SubjectSlice | SubjectError:
    try:
        return extract_subject(subject_id, files, normalization, required)
    except SubjectError as exc:
        return exc


def extract_many(
    subjects: Iterable[tuple[str, Mapping[str, str]]],
    normalization: Normalization,
    n_workers: int | None = None,
    progress: bool = True,
    required: Collection[str] = SEQUENCES,
) -> Iterator[SubjectSlice | SubjectError]:
    """Extract subjects in parallel processes, yielding results in input order.

    Errors come back as :class:`SubjectError` values, never raised, so one bad subject cannot
    stop the cohort. Memory stays at a few volumes per worker whatever the cohort size.
    ``required`` as in :func:`extract_subject` (``predict`` passes none: any sequence may be
    absent).
    """
    from idh_pseudocolor.parallel import in_order

    required = tuple(required)
    tasks = [(sid, dict(files), normalization, required) for sid, files in subjects]
    yield from in_order(
        _extract_or_error,
        tasks,
        n_workers,
        desc="extracting slices",
        unit="subject",
        progress=progress,
    )


def stack_slices(slices: list[SubjectSlice], labels: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Stack subjects into arrays, zero-padding (centered) to the largest slice shape.

    Returns ``images`` (N, 4, H, W) float32, ``masks`` (N, H, W) uint8, ``subject_ids``,
    ``labels`` (N,) int8, ``slice_index`` (N,) int32 and ``sequences`` (4,).
    """
    if not slices:
        raise ValueError("no slices to stack")
    height = max(s.image.shape[1] for s in slices)
    width = max(s.image.shape[2] for s in slices)
    images = np.zeros((len(slices), len(SEQUENCES), height, width), dtype=np.float32)
    masks = np.zeros((len(slices), height, width), dtype=np.uint8)
    for i, s in enumerate(slices):
        h, w = s.image.shape[1:]
        top, left = (height - h) // 2, (width - w) // 2
        images[i, :, top : top + h, left : left + w] = s.image
        masks[i, top : top + h, left : left + w] = s.mask
    return {
        "images": images,
        "masks": masks,
        "subject_ids": np.array([s.subject_id for s in slices]),
        "labels": np.array([labels[s.subject_id] for s in slices], dtype=np.int8),
        "slice_index": np.array([s.z for s in slices], dtype=np.int32),
        "sequences": np.array(SEQUENCES),
    }


#: one row per subject of a cohort: included with its slice, or excluded with the reason
MANIFEST_COLUMNS = [
    "subject_id",
    "status",
    "reason",
    "label",
    "z_min",
    "z_max",
    "slice_index",
    "volume_shape",
]


def extract_cohort(
    cohort: pd.DataFrame,
    normalization: Normalization,
    n_workers: int | None,
    progress: bool,
) -> tuple[pd.DataFrame, list[SubjectSlice], dict[str, int]]:
    """Every subject of a discovered cohort (:func:`idh_pseudocolor.cohort.discover_cohort`):
    its label parsed and its slice extracted, or the file and reason it was excluded for.

    Returns the manifest (:data:`MANIFEST_COLUMNS`, then the cohort's own columns), the slices
    of the included subjects and every parsed label; nothing is raised for a bad subject.
    """
    records = cohort.to_dict("records")
    status: dict[str, dict[str, Any]] = {}
    candidates, labels = [], {}
    for row in records:
        sid = row["subject_id"]
        entry = status.setdefault(sid, {"status": "excluded", "reason": "", "label": pd.NA})
        if row.get("problem"):
            entry["reason"] = row["problem"]
            continue
        try:
            labels[sid] = entry["label"] = parse_idh(row["label_raw"])
        except LabelError as exc:
            entry["reason"] = f"{row.get('label_source', '')}: {exc}"
            continue
        candidates.append((sid, {key: row[f"file_{key}"] for key in FILE_KEYS}))

    slices = []
    for result in extract_many(candidates, normalization, n_workers, progress=progress):
        if isinstance(result, SubjectError):
            status[result.subject_id]["reason"] = (
                f"{result.file}: {result.reason}" if result.file else result.reason
            )
            continue
        slices.append(result)
        status[result.subject_id].update(
            status="included",
            z_min=result.z_min,
            z_max=result.z_max,
            slice_index=result.z,
            volume_shape="x".join(map(str, result.volume_shape)),
        )

    manifest = pd.DataFrame([{"subject_id": sid, **entry} for sid, entry in status.items()])
    manifest = manifest.reindex(columns=MANIFEST_COLUMNS).merge(
        cohort.drop(columns=["problem"]).drop_duplicates("subject_id"), on="subject_id", how="left"
    )
    for col in ("label", "z_min", "z_max", "slice_index"):
        manifest[col] = manifest[col].astype("Int64")

    return manifest, slices, labels
