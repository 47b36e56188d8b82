"""Apply trained runs to new patients: P(IDH mutant) with the seed ensemble's spread, the slice
used, the pseudo-color composite and a Grad-CAM overlay.

The runs come from a model bundle (``data/06_models/winner_models`` after the study) and, for
patients missing sequences, the fallback bundle (``fallback_models``): each patient gets the
best-ranked trained configuration whose sequences it has (the winner when it has all four). Slices
are extracted exactly as in data_engineering (same checks, same per-subject errors, same
normalization as the bundle recorded; an absent sequence file is a channel of zeros the chosen
configuration does not use), composed as in training, and scored in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from idh_pseudocolor.arms import ARM_KEYS, arm_label, arm_slug
from idh_pseudocolor.cohort import FILE_KEYS, LAYOUTS, mask_in_folder
from idh_pseudocolor.configurations import SEQUENCES, configuration_label
from idh_pseudocolor.runs import TrainedRun, best_fitting, load_runs, sequence_set
from idh_pseudocolor.slices import Normalization, SubjectError, SubjectSlice, extract_many
from idh_pseudocolor.training import predict_proba, prepare_inputs

__all__ = [
    "TrainedRun",
    "attach_labels",
    "bundle_runs",
    "choose_configuration",
    "find_subjects",
    "gradcam",
    "labelled_metrics",
    "load_runs",
    "mask_in_folder",
    "masks_for",
    "predict_subjects",
    "save_pictures",
]


def _inputs(run: TrainedRun, subject: SubjectSlice) -> torch.Tensor:
    """The model input for one subject, composed exactly as in training."""
    arrays = {"images": subject.image[None], "masks": subject.mask[None], "labels": np.zeros(1)}
    return prepare_inputs(arrays, np.array([0]), run.config, run.weights)[0]


def bundle_runs(
    bundle: str | Path,
    fallback_bundle: str | Path | None = None,
    model_name: str | None = None,
    pretrained: bool | None = None,
) -> list[TrainedRun]:
    """The winner's runs and, where there is a fallback bundle, the fallbacks' (default: the
    ``fallback_models`` folder beside ``bundle``; a bundle without them simply has none)."""
    from idh_pseudocolor.datasets import ModelBundleDataset

    runs = load_runs(ModelBundleDataset(path=str(bundle)).load(), model_name, pretrained)
    default = Path(bundle).parent / "fallback_models"
    path = fallback_bundle or (
        str(default) if ModelBundleDataset(path=str(default)).exists() else None
    )
    if path and Path(path).resolve() != Path(bundle).resolve():
        fallbacks = ModelBundleDataset(path=str(path)).load()
        runs += load_runs(fallbacks, model_name, pretrained, allow_none=True)
    return runs


def find_subjects(folder: str | Path) -> list[tuple[str, dict[str, str]]]:
    """One subject folder (its sequences and mask directly inside) or a cohort folder of subject
    folders; EGD and BraTS file names are recognised. A subject lacking files is listed all the
    same: extraction tolerates absent sequences and reports an absent mask."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: "
            "give a subject folder (T1, T1GD, T2, FLAIR, MASK) or a cohort folder"
        )

    def files_of(root: Path, sid: str) -> dict[str, str] | None:
        for templates in LAYOUTS.values():
            files = {key: str(root / t.format(id=sid)) for key, t in templates.items()}
            if any(Path(f).exists() for f in files.values()):
                return files
        return None

    single = files_of(folder.parent, folder.name)
    if single is not None:
        return [(folder.name, single)]
    subjects = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = files_of(folder, sub.name) or {
            key: str(folder / LAYOUTS["egd"][key].format(id=sub.name)) for key in FILE_KEYS
        }
        subjects.append((sub.name, files))  # absent files: handled per subject by extraction
    if not subjects:
        raise ValueError(
            f"{folder} holds neither sequences (EGD or BraTS names) nor subject folders"
        )
    return subjects


def masks_for(
    subjects: Sequence[tuple[str, dict[str, str]]],
    segmentation_model: str | Path | None,
    folder: Path,
    progress: bool = False,
    mask_folder: Path | None = None,
) -> tuple[list[tuple[str, dict[str, str]]], dict[str, str], list]:
    """Patients without a tumor mask get one from ``mask_folder`` (your own tool's masks), else
    the segmentation model's, written to ``folder/<id>/MASK.nii.gz`` and listed with the model's
    file and digest in ``folder/masks.csv``. Returns the subjects with their masks, each one's
    ``mask_source`` (expert | folder | automatic) and the patients that could not get one (as
    errors naming the file)."""
    from idh_pseudocolor import segmentation as seg

    from_folder: dict[str, str] = {}
    for sid, files in subjects if mask_folder is not None else ():
        found = None if seg.has_mask(files) else mask_in_folder(Path(mask_folder), sid)
        if found is not None:
            from_folder[sid] = str(found)
    subjects = [(s, {**f, "mask": from_folder[s]} if s in from_folder else f) for s, f in subjects]
    needs = not all(seg.has_mask(f) for _, f in subjects)
    model, described = None, {}
    if needs and segmentation_model is not None:
        path = seg.find_model(segmentation_model)
        model = seg.load_model(path)
        described = seg.model_description(path, model)
    ready, rows, errors = seg.fill_missing_masks(
        subjects, model, lambda sid: folder / LAYOUTS["egd"]["mask"].format(id=sid), progress
    )
    automatic = [{**r, **described} for r in rows if r["mask_source"] == "automatic"]
    if automatic:
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(automatic).to_csv(folder / "masks.csv", index=False)
    sources = {r["subject_id"]: r["mask_source"] for r in rows}
    return ready, {**sources, **{sid: "folder" for sid in from_folder}}, errors


def study_ranks(runs: Sequence[TrainedRun]) -> dict[int, int]:
    """Configuration id -> study rank of the configurations the runs hold. A run that records
    no rank comes from a bundle older than the record, the winner's: rank 1."""
    ranks: dict[int, int] = {}
    for run in runs:
        rank = 1 if run.study_rank is None else int(run.study_rank)
        ranks[run.config.config_id] = min(rank, ranks.get(run.config.config_id, rank))
    return ranks


def choose_configuration(present: Collection[str], ranks: Mapping[int, int]) -> int | None:
    """The best-ranked configuration of ``ranks`` (ties: the lower id) whose sequences are all
    ``present``; None when none is."""
    return best_fitting(sorted(ranks, key=lambda c: (ranks[c], c)), present)


def _unusable(subject: SubjectSlice, ranks: Mapping[int, int]) -> SubjectError:
    """A subject no trained configuration fits: what it has, what is trained, what to do."""
    missing = [q for q in SEQUENCES if q not in subject.present]
    trained = ", ".join(
        f"{configuration_label(c)} (study rank {r})"
        for c, r in sorted(ranks.items(), key=lambda item: (item[1], item[0]))
    )
    return SubjectError(
        subject.subject_id,
        None,
        f"has {sequence_set(subject.present)} (missing {sequence_set(missing)}), and no trained "
        f"configuration uses only these sequences (trained: {trained}). Runs for such patients: "
        f"permutation_study.fallback.min_sequences <= {len(subject.present)}, then give the "
        "fallback bundle to --fallback-models (docs/preprocessing.md)",
    )


def _one_normalization(runs: Sequence[TrainedRun]) -> Normalization:
    """The slice normalization all runs were trained with: one extraction serves them all."""
    found = {run.normalization for run in runs}
    if len(found) != 1:
        raise ValueError(
            f"the runs were trained on slices normalized differently ({sorted(map(str, found))}): "
            "the winner and fallback bundles must come from one study"
        )
    return found.pop()


def predict_subjects(
    subjects: Sequence[tuple[str, dict[str, str]]],
    runs: Sequence[TrainedRun],
    n_workers: int | None = 1,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[SubjectSlice], list[SubjectError]]:
    """Per subject, the best-ranked configuration of ``runs`` whose sequences it has
    (:func:`choose_configuration`); per (model, pretrained) of its runs: the seed-ensemble
    P(mutant), its std over seeds, each seed's value, which configuration and what was missing.
    A subject no configuration fits is an error, the others go on."""
    ranks = study_ranks(runs)
    primary = choose_configuration(SEQUENCES, ranks)
    slices, errors, rows = [], [], []
    extracted = extract_many(
        list(subjects), _one_normalization(runs), n_workers, progress=progress, required=()
    )
    for result in extracted:
        if isinstance(result, SubjectError):
            errors.append(result)
            continue
        chosen = choose_configuration(result.present, ranks)
        if chosen is None:
            errors.append(_unusable(result, ranks))
            continue
        slices.append(result)
        used = [run for run in runs if run.config.config_id == chosen]
        rows += _subject_rows(result, used, ranks[chosen], chosen != primary)
    return pd.DataFrame(rows), slices, errors


def _subject_rows(
    s: SubjectSlice, runs: Sequence[TrainedRun], rank: int, fallback: bool
) -> list[dict]:
    """One subject's rows: per (model, pretrained) of one configuration's runs."""
    groups: dict[tuple[str, bool], list[tuple[TrainedRun, float]]] = {}
    for run in runs:
        prob = float(predict_proba(run.model, _inputs(run, s))[0])
        groups.setdefault((run.config.model_name, run.config.pretrained), []).append((run, prob))
    rows = []
    for (model_name, pretrained), members in groups.items():
        probs = [p for _, p in members]
        config_id = members[0][0].config.config_id
        rows.append(
            {
                "subject_id": s.subject_id,
                "model_name": model_name,
                "pretrained": pretrained,
                "configuration": configuration_label(config_id),
                "config_id": config_id,
                "study_rank": rank,
                "fallback": fallback,
                "missing_sequences": sequence_set(q for q in SEQUENCES if q not in s.present),
                "prob_mutant": float(np.mean(probs)),
                "prob_std_over_seeds": float(np.std(probs, ddof=1)) if len(probs) > 1 else math.nan,
                "seeds": len(probs),
                "prediction": "IDH mutant" if np.mean(probs) >= 0.5 else "IDH wild-type",
                "slice_index": s.z,
                "tumor_z_range": f"{s.z_min}-{s.z_max}",
                **{f"prob_seed{r.config.seed}": p for r, p in members},
            }
        )
    return rows


def gradcam(run: TrainedRun, subject: SubjectSlice, target_class: int = 1) -> np.ndarray:
    """Grad-CAM (pytorch-grad-cam) for ``target_class`` (1 = IDH mutant) on the last convolution,
    in [0, 1], at the composed input's resolution. grad-cam is an optional extra (it pulls in
    OpenCV, which GPU images may lack), hence the import here."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise ImportError(
            f"Grad-CAM pictures need grad-cam ({err}): pip install 'idh_pseudocolor[explain]', "
            "or pass --no-pictures to `idh-pseudocolor predict` for the CSV alone"
        ) from err

    x = _inputs(run, subject)
    last_conv = [m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with GradCAM(model=run.model, target_layers=[last_conv]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(target_class)])[0]
    return heat


def save_pictures(
    subject: SubjectSlice, runs: Sequence[TrainedRun], table: pd.DataFrame, out: Path
) -> list[Path]:
    """Per subject: the composite the model saw and the Grad-CAM of the first run of each group
    of the configuration the subject was predicted with (``table``'s ``config_id``)."""
    import matplotlib.pyplot as plt

    from idh_pseudocolor.pseudocolor import compose

    out.mkdir(parents=True, exist_ok=True)
    mine = table[table["subject_id"] == subject.subject_id]
    used = set(mine["config_id"]) if "config_id" in mine else None
    first = {}
    for run in runs:
        if used is None or run.config.config_id in used:
            first.setdefault((run.config.model_name, run.config.pretrained), run)
    written = []
    for (model_name, pretrained), run in first.items():
        seen = compose(
            subject.image[None],
            subject.mask[None],
            run.config.config_id,
            run.config.image_size,
            mask_tumor_only=run.config.mask_non_tumor,
        )[0].numpy()  # what the model saw, before standardization
        rgb = np.clip(np.moveaxis(seen[:3], 0, -1), 0, 1)
        row = mine[(mine["model_name"] == model_name) & (mine["pretrained"] == pretrained)].iloc[0]
        predicted = int(row["prob_mutant"] >= 0.5)  # explain the class the ensemble chose
        heat = gradcam(run, subject, target_class=predicted)
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.4), constrained_layout=True)
        axes[0].imshow(rgb)
        axes[0].set_title(f"composite {configuration_label(run.config.config_id)}")
        axes[1].imshow(rgb)
        axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[1].set_title(
            f"Grad-CAM, predicted class: {'IDH mutant' if predicted else 'IDH wild-type'}",
            fontsize=10,
        )
        for ax in axes:
            ax.axis("off")
        spread = (
            ""
            if math.isnan(row["prob_std_over_seeds"])
            else f" ± {row['prob_std_over_seeds']:.2f} (std over {row['seeds']} seeds)"
        )
        fig.suptitle(
            f"{subject.subject_id}, slice z={subject.z}: "
            f"P(IDH mutant) = {row['prob_mutant']:.2f}{spread}\n"
            f"{model_name}, {arm_label(pretrained)}"
        )
        path = out / f"{subject.subject_id}__{model_name}__{arm_slug(pretrained)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def attach_labels(
    table: pd.DataFrame, labels_csv: str | Path, id_column: str, label_column: str
) -> tuple[pd.DataFrame, list[str]]:
    """The predictions with a ``label`` column from a labels CSV (ids matched as for a cohort:
    BraTS zero padding may differ; values as the cohort reader parses them: 0/1, wildtype,
    IDH1 p.R132H ...), and the predicted subjects it has no usable label for, with the reason."""
    from idh_pseudocolor.cohort import labels_for

    path = Path(labels_csv)
    subjects = sorted(table["subject_id"].astype(str).unique()) if len(table) else []
    parsed, problems = labels_for(
        subjects, path, id_column, label_column, "--id-column / --label-column"
    )
    for s in subjects:
        if s not in parsed and s not in problems:
            problems[s] = f"{s}: no label in {path}"
    labelled = table[table["subject_id"].isin(parsed)].copy()
    labelled["label"] = labelled["subject_id"].map(parsed).astype(int)
    return labelled, list(problems.values())


def _configurations_used(part: pd.DataFrame) -> str:
    """The configurations an arm's patients were predicted with, best-ranked first."""
    keys = [k for k in ("study_rank", "config_id", "configuration") if k in part]
    used = part.drop_duplicates("configuration").sort_values(keys, kind="stable")
    return "; ".join(used["configuration"].astype(str))


def labelled_metrics(
    labelled: pd.DataFrame, n_resamples: int, seed: int, calibration_bins: int
) -> pd.DataFrame:
    """Per model x pretrained, the seed ensemble's metrics with bootstrap CIs, Brier and ECE on
    the labelled patients (:func:`idh_pseudocolor.metrics.arm_metrics`: the numbers the
    external_validation pipeline reports for the same patients). Patients predicted with a
    fallback configuration count in their arm; ``configurations`` and ``fallback_patients`` say
    how many and which."""
    from idh_pseudocolor.metrics import arm_metrics

    rows = []
    for (model, pretrained), part in labelled.groupby(list(ARM_KEYS), sort=False):
        part = part.sort_values("subject_id", kind="stable")  # the pipeline's patient order
        rows.append(
            {
                "model_name": model,
                "pretrained": bool(pretrained),
                "seeds": int(part["seeds"].max()),
                "configurations": _configurations_used(part),
                "fallback_patients": int(part["fallback"].astype(bool).sum())
                if "fallback" in part
                else 0,
                **arm_metrics(
                    part["label"].to_numpy(),
                    part["prob_mutant"].to_numpy(),
                    n_resamples,
                    seed,
                    calibration_bins,
                ),
            }
        )
    return pd.DataFrame(rows)
