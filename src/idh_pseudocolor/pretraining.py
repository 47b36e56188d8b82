"""Demo pretraining: the demo's "pretrained" arm, made offline from photographs in an installed
package.

The paper finetunes ImageNet weights; the CPU demo has no network and no ImageNet, so it
pretrains its tiny timm networks itself, on the sample photographs that scikit-image ships
inside its wheel (``skimage/data``; nothing is downloaded). The pretext task: random crops of
the photographs, randomly scaled, flipped and rotated by a multiple of 90 degrees, brightness
and contrast jittered; the network says which photograph a crop comes from (one class per
photograph). Training crops come from the top of every photograph, the held-out crops from a
band at the bottom that training never sees, so the held-out accuracy shows that the features
generalize. (Predicting the rotation too was tried: at the demo's budget it stayed at chance.)

The weights are a safetensors file whose header says what they are (:data:`DEMO_MARKER`) and
how their inputs were standardized (``mean``, ``std``);
:func:`idh_pseudocolor.models.create_model` reads it, records ``source="demo-pretraining:<path>"``
and :func:`is_demo_weights` lets a paper run refuse them. They are demo weights, not ImageNet.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F

from idh_pseudocolor.models import (
    DEMO_MARKER,
    IMAGENET_NORMALIZATION,
    is_demo_weights,
    weights_metadata,
)
from idh_pseudocolor.parameters import PretrainSettings
from idh_pseudocolor.training import torch_threads

__all__ = [
    "PHOTOGRAPHS",
    "PretrainSettings",
    "describe",
    "is_demo_weights",
    "load_photographs",
    "pretrain",
    "pretrain_models",
    "weights_metadata",
]

#: photographs bundled in the scikit-image wheel (skimage/data), read from disk, never fetched.
#: Not used: drawings and synthetic images (logo, color, chessboards, phantom, horse), text and
#: page scans, the right stereo image (nearly the left one), clock_motion (synthetic blur).
COLOR_PHOTOGRAPHS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
GRAY_PHOTOGRAPHS = (
    "brick.png",
    "camera.png",
    "cell.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "moon.png",
)
PHOTOGRAPHS = COLOR_PHOTOGRAPHS + GRAY_PHOTOGRAPHS
ROTATIONS = 4
#: the crops' standardization: ImageNet's, as the weights stand in for ImageNet ones (not timm's
#: data config of the untrained network, which describes hub weights this pretraining never saw).
#: Recorded in the weights' header; finetuning standardizes its inputs as the header says.
NORMALIZATION = IMAGENET_NORMALIZATION


def load_photographs(names: Sequence[str] = PHOTOGRAPHS) -> dict[str, np.ndarray]:
    """The bundled photographs as (H, W, 3) uint8 arrays; grayscale ones repeated to three
    channels."""
    try:
        import imageio.v3 as iio  # a scikit-image dependency

        folder = files("skimage") / "data"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "The demo's pretraining reads scikit-image's bundled photographs "
            f"({exc.name} is missing): pip install 'idh-pseudocolor[demo]' "
            "(make install does), or set demo_pretraining.enabled: false"
        ) from exc
    photos = {}
    for name in names:
        # FileNotFoundError if the wheel lacks it: no download
        image = np.asarray(iio.imread(folder / name))
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos[name] = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    return photos


def task(s: PretrainSettings) -> str:
    """The pretext task in words (recorded in the weights' header and the record)."""
    return (
        f"which photograph a random {s.image_size} px crop comes "
        "from (scaled, flipped, rotated by 90 degree steps, jittered)"
    )


def photo_tensor(photos: dict[str, np.ndarray], size: int) -> torch.Tensor:
    """(P, 3, size, size) float in [0, 1]: the centre square of each photograph, resized
    (antialiased)."""
    squares = []
    for image in photos.values():
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = (
            torch.from_numpy(image[top : top + side, left : left + side]).permute(2, 0, 1).float()
            / 255
        )
        resized = F.interpolate(
            square[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        squares.append(resized[0].clamp(0, 1))  # antialiasing overshoots a little
    return torch.stack(squares)


def sample_crops(
    photos: torch.Tensor, n: int, s: PretrainSettings, generator: torch.Generator, heldout: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` ImageNet-normalized crops and their labels (the photograph's index).

    One affine grid per crop does the crop, scale, flip and rotation; training crops lie in
    the top ``1 - holdout_fraction`` of the photograph, held-out crops in the bottom band.
    """

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    photo = torch.randint(len(photos), (n,), generator=generator)
    rotation = torch.randint(ROTATIONS, (n,), generator=generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    # normalized row where the held-out band starts ([-1, 1] coordinates)
    band = 1 - 2 * s.holdout_fraction
    lo, hi = s.crop_scale
    scale = uniform(lo, min(hi, s.holdout_fraction) if heldout else min(hi, 1 - s.holdout_fraction))
    top, bottom = (band, 1.0) if heldout else (-1.0, band)
    cx = -1 + scale + (2 - 2 * scale) * torch.rand(n, generator=generator)
    cy = top + scale + (bottom - top - 2 * scale) * torch.rand(n, generator=generator)
    angle = rotation.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    theta = torch.stack(
        [
            torch.stack([scale * cos * flip, -scale * sin, cx], dim=1),
            torch.stack([scale * sin * flip, scale * cos, cy], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 3, s.image_size, s.image_size], align_corners=False)
    x = F.grid_sample(
        photos[photo], grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    contrast, brightness = uniform(1 - s.jitter, 1 + s.jitter), uniform(-s.jitter / 2, s.jitter / 2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast[:, None, None, None] + mean + brightness[:, None, None, None]).clamp(
        0, 1
    )
    mean, std = NORMALIZATION
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x, photo


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of crops whose photograph the model names."""
    model.eval()
    pred = torch.cat([model(chunk).argmax(dim=1) for chunk in x.split(128)])
    return float((pred == y).float().mean())


def pretrain(
    model_name: str, photos: torch.Tensor, s: PretrainSettings
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pretrain ``model_name`` from scratch on the pretext task; its state dict and what it learned.

    Deterministic on CPU for a given seed and thread count (model initialisation runs in a forked
    RNG, so it leaves torch's global RNG as it was).
    """
    start = time.perf_counter()
    with torch_threads(s.torch_threads):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # the model's initialization
            n_classes = len(photos)
            model = timm.create_model(
                model_name, pretrained=False, num_classes=n_classes, in_chans=3
            )
        generator = torch.Generator().manual_seed(s.seed)
        x_heldout, y_heldout = sample_crops(
            photos, s.heldout_crops, s, torch.Generator().manual_seed(s.seed + 1), heldout=True
        )
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=s.learning_rate, total_steps=s.steps, pct_start=0.15
        )
        before = accuracy(model, x_heldout, y_heldout)
        model.train()
        losses = []
        for _ in range(s.steps):
            x, y = sample_crops(photos, s.batch_size, s, generator, heldout=False)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        after = accuracy(model, x_heldout, y_heldout)
    tail = losses[-max(1, len(losses) // 10) :]
    record = {
        "heldout_accuracy": round(after, 4),
        "chance": round(1 / n_classes, 4),
        "heldout_accuracy_before": round(before, 4),
        "classes": n_classes,
        "final_train_loss": float(np.mean(tail)),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, record


def describe(n_photographs: int) -> str:
    """How a report names these weights: plainly, so nobody mistakes them for ImageNet."""
    return f"demo pretraining on {n_photographs} photographs, not ImageNet"


def pretrain_models(
    models: Sequence[str], s: PretrainSettings
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Pretrain every model; ``({model: {"state_dict", "metadata"}}, record)``.

    ``metadata`` goes into each safetensors header (strings only); ``record`` is the JSON summary.
    """
    start = time.perf_counter()
    images = load_photographs()
    photos = photo_tensor(images, s.photo_size)
    versions = {p: version(p) for p in ("torch", "timm", "scikit-image")}
    common = {
        DEMO_MARKER[0]: DEMO_MARKER[1],
        "photographs": str(len(images)),
        "task": task(s),
        "description": describe(len(images)),
        "source": f"scikit-image {versions['scikit-image']} bundled sample images",
    }
    weights, per_model = {}, {}
    for model_name in models:
        state, result = pretrain(model_name, photos, s)
        per_model[model_name] = {"file": f"{model_name}.safetensors", **result}
        meta = {
            **common,
            "model_name": model_name,
            "heldout_accuracy": f"{result['heldout_accuracy']:.4f}",
            "seed": str(s.seed),
            "steps": str(s.steps),
            "image_size": str(s.image_size),
            "mean": json.dumps(list(NORMALIZATION[0])),
            "std": json.dumps(list(NORMALIZATION[1])),
        }
        weights[model_name] = {"state_dict": state, "metadata": meta}
    record = {
        "enabled": True,
        "description": describe(len(images)),
        "photographs": len(images),
        "photograph_names": list(images),
        "grayscale_as_rgb": list(GRAY_PHOTOGRAPHS),
        "source": common["source"],
        "task": task(s),
        "settings": asdict(s),
        "models": per_model,
        "versions": versions,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return weights, record
