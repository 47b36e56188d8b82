"""A hospital's raw study for one patient becomes the project's four sequences (issue 23).

A PACS export is a folder, often nested, of DICOM files of many series (localizers, diffusion,
reformats, the four we need and more); a research export is a folder of NIfTI files with
arbitrary names, each perhaps with a dcm2niix JSON sidecar. Nothing here trusts file names or
folder layout: DICOM files are found by content and grouped by SeriesInstanceUID, every series
is checked for being one usable 3-D volume, and each is identified as T1, T1ce, T2 or FLAIR from
its description *and* its sequence parameters, with the evidence in words. Whatever cannot be
decided (two candidates for one sequence, a description that contradicts the parameters) is
reported as a :class:`StudyProblem`, never guessed: a wrong channel silently poisons every
composite. A user mapping (:func:`load_mapping`) settles what the rules cannot.

Nothing is ever written into the input folder. Geometry is SimpleITK's: LPS world coordinates.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
import yaml

from idh_pseudocolor.configurations import SEQUENCES

#: fewer distinct slice positions than this: a localizer/scout, not a volume
MIN_SLICES = 10
#: relative tolerance on the gap between consecutive slices (a missing slice doubles one gap)
SPACING_TOLERANCE = 0.02
#: tolerance on direction cosines and on in-plane offsets (mm) between slices
GEOMETRY_TOLERANCE = 1e-3
#: sequence-parameter thresholds (ms) used when the description does not decide
FLAIR_MIN_TI = 1500.0
LONG_TE = 60.0
LONG_TR = 2000.0
SHORT_TE = 30.0
T1_MAX_TR = 1000.0  # a short-TE series with a longer TR is T1 only if inversion-prepared
T1_TI_RANGE = (300.0, FLAIR_MIN_TI)  # MPRAGE, T1-FLAIR
#: mapping value that excludes a series from the assignment
IGNORE = "ignore"

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_NO_AGENT = {"", "NONE", "NO", "N/A", "NA", "0"}
#: attributes that tell several images at one slice position apart (to say why a series is 4-D)
_FOURTH_AXIS = ("EchoTime", "TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime")


@dataclass
class StudyProblem:
    """Something in a study that a person must look at. ``kind`` lets a caller filter:
    ``unreadable``, ``study``, ``unusable``, ``unidentified``, ``mapping``, ``ambiguous``,
    ``missing``. ``file`` is the file (or a series' first file); None for a missing sequence."""

    file: Path | None
    reason: str
    kind: str = "unreadable"


@dataclass
class Series:
    """One series of a study: a DICOM SeriesInstanceUID or one NIfTI file.

    ``header`` holds the identification fields as plain values (times in ms);
    ``instances`` holds, for DICOM, one dict of geometry fields per file (for
    :func:`check_series` and :func:`read_series`)."""

    uid: str
    description: str
    protocol: str
    files: list[Path]
    header: dict[str, Any]
    source: str  # "dicom" or "nifti"
    path: Path | None = None  # the NIfTI file
    instances: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """How messages name the series: a person finds it by description and uid."""
        name = self.description or self.protocol or "(no description)"
        return f'{self.source} series "{name}" ({self.uid}, {len(self.files)} file(s))'


# --------------------------------------------------------------------------- finding series


def find_series(folder: str | os.PathLike) -> tuple[list[Series], list[StudyProblem]]:
    """Every series under ``folder`` (recursively; hidden files and folders skipped).

    DICOM files are recognised by content (the ``DICM`` preamble, or a preamble-less data set
    that starts with a group 0002/0008 tag), whatever their names; other files are ignored, and
    non-image DICOM objects (DICOMDIR, reports) skipped. NIfTI files are ``.nii``/``.nii.gz``
    with an optional sidecar of the same stem and ``.json``. Unreadable files are reported."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    problems: list[StudyProblem] = []
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    nifti: list[Path] = []
    seen_sop: dict[str, Path] = {}
    for path in _walk(root):
        name = path.name.lower()
        if name.endswith(_NIFTI_SUFFIXES):
            nifti.append(path)
            continue
        if name.endswith(".json"):
            continue
        record = _read_dicom_header(path, problems)
        if record is None:
            continue
        sop = record.pop("SOPInstanceUID")
        if sop and sop in seen_sop:
            problems.append(
                StudyProblem(path, f"the same image (SOPInstanceUID) as {seen_sop[sop]}: skipped")
            )
            continue
        if sop:
            seen_sop[sop] = path
        groups[record["SeriesInstanceUID"]].append(record)
    series = [_dicom_series(uid, records) for uid, records in groups.items()]
    for path in nifti:
        s = _nifti_series(path, root, problems)
        if s is not None:
            series.append(s)
    studies = {s.header.get("StudyInstanceUID") for s in series} - {None}
    if len(studies) > 1:
        problems.append(
            StudyProblem(
                root,
                f"the folder holds {len(studies)} studies (StudyInstanceUID "
                f"{', '.join(sorted(studies))}): series from different sessions may be mixed",
                "study",
            )
        )
    series.sort(key=lambda s: (s.source, s.description, s.uid))
    return series, problems


def _walk(root: Path) -> Iterable[Path]:
    """Files under ``root`` in a stable order; hidden folders (.git, .Trash) and files skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _looks_like_dicom(path: Path) -> bool:
    """By content, not name: the Part-10 preamble, or a raw data set starting at group 2 or 8."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


def _read_dicom_header(path: Path, problems: list[StudyProblem]) -> dict[str, Any] | None:
    """The fields of one DICOM file that grouping, checking and identification need."""
    if not _looks_like_dicom(path):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if sop_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
            return None
        if not sop_class and "SeriesInstanceUID" not in ds:
            raise ValueError("damaged or truncated: no SOPClassUID or SeriesInstanceUID")
        if "Rows" not in ds:
            return None  # a non-image object (report, presentation state)
        if not ds.get("SeriesInstanceUID"):
            raise ValueError("an image without SeriesInstanceUID")
        return {
            "file": path,
            "SOPInstanceUID": str(ds.get("SOPInstanceUID", "") or ""),
            "SOPClassUID": sop_class,
            "SeriesInstanceUID": str(ds.SeriesInstanceUID),
            "StudyInstanceUID": _text(ds.get("StudyInstanceUID")) or None,
            "SeriesDescription": _text(ds.get("SeriesDescription")),
            "ProtocolName": _text(ds.get("ProtocolName")),
            "RepetitionTime": _number(ds.get("RepetitionTime")),
            "EchoTime": _number(ds.get("EchoTime")),
            "InversionTime": _number(ds.get("InversionTime")),
            "ContrastBolusAgent": _agent(ds.get("ContrastBolusAgent")),
            "ImageType": tuple(str(v).upper() for v in _values(ds.get("ImageType"))),
            "Modality": _text(ds.get("Modality")),
            "MagneticFieldStrength": _number(ds.get("MagneticFieldStrength")),
            "Manufacturer": _text(ds.get("Manufacturer")),
            "ScanningSequence": _text(ds.get("ScanningSequence")),
            "SequenceVariant": _text(ds.get("SequenceVariant")),
            "FlipAngle": _number(ds.get("FlipAngle")),
            "Rows": int(ds.Rows),
            "Columns": int(ds.get("Columns", 0) or 0),
            "PixelSpacing": _floats(ds.get("PixelSpacing")),
            "SliceThickness": _number(ds.get("SliceThickness")),
            "ImagePositionPatient": _floats(ds.get("ImagePositionPatient")),
            "ImageOrientationPatient": _floats(ds.get("ImageOrientationPatient")),
            "InstanceNumber": _number(ds.get("InstanceNumber")),
            "AcquisitionNumber": _number(ds.get("AcquisitionNumber")),
            "TemporalPositionIdentifier": _number(ds.get("TemporalPositionIdentifier")),
            "TriggerTime": _number(ds.get("TriggerTime")),
            "NumberOfFrames": int(_number(ds.get("NumberOfFrames")) or 1),
        }
    except Exception as error:  # pydicom raises many types on damaged files
        problems.append(StudyProblem(path, f"unreadable DICOM file: {error}"))
        return None


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes | int | float):
        items = _values(value)  # a multi-valued element: its first value
        if not items:
            return None
        value = items[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _floats(value: Any) -> tuple[float, ...] | None:
    items = _values(value)
    try:
        return tuple(float(v) for v in items) if items else None
    except (TypeError, ValueError):
        return None


def _agent(value: Any) -> str | None:
    """ContrastBolusAgent, None where absent or a 'none' placeholder."""
    text = _text(value)
    return None if text.upper() in _NO_AGENT else text


def _dicom_series(uid: str, records: list[dict[str, Any]]) -> Series:
    """One series from its files' records; header fields from the first image by number."""
    records = sorted(records, key=lambda r: (r["InstanceNumber"] or 0, str(r["file"])))
    first = records[0]
    keys = (
        "SeriesDescription",
        "ProtocolName",
        "RepetitionTime",
        "EchoTime",
        "InversionTime",
        "ContrastBolusAgent",
        "ImageType",
        "Modality",
        "MagneticFieldStrength",
        "Manufacturer",
        "ScanningSequence",
        "SequenceVariant",
        "FlipAngle",
        "StudyInstanceUID",
    )
    header = {k: first[k] for k in keys}
    positions = {_rounded(r["ImagePositionPatient"]) for r in records}
    header["n_slices"] = len(positions) * max(r["NumberOfFrames"] for r in records)
    header["dims"] = (first["Columns"], first["Rows"], header["n_slices"])
    ps = first["PixelSpacing"] or (None, None)
    header["spacing"] = (ps[1] if len(ps) > 1 else None, ps[0], _slice_gap(records))
    return Series(
        uid=uid,
        description=first["SeriesDescription"],
        protocol=first["ProtocolName"],
        files=sorted(r["file"] for r in records),
        header=header,
        source="dicom",
        instances=records,
    )


def _rounded(v: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if v is None else tuple(round(x, 2) for x in v)


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:6])
    return np.cross(row, col)


def _slice_gap(records: list[dict[str, Any]]) -> float | None:
    """Median distance between distinct slice positions along the normal (not SliceThickness,
    which ignores gaps and overlaps)."""
    iop = records[0]["ImageOrientationPatient"]
    if iop is None or len(iop) != 6 or any(r["ImagePositionPatient"] is None for r in records):
        return records[0]["SliceThickness"]
    d = np.unique(np.round([np.dot(r["ImagePositionPatient"], _normal(iop)) for r in records], 3))
    return float(np.median(np.diff(d))) if len(d) > 1 else records[0]["SliceThickness"]


def _nifti_series(path: Path, root: Path, problems: list[StudyProblem]) -> Series | None:
    """One NIfTI file and its dcm2niix sidecar; the file name stands in for a description."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dims = tuple(int(d) for d in reader.GetSize())
        spacing = tuple(float(s) for s in reader.GetSpacing())
        components = int(reader.GetNumberOfComponents())
    except Exception as error:
        problems.append(StudyProblem(path, f"unreadable NIfTI file: {error}"))
        return None
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".gz") else path.stem
    sidecar_path = path.with_name(stem + ".json")
    sidecar: dict[str, Any] = {}
    if sidecar_path.is_file():
        try:
            sidecar = json.loads(sidecar_path.read_text())
            if not isinstance(sidecar, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            problems.append(StudyProblem(sidecar_path, f"unreadable sidecar, ignored: {error}"))
            sidecar = {}
    times = {k: _number(sidecar.get(k)) for k in ("RepetitionTime", "EchoTime", "InversionTime")}
    if times["EchoTime"] is not None and times["EchoTime"] > 1.0:
        problems.append(
            StudyProblem(
                sidecar_path,
                "sidecar times look like milliseconds already (EchoTime > 1 s): used as ms",
                "study",
            )
        )
    else:  # dcm2niix (and BIDS) write seconds
        times = {k: None if v is None else v * 1000.0 for k, v in times.items()}
    header = {
        "SeriesDescription": _text(sidecar.get("SeriesDescription")),
        "ProtocolName": _text(sidecar.get("ProtocolName")),
        **times,
        "ContrastBolusAgent": _agent(
            sidecar.get("ContrastBolusAgent", sidecar.get("ContrastBolusIngredient"))
        ),
        "ImageType": tuple(str(v).upper() for v in _values(sidecar.get("ImageType"))),
        "Modality": _text(sidecar.get("Modality")),
        "MagneticFieldStrength": _number(sidecar.get("MagneticFieldStrength")),
        "Manufacturer": _text(sidecar.get("Manufacturer")),
        "ScanningSequence": _text(sidecar.get("ScanningSequence")),
        "SequenceVariant": _text(sidecar.get("SequenceVariant")),
        "FlipAngle": _number(sidecar.get("FlipAngle")),
        "StudyInstanceUID": _text(sidecar.get("StudyInstanceUID")) or None,
        "FileName": path.name,
        "n_slices": dims[2] if len(dims) > 2 else 1,
        "dims": dims,
        "spacing": spacing,
        "components": components,
    }
    uid = _text(sidecar.get("SeriesInstanceUID")) or path.relative_to(root).as_posix()
    files = [path] + ([sidecar_path] if sidecar else [])
    return Series(
        uid=uid,
        description=header["SeriesDescription"],
        protocol=header["ProtocolName"],
        files=files,
        header=header,
        source="nifti",
        path=path,
    )


# --------------------------------------------------------------------------- checking, reading


def check_series(series: Series) -> str | None:
    """Why ``series`` cannot be one 3-D volume (None if it can): not MR, a localizer, 4-D
    (several images per slice position: echoes, time points, repeats), missing or inconsistent
    geometry, a sheared (gantry-tilted) stack or uneven slice spacing. Reading such a series
    would give a volume with wrong geometry or mixed contrasts, silently."""
    h = series.header
    if h.get("Modality") and h["Modality"].upper() != "MR":
        return f"not MR (Modality {h['Modality']})"
    if "LOCALIZER" in h.get("ImageType", ()):
        return "a localizer (ImageType LOCALIZER)"
    if series.source == "nifti":
        dims = h["dims"]
        if len(dims) > 3 and any(d > 1 for d in dims[3:]):
            return f"4-D NIfTI (size {'x'.join(map(str, dims))})"
        if h.get("components", 1) > 1:
            return f"{h['components']} components per voxel (a vector or RGB image)"
        if h["n_slices"] < MIN_SLICES:
            return f"only {h['n_slices']} slice(s): a localizer or scout, not a volume"
        return None
    return _check_dicom(series.instances)


def _check_dicom(records: list[dict[str, Any]]) -> str | None:
    if any(r["SOPClassUID"] == ENHANCED_MR or r["NumberOfFrames"] > 1 for r in records):
        return "multi-frame (enhanced) DICOM is not supported: convert it with dcm2niix first"
    n = len(records)
    geometry = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    missing = [k for k in geometry if any(r[k] is None for r in records)]
    if missing:
        count = max(sum(r[k] is None for r in records) for k in missing)
        return f"missing geometry: no {'/'.join(missing)} in {count} of {n} files"
    if any(len(r["ImageOrientationPatient"]) != 6 for r in records):
        return "malformed ImageOrientationPatient (not six values)"
    iop = np.asarray(records[0]["ImageOrientationPatient"])
    deviation = max(
        float(np.max(np.abs(np.asarray(r["ImageOrientationPatient"]) - iop))) for r in records
    )
    if deviation > GEOMETRY_TOLERANCE:
        kinds = len({_rounded(r["ImageOrientationPatient"]) for r in records})
        return f"inconsistent geometry: {kinds} different ImageOrientationPatient in one series"
    shapes = {(r["Rows"], r["Columns"], _rounded(r["PixelSpacing"])) for r in records}
    if len(shapes) > 1:
        return f"inconsistent geometry: {len(shapes)} different image sizes or pixel spacings"
    normal = _normal(iop)
    positions = np.asarray([r["ImagePositionPatient"] for r in records], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    distinct = _distinct(along[order])
    if len(distinct) < n:
        return _four_d_reason(records, along, len(distinct))
    if n < MIN_SLICES:
        return f"only {n} slice(s): a localizer or scout, not a volume"
    steps = np.diff(positions[order], axis=0)
    gaps = steps @ normal
    off_normal = np.linalg.norm(steps - np.outer(gaps, normal), axis=1)
    if np.max(off_normal) > max(GEOMETRY_TOLERANCE * 10, 0.01 * np.median(gaps)):
        return "sheared stack (gantry tilt?): slices are not stacked along their normal"
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > SPACING_TOLERANCE * median:
        return (
            f"non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm; a missing slice?)"
        )
    return None


def _distinct(sorted_values: np.ndarray) -> list[float]:
    """Values more than 0.01 mm apart: slice positions in a sorted projection."""
    out: list[float] = []
    for v in sorted_values:
        if not out or v - out[-1] > 0.01:
            out.append(float(v))
    return out


def _four_d_reason(records: list[dict[str, Any]], along: np.ndarray, n_positions: int) -> str:
    """Say which attribute tells the images at one position apart (echo, time, acquisition)."""
    by_position: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r, a in zip(records, along, strict=True):
        by_position[round(float(a), 2)].append(r)
    crowded = max(by_position.values(), key=len)
    differing = [k for k in _FOURTH_AXIS if len({r[k] for r in crowded}) > 1]
    why = f" (differing in {', '.join(differing)})" if differing else " (repeated images)"
    return (
        f"4-D: {len(records)} images at {n_positions} slice position(s), up to "
        f"{len(crowded)} at one position{why}"
    )


def read_series(series: Series) -> sitk.Image:
    """The series as a float32 SimpleITK image in LPS (SimpleITK's convention).

    DICOM files are ordered along the slice normal (the projection of ImagePositionPatient on
    the cross product of the orientation's row and column vectors), whatever their names or
    InstanceNumbers; origin, spacing and direction are set from the same numbers, so the
    geometry does not depend on how the files happened to be sorted."""
    reason = check_series(series)
    if reason is not None:
        raise ValueError(f"{series.label}: {reason}")
    if series.source == "nifti":
        return sitk.ReadImage(str(series.path), sitk.sitkFloat32)
    records = series.instances
    iop = np.asarray(records[0]["ImageOrientationPatient"], dtype=float)
    row, col = iop[:3], iop[3:6]
    normal = np.cross(row, col)
    along = np.asarray([np.dot(r["ImagePositionPatient"], normal) for r in records])
    ordered = [records[i] for i in np.argsort(along, kind="stable")]
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(r["file"]) for r in ordered])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ValueError(f"{series.label}: SimpleITK could not read it: {error}") from error
    first = np.asarray(ordered[0]["ImagePositionPatient"], dtype=float)
    last = np.asarray(ordered[-1]["ImagePositionPatient"], dtype=float)
    gap = float(np.dot(last - first, normal)) / (len(ordered) - 1)
    row_spacing, col_spacing = ordered[0]["PixelSpacing"][:2]
    image.SetOrigin(tuple(first))
    image.SetSpacing((col_spacing, row_spacing, gap))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image


# --------------------------------------------------------------------------- identification


def _pattern(*alternatives: str, bounded: bool = True) -> re.Pattern[str]:
    body = "|".join(alternatives)
    return re.compile(rf"(?<![A-Z0-9])(?:{body})(?![A-Z0-9])" if bounded else f"(?:{body})")


_ORIENT = r"(?:AX|SAG|COR|TRA|3D|2D)?"
_OTHER = _pattern(
    r"T2 ?\*",
    r"T2 ?STAR",
    r"SWI\w*",
    r"SWAN",
    r"SUSC\w*",
    r"DWI",
    r"DTI",
    r"DIFF\w*",
    r"ADC",
    r"TRACE ?W?",
    r"EP2D\w*",
    r"PERF\w*",
    r"DSC",
    r"DCE",
    r"P?C?ASL",
    r"TOF",
    r"MRA",
    r"ANGIO\w*",
    r"SPECTRO\w*",
    r"SVS",
    r"CSI",
    r"MRS",
    r"BOLD",
    r"FMRI",
    r"FIELD ?MAP",
    r"LOCALI[SZ]ER",
    r"SCOUT",
    r"SURVEY",
    r"PDW?",
    r"PD ?/ ?T2",
    r"MIP",
    r"STIR",
    r"HEMO",
)
_OTHER_IMAGE_TYPES = {"ADC", "DIFFUSION", "TRACEW", "FA", "EADC", "PERFUSION", "MIP"}
_OTHER_IMAGE_TYPES |= {"SUBTRACTION", "SUB", "PROJECTION IMAGE", "PHASE", "LOCALIZER"}
_FLAIR = _pattern(r"FLAIR", r"DARK ?FLUID", bounded=False)
_T2 = _pattern(rf"{_ORIENT}T2(?:W|WI)?")
_T1 = _pattern(
    rf"{_ORIENT}T1(?:W|WI|C|CE|GD|POST|PRE)?",
    r"MP ?RAGE",
    r"F?SPGR",
    r"BRAVO",
    r"VIBE",
    r"TFE",
)
_PRE = _pattern(
    r"(?:NON|W ?/ ?O|WO|WITHOUT|NO|OHNE) ?(?:CONTRAST|GD|GAD|KM|C)?",
    r"PRE(?: ?CONTRAST)?",
    r"NATIVE?",
    r"T1PRE",
)
_POST_PLUS = re.compile(r"\+ ?(?:C|GD|GAD|KM|K|CM)(?![A-Z0-9])|(?<![A-Z0-9])C ?\+")
_POST = _pattern(
    r"GD",
    r"GAD\w*",
    r"CE",
    r"POST\w*",
    r"CONTRAST",
    r"KM",
    r"MIT ?KM",
    r"ENHANCED",
    rf"{_ORIENT}T1(?:C|CE|GD|POST)",
)


def _words(header: Mapping[str, Any]) -> tuple[str, str]:
    """The text the keywords are looked for in, and where it came from."""
    parts = [header.get("SeriesDescription") or "", header.get("ProtocolName") or ""]
    text = " ".join(p for p in parts if p)
    if text:
        return text, f'description/protocol "{text}"'
    name = header.get("FileName") or ""
    return re.sub(
        r"\.nii(\.gz)?$", "", name, flags=re.I
    ), f'file name "{name}"' if name else "no description"


def _keyword_family(text: str) -> tuple[str | None, str]:
    """FLAIR, T2, T1, T1FLAIR (a T1-weighted FLAIR exists: parameters decide), 'other',
    'conflict' or None, with the keywords found."""
    norm = re.sub(r"[^A-Z0-9+*/]+", " ", text.upper())
    if m := _OTHER.search(norm):
        return "other", f'"{m.group(0).strip()}" (not one of the four)'
    flair, t2, t1 = _FLAIR.search(norm), _T2.search(norm), _T1.search(norm)
    if flair and t1 and not t2:
        return "T1FLAIR", f'"{t1.group(0)}" and "{flair.group(0)}"'
    if flair:
        return "FLAIR", f'"{flair.group(0)}"'
    if t1 and t2:
        return "conflict", f'both "{t1.group(0)}" and "{t2.group(0)}"'
    if t2:
        return "T2", f'"{t2.group(0)}"'
    if t1:
        return "T1", f'"{t1.group(0)}"'
    return None, "no sequence keyword"


def _contrast_keywords(text: str) -> tuple[str | None, str]:
    """'pre', 'post', 'conflict' or None from the description's words."""
    norm = re.sub(r"[^A-Z0-9+*/]+", " ", text.upper())
    pre = _PRE.search(norm)
    rest = _PRE.sub(" ", norm)
    post = _POST_PLUS.search(rest) or _POST.search(rest)
    if pre and post:
        return "conflict", f'both "{pre.group(0).strip()}" and "{post.group(0).strip()}"'
    if pre:
        return "pre", f'pre-contrast keyword "{pre.group(0).strip()}"'
    if post:
        return "post", f'post-contrast keyword "{post.group(0).strip()}"'
    return None, ""


def _parameter_family(header: Mapping[str, Any]) -> tuple[str | None, str, bool]:
    """FLAIR, T2 or T1 from TR/TE/TI (ms), the words, and whether the parameters decided."""
    tr, te, ti = (header.get(k) for k in ("RepetitionTime", "EchoTime", "InversionTime"))
    ti = ti or None  # 0 means no inversion on several scanners
    if tr is None or te is None:
        return None, "no TR/TE", False
    said = f"TR {tr:g} ms, TE {te:g} ms" + (f", TI {ti:g} ms" if ti else "")
    if "EP" in re.split(r"[\\_ /]+", (header.get("ScanningSequence") or "").upper()):
        return None, f"echo-planar ({said}): diffusion or perfusion?", False
    if ti is not None and ti >= FLAIR_MIN_TI and te >= LONG_TE:
        return "FLAIR", f"{said}: long TI and long TE", True
    if ti is None and te >= LONG_TE and tr >= LONG_TR:
        return "T2", f"{said}: long TE and TR, no inversion", True
    if te < SHORT_TE and (
        tr < T1_MAX_TR or (ti is not None and T1_TI_RANGE[0] <= ti < T1_TI_RANGE[1])
    ):
        how = "short TR" if tr < T1_MAX_TR else "inversion-prepared"
        return "T1", f"{said}: short TE, {how}", True
    return None, f"{said}: fits none of T1, T2, FLAIR", False


def identify(header: Mapping[str, Any]) -> tuple[str | None, str]:
    """Which of SEQUENCES a series is, and the evidence in words; None with the reason when the
    evidence is missing or contradicts itself (then a mapping must decide).

    The description/protocol (or, for a NIfTI without them, the file name) is read first; the
    sequence parameters (TR/TE/TI) must not contradict it, and decide alone when there is no
    keyword. T1 is T1ce when ContrastBolusAgent is recorded or a post-contrast keyword is
    present, T1 when neither (stated in the evidence: many sites leave the agent empty)."""
    text, where = _words(header)
    image_type = set(header.get("ImageType") or ())
    if other := sorted(image_type & _OTHER_IMAGE_TYPES):
        return None, f"ImageType {'/'.join(other)}: not one of the four"
    kw, kw_words = _keyword_family(text)
    if kw == "other":
        return None, f"{where}: {kw_words}"
    if kw == "conflict":
        return None, f"{where}: conflicting keywords, {kw_words}"
    param, param_words, decided = _parameter_family(header)
    if kw == "T1FLAIR":
        if not decided:
            return None, f"{where}: {kw_words}, a T1- or T2-weighted FLAIR? {param_words}"
        family, evidence = param, f"{where}: {kw_words}; {param_words}"
    elif kw is not None:
        if decided and param != kw:
            said = f"the parameters say {param} ({param_words})"
            return None, f"conflict: {where} says {kw} ({kw_words}) but {said}"
        family = kw
        agree = "agree" if decided else "do not decide"
        evidence = f"{where}: {kw_words}; parameters {agree} ({param_words})"
    elif decided:
        family, evidence = param, f"parameters only ({where}): {param_words}"
    else:
        return None, f"{where}: no sequence keyword, and {param_words}"
    if family != "T1":
        return family, evidence
    return _t1_or_t1ce(header, text, evidence)


def _t1_or_t1ce(header: Mapping[str, Any], text: str, evidence: str) -> tuple[str | None, str]:
    agent = header.get("ContrastBolusAgent")
    said, words = _contrast_keywords(text)
    if said == "conflict":
        return None, f"{evidence}; contrast keywords conflict: {words}"
    if agent and said == "pre":
        return None, f"{evidence}; ContrastBolusAgent {agent!r} but {words}"
    if agent:
        return "T1ce", f"{evidence}; ContrastBolusAgent {agent!r}"
    if said == "post":
        return "T1ce", f"{evidence}; {words}"
    if said == "pre":
        return "T1", f"{evidence}; {words}"
    return "T1", f"{evidence}; no contrast agent recorded and no post-contrast keyword"


# --------------------------------------------------------------------------- assignment


def load_mapping(path: str | os.PathLike) -> dict[str, str]:
    """A user's series-to-sequence mapping, for what the rules cannot decide.

    Keys are matched (case-insensitive, shell globs allowed: ``*``, ``?``, ``[..]``) against a
    series' SeriesInstanceUID, SeriesDescription, ProtocolName and, for NIfTI, the file name and
    its path relative to the study folder. Values are one of T1, T1ce, T2, FLAIR (any case) or
    ``ignore`` to leave a series out.

    YAML (``.yaml``/``.yml``): a mapping, e.g. ``"AX T1 MPRAGE POST*": T1ce`` and
    ``"1.2.840.1234.5": ignore``. CSV: a header row with the columns ``pattern`` and
    ``sequence``, one series pattern per row."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a mapping of series pattern -> sequence is expected")
        rows = [(str(k), str(v), f"key {k!r}") for k, v in loaded.items()]
    elif path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"pattern", "sequence"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: the columns 'pattern' and 'sequence' are expected")
            rows = [
                ((r["pattern"] or "").strip(), (r["sequence"] or "").strip(), f"line {i}")
                for i, r in enumerate(reader, start=2)
            ]
    else:
        raise ValueError(f"{path}: a .yaml, .yml or .csv mapping is expected")
    canonical = {s.lower(): s for s in (*SEQUENCES, IGNORE)}
    mapping: dict[str, str] = {}
    for pattern, value, where in rows:
        if not pattern:
            raise ValueError(f"{path}, {where}: empty pattern")
        if value.lower() not in canonical:
            raise ValueError(
                f"{path}, {where}: {value!r} is not one of {', '.join(SEQUENCES)} or {IGNORE}"
            )
        mapping[pattern] = canonical[value.lower()]
    return mapping


def _mapped(series: Series, mapping: Mapping[str, str]) -> list[tuple[str, str]]:
    """(pattern, sequence) for every mapping key that names the series."""
    names = [series.uid, series.description, series.protocol]
    if series.path is not None:
        names.append(series.path.name)
    names = [n.lower() for n in names if n]
    return [
        (pattern, value)
        for pattern, value in mapping.items()
        if any(fnmatch.fnmatchcase(n, pattern.lower()) for n in names)
    ]


def assign_sequences(
    series: Iterable[Series], mapping: Mapping[str, str] | None = None
) -> tuple[dict[str, Series], list[StudyProblem]]:
    """The four sequences of one study, each from exactly one usable series.

    Unusable series (:func:`check_series`) and series that are none of the four are skipped and
    noted; a sequence claimed by two usable series is reported as ambiguous and left out, as is
    a sequence no series gave: the caller decides whether three of four are enough. ``mapping``
    (:func:`load_mapping`) overrides identification for the series it names."""
    mapping = mapping or {}
    problems: list[StudyProblem] = []
    claims: dict[str, list[tuple[Series, str]]] = defaultdict(list)
    for s in series:
        first = s.path or (s.files[0] if s.files else None)
        hits = _mapped(s, mapping)
        values = {v for _, v in hits}
        if len(values) > 1:
            problems.append(
                StudyProblem(first, f"{s.label}: mapping entries disagree: {hits}", "mapping")
            )
            continue
        if values == {IGNORE}:
            continue
        reason = check_series(s)
        if reason is not None:
            problems.append(StudyProblem(first, f"{s.label} skipped: {reason}", "unusable"))
            continue
        if values:
            sequence, evidence = values.pop(), f"user mapping {hits[0][0]!r}"
        else:
            sequence, evidence = identify(s.header)
        if sequence is None:
            problems.append(StudyProblem(first, f"{s.label}: {evidence}", "unidentified"))
            continue
        claims[sequence].append((s, evidence))
    assigned: dict[str, Series] = {}
    for sequence in SEQUENCES:
        candidates = claims.get(sequence, [])
        if len(candidates) == 1:
            assigned[sequence] = candidates[0][0]
        elif not candidates:
            problems.append(
                StudyProblem(None, f"no usable series identified as {sequence}", "missing")
            )
        else:
            listed = "; ".join(
                f"{s.label}{' [DERIVED]' if 'DERIVED' in s.header.get('ImageType', ()) else ''}"
                f" by {evidence}"
                for s, evidence in candidates
            )
            problems.append(
                StudyProblem(
                    candidates[0][0].path or candidates[0][0].files[0],
                    f"{len(candidates)} series identified as {sequence}, none chosen "
                    f"(name one in a mapping): {listed}",
                    "ambiguous",
                )
            )
    return assigned, problems
