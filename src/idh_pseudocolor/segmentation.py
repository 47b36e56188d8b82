"""Tumor masks for patients without an expert one: a 2-D U-Net (MONAI) on axial slices.

Why 2-D: the study reads one axial slice at the tumor's z-midpoint, so a mask has to get two things
right, the tumor's z-range and its outline in that plane. A 2-D network at 2 mm in-plane sees the
outline finer than a 3-D one at the 4 mm a CPU can afford, trains on a few thousand slices in
minutes, and a 3-D connected-component pass afterwards restores the z-range (one tumor per
patient: the largest component is kept). Inputs are the four sequences (a missing one is zeros;
training drops sequences at random, so three still work), each scaled to [0, 1] by percentiles of
its brain voxels, as the study's slices are. No Kedro here; the segmentation pipeline's nodes and
``preprocess`` / ``predict`` call these functions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage

from idh_pseudocolor.configurations import SEQUENCES

_RAS = axcodes2ornt(("R", "A", "S"))
#: the network halves the plane three times: padded sizes are multiples of this
_MULTIPLE = 8


class SegmentationError(Exception):
    """One patient cannot be segmented; names the file and the reason."""

    def __init__(self, subject_id: str, file: str | os.PathLike | None, reason: str) -> None:
        self.subject_id, self.file, self.reason = subject_id, str(file or ""), reason
        where = f"{self.file}: " if self.file else ""
        super().__init__(f"subject {subject_id}: {where}{reason}")

    def __reduce__(self):  # picklable across worker processes
        return (SegmentationError, (self.subject_id, self.file, self.reason))


@dataclass(frozen=True)
class Architecture:
    """What rebuilds a trained network and its input: recorded with the weights."""

    in_plane_mm: float  # slices are averaged down to about this spacing in-plane
    channels: tuple[int, ...]  # U-Net feature maps per level
    lower_percentile: float  # of each sequence's brain voxels, mapped to 0
    upper_percentile: float  # ... and to 1
    threshold: float  # on the network's probability

    def network(self) -> torch.nn.Module:
        from monai.networks.nets import UNet

        return UNet(
            spatial_dims=2,
            in_channels=len(SEQUENCES),
            out_channels=1,
            channels=self.channels,
            strides=(2,) * (len(self.channels) - 1),
            num_res_units=1,
        )


@dataclass
class Volume:
    """One patient at the network's grid: canonical RAS, in-plane block-averaged by ``factor``."""

    subject_id: str
    image: np.ndarray  # (4, X, Y, Z) float32 in [0, 1] (about), channels in SEQUENCES order
    present: tuple[str, ...]
    factor: int
    full_shape: tuple[int, int, int]  # canonical RAS shape at the files' resolution
    reference: str  # the file whose geometry a written mask takes
    mask: np.ndarray | None = None  # (X, Y, Z) uint8 at the network's grid, where known
    full_mask: np.ndarray | None = None  # (full_shape) bool, where known
    pixel_mm: float | None = None  # the network grid's in-plane spacing (the scale it sees)


def _canonical(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    return apply_orientation(data, ornt_transform(io_orientation(img.affine), _RAS))


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` in-plane blocks (the far edge padded by repetition)."""
    if factor == 1:
        return volume.astype(np.float32, copy=False)
    x, y, z = volume.shape
    px, py = -x % factor, -y % factor
    padded = np.pad(volume, ((0, px), (0, py), (0, 0)), mode="edge")
    shape = (padded.shape[0] // factor, factor, padded.shape[1] // factor, factor, z)
    return padded.reshape(shape).mean(axis=(1, 3), dtype=np.float32)


def scale_to_unit(volume: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Map the ``lower``/``upper`` percentiles of the non-zero (brain) voxels to 0/1; the
    background stays 0. Robust to each scanner's scale, like the study's slice normalization."""
    brain = volume[volume != 0][::7]  # every 7th brain voxel: the same percentiles, 7x sooner
    if brain.size == 0:
        raise ValueError("no non-zero voxel")
    lo, hi = np.percentile(brain, [lower, upper])
    if hi <= lo:
        raise ValueError("no contrast among the brain voxels")
    scaled = np.clip((volume - lo) / (hi - lo), 0, 1.5)
    return np.where(volume != 0, scaled, 0).astype(np.float32)


def load_volume(
    subject_id: str,
    files: Mapping[str, str | os.PathLike],
    architecture: Architecture,
    with_mask: bool = False,
) -> Volume:
    """A patient's sequences (absent files allowed, at least one present) and, with ``with_mask``,
    its expert mask, at the network's grid. Raises :class:`SegmentationError` naming the file."""
    present = tuple(k for k in SEQUENCES if files.get(k) and Path(files[k]).is_file())
    if not present:
        raise SegmentationError(subject_id, None, "none of T1, T1ce, T2, FLAIR is there")
    reference = str(files[present[0]])
    ref_img = _open(subject_id, reference)
    zooms = ref_img.header.get_zooms()[:3]
    factor = max(1, round(architecture.in_plane_mm / float(min(zooms[:2]))))
    # in-plane spacing after the turn to RAS: the axes that land on x and y
    to_ras = ornt_transform(io_orientation(ref_img.affine), _RAS)
    in_plane = [float(zooms[int(i)]) for i in np.argsort(to_ras[:, 0])[:2]]
    full_shape = tuple(int(s) for s in _canonical_shape(ref_img))
    channels = []
    for key in SEQUENCES:
        if key not in present:
            channels.append(None)
            continue
        img = ref_img if str(files[key]) == reference else _open(subject_id, files[key])
        if not np.allclose(img.affine, ref_img.affine, atol=1e-3) or img.shape[:3] != ref_img.shape:
            raise SegmentationError(
                subject_id, files[key], f"{key} is not on {Path(reference).name}'s grid"
            )
        try:
            scaled = scale_to_unit(
                _canonical(img), architecture.lower_percentile, architecture.upper_percentile
            )
        except ValueError as exc:
            raise SegmentationError(subject_id, files[key], f"{key}: {exc}") from None
        channels.append(_block_mean(scaled, factor))
    shape = next(c for c in channels if c is not None).shape
    image = np.stack([c if c is not None else np.zeros(shape, np.float32) for c in channels])
    volume = Volume(
        subject_id,
        image,
        present,
        factor,
        full_shape,  # type: ignore[arg-type]
        reference,
        pixel_mm=round(min(in_plane) * factor, 3),
    )
    if with_mask:
        path = files.get("mask")
        if not path or not Path(path).is_file():
            raise SegmentationError(subject_id, path, "no expert mask")
        full = _canonical(_open(subject_id, path)) > 0
        if full.shape != full_shape:
            raise SegmentationError(subject_id, path, "mask is not on the sequences' grid")
        volume.full_mask = full
        volume.mask = (_block_mean(full.astype(np.float32), factor) >= 0.5).astype(np.uint8)
    return volume


def _open(subject_id: str, path: str | os.PathLike) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(str(path))
        if len(img.shape) != 3:
            raise ValueError(f"{len(img.shape)}-D, not a 3-D volume")
        return img
    except Exception as exc:
        raise SegmentationError(subject_id, path, f"unreadable ({exc})") from None


def _canonical_shape(img: nib.spatialimages.SpatialImage) -> tuple[int, ...]:
    ornt = ornt_transform(io_orientation(img.affine), _RAS)
    return tuple(img.shape[int(axis)] for axis in np.argsort(ornt[:, 0]))


def _pad_plane(array: np.ndarray) -> np.ndarray:
    """Pad the two in-plane axes (the last two of ``array``) to multiples of the network's
    stride."""
    pads = [(0, 0)] * (array.ndim - 2) + [(0, -n % _MULTIPLE) for n in array.shape[-2:]]
    return np.pad(array, pads)


# -- training --------------------------------------------------------------------------------------
def training_slices(
    volumes: Sequence[Volume], slices_per_subject: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices for training: three quarters evenly through each tumor's z-range, the rest
    drawn from the brain outside it (so the network learns to say "no tumor" too)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for volume in volumes:
        assert volume.mask is not None
        area = volume.mask.sum(axis=(0, 1))
        brain = volume.image.max(axis=(0, 1, 2)) > 0
        tumor_z, other_z = np.flatnonzero(area > 0), np.flatnonzero((area == 0) & brain)
        n_tumor = min(len(tumor_z), math.ceil(0.75 * slices_per_subject))
        picks = list(tumor_z[np.linspace(0, len(tumor_z) - 1, n_tumor).round().astype(int)])
        n_other = min(len(other_z), slices_per_subject - n_tumor)
        picks += list(rng.choice(other_z, n_other, replace=False)) if n_other else []
        images.append(np.moveaxis(volume.image[..., picks], -1, 0))
        masks.append(np.moveaxis(volume.mask[..., picks], -1, 0)[:, None])
    return _pad_plane(np.concatenate(images)), _pad_plane(np.concatenate(masks))


def _augment(
    x: torch.Tensor, generator: torch.Generator, dropout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random left-right flips, per-sequence intensity scaling and dropped sequences."""
    n = x.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    x = x * (0.9 + 0.2 * torch.rand(n, x.shape[1], 1, 1, generator=generator))
    drop = torch.rand(n, generator=generator) < dropout
    which = torch.randint(0, x.shape[1], (n,), generator=generator)
    keep = torch.ones(n, x.shape[1])
    keep[drop, which[drop]] = 0
    return x * keep[:, :, None, None], flip


def train_network(
    images: np.ndarray,
    masks: np.ndarray,
    architecture: Architecture,
    settings: Any,
    progress: bool = False,
) -> tuple[torch.nn.Module, list[float]]:
    """``settings``: parameters.SegmentationTrainingSettings (epochs, batch size, peak learning
    rate, sequence dropout, seed). Dice + cross-entropy (MONAI's DiceCELoss), AdamW with a
    one-cycle schedule; returns the network (eval mode) and the mean loss per epoch."""
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = architecture.network()
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(masks.astype(np.float32))
    steps = math.ceil(len(x_all) / settings.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.learning_rate, total_steps=settings.epochs * steps
    )
    loss_fn, losses = DiceCELoss(sigmoid=True), []
    net.train()
    bar = tqdm(range(settings.epochs), desc="segmentation", unit="epoch", disable=not progress)
    for _ in bar:
        order, total = torch.randperm(len(x_all), generator=generator), 0.0
        for i in range(steps):
            batch = order[i * settings.batch_size : (i + 1) * settings.batch_size]
            x, flip = _augment(x_all[batch], generator, settings.sequence_dropout)
            y = torch.where(flip[:, None, None, None], y_all[batch].flip(-2), y_all[batch])
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(x_all))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return net.eval(), losses


# -- applying it -----------------------------------------------------------------------------------
def probabilities(net: torch.nn.Module, volume: Volume, batch: int = 64) -> np.ndarray:
    """P(tumor) at the files' canonical grid: every axial slice through the network, then
    in-plane linear interpolation back to full resolution."""
    x = torch.from_numpy(_pad_plane(np.moveaxis(volume.image, -1, 0)))
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.sigmoid(net(x[i : i + batch])))
    prob = torch.cat(out)  # (Z, 1, X', Y') padded
    x_size, y_size = volume.image.shape[1:3]
    prob = prob[:, :, :x_size, :y_size]
    if volume.factor > 1:
        full = [s * volume.factor for s in (x_size, y_size)]
        prob = torch.nn.functional.interpolate(prob, size=full, mode="bilinear")
    prob = prob[:, 0, : volume.full_shape[0], : volume.full_shape[1]]
    return np.moveaxis(prob.numpy(), 0, -1)


def tumor_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """The largest 3-D connected component above ``threshold`` (one tumor per patient; specks
    elsewhere would move the z-midpoint). All False where nothing passes."""
    above = prob >= threshold
    labels, n = ndimage.label(above)
    if n <= 1:
        return above
    sizes = ndimage.sum_labels(above, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


def segment(net: torch.nn.Module, volume: Volume, architecture: Architecture) -> np.ndarray:
    """The automatic mask, canonical RAS at the files' resolution (bool)."""
    return tumor_mask(probabilities(net, volume), architecture.threshold)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mask_image(mask: np.ndarray, reference: str | os.PathLike) -> nib.Nifti1Image:
    """A canonical mask as a NIfTI on the reference file's own grid and orientation, so it
    passes the study's same-geometry check beside the sequences."""
    ref = nib.load(str(reference))
    back = ornt_transform(_RAS, io_orientation(ref.affine))
    native = apply_orientation(mask.astype(np.uint8), back)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    return nib.Nifti1Image(native, ref.affine, header)


# -- the trained model as one file -----------------------------------------------------------------
@dataclass
class SegmentationModel:
    """A trained network with what rebuilds it and what it was measured at."""

    architecture: Architecture
    network: torch.nn.Module
    record: dict[str, Any]  # training settings, patients, Dice on held-out patients, versions

    def segment(self, volume: Volume) -> np.ndarray:
        return segment(self.network, volume, self.architecture)


def save_model(model: SegmentationModel, path: str | os.PathLike) -> None:
    """Weights as safetensors (no pickle); architecture and record in its metadata header."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.network.state_dict().items()}
    metadata = {
        "architecture": json.dumps(asdict(model.architecture)),
        "record": json.dumps(model.record, default=str),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)


def load_model(path: str | os.PathLike) -> SegmentationModel:
    """The model :func:`save_model` wrote: every tensor must fit the recorded architecture."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "architecture" not in metadata:
        raise ValueError(f"{path} is not a segmentation model of this project (no architecture)")
    raw = json.loads(metadata["architecture"])
    architecture = Architecture(**{**raw, "channels": tuple(raw["channels"])})
    network = architecture.network()
    network.load_state_dict(load_file(str(path)), strict=True)
    return SegmentationModel(architecture, network.eval(), json.loads(metadata.get("record", "{}")))


def load_many(
    subjects: Sequence[tuple[str, Mapping[str, str]]],
    architecture: Architecture,
    with_mask: bool,
) -> Iterator[Volume | SegmentationError]:
    """Volumes in order; a patient that cannot be read comes back as its error."""
    for subject_id, files in subjects:
        try:
            yield load_volume(subject_id, files, architecture, with_mask)
        except SegmentationError as exc:
            yield exc


# -- a cohort --------------------------------------------------------------------------------------
#: the cohort index's file columns (idh_pseudocolor.cohort) -> this module's keys
FILE_COLUMNS = {**{f"file_{s}": s for s in SEQUENCES}, "file_mask": "mask"}


def manifest_subjects(
    manifest: Any, subject_ids: Sequence[str]
) -> list[tuple[str, dict[str, str]]]:
    """(id, files) of ``subject_ids`` from a subject manifest (its ``file_*`` columns)."""
    rows = manifest.set_index(manifest["subject_id"].astype(str))
    return [
        (str(s), {key: str(rows.loc[str(s), col]) for col, key in FILE_COLUMNS.items()})
        for s in subject_ids
    ]


def _load_or_error(
    subject_id: str, files: Mapping[str, str], architecture: Architecture, with_mask: bool
) -> Volume | SegmentationError:
    try:
        return load_volume(subject_id, files, architecture, with_mask)
    except SegmentationError as exc:
        return exc


def load_volumes(
    subjects: Sequence[tuple[str, Mapping[str, str]]],
    architecture: Architecture,
    with_mask: bool,
    n_workers: int | None = 1,
    progress: bool = False,
) -> tuple[list[Volume], list[SegmentationError]]:
    """Every patient's volume (in parallel processes), and the errors of those that failed."""
    from idh_pseudocolor.parallel import in_order

    tasks = [(sid, dict(files), architecture, with_mask) for sid, files in subjects]
    volumes, errors = [], []
    for result in in_order(
        _load_or_error, tasks, n_workers, desc="reading volumes", unit="patient", progress=progress
    ):
        (errors if isinstance(result, SegmentationError) else volumes).append(result)
    return volumes, errors


def train_model(
    volumes: Sequence[Volume],
    architecture: Architecture,
    settings: Any,
    progress: bool = False,
) -> SegmentationModel:
    """Train on ``volumes`` (expert masks) and record what it was trained on and how."""
    import time

    started = time.perf_counter()
    images, masks = training_slices(volumes, settings.slices_per_subject, settings.seed)
    network, losses = train_network(images, masks, architecture, settings, progress)
    record = {
        "training": asdict(settings),
        "trained_on": sorted(v.subject_id for v in volumes),
        "training_slices": len(images),
        # the scale the network learnt tumors at: masks for patients at another one are refused
        "pixel_mm": float(np.median([v.pixel_mm for v in volumes if v.pixel_mm])),
        "loss_per_epoch": [round(x, 5) for x in losses],
        "seconds": round(time.perf_counter() - started, 1),
        "monai": _version("monai"),
        "torch": torch.__version__,
    }
    return SegmentationModel(architecture, network, record)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _z_mid(mask: np.ndarray) -> int | None:
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    return None if z.size == 0 else int((z[0] + z[-1]) // 2)


def evaluate(
    model: SegmentationModel, volumes: Sequence[Volume], progress: bool = False
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Per patient with an expert mask: Dice, both volumes (ml) and where the study's slice
    lands with each mask; the automatic masks (canonical RAS, bool)."""
    from tqdm.auto import tqdm

    rows, masks = [], {}
    for volume in tqdm(volumes, desc="segmenting", unit="patient", disable=not progress):
        auto = model.segment(volume)
        masks[volume.subject_id] = auto
        expert = volume.full_mask
        assert expert is not None
        ml = float(np.prod(nib.load(volume.reference).header.get_zooms()[:3])) / 1000
        z_expert, z_auto = _z_mid(expert), _z_mid(auto)
        rows.append(
            {
                "subject_id": volume.subject_id,
                "dice": dice(auto, expert),
                "expert_ml": round(float(expert.sum()) * ml, 2),
                "automatic_ml": round(float(auto.sum()) * ml, 2),
                "slice_expert": z_expert,
                "slice_automatic": z_auto,
                "slice_shift": None if z_auto is None else abs(z_auto - z_expert),
                "sequences": "+".join(volume.present),
            }
        )
    return rows, masks


def overlay_figure(
    volumes: Sequence[Volume], masks: Mapping[str, np.ndarray], rows: Sequence[Mapping[str, Any]]
) -> Any:
    """Expert (green) and automatic (magenta) outlines on FLAIR at the expert mask's mid slice,
    one panel per patient: where people would rather look than read a Dice."""
    import matplotlib.pyplot as plt

    by_id = {r["subject_id"]: r for r in rows}
    n = len(volumes)
    cols = min(n, 4)
    fig, axes = plt.subplots(
        max(1, math.ceil(n / cols)), cols, figsize=(3 * cols, 3.3 * math.ceil(n / cols) or 1)
    )
    axes = np.atleast_1d(axes).ravel()
    for ax, volume in zip(axes, volumes, strict=False):
        z = by_id[volume.subject_id]["slice_expert"] or 0
        flair = volume.image[SEQUENCES.index("FLAIR")]
        background = np.kron(flair[:, :, z], np.ones((volume.factor, volume.factor)))
        background = background[: volume.full_shape[0], : volume.full_shape[1]]
        ax.imshow(np.rot90(background), cmap="gray", vmin=0, vmax=1)
        for mask, color in ((volume.full_mask, "lime"), (masks[volume.subject_id], "magenta")):
            plane = mask[:, :, z].astype(float)
            if plane.any():
                ax.contour(np.rot90(plane), levels=[0.5], colors=color, linewidths=1)
        ax.set_title(
            f"{volume.subject_id}: Dice {by_id[volume.subject_id]['dice']:.2f}", fontsize=9
        )
    for ax in axes:
        ax.axis("off")
    fig.suptitle("Tumor masks on held-out patients: expert (green), automatic (magenta)")
    fig.tight_layout()
    return fig


def mask_images(masks: Mapping[str, np.ndarray], volumes: Sequence[Volume]) -> dict[str, Any]:
    """Each automatic mask as a NIfTI on its patient's own grid."""
    reference = {v.subject_id: v.reference for v in volumes}
    return {sid: mask_image(mask, reference[sid]) for sid, mask in masks.items()}


def mask_comparison(
    expert: Any, automatic: Any, labels: Mapping[str, int], n_resamples: int, seed: int
) -> Any:
    """Per model x arm, on the patients both tables predicted: AUROC with the expert masks, with
    the automatic ones, and their paired difference (automatic - expert) with its bootstrap 95%
    CI and DeLong's p: what the automatic mask costs the study's prediction."""
    import pandas as pd

    from idh_pseudocolor.arms import ARM_KEYS
    from idh_pseudocolor.metrics import binary_metrics, paired_auroc_test

    rows = []
    for (model, pretrained), part in expert.groupby(list(ARM_KEYS), sort=False):
        other = automatic[
            (automatic["model_name"] == model) & (automatic["pretrained"] == pretrained)
        ].set_index("subject_id")
        part = part.set_index("subject_id")
        common = sorted(set(part.index) & set(other.index) & set(labels))
        y = np.array([labels[s] for s in common], dtype=int)
        p_expert = part.loc[common, "prob_mutant"].to_numpy(float)
        p_auto = other.loc[common, "prob_mutant"].to_numpy(float)
        test = paired_auroc_test(y, p_auto, p_expert, n_resamples, seed)
        rows.append(
            {
                "model_name": model,
                "pretrained": bool(pretrained),
                "patients": len(common),
                "mutant": int(y.sum()),
                "auroc_expert": binary_metrics(y, p_expert)["auroc"],
                "auroc_automatic": binary_metrics(y, p_auto)["auroc"],
                "auroc_difference": test["auroc_difference"],
                "ci_low": test["ci_low"],
                "ci_high": test["ci_high"],
                "p_value": test["p_value"],
                "same_prediction": float(
                    np.mean((p_expert >= 0.5) == (p_auto >= 0.5)) if common else np.nan
                ),
            }
        )
    return pd.DataFrame(rows)


# -- masks for patients who have none (preprocess, predict) ----------------------------------------
#: the file name of a model inside the catalog's versioned folder (segmentation_model.safetensors/)
MODEL_FILE = "segmentation_model.safetensors"


def find_model(path: str | os.PathLike) -> Path:
    """A model file, or the catalog's versioned folder ``<name>/<version>/<name>``: its newest
    version (Kedro's version names are timestamps, so the last in sorted order)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        versions = sorted(p / path.name for p in path.iterdir() if (p / path.name).is_file())
        if versions:
            return versions[-1]
        raise FileNotFoundError(f"{path} holds no saved version of a segmentation model")
    raise FileNotFoundError(
        f"no segmentation model at {path}: run `kedro run --pipelines segmentation` (it trains "
        "one on a cohort with expert masks) or give the file of one"
    )


def model_description(path: str | os.PathLike, model: SegmentationModel) -> dict[str, Any]:
    """What a mask records of the model that drew it: file, digest, what it was trained on."""
    import hashlib

    return {
        "model": str(path),
        "model_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "trained_on_patients": len(model.record.get("trained_on", [])),
    }


#: how far a patient's pixel spacing at the network's grid may stray from the training one's
SCALE_TOLERANCE = 0.25


def check_scale(model: SegmentationModel, volume: Volume) -> None:
    """Refuse a patient whose pixels at the network's grid are not those the model learnt
    tumors at (a model trained on 4 mm pixels draws nonsense on 2 mm ones: Dice 0.06-0.14 on
    the phantom, against 0.76-0.89 at the same scale). Models saved before the record: no check."""
    trained = model.record.get("pixel_mm")
    if not trained or not volume.pixel_mm:
        return
    if abs(volume.pixel_mm / trained - 1) > SCALE_TOLERANCE:
        raise SegmentationError(
            volume.subject_id,
            volume.reference,
            f"the segmentation model learnt tumors on {trained:g} mm pixels, this patient gives "
            f"{volume.pixel_mm:g} mm: its mask would be drawn at the wrong scale (train the "
            "model on a cohort at this resolution, or preprocess at the training cohort's)",
        )


def has_mask(files: Mapping[str, str]) -> bool:
    """Whether a patient's files name a tumor mask that is there."""
    return bool(files.get("mask")) and Path(files["mask"]).is_file()


def fill_missing_masks(
    subjects: Sequence[tuple[str, Mapping[str, str]]],
    model: SegmentationModel | None,
    target: Any,
    progress: bool = False,
) -> tuple[list[tuple[str, dict[str, str]]], list[dict[str, Any]], list[SegmentationError]]:
    """Each patient whose ``mask`` file is absent gets the model's mask, written to
    ``target(subject_id)`` (a path; the input is never written into). Returns the subjects with
    their mask files (patients that failed left out), a row per patient (``mask_source``
    expert | automatic, the tumor volume) and the failures: an unreadable study, or no tumor
    found (never an empty mask passed on as if it were one)."""
    from tqdm.auto import tqdm

    ready, rows, errors, todo = [], [], [], []
    for sid, files in subjects:
        if has_mask(files):
            ready.append((sid, dict(files)))
            rows.append({"subject_id": sid, "mask_source": "expert", "mask_file": files["mask"]})
        else:
            todo.append((sid, files))
    if todo and model is None:
        for sid, files in todo:
            errors.append(
                SegmentationError(
                    sid,
                    files.get("mask"),
                    "no tumor mask, and no segmentation model to draw one: run `kedro run "
                    "--pipelines segmentation` or give --segmentation-model",
                )
            )
        return ready, rows, errors
    for sid, files in tqdm(todo, desc="segmenting", unit="patient", disable=not progress):
        try:
            volume = load_volume(sid, files, model.architecture)  # type: ignore[union-attr]
            check_scale(model, volume)  # type: ignore[arg-type]
            mask = model.segment(volume)  # type: ignore[union-attr]
        except SegmentationError as exc:
            errors.append(exc)
            continue
        if not mask.any():
            errors.append(
                SegmentationError(
                    sid,
                    volume.reference,
                    "the segmentation model found no tumor (P(tumor) below "
                    f"{model.architecture.threshold} everywhere): give an expert mask",  # type: ignore[union-attr]
                )
            )
            continue
        path = Path(target(sid))
        path.parent.mkdir(parents=True, exist_ok=True)
        mask_image(mask, volume.reference).to_filename(str(path))
        voxel_ml = float(np.prod(nib.load(volume.reference).header.get_zooms()[:3])) / 1000
        ready.append((sid, {**files, "mask": str(path)}))
        rows.append(
            {
                "subject_id": sid,
                "mask_source": "automatic",
                "mask_file": str(path),
                "tumor_ml": round(float(mask.sum()) * voxel_ml, 2),
                "sequences": "+".join(volume.present),
            }
        )
    order = {sid: i for i, (sid, _) in enumerate(subjects)}
    ready.sort(key=lambda item: order[item[0]])
    return ready, rows, errors
