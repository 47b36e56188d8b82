"""From a folder of raw studies to a cohort the project reads: one patient at a time, its series
found and identified (:mod:`idh_pseudocolor.raw_studies`), co-registered onto the template grid
EGD uses, bias-corrected and skull-stripped (:mod:`idh_pseudocolor.registration`), written in the
EGD layout (``SUBJECTS/<id>/{T1,T1GD,T2,FLAIR}.nii.gz`` + ``metadata.json``) with a QC picture
and a row of the preprocessing report.

A bad study (a missing or ambiguous sequence, only a localizer, a 4-D series, a failed
registration) is reported with the file and the reason, and the other patients go on. Nothing is
written into the input folder; a patient already written is not redone unless asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from idh_pseudocolor.cohort import (
    LAYOUTS,
    PHANTOM_MARKER,
    PREPROCESSING_REPORT,
    labels_for,
    mask_in_folder,
)
from idh_pseudocolor.configurations import SEQUENCES
from idh_pseudocolor.parallel import in_order
from idh_pseudocolor.raw_studies import StudyProblem, assign_sequences, find_series, read_series
from idh_pseudocolor.registration import (
    AlignedPatient,
    RegistrationFailed,
    align_patient,
    chain,
    from_nifti,
    physical_points,
    ras_affine,
    resample,
    residual_error_mm,
    same_grid,
    template_brain_mask,
    to_nifti,
    transform_from_ras,
    transform_to_ras,
)

logger = logging.getLogger(__name__)

#: the sequence registered to the template, first present wins: T1 has the template's contrast
REFERENCE_ORDER: tuple[str, ...] = ("T1", "T1ce", "FLAIR", "T2")
#: fewer sequences than this cannot make any configuration of the study
MINIMUM_SEQUENCES = 2
#: the preprocessing record of a written patient, beside its volumes
RECORD = "preprocessing.json"
REPORT_COLUMNS = [
    "subject_id",
    "status",
    "reason",
    "sequences",
    "missing",
    "mask_source",
    "reference",
    "seconds",
]
#: a written patient's tumor mask (EGD's name); drawn by a segmentation model where none is given
MASK = Path(LAYOUTS["egd"]["mask"]).name


class PreprocessingError(RuntimeError):
    """A patient's study cannot be preprocessed; ``file`` is the series or file at fault."""

    def __init__(self, reason: str, file: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason, self.file = reason, None if file is None else str(file)


@dataclass
class PatientResult:
    """What happened to one patient: written (with the numbers of every registration) or
    excluded with the reason, and every problem seen on the way."""

    subject_id: str
    status: str  # written | excluded | kept (written by an earlier run)
    reason: str = ""
    file: str | None = None
    sequences: list[str] = field(default_factory=list)
    reference: str | None = None
    registrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[StudyProblem] = field(default_factory=list)
    seconds: float = 0.0
    mask_source: str = ""  # automatic (drawn by a segmentation model) | none; "" when excluded

    def row(self) -> dict[str, Any]:
        """The patient's row of the preprocessing report, one column per sequence's numbers."""
        row: dict[str, Any] = {
            "subject_id": self.subject_id,
            "status": self.status,
            "reason": f"{self.file}: {self.reason}" if self.file else self.reason,
            "sequences": " ".join(self.sequences),
            "missing": " ".join(s for s in SEQUENCES if s not in self.sequences),
            "mask_source": self.mask_source,
            "reference": self.reference or "",
            "seconds": round(self.seconds, 1),
            "problems": "; ".join(
                f"{p.file}: {p.reason}" if p.file else p.reason for p in self.problems
            ),
        }
        for name, numbers in self.registrations.items():
            for key in ("mi_before", "mi_after", "rotation_deg", "shift_mm"):
                row[f"{name}_{key}"] = numbers.get(key)
        return row


# -- one patient ----------------------------------------------------------------------------------
def choose_reference(sequences: Sequence[str]) -> str:
    """The sequence registered to the template: the first of :data:`REFERENCE_ORDER` present."""
    return next(s for s in REFERENCE_ORDER if s in sequences)


def read_study(
    folder: Path, mapping: Mapping[str, str] | None = None
) -> tuple[dict[str, sitk.Image], dict[str, str], list[StudyProblem]]:
    """A patient's sequences as images (with the series each came from) and the problems seen.
    Raises :class:`PreprocessingError` when fewer than :data:`MINIMUM_SEQUENCES` are usable."""
    series, problems = find_series(folder)
    assigned, more = assign_sequences(series, mapping)
    problems = [*problems, *more]
    images: dict[str, sitk.Image] = {}
    sources: dict[str, str] = {}
    for name, chosen in assigned.items():
        try:
            images[name] = read_series(chosen)
        except (ValueError, RuntimeError) as exc:  # SimpleITK raises RuntimeError on bad files
            problems.append(StudyProblem(chosen.files[0] if chosen.files else None, str(exc)))
            continue
        sources[name] = chosen.label
    if len(images) < MINIMUM_SEQUENCES:
        blocking = [p for p in problems if p.kind != "unidentified"] or problems
        first = blocking[0] if blocking else None
        found = ", ".join(sorted(images)) or "none"
        raise PreprocessingError(
            f"{len(images)} usable sequence(s) ({found}); at least {MINIMUM_SEQUENCES} of "
            f"{', '.join(SEQUENCES)} are needed" + (f"; {first.reason}" if first else ""),
            first.file if first else folder,
        )
    return images, sources, problems


def registration_numbers(aligned: AlignedPatient) -> dict[str, dict[str, Any]]:
    """Each registration's mutual information before and after (ITK's Mattes metric is its
    negative: here higher is better), and the motion it found (the QC numbers)."""
    results = {aligned_reference(aligned): aligned.to_template, **aligned.to_reference}
    return {
        name: {
            "mi_before": -float(r.metric_before),
            "mi_after": -float(r.metric_after),
            "rotation_deg": float(r.rotation_deg),
            "shift_mm": float(r.shift_mm),
            "iterations": int(r.iterations),
        }
        for name, r in results.items()
    }


def aligned_reference(aligned: AlignedPatient) -> str:
    """The sequence that went to the template (the one not registered to another)."""
    return next(name for name in aligned.images if name not in aligned.to_reference)


def template_to_acquired(aligned: AlignedPatient) -> dict[str, np.ndarray]:
    """Per sequence, the 4x4 RAS matrix taking a template-world point to where the sequence
    imaged it: what a ground truth (the raw phantom's transforms.json) is compared with."""
    reference = aligned_reference(aligned)
    out = {reference: transform_to_ras(aligned.to_template.transform)}
    for name, result in aligned.to_reference.items():
        out[name] = transform_to_ras(chain(aligned.to_template.transform, result.transform))
    return out


def preprocess_patient(
    folder: Path,
    subjects: Path,
    *,
    subject_id: str | None = None,
    label: int | None = None,
    mapping: Mapping[str, str] | None = None,
    voxel_size: float = 1.0,
    seed: int = 0,
    qc_folder: Path | None = None,
) -> PatientResult:
    """One patient's raw study to ``subjects/<id>/`` (EGD names, float32, RAS on the template
    grid, zero outside the brain), its record and QC picture; never raises for a bad study."""
    sid = subject_id or folder.name
    started = time.perf_counter()
    try:
        images, sources, problems = read_study(folder, mapping)
        reference = choose_reference(list(images))
        aligned = align_patient(images, reference, voxel_size=voxel_size, seed=seed)
    except PreprocessingError as exc:
        return PatientResult(sid, "excluded", exc.reason, exc.file, seconds=_since(started))
    except RegistrationFailed as exc:
        reason = f"registration of {exc.where or 'a sequence'} failed: {exc.reason}"
        return PatientResult(sid, "excluded", reason, str(folder), seconds=_since(started))
    result = PatientResult(
        sid,
        "written",
        sequences=[s for s in SEQUENCES if s in images],
        reference=reference,
        registrations=registration_numbers(aligned),
        problems=problems,
    )
    grids = {name: grid_record(image) for name, image in images.items()}
    write_patient(subjects / sid, aligned, label, sources, result, grids)
    if qc_folder is not None:
        qc_folder.mkdir(parents=True, exist_ok=True)
        save_overlay(aligned, sid, qc_folder / f"{sid}.png")
    result.seconds = _since(started)
    return result


def grid_record(image: sitk.Image) -> dict[str, Any]:
    """A sequence's grid as acquired (shape and RAS affine, as a NIfTI of it would have)."""
    return {"shape": [int(n) for n in image.GetSize()], "affine_ras": ras_affine(image).tolist()}


def _since(started: float) -> float:
    return time.perf_counter() - started


def write_patient(
    folder: Path,
    aligned: AlignedPatient,
    label: int | None,
    sources: Mapping[str, str],
    result: PatientResult,
    grids: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The EGD layout: each sequence skull-stripped by the brain mask, ``metadata.json`` with the
    label (-1 when unknown, as EGD), and the record of how the volumes were made (with each
    sequence's grid as acquired, so a mask drawn there can be brought over later); the record is
    written last, so a folder without it is an interrupted patient."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).unlink(missing_ok=True)
    (folder / MASK).unlink(missing_ok=True)  # drawn on the old volumes: not theirs any more
    brain = sitk.Cast(aligned.brain, sitk.sitkFloat32)
    for name, image in aligned.images.items():
        stripped = sitk.Cast(image, sitk.sitkFloat32) * brain
        path = folder / Path(LAYOUTS["egd"][name].format(id=".")).name
        to_nifti(stripped).to_filename(str(path))
    meta = {"Genetic_and_Histological_labels": {"IDH": -1 if label is None else int(label)}}
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    record = {
        "sequences": result.sequences,
        "reference": result.reference,
        "sources": dict(sources),
        "registrations": result.registrations,
        "template_to_acquired_ras": {
            k: v.tolist() for k, v in template_to_acquired(aligned).items()
        },
        "acquired_grids": dict(grids or {}),
        "problems": [{"file": p.file and str(p.file), "reason": p.reason} for p in result.problems],
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2, default=str))


def save_overlay(aligned: AlignedPatient, subject_id: str, path: Path) -> Path:
    """Every sequence on the template grid at three axial levels, each with the reference's
    outline drawn over it: misregistration shows as an outline that does not fit."""
    from matplotlib.figure import Figure

    reference = aligned_reference(aligned)
    arrays = {k: sitk.GetArrayFromImage(v) for k, v in aligned.images.items()}  # z, y, x
    brain = sitk.GetArrayFromImage(aligned.brain) > 0
    z_extent = np.flatnonzero(brain.any(axis=(1, 2)))
    levels = np.linspace(z_extent[0], z_extent[-1], 5)[1:4].astype(int) if len(z_extent) else [0]
    edges = _outline(arrays[reference])
    names = [s for s in SEQUENCES if s in arrays]
    fig = Figure(figsize=(2.2 * len(names), 2.4 * len(levels)), constrained_layout=True)
    axes = fig.subplots(len(levels), len(names), squeeze=False)
    for row, z in enumerate(levels):
        for col, name in enumerate(names):
            ax = axes[row][col]
            plane = arrays[name][z]
            high = np.percentile(plane[plane > 0], 99) if (plane > 0).any() else 1.0
            ax.imshow(plane[::-1], cmap="gray", vmin=0, vmax=high)
            ax.contour(edges[z][::-1], levels=[0.5], colors="#ff3b30", linewidths=0.5)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name + (" (reference)" if name == reference else ""), fontsize=9)
    fig.suptitle(f"{subject_id}: each sequence with the {reference} outline", fontsize=10)
    fig.savefig(path, dpi=80)
    return path


def _outline(volume: np.ndarray) -> np.ndarray:
    """A binary head/brain outline of a volume (above a low intensity threshold)."""
    positive = volume[volume > 0]
    if positive.size == 0:
        return np.zeros_like(volume, dtype=float)
    return (volume > 0.15 * np.percentile(positive, 95)).astype(float)


# -- a folder of patients ---------------------------------------------------------------------
def patient_folders(raw: Path) -> list[Path]:
    """One folder per patient (hidden folders, such as the raw phantom's ``.truth``, skipped)."""
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw} is not a folder of raw studies (one folder per patient)")
    return sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_labels(
    labels_csv: Path | None, ids: Sequence[str], id_column: str = "ID", label_column: str = "IDH"
) -> tuple[dict[str, int], list[str]]:
    """Labels per patient folder from a labels CSV (ids matched as for a cohort), and the
    problems: a patient without a label is written with -1 (unknown), as EGD does."""
    if labels_csv is None:
        return {}, []
    labels, problems = labels_for(
        list(ids), Path(labels_csv), id_column, label_column, "--id-column/--label-column"
    )
    return labels, list(problems.values())


def preprocess_cohort(
    raw: Path,
    out: Path,
    *,
    labels_csv: Path | None = None,
    mapping: Mapping[str, str] | None = None,
    voxel_size: float = 1.0,
    seed: int = 0,
    redo: bool = False,
    n_workers: int | None = 1,
    progress: bool = True,
    segmentation_model: str | Path | None = None,
    mask_folder: str | Path | None = None,
) -> pd.DataFrame:
    """Every patient folder of ``raw`` into ``out/SUBJECTS`` (+ ``out/qc/<id>.png`` and
    ``out/preprocessing_report.csv``); returns the report. ``raw`` is only read. With a
    ``segmentation_model`` (file or versioned folder), every written patient without a tumor
    mask gets the model's (:func:`add_masks`)."""
    raw, out = Path(raw).resolve(), Path(out).resolve()
    if out == raw or raw in out.parents:
        raise ValueError(f"--out {out} lies inside --in {raw}: nothing is written into the input")
    folders = patient_folders(raw)
    labels, label_problems = read_labels(labels_csv, [f.name for f in folders])
    for problem in label_problems:
        logger.warning("Label: %s", problem)
    subjects, qc = out / "SUBJECTS", out / "qc"
    todo = [f for f in folders if redo or not (subjects / f.name / RECORD).is_file()]
    kept = [PatientResult(f.name, "kept") for f in folders if f not in todo]

    def run(folder: Path) -> PatientResult:
        return preprocess_patient(
            folder,
            subjects,
            label=labels.get(folder.name),
            mapping=mapping,
            voxel_size=voxel_size,
            seed=seed,
            qc_folder=qc,
        )

    results = kept + list(
        in_order(
            run,
            [(f,) for f in todo],
            n_workers,
            desc="preprocess",
            unit="patient",
            progress=progress,
        )
    )
    if mask_folder is not None:
        masks_from_folder(results, subjects, Path(mask_folder))
    add_masks(results, subjects, segmentation_model, progress)
    report = pd.DataFrame([r.row() for r in results])
    report = report.reindex(
        columns=[*REPORT_COLUMNS, *[c for c in report.columns if c not in REPORT_COLUMNS]]
    )
    report = report.sort_values("subject_id", kind="stable").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    report.to_csv(out / PREPROCESSING_REPORT, index=False)
    if subjects.is_dir():
        mark_synthetic(raw, out, voxel_size)
    for r in results:
        if r.status == "excluded":
            logger.warning("Excluded %s: %s", r.subject_id, r.row()["reason"])
    return report


def mark_synthetic(raw: Path, out: Path, voxel_size: float) -> None:
    """Raw studies of the phantom (``.truth/cohort.json`` says ``synthetic``) make a phantom
    cohort: its marker goes beside the patients (``out/SUBJECTS``), so every later step knows,
    the paper path's refusal of synthetic data among them (and the planted-truth check has the
    cues to test)."""
    truth = raw / ".truth" / "cohort.json"
    if not truth.is_file():
        return
    raw_record = json.loads(truth.read_text())
    if not raw_record.get("synthetic"):
        return
    from idh_pseudocolor.phantom import CUES, PLANTED_SEQUENCES

    marker = {
        "synthetic": True,
        "note": "Preprocessed raw phantom studies (idh-pseudocolor preprocess): not patients.",
        **{k: raw_record.get(k) for k in ("generator_version", "n_subjects", "seed", "site")},
        "mutant_fraction": raw_record.get("mutant_fraction"),
        "voxel_size_mm": voxel_size,
        "layout": "egd",
        "cues": CUES,
        "planted_sequences": list(PLANTED_SEQUENCES),
        "raw": {k: v for k, v in raw_record.items() if k != "labels"},
    }
    (out / "SUBJECTS" / PHANTOM_MARKER).write_text(json.dumps(marker, indent=2))


def masks_from_folder(results: Sequence[PatientResult], subjects: Path, folder: Path) -> None:
    """Written (and kept) patients without a tumor mask get another tool's from ``folder``
    (``<id>.nii.gz``, ``<id>/MASK.nii.gz``, ...): a mask on the written template grid as it is, a
    mask on one of the patient's sequences as acquired (any axis order or flips) brought onto the
    template grid through the transform the preprocessing recorded for that sequence (nearest
    neighbour). One on neither grid, or empty there, is a problem in the patient's row, never
    guessed; the segmentation model may then draw one."""
    for r in results:
        if r.status == "excluded" or (subjects / r.subject_id / MASK).is_file():
            continue
        source = mask_in_folder(folder, r.subject_id)
        if source is None:
            continue
        try:
            grid = bring_mask(subjects / r.subject_id, source)
        except PreprocessingError as exc:
            r.problems.append(StudyProblem(source, exc.reason, "mask"))
            continue
        record_path = subjects / r.subject_id / RECORD
        record = json.loads(record_path.read_text())
        record["mask"] = {"source": "given", "file": str(source), "grid": grid}
        record_path.write_text(json.dumps(record, indent=2, default=str))


def bring_mask(patient: Path, source: Path) -> str:
    """``source`` (a mask on the template grid or on one of the patient's acquired sequences) as
    ``patient/MASK.nii.gz``, uint8 0/1; returns the grid it was on (``template`` or a sequence).
    Raises :class:`PreprocessingError` naming why it cannot be used."""
    import nibabel as nib

    record = json.loads((patient / RECORD).read_text())
    try:
        img = nib.load(str(source))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds for a bad file
        raise PreprocessingError(f"unreadable mask ({exc})", source) from None
    if data.ndim != 3:
        raise PreprocessingError(f"a mask must be 3-D, this one has shape {data.shape}", source)
    written = nib.load(str(patient / LAYOUTS["egd"][record["reference"]].format(id=".")))
    mask_image = from_nifti(nib.Nifti1Image((data > 0).astype(np.float32), img.affine))
    if same_grid(data.shape, img.affine, written.shape, written.affine):
        grid, transform = "template", None
    else:
        grids = record.get("acquired_grids") or {}
        if not grids:
            raise PreprocessingError(
                "not on the template grid, and this patient was preprocessed before acquired "
                "grids were recorded: preprocess it again (--redo) to use masks drawn on a series",
                source,
            )
        grid = next(
            (
                name
                for name, g in grids.items()
                if same_grid(data.shape, img.affine, g["shape"], np.asarray(g["affine_ras"]))
            ),
            None,
        )
        if grid is None:
            raise PreprocessingError(
                f"on none of the patient's grids (the template's {written.shape}, or "
                + ", ".join(f"{n} {tuple(g['shape'])}" for n, g in grids.items())
                + " as acquired): resample it onto one of them",
                source,
            )
        transform = transform_from_ras(np.asarray(record["template_to_acquired_ras"][grid]))
    moved = resample(mask_image, from_nifti(written), transform, kind="mask")
    out = (sitk.GetArrayFromImage(moved).transpose(2, 1, 0) > 0.5).astype(np.uint8)
    if not out.any():
        raise PreprocessingError(
            f"the mask holds no tumor voxel on the template grid ({grid})", source
        )
    nib.Nifti1Image(out, written.affine).to_filename(str(patient / MASK))
    return grid


def add_masks(
    results: Sequence[PatientResult],
    subjects: Path,
    segmentation_model: str | Path | None,
    progress: bool = False,
) -> None:
    """Tumor masks for the written (and kept) patients that have none: the segmentation model's,
    as ``MASK.nii.gz`` beside the volumes, with the model's file and digest in the patient's
    record; ``mask_source`` of each result says which patients have one. A patient the model
    finds no tumor in keeps no mask (a problem in its row), never an empty one."""
    from idh_pseudocolor import segmentation as seg

    present = [r for r in results if r.status != "excluded"]
    for r in present:
        record = json.loads((subjects / r.subject_id / RECORD).read_text())
        # the file decides (a mask deleted by hand is gone, whatever the record says)
        has_mask = (subjects / r.subject_id / MASK).is_file()
        r.mask_source = record.get("mask", {}).get("source", "given") if has_mask else "none"
        if r.status == "kept":
            r.sequences, r.reference = record["sequences"], record["reference"]
    todo = [(r.subject_id, _written_files(subjects, r)) for r in present if r.mask_source == "none"]
    if not todo or segmentation_model is None:
        return
    path = seg.find_model(segmentation_model)
    model = seg.load_model(path)
    described = seg.model_description(path, model)
    _, rows, errors = seg.fill_missing_masks(
        todo, model, lambda sid: subjects / sid / MASK, progress
    )
    by_id = {r.subject_id: r for r in present}
    for row in rows:
        if row["mask_source"] != "automatic":
            continue
        record_path = subjects / row["subject_id"] / RECORD
        record = json.loads(record_path.read_text())
        record["mask"] = {"source": "automatic", "tumor_ml": row["tumor_ml"], **described}
        record_path.write_text(json.dumps(record, indent=2, default=str))
        by_id[row["subject_id"]].mask_source = "automatic"
    for error in errors:
        problem = StudyProblem(Path(error.file) if error.file else None, error.reason, "mask")
        by_id[error.subject_id].problems.append(problem)


def _written_files(subjects: Path, result: PatientResult) -> dict[str, str]:
    """A written patient's sequence files (those it has) and where its mask goes."""
    return {
        k: str(subjects / LAYOUTS["egd"][k].format(id=result.subject_id))
        for k in (*result.sequences, "mask")
    }


# -- against a known truth (the raw phantom) ------------------------------------------------------
def residual_against_truth(
    written: Path, truth: Path, voxel_size: float = 1.0, max_points: int = 20000
) -> dict[str, tuple[float, float]]:
    """Per sequence, (median, max) mm between where the preprocessing and the ground truth
    (``transforms.json`` of the raw phantom) send the template's brain points: the residual
    misalignment of the written volumes."""
    record = json.loads((written / RECORD).read_text())
    true = json.loads((truth / "transforms.json").read_text())
    points = physical_points(template_brain_mask(voxel_size), max_points=max_points)
    out = {}
    for name, estimated in record["template_to_acquired_ras"].items():
        truth_matrix = _truth_matrix(true, name)
        if truth_matrix is None:
            continue
        out[name] = residual_error_mm(
            transform_from_ras(np.asarray(estimated)), transform_from_ras(truth_matrix), points
        )
    return out


def _truth_matrix(truth: Mapping[str, Any], sequence: str) -> np.ndarray | None:
    """A sequence's ``template_to_acquired_ras`` in the raw phantom's transforms.json (keyed by
    sequence name, or nested under ``sequences``)."""
    entries = truth.get("sequences", truth)
    entry = entries.get(sequence)
    if not isinstance(entry, Mapping) or "template_to_acquired_ras" not in entry:
        return None
    matrix = np.asarray(entry["template_to_acquired_ras"], dtype=float)
    return None if matrix.shape != (4, 4) or not np.isfinite(matrix).all() else matrix


def summary(report: pd.DataFrame) -> str:
    """One line for the console: how many patients were written, kept, excluded."""
    counts = report["status"].value_counts().to_dict() if len(report) else {}
    parts = [f"{counts.get(k, 0)} {k}" for k in ("written", "kept", "excluded")]
    return ", ".join(parts) + f" of {len(report)} patient(s)"
