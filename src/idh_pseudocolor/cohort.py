"""Finding subjects, their files and their IDH labels in a cohort folder.

Only paths and label *values* are gathered here; volumes are opened later, per subject and in
parallel, by :mod:`idh_pseudocolor.slices`. Nothing here raises for one bad subject: problems are
recorded per row so the pipeline can exclude that subject with a reason and carry on.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path
from typing import Any

import pandas as pd

from idh_pseudocolor.configurations import SEQUENCES

#: File name templates per layout, relative to the cohort root; ``{id}`` is the subject folder.
LAYOUTS: dict[str, dict[str, str]] = {
    "egd": {
        "T1": "{id}/T1.nii.gz",
        "T1ce": "{id}/T1GD.nii.gz",
        "T2": "{id}/T2.nii.gz",
        "FLAIR": "{id}/FLAIR.nii.gz",
        "mask": "{id}/MASK.nii.gz",
    },
    "brats": {
        "T1": "{id}/{id}_t1.nii.gz",
        "T1ce": "{id}/{id}_t1ce.nii.gz",
        "T2": "{id}/{id}_t2.nii.gz",
        "FLAIR": "{id}/{id}_flair.nii.gz",
        "mask": "{id}/{id}_seg.nii.gz",
    },
}
FILE_KEYS: tuple[str, ...] = (*SEQUENCES, "mask")
#: where a patient's mask may sit in a ``--masks`` folder (another tool's output)
MASK_FOLDER_NAMES = ("{id}.nii.gz", "{id}.nii", "{id}/MASK.nii.gz", "{id}/{id}_seg.nii.gz")
PHANTOM_MARKER = "phantom_cohort.json"
#: what ``idh-pseudocolor preprocess`` leaves at a cohort's root: what was done to whom
PREPROCESSING_REPORT = "preprocessing_report.csv"

_WILDTYPE = {
    "0",
    "wildtype",
    "wild-type",
    "wild type",
    "wt",
    "idh-wildtype",
    "idh wildtype",
    "negative",
}
_MUTANT = {"1", "mutant", "mutated", "idh-mutant", "idh mutant", "positive"}
_UNKNOWN = {"-1", "", "nan", "na", "n/a", "none", "unknown", "not available", "?"}
# UCSF-PDGM style protein notation, e.g. "IDH1 p.R132H", "IDH2 p.R172K".
_PROTEIN_CHANGE = re.compile(r"^idh[12]?[\s_-]*(p\.)?[a-z]\d+[a-z]+$")


class LabelError(ValueError):
    """An IDH value that is unknown or cannot be read; the message is the exclusion reason."""


def parse_idh(value: Any) -> int:
    """Map an IDH status value to 1 (mutant) or 0 (wild-type).

    Accepts EGD's 0/1 (int or string), and UCSF-PDGM words: ``wildtype`` is 0; ``mutated (NOS)``,
    ``mutant`` or a protein change such as ``IDH1 p.R132H`` is 1. Anything else is refused rather
    than guessed, because a silently wrong label is worse than a lost subject.
    """
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        raise LabelError("IDH status missing")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        if value in (0, 1):
            return int(value)
        if value == -1:
            raise LabelError("IDH status unknown (-1)")
        raise LabelError(f"unparseable IDH value {value!r}")
    text = str(value).strip().lower()
    if text in _UNKNOWN:
        raise LabelError(f"IDH status unknown ({value!r})")
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return parse_idh(number)
    if text in _WILDTYPE:
        return 0
    if text in _MUTANT or text.startswith(("mutated", "mutant")) or _PROTEIN_CHANGE.match(text):
        return 1
    raise LabelError(f"unparseable IDH value {value!r}")


def id_key(subject_id: str) -> tuple:
    """Id normalised for matching: case-folded words and numbers without zero padding.

    ``UCSF-PDGM-004`` and ``UCSF-PDGM-0004`` give the same key.
    """
    return tuple(
        int(tok) if tok.isdigit() else tok.lower()
        for tok in re.findall(r"[A-Za-z]+|\d+", str(subject_id))
    )


def _last_number(key: tuple) -> int | None:
    nums = [t for t in key if isinstance(t, int)]
    return nums[-1] if nums else None


def match_ids(folder_ids: list[str], label_ids: list[str]) -> dict[str, str]:
    """Map label-table ids onto folder ids, tolerating zero padding and prefixes.

    Exact normalised keys win; otherwise a label id whose last number identifies exactly one
    folder is matched to it. Unmatched label ids are left out of the result.
    """
    by_key = {id_key(f): f for f in folder_ids}
    by_number: dict[int, list[str]] = {}
    for f in folder_ids:
        n = _last_number(id_key(f))
        if n is not None:
            by_number.setdefault(n, []).append(f)
    matched: dict[str, str] = {}
    for label_id in label_ids:
        key = id_key(label_id)
        if key in by_key:
            matched[label_id] = by_key[key]
            continue
        candidates = by_number.get(_last_number(key), [])  # type: ignore[arg-type]
        if len(candidates) == 1:
            matched[label_id] = candidates[0]
    return matched


def _egd_metadata(path: Path) -> dict[str, Any]:
    """Flatten the parts of EGD's metadata.json that the study reports on."""
    meta = json.loads(path.read_text())
    gen = meta.get("Genetic_and_Histological_labels", {}) or {}
    clin = meta.get("Clinical_data", {}) or {}
    scan = meta.get("Scan_characteristics", {}) or {}
    return {
        "label_raw": gen.get("IDH"),
        "codeletion_1p19q": gen.get("1p19q"),
        "grade": gen.get("Grade"),
        "age": clin.get("Age"),
        "sex": clin.get("Sex"),
        "manufacturer": scan.get("Manufacturer"),
        "system": scan.get("System"),
        "field": scan.get("Field"),
    }


def discover_cohort(
    root: str | Path,
    layout: str = "egd",
    labels: str | Path | None = None,
    id_column: str = "ID",
    label_column: str = "IDH",
    files: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per subject folder (and per labelled id without a folder).

    Columns: ``subject_id``, ``label_raw``, ``label_source`` (the file the label came from),
    ``file_<T1|T1ce|T2|FLAIR|mask>``, clinical metadata
    where the layout has it, ``phantom`` and ``problem`` (why the subject cannot be used, found
    before any image is opened; empty when none).

    Args:
        root: the cohort folder, holding one folder per subject.
        layout: ``egd`` or ``brats`` (file names above), or ``custom`` together with ``files``.
        labels: CSV with ``id_column`` and ``label_column``; required unless subjects carry EGD
            ``metadata.json``. When given, it is the only source of labels.
        files: file templates per key of :data:`FILE_KEYS` for ``layout='custom'``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Cohort folder {root} does not exist. Point the catalog entry 'cohort' at your data "
            "(kedro run --params cohort_path=/path/to/cohort) or generate the phantom cohort: "
            f"idh-pseudocolor phantom --out {root}"
        )
    templates = _templates(layout, files)
    folder_ids = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    phantom = (root / PHANTOM_MARKER).is_file()

    rows: dict[str, dict[str, Any]] = {}
    for sid in folder_ids:
        row: dict[str, Any] = {
            "subject_id": sid,
            "label_raw": None,
            "label_source": "",
            "problem": "",
        }
        for key, template in templates.items():
            row[f"file_{key}"] = str(root / template.format(id=sid))
        meta_path = root / sid / "metadata.json"
        if labels is None:
            row["label_source"] = str(meta_path)
            if meta_path.is_file():
                try:
                    row.update(_egd_metadata(meta_path))
                except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
                    row["problem"] = f"{meta_path}: unreadable metadata.json ({exc})"
            else:
                row["problem"] = f"{meta_path}: no metadata.json and no labels CSV configured"
        rows[sid] = row

    if labels is not None:
        _attach_csv_labels(rows, Path(labels), id_column, label_column, templates, root)

    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        raise ValueError(f"Cohort folder {root} holds no subject folders")
    frame["phantom"] = phantom
    frame["label_raw"] = frame["label_raw"].astype(object)
    frame = frame.reset_index(drop=True)
    frame.attrs["cohort_record"] = cohort_record(root)
    return frame


def mask_in_folder(folder: Path, subject_id: str) -> Path | None:
    """The patient's mask in a folder of masks from another tool, by the names it may have."""
    for name in MASK_FOLDER_NAMES:
        path = Path(folder) / name.format(id=subject_id)
        if path.is_file():
            return path
    return None


def cohort_record(root: str | Path) -> dict[str, Any]:
    """What the cohort says about itself: the phantom marker's content (generator settings,
    planted cues), or ``{"synthetic": False}`` for a real cohort; and, for a cohort written by
    ``idh-pseudocolor preprocess``, the summary of its preprocessing report
    (:func:`preprocessing_record`)."""
    marker = Path(root) / PHANTOM_MARKER
    record: dict[str, Any] = {"synthetic": False}
    if marker.is_file():
        try:
            record = {**json.loads(marker.read_text()), "synthetic": True}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{marker}: unreadable phantom marker ({exc}); regenerate the phantom cohort"
            ) from None
    preprocessing = preprocessing_record(root)
    return record if preprocessing is None else {**record, "preprocessing": preprocessing}


#: per-sequence QC numbers of the preprocessing report (columns ``<sequence>_<number>``)
REGISTRATION_NUMBERS = ("mi_before", "mi_after", "rotation_deg", "shift_mm")


def preprocessing_record(root: str | Path) -> dict[str, Any] | None:
    """The preprocessing report of a cohort written from raw studies, summarized for the study's
    report: patients per status, who was excluded and why, where the tumor masks came from, each
    sequence's registration numbers (medians over patients) and every problem seen. None for a
    cohort that has no report (a curated one). The report is at the cohort's root, or beside
    it where the cohort is the ``SUBJECTS`` folder of ``preprocess --out``."""
    # preprocess writes OUT/SUBJECTS/<id>/ (the cohort, as EGD ships it) beside OUT/<report>
    root = Path(root)
    path = next(
        (
            p
            for p in (root / PREPROCESSING_REPORT, root.parent / PREPROCESSING_REPORT)
            if p.is_file() and (p.parent == root or root.name == "SUBJECTS")
        ),
        None,
    )
    if path is None:
        return None
    try:
        report = pd.read_csv(path, dtype={"subject_id": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable preprocessing report ({exc})") from None
    missing = {"subject_id", "status", "reason", "mask_source"} - set(report.columns)
    if missing:
        raise ValueError(f"{path}: not a preprocessing report (no {', '.join(sorted(missing))})")

    def text(value: Any) -> str:
        return "" if pd.isna(value) else str(value)

    present = report[report["status"] != "excluded"]
    registration = []
    for sequence in SEQUENCES:
        columns = {k: f"{sequence}_{k}" for k in REGISTRATION_NUMBERS}
        if columns["mi_after"] not in report.columns:
            continue
        numbers = present[list(columns.values())].apply(pd.to_numeric, errors="coerce")
        done = numbers.dropna(subset=[columns["mi_after"]])
        if done.empty:
            continue
        registration.append(
            {
                "sequence": sequence,
                "patients": len(done),
                **{f"{k}_median": float(done[c].median()) for k, c in columns.items()},
                "mi_after_min": float(done[columns["mi_after"]].min()),
            }
        )
    problems = report.get("problems", pd.Series([""] * len(report)))
    return {
        "report": str(path),
        "patients": len(report),
        "status": {k: int(v) for k, v in report["status"].value_counts().items()},
        "excluded": [
            {"subject_id": r.subject_id, "reason": text(r.reason)}
            for r in report[report["status"] == "excluded"].itertuples()
        ],
        "mask_sources": {
            k: int(v) for k, v in present["mask_source"].map(text).value_counts().items()
        },
        "missing_sequences": {
            k: int(v)
            for k, v in present.get("missing", pd.Series(dtype=str))
            .map(text)
            .value_counts()
            .items()
            if k
        },
        "registration": registration,
        "problems": [
            {"subject_id": sid, "problems": text(p)}
            for sid, p in zip(report["subject_id"], problems, strict=True)
            if text(p)
        ],
    }


def _templates(layout: str, files: dict[str, str] | None) -> dict[str, str]:
    if layout == "custom":
        if not files or set(files) != set(FILE_KEYS):
            raise ValueError(
                "layout 'custom' needs 'files' with exactly the "
                f"keys {FILE_KEYS}, got {sorted(files or {})}"
            )
        return dict(files)
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown cohort layout {layout!r}; use one of {sorted(LAYOUTS)} or 'custom'"
        )
    return {**LAYOUTS[layout], **(files or {})}


def read_labels_csv(path: Path, id_column: str, label_column: str, where_set: str) -> pd.DataFrame:
    """A labels CSV as strings (values are parsed per subject, with a reason when they fail);
    a missing file or column is named, with where the column names are set."""
    if not path.is_file():
        raise FileNotFoundError(f"Labels CSV {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (id_column, label_column) if c not in table.columns]
    if missing:
        raise ValueError(
            f"Labels CSV {path} lacks column(s) {missing}; it has {list(table.columns)}. "
            f"Set {where_set}."
        )
    return table


def _attach_csv_labels(
    rows: dict[str, dict[str, Any]],
    path: Path,
    id_column: str,
    label_column: str,
    templates: dict[str, str],
    root: Path,
) -> None:
    table = read_labels_csv(
        path, id_column, label_column, "id_column / label_column on the 'cohort' catalog entry"
    )
    mapping = match_ids(list(rows), list(table[id_column]))
    seen: set[str] = set()
    for label_id, value in zip(table[id_column], table[label_column], strict=True):
        folder = mapping.get(label_id)
        if folder is None:
            rows[f"(label only) {label_id}"] = {
                "subject_id": label_id,
                "label_raw": value,
                "label_source": str(path),
                "problem": (
                    f"{path}: subject {label_id} has a label but no image folder under {root}"
                ),
                **{f"file_{k}": "" for k in templates},
            }
            continue
        if folder in seen:
            rows[folder]["problem"] = f"{path}: subject {folder} is labelled more than once"
        seen.add(folder)
        rows[folder]["label_raw"] = value
        rows[folder]["label_source"] = str(path)
    for sid, row in rows.items():
        row["label_source"] = row["label_source"] or str(path)
        if sid not in seen and not row["problem"]:
            row["problem"] = f"{path}: no label for subject {sid}"


def labels_for(
    subject_ids: list[str], path: Path, id_column: str, label_column: str, where_set: str
) -> tuple[dict[str, int], dict[str, str]]:
    """The IDH label of each subject id found in a labels CSV (ids matched as for a cohort: zero
    padding may differ; values parsed as the cohort reader does), and per subject whose value
    cannot be read, the reason naming the file. Subjects the CSV lacks are in neither."""
    table = read_labels_csv(path, id_column, label_column, where_set)
    mapping = match_ids(list(subject_ids), [str(v) for v in table[id_column]])
    parsed: dict[str, int] = {}
    problems: dict[str, str] = {}
    for label_id, value in zip(table[id_column].astype(str), table[label_column], strict=True):
        subject = mapping.get(label_id)
        if subject is None:
            continue
        try:
            parsed[subject] = parse_idh(value)
        except LabelError as exc:
            problems[subject] = f"{subject}: {path}: {exc}"
    return parsed, problems
