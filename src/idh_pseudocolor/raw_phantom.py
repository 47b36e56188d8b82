"""The phantom's patients as a scanner gives them: raw studies to test preprocessing end to end.

:mod:`idh_pseudocolor.phantom` writes what preprocessing *produces* (skull-stripped volumes on
one template grid). A real study is nothing like that, so reading DICOM, identifying sequences,
stripping the skull and co-registering can only be tested on something that looks like one:

- every sequence has its own acquisition geometry (3-D sagittal T1, 3-D axial T1ce, 2-D axial
  T2 angled like an AC-PC plane, 2-D coronal FLAIR; thick 2-D slices average the anatomy across
  their thickness, with a gap), its own field of view and its own known rigid misalignment (the
  patient moved between series), resampled from the phantom's template-grid volume (linear);
- a head around the phantom's brain (CSF rim, dark bone, bright fat, skin) with the phantom's
  scanner effects (scale, bias field, Rician noise, offset), so skull stripping has something
  real to remove; air around it holds Rayleigh noise, as on a scanner;
- DICOM series (pydicom; one file per slice, the tags converters read, plus a 3-plane
  localizer) or NIfTI files with dcm2niix-style JSON sidecars under non-standard names;
- no tumor mask beside the images: the truth (template-grid volumes, MASK, metadata, the
  transforms) sits in ``out/.truth/``, a dot-folder that cohort readers skip.

The patients are the phantom's: :func:`idh_pseudocolor.phantom.render_phantom_subject` with the
labels of :func:`idh_pseudocolor.phantom.cohort_labels`, so (seed, index) is the same patient and
label as in the EGD-layout cohort (``.truth/<id>/`` holds exactly that cohort's files). Everything
else is drawn from a separate stream seeded by (seed, index): deterministic, whatever the workers.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import igzip
from scipy import ndimage

from idh_pseudocolor.configurations import SEQUENCES
from idh_pseudocolor.phantom import (
    GENERATOR_VERSION,
    TISSUE,
    PhantomSubject,
    _save,
    bias_at,
    cohort_labels,
    load_template,
    render_phantom_subject,
    subject_id_for,
)

RAW_VERSION = 1  # bump when the raw studies' content changes
FORMATS = ("dicom", "nifti")
#: third element of the raw stream's seed ([seed, index, _RAW_STREAM]): independent of the
#: phantom's own [seed, index] stream, which draws the patient
_RAW_STREAM = 23
#: the rigid misalignment per series: rotation about each axis and translation, uniform in +-
MAX_ROTATION_DEG = 8.0
MAX_TRANSLATION_MM = 10.0
#: the T2's slices are angled about the left-right axis (an AC-PC plane), uniform in +-
MAX_OBLIQUITY_DEG = 10.0
TRANSFORM_CONVENTION = (
    "template_to_acquired_ras is a 4x4 matrix M in RAS world millimetres: a point x of the "
    "template world (the MNI world of this folder's MASK.nii.gz and sequence volumes, "
    "homogeneous [R, A, S, 1]) is imaged at M @ x in the acquired series' world (RAS mm: the "
    "NIfTI's affine, or the DICOM patient coordinates (LPS) with their first two coordinates "
    "negated); acquired_to_template_ras is its inverse. Rigid: M = [[R, c + t - R c], [0, 1]], "
    "R = Rz(rz) Ry(ry) Rx(rx) (right-handed rotations about the R, A, S axes, degrees in "
    "rotation_deg as [rx, ry, rz]) about center_ras_mm c, then translation_mm t."
)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse
#: LPS direction cosines of an image plane: (i, along a row; j, down a column); k = i x j
_PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}
#: Head tissue outside the phantom's brain, tissue units (as phantom.TISSUE): CSF rim, bone, fat,
#: skin. Fat bright on T1 and (fast spin echo) T2, bone dark everywhere.
_HEAD_TISSUE = {
    "T1": (TISSUE["T1"][0], 0.04, 0.95, 0.45),
    "T1ce": (TISSUE["T1ce"][0], 0.04, 0.95, 0.50),
    "T2": (TISSUE["T2"][0], 0.04, 0.80, 0.35),
    "FLAIR": (TISSUE["FLAIR"][0], 0.04, 0.65, 0.40),
}
#: outer edges of the head's shells, mm from the brain's smoothed envelope
_SHELLS_MM = (2.0, 8.0, 13.0, 15.5)  # CSF rim, bone, fat (scalp), skin


@dataclass(frozen=True)
class Protocol:
    """One series' acquisition at 1 mm (``voxel_size`` > 1 scales every length but the field of
    view, so fast tests keep the shapes' proportions). ``slices`` x ``spacing_mm`` covers the head
    through-plane; 2-D slices are thicker than the grid and leave a gap (spacing > thickness)."""

    sequence: str  # SEQUENCES name, or "localizer"
    plane: str  # axial, sagittal or coronal (the localizer: all three)
    mode: str  # MRAcquisitionType: 2D or 3D
    pixel_mm: float
    matrix: int  # square in-plane matrix
    thickness_mm: float
    spacing_mm: float  # between slice centres
    slices: int
    tr_ms: float
    te_ms: float
    ti_ms: float | None
    flip_deg: float
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    series_number: int
    nifti_name: str  # arbitrary, as a converter's user might have named it
    contrast_agent: str | None = None


#: In acquisition order (the series numbers): localizer, T1, T2, FLAIR, then T1ce after contrast.
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(
        "localizer", "3-plane", "2D", 1.0, 256, 8.0, 8.0, 1, 8.6, 4.0, None, 20.0,
        ("GR",), ("SP", "OSP"), 1, "scout",
    ),
    Protocol(
        "T1", "sagittal", "3D", 1.0, 256, 1.0, 1.0, 192, 2300.0, 2.98, 900.0, 9.0,
        ("GR", "IR"), ("SK", "SP", "MP"), 2, "3d_sag_1mm",
    ),
    Protocol(
        "T2", "axial", "2D", 0.9, 256, 3.0, 3.3, 56, 5000.0, 95.0, None, 150.0,
        ("SE",), ("SK", "SP", "OSP"), 3, "ax_tse_3mm",
    ),
    Protocol(
        "FLAIR", "coronal", "2D", 1.0, 256, 4.0, 4.4, 52, 9000.0, 81.0, 2500.0, 150.0,
        ("SE", "IR"), ("SK", "SP", "MP", "OSP"), 4, "cor_dark_fluid_4mm",
    ),
    Protocol(
        "T1ce", "axial", "3D", 1.0, 256, 1.0, 1.0, 192, 2300.0, 2.98, 900.0, 9.0,
        ("GR", "IR"), ("SK", "SP", "MP"), 5, "ax_post_gd", contrast_agent="Gadobutrol",
    ),
)  # fmt: skip
#: Series descriptions as each vendor's console names them (sequence identification must read
#: more than a fixed name).
DESCRIPTIONS = {
    "Siemens": {
        "localizer": "localizer",
        "T1": "t1_mprage_sag_p2_iso",
        "T2": "t2_tse_tra_3mm",
        "FLAIR": "t2_tirm_cor_dark-fluid_4mm",
        "T1ce": "t1_mprage_tra_p2_iso_post",
    },
    "GE": {
        "localizer": "3-Plane Loc",
        "T1": "Sag 3D BRAVO",
        "T2": "Ax T2 FSE",
        "FLAIR": "Cor T2 FLAIR",
        "T1ce": "Ax 3D BRAVO +C",
    },
    "Philips": {
        "localizer": "Survey",
        "T1": "T1W_3D_TFE_SAG",
        "T2": "T2W_TSE_TRA",
        "FLAIR": "FLAIR_COR_4mm",
        "T1ce": "T1W_3D_TFE_TRA_GD",
    },
}


@dataclass(frozen=True)
class Grid:
    """An acquired image's voxel grid in DICOM's patient coordinates (LPS, mm).

    Axis i runs along a row (DICOM columns), j down a column (rows), k across slices;
    ``direction``'s columns are their LPS unit vectors (k = i x j), ``origin`` the centre of voxel
    (0, 0, 0). SimpleITK's arrays are indexed [k, j, i]; DICOM slice k's pixel array is its
    [k] plane, a NIfTI's data its transpose (i, j, k).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: np.ndarray
    origin: np.ndarray
    thickness: float  # a slice's thickness (samples across it are averaged)

    def affine_lps(self) -> np.ndarray:
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def affine_ras(self) -> np.ndarray:
        """Voxel index (i, j, k) -> RAS mm (the NIfTI affine)."""
        return _LPS @ self.affine_lps()

    def describe(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing_mm": [float(s) for s in self.spacing],
            "slice_thickness_mm": float(self.thickness),
            "direction_lps": self.direction.tolist(),
            "origin_lps": self.origin.tolist(),
            "affine_ras": self.affine_ras().tolist(),
            "axes": "i along a row (DICOM column index), j down a column (row index), k slices",
        }


@dataclass
class Series:
    """One acquired series in memory: its images (one for a volume, three for the localizer),
    each float32 in scanner units with its LPS geometry, and how it was acquired."""

    protocol: Protocol
    description: str
    images: list[sitk.Image]
    grids: list[Grid]
    template_to_acquired: np.ndarray  # 4x4, RAS mm (see TRANSFORM_CONVENTION)
    motion: dict[str, Any]  # rotation_deg, translation_mm, center_ras_mm
    obliquity_deg: float = 0.0


@dataclass
class RawSubject:
    """A phantom patient as the scanner gave it, before it is written."""

    subject_id: str
    phantom: PhantomSubject
    series: list[Series] = field(default_factory=list)

    def by_sequence(self) -> dict[str, Series]:
        return {s.protocol.sequence: s for s in self.series}


@dataclass(frozen=True)
class _Head:
    """The head around the template brain on a padded template grid (one per process and voxel
    size): the brain as a 0/1 weight, and the head's tissue on the voxels that hold some."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # RAS, the template's world
    pad: tuple[int, int, int]  # voxels added below i, j, k = 0 (the template's grid starts there)
    brain: np.ndarray  # float32, the template's brain mask on the padded grid
    index: np.ndarray  # flat indices of head (non-brain) voxels
    coords: np.ndarray  # (3, n) float32 RAS mm of those voxels
    units: dict[str, np.ndarray]  # sequence -> (n,) float32 tissue units
    center: np.ndarray  # RAS mm, centre of the head's bounding box


@lru_cache(maxsize=2)
def _head_model(voxel_size: float) -> _Head:
    """Shells around the phantom's brain, from distance transforms of its smoothed envelope
    (sulci closed): CSF rim, bone, fat and skin, with partial volume at every edge. The grid is
    padded where the template leaves too little room for them (below the brainstem)."""
    template = load_template(voxel_size)
    v = voxel_size
    reach = _SHELLS_MM[-1] + 4.0
    idx = np.argwhere(template.brain)
    lo, hi = idx.min(0), idx.max(0)
    pad_lo = [max(0, int(np.ceil(reach / v)) - int(a)) for a in lo]
    pad_hi = [
        max(0, int(np.ceil(reach / v)) - (n - 1 - int(b)))
        for b, n in zip(hi, template.shape, strict=True)
    ]
    brain = np.pad(template.brain, list(zip(pad_lo, pad_hi, strict=True)))
    affine = template.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.asarray(pad_lo, float)
    envelope = ndimage.gaussian_filter(brain.astype(np.float32), 3.0 / v) > 0.3
    envelope = ndimage.binary_fill_holes(envelope | brain)
    dist = ndimage.distance_transform_edt(~envelope, sampling=v).astype(np.float32)
    surface = np.where(envelope, -np.inf, dist - v / 2)  # mm from the envelope's surface

    def below(edge: float) -> np.ndarray:  # fraction of each voxel nearer than ``edge``
        return np.clip((edge - surface) / v + 0.5, 0, 1)

    edges = [below(e) for e in _SHELLS_MM]
    layers = [edges[0]] + [b - a for a, b in zip(edges, edges[1:], strict=False)]
    head = (edges[-1] > 0) & ~brain
    index = np.flatnonzero(head)
    units = {
        seq: sum(
            c * layer.ravel()[index] for c, layer in zip(_HEAD_TISSUE[seq], layers, strict=True)
        ).astype(np.float32)
        for seq in SEQUENCES
    }
    ijk = np.stack(np.unravel_index(index, brain.shape)).astype(np.float32)
    coords = (affine[:3, :3] @ ijk + affine[:3, 3:4]).astype(np.float32)
    extent = np.argwhere(head | brain)
    centre_ijk = (extent.min(0) + extent.max(0)) / 2.0
    return _Head(
        shape=brain.shape,
        affine=affine,
        pad=tuple(pad_lo),  # type: ignore[arg-type]
        brain=brain.astype(np.float32),
        index=index,
        coords=coords,
        units=units,
        center=affine[:3, :3] @ centre_ijk + affine[:3, 3],
    )


def rigid_matrix(
    rotation_deg: np.ndarray, translation_mm: np.ndarray, center: np.ndarray
) -> np.ndarray:
    """4x4 RAS matrix of TRANSFORM_CONVENTION: rotate by Rz Ry Rx about ``center``, then
    translate."""
    rx, ry, rz = np.deg2rad(rotation_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rot = rot_z @ rot_y @ rot_x
    matrix = np.eye(4)
    matrix[:3, :3] = rot
    matrix[:3, 3] = center + translation_mm - rot @ center
    return matrix


def _grid(protocol: Protocol, plane: str, centre_lps: np.ndarray, v: float, tilt: float) -> Grid:
    """The series' grid: the plane's axes (tilted about L-R by ``tilt`` degrees), centred on the
    head as a technologist places the field of view; lengths scaled by ``v``."""
    d_i, d_j = (np.asarray(a) for a in _PLANES[plane])
    direction = np.column_stack([d_i, d_j, np.cross(d_i, d_j)])
    if tilt:
        direction = (
            rigid_matrix(np.array([tilt, 0.0, 0.0]), np.zeros(3), np.zeros(3))[:3, :3] @ direction
        )  # right-handed about +L (LPS), i.e. -tilt about +R (RAS): obliquity_deg's sign
    pixel = protocol.pixel_mm * v
    matrix = max(2, int(round(protocol.matrix / v)))
    slices = max(1, int(round(protocol.slices / v)))
    spacing = (pixel, pixel, protocol.spacing_mm * v)
    size = (matrix, matrix, slices)
    half = (np.asarray(size) - 1) / 2.0 * np.asarray(spacing)
    return Grid(size, spacing, direction, centre_lps - direction @ half, protocol.thickness_mm * v)


def _fields_image(subject: PhantomSubject, head: _Head, seq: str) -> sitk.Image:
    """The template-grid fields a series samples, as one 3-component image (LPS): the phantom's
    brain volume, the brain weight, and the head's signal with the subject's scanner scale and
    bias field (its noise is added on the acquired grid, where a scanner adds it)."""
    fx = subject.effects
    brain_vol = np.pad(
        subject.volumes[seq],
        [
            (p, n - s - p)
            for p, n, s in zip(head.pad, head.shape, subject.volumes[seq].shape, strict=True)
        ],
    )
    head_signal = np.zeros(head.shape, np.float32)
    head_signal.ravel()[head.index] = (
        head.units[seq] * np.float32(fx.scale[seq]) * bias_at(fx.bias_coef, head.coords)
    )
    stacked = np.stack([brain_vol, head.brain, head_signal], axis=-1).transpose(2, 1, 0, 3)
    image = sitk.GetImageFromArray(np.ascontiguousarray(stacked, np.float32), isVector=True)
    affine_lps = _LPS @ head.affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in affine_lps[:3, 3]])
    image.SetDirection([float(d) for d in (affine_lps[:3, :3] / spacing).ravel()])
    return image


def _sample(
    fields: sitk.Image, grid: Grid, matrix: np.ndarray, samples: int, threads: int
) -> np.ndarray:
    """The fields at the grid's voxels through the rigid ``matrix`` (template -> acquired, RAS),
    linear; a thick slice averages ``samples`` planes across its thickness. (k, j, i, 3)."""
    inverse = _LPS @ np.linalg.inv(matrix) @ _LPS  # acquired LPS point -> template LPS point
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(x) for x in inverse[:3, :3].ravel()])
    transform.SetTranslation([float(x) for x in inverse[:3, 3]])
    total = None
    for m in range(samples):
        shift = ((m + 0.5) / samples - 0.5) * grid.thickness * grid.direction[:, 2]
        resampler = sitk.ResampleImageFilter()
        resampler.SetSize([int(n) for n in grid.size])
        resampler.SetOutputSpacing([float(s) for s in grid.spacing])
        resampler.SetOutputOrigin([float(o) for o in grid.origin + shift])
        resampler.SetOutputDirection([float(d) for d in grid.direction.ravel()])
        resampler.SetTransform(transform)
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetDefaultPixelValue(0.0)
        resampler.SetNumberOfThreads(threads)
        plane = sitk.GetArrayFromImage(resampler.Execute(fields))
        total = plane if total is None else total + plane
    return total / np.float32(samples)


def _image(
    rng: np.random.Generator,
    fields: sitk.Image,
    grid: Grid,
    matrix: np.ndarray,
    subject: PhantomSubject,
    seq: str,
    threads: int,
) -> sitk.Image:
    """One acquired image: brain as the phantom rendered it, head and air with Rician noise of
    the phantom's sd and its offset, mixed by the brain's partial volume."""
    samples = max(1, int(round(grid.thickness / float(np.linalg.norm(subject.affine[:3, 0])))))
    values = _sample(fields, grid, matrix, samples, threads)
    brain, weight, head = values[..., 0], values[..., 1], values[..., 2]
    fx = subject.effects
    sd = np.float32(fx.noise_sd[seq])
    n1 = rng.standard_normal(head.shape, dtype=np.float32) * sd
    n2 = rng.standard_normal(head.shape, dtype=np.float32) * sd
    outside = np.sqrt((head + n1) ** 2 + n2**2) + np.float32(fx.offset[seq])
    data = (brain + np.clip(1 - weight, 0, 1) * outside).astype(np.float32)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetOrigin([float(o) for o in grid.origin])
    image.SetDirection([float(d) for d in grid.direction.ravel()])
    return image


def acquire_subject(
    index: int, mutant: bool, seed: int, voxel_size: float = 1.0, threads: int = 0
) -> RawSubject:
    """Render phantom subject ``index`` and acquire its series in memory (see the module
    docstring); deterministic from (seed, index). ``threads``: SimpleITK's (0 = its default)."""
    subject = render_phantom_subject(index, mutant, seed, voxel_size)
    head = _head_model(voxel_size)
    manufacturer = subject.metadata["Scan_characteristics"]["Manufacturer"]
    rng = np.random.default_rng([seed, index, _RAW_STREAM])
    threads = threads or sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    raw = RawSubject(subject_id_for(index, "egd"), subject)
    for protocol in PROTOCOLS:
        rotation = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
        translation = rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, 3)
        tilt = (
            rng.uniform(-MAX_OBLIQUITY_DEG, MAX_OBLIQUITY_DEG) if protocol.sequence == "T2" else 0
        )
        matrix = rigid_matrix(rotation, translation, head.center)
        centre_lps = (_LPS @ matrix @ np.r_[head.center, 1.0])[:3]
        seq = "T1" if protocol.sequence == "localizer" else protocol.sequence
        planes = ("sagittal", "coronal", "axial") if seq != protocol.sequence else (protocol.plane,)
        fields = _fields_image(subject, head, seq)
        grids = [_grid(protocol, plane, centre_lps, voxel_size, tilt) for plane in planes]
        images = [_image(rng, fields, g, matrix, subject, seq, threads) for g in grids]
        motion = {
            "rotation_deg": rotation.tolist(),
            "translation_mm": translation.tolist(),
            "center_ras_mm": head.center.tolist(),
        }
        description = DESCRIPTIONS[manufacturer][protocol.sequence]
        raw.series.append(Series(protocol, description, images, grids, matrix, motion, float(tilt)))
    return raw


def _uid(seed: int, index: int, *parts: object) -> str:
    """A DICOM UID derived from (seed, index, parts): the same export gives the same UIDs."""
    from pydicom.uid import generate_uid

    return generate_uid(
        entropy_srcs=["idh-pseudocolor raw phantom", str(seed), str(index)]
        + [str(p) for p in parts]
    )


def _quantised(series: Series) -> tuple[list[np.ndarray], float]:
    """The series' images as int16 arrays ([k, j, i]) and the one slope that restores them
    (RescaleSlope, NIfTI scl_slope): the full int16 range, as a scanner that scales would."""
    arrays = [sitk.GetArrayFromImage(image) for image in series.images]
    slope = max(max(float(a.max()) for a in arrays), 1e-3) / 32000.0
    return [np.rint(a / slope).astype(np.int16) for a in arrays], slope


def series_folder_name(series: Series) -> str:
    """Scanner-export style: the description in capitals, then the series number."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", series.description).strip("_").upper()
    return f"{name}_{series.protocol.series_number:04d}"


def _study_datetime(index: int) -> tuple[str, int]:
    """A synthetic study date (YYYYMMDD) and start minute, from the subject's index."""
    import datetime

    day = datetime.date(2021, 1, 4) + datetime.timedelta(days=(index * 3) % 700)
    return day.strftime("%Y%m%d"), 8 * 60 + (index * 37) % 480


def _write_dicom(folder: Path, raw: RawSubject, seed: int) -> dict[str, list[str]]:
    """Each series in its own sub-folder, one MR Image Storage file per slice (explicit VR
    little endian, int16 with RescaleSlope); the localizer's three planes are one series."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
    from pydicom.valuerep import format_number_as_ds

    def ds_(x: float) -> str:
        return format_number_as_ds(float(x))

    index = raw.phantom.index
    meta = raw.phantom.metadata
    scanner, clinical = meta["Scan_characteristics"], meta["Clinical_data"]
    field_t = float(scanner["Field"])
    date, start = _study_datetime(index)
    study_uid = _uid(seed, index, "study")
    frame_uid = _uid(seed, index, "frame of reference")
    locations: dict[str, list[str]] = {}
    for series in raw.series:
        p = series.protocol
        name = series_folder_name(series)
        series_dir = folder / name
        series_dir.mkdir(parents=True)
        series_uid = _uid(seed, index, "series", p.series_number)
        minute = start + 6 * p.series_number
        time = f"{minute // 60 % 24:02d}{minute % 60:02d}00"
        localizer = p.sequence == "localizer"
        image_type = (
            ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            if localizer
            else ["ORIGINAL", "PRIMARY", "M", "ND"]
        )
        arrays, slope = _quantised(series)
        base = Dataset()  # what every slice of the series shares (its elements are shared too)
        base.SpecificCharacterSet = "ISO_IR 100"
        base.ImageType = image_type
        base.SOPClassUID = MRImageStorage
        base.StudyDate = base.SeriesDate = base.AcquisitionDate = base.ContentDate = date
        base.StudyTime = f"{start // 60:02d}{start % 60:02d}00"
        base.SeriesTime = base.AcquisitionTime = base.ContentTime = time
        base.AccessionNumber = f"PH{seed % 10000:04d}{index:05d}"
        base.Modality = "MR"
        base.Manufacturer = scanner["Manufacturer"]
        base.InstitutionName = "Phantom Hospital (synthetic)"
        base.StudyDescription = "MR BRAIN TUMOR"
        base.SeriesDescription = series.description
        base.ManufacturerModelName = scanner["System"]
        base.PatientName = raw.subject_id.replace("-", "^")
        base.PatientID = raw.subject_id
        base.PatientBirthDate = ""
        base.PatientSex = clinical["Sex"]
        base.PatientAge = f"{int(clinical['Age']):03d}Y"
        base.BodyPartExamined = "BRAIN"
        base.ScanningSequence = list(p.scanning_sequence)
        base.SequenceVariant = list(p.sequence_variant)
        base.ScanOptions = ""
        base.MRAcquisitionType = p.mode
        base.SliceThickness = ds_(series.grids[0].thickness)
        base.RepetitionTime = ds_(p.tr_ms)
        base.EchoTime = ds_(p.te_ms)
        if p.ti_ms is not None:
            base.InversionTime = ds_(p.ti_ms)
        base.NumberOfAverages = "1"
        base.ImagingFrequency = ds_(round(42.577 * field_t, 4))
        base.MagneticFieldStrength = ds_(field_t)
        base.SpacingBetweenSlices = ds_(series.grids[0].spacing[2])
        base.FlipAngle = ds_(p.flip_deg)
        base.ProtocolName = series.description
        base.PatientPosition = "HFS"
        if p.contrast_agent:
            base.ContrastBolusAgent = p.contrast_agent
        base.StudyInstanceUID = study_uid
        base.SeriesInstanceUID = series_uid
        base.StudyID = "1"
        base.SeriesNumber = p.series_number
        base.AcquisitionNumber = 1
        base.FrameOfReferenceUID = frame_uid
        base.PositionReferenceIndicator = ""
        base.ImageComments = "Synthetic phantom (idh_pseudocolor): not patient data"
        base.SamplesPerPixel = 1
        base.PhotometricInterpretation = "MONOCHROME2"
        base.Rows, base.Columns = int(series.grids[0].size[1]), int(series.grids[0].size[0])
        base.PixelSpacing = [ds_(series.grids[0].spacing[1]), ds_(series.grids[0].spacing[0])]
        base.BitsAllocated = 16
        base.BitsStored = 16
        base.HighBit = 15
        base.PixelRepresentation = 1
        base.RescaleIntercept = "0"
        base.RescaleSlope = ds_(slope)
        base.RescaleType = "US"
        instance = 0
        for grid, array in zip(series.grids, arrays, strict=True):
            iop = [ds_(x) for x in np.r_[grid.direction[:, 0], grid.direction[:, 1]]]
            for k in range(grid.size[2]):
                instance += 1
                position = grid.origin + k * grid.spacing[2] * grid.direction[:, 2]
                sop_uid = _uid(seed, index, "instance", p.series_number, instance)
                file_meta = FileMetaDataset()
                file_meta.MediaStorageSOPClassUID = MRImageStorage
                file_meta.MediaStorageSOPInstanceUID = sop_uid
                file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = Dataset()
                ds.update(base)
                ds.file_meta = file_meta
                ds.SOPInstanceUID = sop_uid
                ds.InstanceNumber = instance
                ds.ImagePositionPatient = [ds_(x) for x in position]
                ds.ImageOrientationPatient = iop
                ds.SliceLocation = ds_(float(position @ grid.direction[:, 2]))
                ds.PixelData = np.ascontiguousarray(array[k], dtype="<i2").tobytes()
                ds.save_as(
                    series_dir / f"IM-{p.series_number:04d}-{instance:04d}.dcm",
                    enforce_file_format=True,
                )
        locations[p.sequence] = [name]
    return locations


def _sidecar(series: Series, grid: Grid, raw: RawSubject) -> dict[str, Any]:
    """dcm2niix's JSON sidecar: its key names, times in seconds (BIDS)."""
    p = series.protocol
    scanner = raw.phantom.metadata["Scan_characteristics"]
    sidecar: dict[str, Any] = {
        "Modality": "MR",
        "MagneticFieldStrength": float(scanner["Field"]),
        "ImagingFrequency": round(42.577 * float(scanner["Field"]), 4),
        "Manufacturer": scanner["Manufacturer"],
        "ManufacturersModelName": scanner["System"],
        "BodyPartExamined": "BRAIN",
        "PatientPosition": "HFS",
        "SeriesDescription": series.description,
        "ProtocolName": series.description,
        "ScanningSequence": "_".join(p.scanning_sequence),
        "SequenceVariant": "_".join(p.sequence_variant),
        "MRAcquisitionType": p.mode,
        "SeriesNumber": p.series_number,
        "SliceThickness": round(float(grid.thickness), 6),
        "SpacingBetweenSlices": round(float(grid.spacing[2]), 6),
        "EchoTime": p.te_ms / 1000.0,
        "RepetitionTime": p.tr_ms / 1000.0,
        "FlipAngle": p.flip_deg,
        "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        if p.sequence == "localizer"
        else ["ORIGINAL", "PRIMARY", "M", "ND"],
        "ImageComments": "Synthetic phantom (idh_pseudocolor): not patient data",
        "ConversionSoftware": "idh_pseudocolor.raw_phantom",
        "ConversionSoftwareVersion": str(RAW_VERSION),
    }
    if p.ti_ms is not None:
        sidecar["InversionTime"] = p.ti_ms / 1000.0
    if p.contrast_agent:
        sidecar["ContrastBolusAgent"] = p.contrast_agent
    return sidecar


def _write_nifti(folder: Path, raw: RawSubject) -> dict[str, list[str]]:
    """Each series a .nii.gz (int16 with scl_slope, qform = sform = scanner) in its acquired
    grid and orientation, named arbitrarily, with its sidecar; the localizer as dcm2niix splits
    it (``_i00001`` ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    locations: dict[str, list[str]] = {}
    for series in raw.series:
        arrays, slope = _quantised(series)
        several = len(arrays) > 1
        names = []
        for n, (grid, array) in enumerate(zip(series.grids, arrays, strict=True), start=1):
            base = series.protocol.nifti_name + (f"_i{n:05d}" if several else "")
            affine = grid.affine_ras()
            img = nib.Nifti1Image(array.transpose(2, 1, 0), affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            img.header.set_slope_inter(slope, 0.0)
            img.header.set_xyzt_units("mm", "sec")
            (folder / f"{base}.nii.gz").write_bytes(igzip.compress(img.to_bytes(), 1))
            sidecar = _sidecar(series, grid, raw)
            (folder / f"{base}.json").write_text(json.dumps(sidecar, indent=2))
            names.append(f"{base}.nii.gz")
        locations[series.protocol.sequence] = names
    return locations


def _write_truth(folder: Path, raw: RawSubject, fmt: str, locations: dict[str, list[str]]) -> None:
    """The EGD-layout subject (exactly the phantom cohort's files: sequences, MASK, metadata),
    the template brain mask (what skull stripping should keep) and transforms.json."""
    folder.mkdir(parents=True)
    subject = raw.phantom
    template = load_template(float(np.linalg.norm(subject.affine[:3, 0])))
    names = {"T1": "T1", "T1ce": "T1GD", "T2": "T2", "FLAIR": "FLAIR"}
    for seq, name in names.items():
        _save(subject.volumes[seq], subject.affine, folder / f"{name}.nii.gz", np.int16, "RAS")
    _save(subject.mask, subject.affine, folder / "MASK.nii.gz", np.uint8, "RAS")
    brain = template.brain.astype(np.uint8)
    _save(brain, subject.affine, folder / "brain_mask.nii.gz", np.uint8, "RAS")
    (folder / "metadata.json").write_text(json.dumps(subject.metadata, indent=2))
    template_samples = float(np.linalg.norm(subject.affine[:3, 0]))
    sequences = {}
    for series in raw.series:
        p = series.protocol
        sequences[p.sequence] = {
            "series_number": p.series_number,
            "description": series.description,
            "location": locations[p.sequence],
            "template_to_acquired_ras": series.template_to_acquired.tolist(),
            "acquired_to_template_ras": np.linalg.inv(series.template_to_acquired).tolist(),
            **series.motion,
            "acquisition": {
                "plane": p.plane,
                "mode": p.mode,
                "obliquity_deg": series.obliquity_deg,  # about +L (LPS), right-handed
                "slice_samples": max(1, int(round(series.grids[0].thickness / template_samples))),
                "grids": [g.describe() for g in series.grids],
            },
        }
    transforms = {
        "convention": TRANSFORM_CONVENTION,
        "format": fmt,
        "template": {
            "space": "MNI152 2009a (nilearn's 1 mm template, resampled at voxel_size), RAS mm",
            "shape": list(subject.volumes["T1"].shape),
            "affine_ras": subject.affine.tolist(),
        },
        "sequences": sequences,
    }
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=2))


def export_raw_subject(
    out: Path,
    index: int,
    mutant: bool,
    seed: int,
    fmt: str,
    voxel_size: float = 1.0,
    threads: int = 0,
) -> dict[str, Any]:
    """Acquire (:func:`acquire_subject`) and write one patient: ``out/<id>/`` and its truth in
    ``out/.truth/<id>/`` (both replaced if present)."""
    raw = acquire_subject(index, mutant, seed, voxel_size, threads)
    folder, truth = out / raw.subject_id, out / ".truth" / raw.subject_id
    for path in (folder, truth):
        if path.exists():
            shutil.rmtree(path)
    if fmt == "dicom":
        locations = _write_dicom(folder, raw, seed)
    else:
        locations = _write_nifti(folder, raw)
    _write_truth(truth, raw, fmt, locations)
    return {
        "subject_id": raw.subject_id,
        "IDH": int(mutant),
        "grade": raw.phantom.metadata["Genetic_and_Histological_labels"]["Grade"],
    }


def export_raw_cohort(
    out: str | Path,
    n_subjects: int,
    seed: int,
    fmt: str,
    voxel_size: float = 1.0,
    n_workers: int | None = None,
    progress: bool = True,
    mutant_fraction: float = 0.35,
) -> list[dict[str, Any]]:
    """Write the phantom cohort (seed, n_subjects, mutant_fraction) as raw studies in ``fmt``
    (``"dicom"`` or ``"nifti"``) and return one summary row per subject.

    Layout: ``out/<id>/`` per patient (no tumor mask), ``out/labels.csv`` (ID, IDH 0/1),
    ``out/.truth/<id>/`` (the EGD-layout subject, brain_mask, transforms.json) and, written last
    (the cohort is complete once it exists), ``out/.truth/cohort.json``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if n_subjects < 1:
        raise ValueError("n_subjects must be positive")
    out = Path(out)
    if (out / "phantom_cohort.json").is_file():
        raise ValueError(
            f"{out} holds a phantom cohort in the EGD/BraTS layout; export raw studies elsewhere"
        )
    out.mkdir(parents=True, exist_ok=True)
    _forget_earlier_export(out, n_subjects)
    labels = cohort_labels(n_subjects, seed, mutant_fraction)
    rows = _export_subjects(out, labels, seed, fmt, voxel_size, n_workers, progress)
    lines = ["ID,IDH"] + [f"{r['subject_id']},{r['IDH']}" for r in rows]
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    marker = {
        "synthetic": True,
        "note": "Raw studies of the phantom cohort (idh_pseudocolor.raw_phantom): not patients.",
        "generator_version": GENERATOR_VERSION,
        "raw_version": RAW_VERSION,
        "format": fmt,
        "n_subjects": n_subjects,
        "seed": seed,
        "voxel_size_mm": voxel_size,
        "mutant_fraction": mutant_fraction,
        "site": "a",
        "labels": [{"subject_id": r["subject_id"], "IDH": r["IDH"]} for r in rows],
    }
    (out / ".truth" / "cohort.json").write_text(json.dumps(marker, indent=2))
    return rows


def _export_subjects(
    out: Path,
    labels: np.ndarray,
    seed: int,
    fmt: str,
    voxel_size: float,
    n_workers: int | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """One row per subject in index order; each subject seeds its own streams, so a serial run
    and any number of workers write the same files (SimpleITK gets one thread per worker)."""
    from idh_pseudocolor.parallel import in_order, worker_count

    # SimpleITK's own threads: all cores in one process, one per worker beside others
    threads = 0 if worker_count(n_workers, len(labels)) == 1 else 1
    tasks = [
        (out, i, bool(m), seed, fmt, voxel_size, threads) for i, m in enumerate(labels, start=1)
    ]
    return list(
        in_order(
            export_raw_subject,
            tasks,
            n_workers,
            desc=f"raw phantom ({fmt})",
            unit="subject",
            progress=progress,
        )
    )


def _forget_earlier_export(out: Path, n_subjects: int) -> None:
    """Exporting over an earlier export: drop its marker first (an interrupted run is then
    incomplete) and the patients the new cohort will not write. Only where an export left its
    marker, and only phantom-named folders."""
    marker = out / ".truth" / "cohort.json"
    if not marker.is_file():
        return
    marker.unlink()
    keep = {subject_id_for(i, "egd") for i in range(1, n_subjects + 1)}
    for parent in (out, out / ".truth"):
        for folder in parent.iterdir():
            if folder.is_dir() and folder.name.startswith("PHANTOM-") and folder.name not in keep:
                shutil.rmtree(folder)


def raw_cohort_is_complete(
    out: str | Path,
    n_subjects: int,
    seed: int,
    fmt: str,
    voxel_size: float,
    mutant_fraction: float = 0.35,
) -> bool:
    """True when ``out`` holds a finished raw export with these settings and these versions."""
    marker = Path(out) / ".truth" / "cohort.json"
    try:
        info = json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    wanted = {
        "n_subjects": n_subjects,
        "seed": seed,
        "format": fmt,
        "voxel_size_mm": voxel_size,
        "mutant_fraction": mutant_fraction,
        "generator_version": GENERATOR_VERSION,
        "raw_version": RAW_VERSION,
    }
    return all(info.get(k) == v for k, v in wanted.items())
