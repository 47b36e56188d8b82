"""pseudocolor.py, value by value: which sequence lands on which channel, where the padding goes,
what the mask keeps, how inputs are resized and standardized. Expected values are written out
or computed with plain numpy/torch here, not with the functions under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idh_pseudocolor.pseudocolor import (
    compose,
    composite_rgb,
    mask_non_tumor,
    normalization_stats,
    pad_to_square,
    select_channels,
)

SEQUENCE = {"T1": 0, "T1ce": 1, "T2": 2, "FLAIR": 3}


def slices(n: int = 2, h: int = 6, w: int = 10) -> np.ndarray:
    """(n, 4, h, w): every voxel names its subject, sequence and position, so any mix-up shows."""
    grid = np.arange(h * w, dtype=np.float32).reshape(h, w) / (h * w)
    return np.stack(
        [np.stack([grid + 10 * s + 100 * i for s in range(4)]) for i in range(n)]
    ).astype(np.float32)


@pytest.mark.parametrize(
    ("config_id", "channels"),
    [
        (15, ("T2", "T1ce", "FLAIR")),  # red T2 (SPEC numbering)
        (21, ("FLAIR", "T1ce", "T2")),
        (24, ("T1", "T1", "T1")),  # gray T1
        (28, ("T1", "T1ce", "T2", "FLAIR")),  # the four-channel extension
    ],
)
def test_channels_are_the_configurations_sequences_in_order(config_id, channels):
    images = slices()
    chosen = select_channels(images, config_id)
    assert chosen.shape == (2, len(channels), 6, 10)
    for k, sequence in enumerate(channels):
        np.testing.assert_array_equal(chosen[:, k], images[:, SEQUENCE[sequence]])


def test_mask_keeps_tumor_voxels_of_any_label_and_zeroes_the_rest():
    images = slices(1, 3, 3)[:, :3]
    masks = np.array([[[0, 1, 0], [2, 4, 0], [0, 0, 0]]])
    out = mask_non_tumor(images, masks)
    inside = masks[0] > 0
    for c in range(3):
        np.testing.assert_array_equal(out[0, c][inside], images[0, c][inside])
        assert (out[0, c][~inside] == 0).all()


@pytest.mark.parametrize(("h", "w", "top", "left"), [(5, 9, 2, 0), (4, 9, 2, 0), (9, 4, 0, 2)])
def test_padding_centres_the_slice_in_a_square(h, w, top, left):
    x = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, 1, h, w)
    padded = pad_to_square(x)
    size = max(h, w)
    assert padded.shape == (1, 1, size, size)
    torch.testing.assert_close(padded[..., top : top + h, left : left + w], x)
    assert float(padded.sum()) == float(x.sum())  # the rest is zeros
    assert torch.equal(pad_to_square(torch.ones(1, 2, 7, 7)), torch.ones(1, 2, 7, 7))


def test_normalization_stats_for_three_and_four_channels():
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization_stats(3, None) is None
    assert normalization_stats(3, imagenet) == imagenet
    mean, std = normalization_stats(4, imagenet)
    assert mean == (0.485, 0.456, 0.406, pytest.approx((0.485 + 0.456 + 0.406) / 3))
    assert std == (0.229, 0.224, 0.225, pytest.approx((0.229 + 0.224 + 0.225) / 3))
    assert normalization_stats(2, ([0.1, 0.2, 0.3], [1, 2, 3])) == ((0.1, 0.2), (1, 2))
    assert normalization_stats(5, ([0.0, 0.3, 0.6], [1.0, 2.0, 3.0]))[0] == pytest.approx(
        (0.0, 0.3, 0.6, 0.3, 0.3)
    )


def test_compose_at_native_size_is_the_padded_channels_exactly():
    images = slices(2, 6, 10)
    masks = np.zeros((2, 6, 10), dtype=np.uint8)
    x = compose(images, masks, 15, image_size=10)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 10, 10) and x.is_contiguous()
    expected = np.zeros((2, 3, 10, 10), dtype=np.float32)
    for k, sequence in enumerate(("T2", "T1ce", "FLAIR")):
        expected[:, k, 2:8, :] = images[:, SEQUENCE[sequence]]
    np.testing.assert_array_equal(x.numpy(), expected)
    masked = compose(images, masks, 15, image_size=10, mask_tumor_only=True)
    assert float(masked.abs().max()) == 0.0  # no tumor voxel: nothing left
    unmasked = compose(images, masks, 15, image_size=10, mask_tumor_only=False)
    assert float(unmasked.abs().max()) > 0.0


def test_compose_resizes_with_antialiasing_then_standardizes():
    images = slices(1, 6, 10)
    masks = np.ones((1, 6, 10), dtype=np.uint8)
    padded = torch.zeros(1, 3, 10, 10)
    for k, sequence in enumerate(("FLAIR", "T1ce", "T2")):  # configuration 21
        padded[:, k, 2:8, :] = torch.from_numpy(images[:, SEQUENCE[sequence]])
    resized = F.interpolate(
        padded, size=(4, 4), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(compose(images, masks, 21, image_size=4), resized)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    standardized = compose(images, masks, 21, image_size=4, normalize=(mean, std))
    for k in range(3):
        torch.testing.assert_close(standardized[:, k], (resized[:, k] - mean[k]) / std[k])
    larger = compose(images, masks, 21, image_size=20)
    assert larger.shape == (1, 3, 20, 20)


def test_composite_picture_is_clipped_rgb_of_a_three_channel_configuration():
    image = slices(1, 4, 5)[0] / 400.0  # into [0, 1) except where pushed out below
    image[2, 0, 0], image[3, 0, 1] = 1.7, -0.4  # out of range: clipped in the picture
    rgb = composite_rgb(image, 15)
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.clip(image[SEQUENCE["T2"]], 0, 1))
    np.testing.assert_array_equal(rgb[..., 1], np.clip(image[SEQUENCE["T1ce"]], 0, 1))
    np.testing.assert_array_equal(rgb[..., 2], np.clip(image[SEQUENCE["FLAIR"]], 0, 1))
    assert rgb[0, 0, 0] == 1.0 and rgb[0, 1, 2] == 0.0
    with pytest.raises(ValueError, match="configuration 28 has 4 channels"):
        composite_rgb(image, 28)
