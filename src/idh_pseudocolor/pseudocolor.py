"""Configuration id -> model input: channel selection, optional masking, square resize,
normalization.

Pure functions on arrays/tensors, applied once per run to the whole (small) dataset, so the
training loop only indexes tensors already in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from idh_pseudocolor.configurations import SEQUENCES, configuration


def select_channels(images: np.ndarray, config_id: int) -> np.ndarray:
    """(N, 4, H, W) slices in SEQUENCES order -> (N, C, H, W) for the configuration's channels."""
    index = [SEQUENCES.index(s) for s in configuration(config_id)]
    return images[:, index]


def mask_non_tumor(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Zero everything outside the tumor mask (Table 1's 'mask non-tumor regions')."""
    return images * (masks[:, None] > 0)


def pad_to_square(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad (centered) the last two dims to a square, keeping the anatomy's aspect ratio."""
    h, w = x.shape[-2:]
    size = max(h, w)
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def normalization_stats(
    n_channels: int, normalization: tuple[Sequence[float], Sequence[float]] | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The weights' RGB ``(mean, std)`` (timm's data config for the model, see
    :func:`idh_pseudocolor.models.data_normalization`) for ``n_channels`` inputs: a 4th channel
    gets the average of the three; None (weights from scratch) stays None."""
    if normalization is None:
        return None
    rgb_mean, rgb_std = tuple(normalization[0]), tuple(normalization[1])
    mean, std = list(rgb_mean), list(rgb_std)
    while len(mean) < n_channels:
        mean.append(float(np.mean(rgb_mean)))
        std.append(float(np.mean(rgb_std)))
    return tuple(mean[:n_channels]), tuple(std[:n_channels])


def compose(
    images: np.ndarray,
    masks: np.ndarray,
    config_id: int,
    image_size: int,
    mask_tumor_only: bool = False,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> torch.Tensor:
    """Model input for a configuration: (N, C, image_size, image_size) float32.

    Channels follow the configuration; intensities are the data_engineering [0, 1] values,
    standardized with ``normalize`` = (mean, std) when given (what the pretrained weights expect).
    """
    x = select_channels(images, config_id)
    if mask_tumor_only:
        x = mask_non_tumor(x, masks)
    t = pad_to_square(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32))
    if t.shape[-1] != image_size:
        t = F.interpolate(
            t, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    if normalize is not None:
        mean = torch.tensor(normalize[0], dtype=t.dtype).view(1, -1, 1, 1)
        std = torch.tensor(normalize[1], dtype=t.dtype).view(1, -1, 1, 1)
        t = (t - mean) / std
    return t.contiguous()


def composite_rgb(image: np.ndarray, config_id: int) -> np.ndarray:
    """One subject's (4, H, W) slice as an (H, W, 3) picture of a 3-channel configuration."""
    x = select_channels(image[None], config_id)[0]
    if x.shape[0] != 3:
        raise ValueError(
            f"configuration {config_id} has {x.shape[0]} channels; only 3-channel ones are pictures"
        )
    return np.clip(np.moveaxis(x, 0, -1), 0, 1)
