"""Project commands that are not Kedro pipelines.

Available both as ``idh-pseudocolor <command>`` and, because Kedro merges a project's ``cli``
group into its own, as ``kedro <command>`` inside the project.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

# the phantom's sites, listed here so that importing the CLI (Kedro does, for every command) does
# not import nibabel and scipy; tests/test_phantom.py checks they equal phantom.SITES
SITE_NAMES = ("a", "b")
SITE_HELP = (
    "a = the development cohort's scanners; b = another hospital (brighter scale, offset, "
    "stronger bias field, more noise, 3-voxel-thick slices)"
)


@click.group()
def cli() -> None:
    """IDH Pseudocolor command line (pipelines run with `kedro run --pipelines ...`)."""


@cli.command()
@click.option(
    "--subjects", "n_subjects", default=200, show_default=True, help="Number of subjects."
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed; the cohort is reproducible from it."
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Cohort folder  [default: data/01_raw/cohort; with --raw: data/01_raw/raw_<format>]",
)
@click.option(
    "--voxel-size",
    default=1.0,
    show_default=True,
    help="Grid spacing in mm: 1 = EGD's 197x233x189 grid; 2 or 4 for fast tests.",
)
@click.option(
    "--layout",
    type=click.Choice(["egd", "brats"]),
    default="egd",
    show_default=True,
    help="File layout to write.",
)
@click.option(
    "--mutant-fraction", default=0.35, show_default=True, help="Fraction of IDH-mutant subjects."
)
@click.option(
    "--site",
    type=click.Choice(SITE_NAMES),
    default="a",
    show_default=True,
    help="Imaging site (scanner effects only; the same seed gives the same patients and labels): "
    f"{SITE_HELP}. Use b with another seed for an external validation cohort.",
)
@click.option("--workers", default=None, type=int, help="Parallel processes (default: all cores).")
@click.option(
    "--if-absent",
    is_flag=True,
    help="Do nothing when OUT already holds a complete cohort with these settings.",
)
@click.option(
    "--raw",
    "raw_format",
    type=click.Choice(["dicom", "nifti"]),
    default=None,
    help="Write the same patients as raw scanner studies instead (one folder per patient: a "
    "DICOM series per sequence and a localizer, or NIfTI files with dcm2niix-style sidecars; each "
    "sequence in its own geometry, misaligned, with skull and scalp; no tumor mask) for testing "
    "preprocessing; the truth goes to OUT/.truth. --layout and --site do not apply.",
)
def phantom(
    n_subjects: int,
    seed: int,
    out: str | None,
    voxel_size: float,
    layout: str,
    mutant_fraction: float,
    site: str,
    workers: int | None,
    if_absent: bool,
    raw_format: str | None,
) -> None:
    """Generate the synthetic (phantom) glioma cohort: not patient data."""
    if raw_format is not None:  # the same patients as raw scanner studies (raw_phantom)
        out = out or f"data/01_raw/raw_{raw_format}"
        refused = [
            f"--{name} {value}"
            for name, value, default in (("layout", layout, "egd"), ("site", site, "a"))
            if value != default
        ]
        if refused:
            raise click.UsageError(
                f"{' and '.join(refused)}: not with --raw (raw studies have no EGD/BraTS "
                "layout and are scanned at site a); drop it, or drop --raw"
            )
        from idh_pseudocolor.raw_phantom import export_raw_cohort, raw_cohort_is_complete

        if if_absent and raw_cohort_is_complete(
            out, n_subjects, seed, raw_format, voxel_size, mutant_fraction
        ):
            click.echo(f"Raw phantom studies already complete in {out}; nothing to do.")
            return
        start = time.perf_counter()
        try:
            rows = export_raw_cohort(
                Path(out),
                n_subjects=n_subjects,
                seed=seed,
                fmt=raw_format,
                voxel_size=voxel_size,
                n_workers=workers,
                mutant_fraction=mutant_fraction,
            )
        except ValueError as err:
            raise click.UsageError(str(err)) from err
        mutants = sum(r["IDH"] for r in rows)
        click.echo(
            f"Wrote {len(rows)} raw phantom studies ({raw_format}, {mutants} IDH-mutant) to {out} "
            f"(truth in {Path(out) / '.truth'}) in {time.perf_counter() - start:.0f} s"
        )
        return
    out = out or "data/01_raw/cohort"
    from idh_pseudocolor.phantom import cohort_is_complete, generate_cohort

    if if_absent and cohort_is_complete(
        out, n_subjects, seed, voxel_size, layout, mutant_fraction, site
    ):
        click.echo(f"Phantom cohort already complete in {out}; nothing to do.")
        return
    start = time.perf_counter()
    rows = generate_cohort(
        Path(out),
        n_subjects=n_subjects,
        seed=seed,
        voxel_size=voxel_size,
        layout=layout,
        mutant_fraction=mutant_fraction,
        n_workers=workers,
        site=site,
    )
    mutants = sum(r["IDH"] for r in rows)
    click.echo(
        f"Wrote {len(rows)} phantom subjects ({mutants} IDH-mutant) "
        + (f"of site {site} " if site != "a" else "")
        + f"to {out} in {time.perf_counter() - start:.0f} s"
    )


#: the segmentation pipeline's model (catalog: segmentation_model, versioned): its newest version
DEFAULT_SEGMENTATION_MODEL = "data/06_models/segmentation_model.safetensors"
SEGMENTATION_MODEL_OPTION = click.option(
    "--segmentation-model",
    default=DEFAULT_SEGMENTATION_MODEL,
    show_default=True,
    help="Tumor masks for patients without one: a model file, or the segmentation pipeline's "
    "versioned folder (its newest version); `none` to require expert masks.",
)


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--models",
    "bundle",
    default="data/06_models/winner_models",
    show_default=True,
    type=click.Path(),
    help="Model bundle: the final evaluation's runs (or a sweep configuration's checkpoints).",
)
@click.option(
    "--fallback-models",
    "fallback_bundle",
    default=None,
    type=click.Path(),
    help="Runs for patients missing sequences (the study's fallback nodes). "
    "Default: fallback_models beside --models, where it exists.",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Only this timm model of the bundle (default: every model).",
)
@click.option(
    "--weights",
    type=click.Choice(["pretrained", "scratch", "all"]),
    default="all",
    show_default=True,
    help="Which runs of the bundle: finetuned, from scratch, or both (reported separately).",
)
@click.option(
    "--out",
    default="data/09_predictions",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where predictions.csv, errors.csv and the PNGs go.",
)
@click.option(
    "--workers", default=1, show_default=True, help="Processes reading subjects in parallel."
)
@click.option("--no-pictures", is_flag=True, help="Only the CSV (no composite / Grad-CAM PNGs).")
@SEGMENTATION_MODEL_OPTION
@click.option(
    "--masks",
    "mask_folder",
    type=click.Path(exists=True, file_okay=False),
    help="Tumor masks from another tool for patients without MASK: <id>.nii.gz, "
    "<id>/MASK.nii.gz or <id>/<id>_seg.nii.gz, on the patient's grid (before the model's).",
)
@click.option(
    "--labels",
    "labels_csv",
    default=None,
    type=click.Path(dir_okay=False),
    help="CSV of the patients' IDH status: also writes OUT/metrics.csv (per model and arm, the "
    "seed ensemble's metrics with patient-level bootstrap 95% CIs, Brier score and ECE).",
)
@click.option("--id-column", default="ID", show_default=True, help="Subject id column of --labels.")
@click.option(
    "--label-column", default="IDH", show_default=True, help="IDH status column of --labels."
)
@click.option(
    "--bootstrap-resamples",
    type=int,
    default=None,
    help="Resamples of the CIs (default: reporting.bootstrap_resamples of the project's conf).",
)
@click.option(
    "--bootstrap-seed", type=int, default=None, help="Default: reporting.seed of the project."
)
@click.option(
    "--calibration-bins",
    type=int,
    default=None,
    help="Default: reporting.calibration_bins of the project.",
)
@click.option(
    "--env",
    default=None,
    help="The conf environment whose reporting settings are the defaults (e.g. l4).",
)
def predict(
    folder: str,
    bundle: str,
    fallback_bundle: str | None,
    model_name: str | None,
    weights: str,
    out: str,
    workers: int,
    no_pictures: bool,
    segmentation_model: str,
    mask_folder: str | None,
    labels_csv: str | None,
    id_column: str,
    label_column: str,
    bootstrap_resamples: int | None,
    bootstrap_seed: int | None,
    calibration_bins: int | None,
    env: str | None,
) -> None:
    """P(IDH mutant) for the patient(s) in FOLDER: one subject folder (T1, T1GD, T2, FLAIR, MASK or
    BraTS names) or a cohort folder of them. Writes OUT/predictions.csv (seed-ensemble
    probability, std over seeds, each seed, the slice used, the configuration and the missing
    sequences) and, per patient, a PNG with the composite and a Grad-CAM overlay. A patient
    missing sequences gets the best-ranked trained configuration it has them for (a fallback).
    A patient without MASK gets one from --masks, else the segmentation model's
    (OUT/masks/<id>/MASK.nii.gz, listed in OUT/masks/masks.csv; column mask_source). Bad
    subjects are listed in OUT/errors.csv with the reason."""
    from idh_pseudocolor.predict import (
        bundle_runs,
        find_subjects,
        masks_for,
        predict_subjects,
        save_pictures,
    )

    pretrained = {"pretrained": True, "scratch": False, "all": None}[weights]
    runs = bundle_runs(bundle, fallback_bundle, model_name, pretrained)
    subjects = find_subjects(folder)
    out_dir = Path(out)
    subjects_with_masks, sources, mask_errors = masks_for(
        subjects,
        _segmentation_model(segmentation_model),
        out_dir / "masks",
        progress=len(subjects) > 1,
        mask_folder=Path(mask_folder) if mask_folder else None,
    )
    table, slices, errors = predict_subjects(
        subjects_with_masks, runs, n_workers=workers, progress=len(subjects) > 1
    )
    if len(table):
        table["mask_source"] = table["subject_id"].map(sources)
    _write_outcome(out_dir, table, mask_errors + errors)
    if not no_pictures:
        for s in slices:
            save_pictures(s, runs, table, out_dir / "pictures")
    click.echo(
        f"{len(slices)} of {len(subjects)} subject(s) predicted "
        f"with {len(runs)} run(s) -> {out_dir / 'predictions.csv'}"
    )
    if not slices:
        raise SystemExit(1)
    if labels_csv:
        settings = _reporting_settings(env, bootstrap_resamples, bootstrap_seed, calibration_bins)
        _labelled_report(table, labels_csv, id_column, label_column, settings, out_dir)


def _labelled_report(
    table, labels_csv: str, id_column: str, label_column: str, settings: tuple, out_dir: Path
) -> None:
    """OUT/metrics.csv for the labelled patients, one line per model and arm on the terminal."""
    from idh_pseudocolor.arms import arm_label
    from idh_pseudocolor.predict import attach_labels, labelled_metrics

    labelled, unlabelled = attach_labels(table, labels_csv, id_column, label_column)
    for problem in unlabelled:
        click.echo(f"not in the metrics: {problem}", err=True)
    if labelled.empty:
        click.echo(f"no predicted subject has a label in {labels_csv}: no metrics", err=True)
        raise SystemExit(1)
    metrics = labelled_metrics(labelled, *settings)
    metrics.to_csv(out_dir / "metrics.csv", index=False)
    for r in metrics.itertuples():
        click.echo(
            f"{r.model_name} ({arm_label(r.pretrained)}): AUROC "
            f"{r.auroc:.3f} [{r.auroc_ci_low:.3f}, {r.auroc_ci_high:.3f}] on {r.patients} "
            f"labelled patients -> {out_dir / 'metrics.csv'}"
        )


def _write_outcome(out_dir: Path, table, errors: list) -> None:
    """predictions.csv and errors.csv; on the terminal, the skipped subjects with the reason and
    the subjects predicted with a fallback with the configuration used."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "predictions.csv", index=False)
    rows = [{"subject_id": e.subject_id, "file": e.file, "reason": e.reason} for e in errors]
    pd.DataFrame(rows, columns=["subject_id", "file", "reason"]).to_csv(
        out_dir / "errors.csv", index=False
    )
    for e in errors:
        click.echo(f"skipped {e.subject_id}: {e.file + ': ' if e.file else ''}{e.reason}", err=True)
    if len(table):
        for r in table[table["fallback"]].drop_duplicates("subject_id").itertuples():
            click.echo(
                f"{r.subject_id}: missing {r.missing_sequences}, predicted with configuration "
                f"{r.configuration} (study rank {r.study_rank}, a fallback)"
            )


def _segmentation_model(option: str) -> str | None:
    """The ``--segmentation-model`` option: ``none``, an explicit file or versioned folder (an
    error when it is not there), or the default, which may be absent (no automatic masks)."""
    if option == "none":
        return None
    if option == DEFAULT_SEGMENTATION_MODEL and not Path(option).exists():
        return None
    if not Path(option).exists():
        raise click.BadParameter(f"{option} does not exist", param_hint="--segmentation-model")
    return option


@cli.command()
@click.option(
    "--in",
    "raw",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of raw studies, one folder per patient: DICOM series (any nesting) or NIfTI "
    "files with any names (dcm2niix JSON sidecars help identify them). Only read.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Where the cohort goes: OUT/SUBJECTS/<id>/{T1,T1GD,T2,FLAIR}.nii.gz + metadata.json "
    "(EGD layout), OUT/qc/<id>.png, OUT/preprocessing_report.csv.",
)
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV of IDH status (ID, IDH columns as for predict --labels); without it, -1 (unknown).",
)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML or CSV mapping series (description, uid or file name; globs) to T1, T1ce, T2, "
    "FLAIR or ignore: overrides the identification from the headers.",
)
@click.option(
    "--voxel-size",
    default=1.0,
    show_default=True,
    help="Output grid: the MNI ICBM152 template at this spacing (1 = EGD's 197x233x189).",
)
@click.option("--workers", default=1, show_default=True, help="Patients in parallel.")
@click.option("--redo", is_flag=True, help="Preprocess patients already written again.")
@click.option(
    "--masks",
    "mask_folder",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Tumor masks from another tool for patients without one: <id>.nii.gz, <id>/MASK.nii.gz "
    "or <id>/<id>_seg.nii.gz, on the output grid or on one of the patient's series as acquired "
    "(brought over through the recorded registration); used before the model's.",
)
@SEGMENTATION_MODEL_OPTION
def preprocess(
    raw: str,
    out: str,
    labels_csv: str | None,
    mapping: str | None,
    voxel_size: float,
    workers: int,
    redo: bool,
    mask_folder: str | None,
    segmentation_model: str,
) -> None:
    """Raw studies (a PACS export) to a cohort the pipelines read: series found and identified,
    co-registered onto the template grid, bias-corrected and skull-stripped, and a tumor mask
    drawn by the segmentation model (MASK.nii.gz; a rerun adds masks to patients that lack one).
    A bad study is reported with the file and the reason; the others go on
    (docs/preprocessing.md)."""
    from idh_pseudocolor.preprocess import preprocess_cohort, summary
    from idh_pseudocolor.raw_studies import load_mapping

    start = time.perf_counter()
    report = preprocess_cohort(
        Path(raw),
        Path(out),
        labels_csv=Path(labels_csv) if labels_csv else None,
        mapping=load_mapping(mapping) if mapping else None,
        voxel_size=voxel_size,
        n_workers=workers,
        redo=redo,
        segmentation_model=_segmentation_model(segmentation_model),
        mask_folder=Path(mask_folder) if mask_folder else None,
    )
    for row in report[report["status"] == "excluded"].itertuples():
        click.echo(f"excluded {row.subject_id}: {row.reason}", err=True)
    unmasked = report[report["mask_source"] == "none"]["subject_id"].tolist()
    if unmasked:
        click.echo(
            f"no tumor mask for {', '.join(unmasked)}: the pipelines need one (see the report's "
            "problems column; without a segmentation model: `kedro run --pipelines "
            "segmentation`, then run preprocess again)",
            err=True,
        )
    click.echo(
        f"{summary(report)} -> {Path(out) / 'SUBJECTS'} in {time.perf_counter() - start:.0f} s "
        f"(report: {Path(out) / 'preprocessing_report.csv'})"
    )
    if not (report["status"] != "excluded").any():
        raise SystemExit(1)


def _reporting_settings(
    env: str | None, n: int | None, seed: int | None, bins: int | None
) -> tuple[int, int, int]:
    """The CIs' resamples, seed and calibration bins: the options given, the rest from the
    project's ``reporting`` settings (conf/base/parameters_reporting.yml, their only home), so
    ``predict --labels`` reports what the external_validation pipeline reports."""
    if None not in (n, seed, bins):
        return n, seed, bins
    from idh_pseudocolor.config_loader import project_parameters
    from idh_pseudocolor.parameters import ReportingSettings

    try:
        reporting = ReportingSettings.from_params(project_parameters(".", env)["reporting"])
    except FileNotFoundError as err:
        raise click.UsageError(
            f"{err}; or give --bootstrap-resamples, --bootstrap-seed and --calibration-bins"
        ) from err
    return (
        reporting.bootstrap_resamples if n is None else n,
        reporting.seed if seed is None else seed,
        reporting.calibration_bins if bins is None else bins,
    )


main = cli

if __name__ == "__main__":
    main()
