"""Demo pretraining on bundled photographs: real tiny timm models, real files, no network."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from idh_pseudocolor.datasets import WeightsFolderDataset
from idh_pseudocolor.models import PretrainedWeightsUnavailable, create_model
from idh_pseudocolor.parameters import DemoPretrainingSettings
from idh_pseudocolor.pretraining import (
    PHOTOGRAPHS,
    PretrainSettings,
    is_demo_weights,
    load_photographs,
    photo_tensor,
    pretrain,
    pretrain_models,
    weights_metadata,
)
from tests.conftest import REPO, project_parameters

#: the demo's pretraining settings (conf/base, their only home) at toy scale
TINY = replace(
    DemoPretrainingSettings.from_params(project_parameters(REPO)["demo_pretraining"]).pretraining,
    image_size=32,
    photo_size=64,
    steps=3,
    batch_size=8,
    heldout_crops=16,
    seed=3,
    torch_threads=1,
)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails (scikit-image's pooch fetchers would need one)."""

    def refuse(*args, **kwargs):
        raise OSError("network access in a test that must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """test_resnet pretrained for three steps and saved as the pipeline saves it."""
    weights, record = pretrain_models(["test_resnet"], TINY)
    folder = WeightsFolderDataset(path=str(tmp_path_factory.mktemp("weights")))
    folder.save({"models": weights, "record": record})
    return Path(folder.load()["files"]["test_resnet"]), record


def test_bundled_photographs_load_without_network(no_network):
    photos = load_photographs()
    assert list(photos) == list(PHOTOGRAPHS) and len(photos) == 15
    for name, image in photos.items():
        assert (
            image.ndim == 3
            and image.shape[2] == 3
            and image.dtype.name == "uint8"
            and min(image.shape[:2]) >= 256
        ), name
    assert not (photos["astronaut.png"][..., 0] == photos["astronaut.png"][..., 1]).all()  # colour
    assert (photos["camera.png"][..., 0] == photos["camera.png"][..., 2]).all()  # grayscale, as RGB
    tensor = photo_tensor(photos, 64)
    assert tensor.shape == (15, 3, 64, 64) and 0 <= tensor.min() and tensor.max() <= 1


def test_pretraining_changes_the_weights_and_is_deterministic():
    photos = photo_tensor(load_photographs(), TINY.photo_size)
    with torch.random.fork_rng():
        torch.manual_seed(TINY.seed)
        initial = timm.create_model("test_byobnet", pretrained=False, num_classes=15).state_dict()
    state, record = pretrain("test_byobnet", photos, TINY)
    again, _ = pretrain("test_byobnet", photos, TINY)
    assert state.keys() == initial.keys()
    assert not torch.equal(state["stem.conv.weight"], initial["stem.conv.weight"])
    # same seed, same threads: same weights
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert record["classes"] == 15 and record["chance"] == pytest.approx(1 / 15, abs=1e-4)
    assert 0 <= record["heldout_accuracy"] <= 1 and record["seconds"] > 0


def test_the_file_says_what_it_is(demo_file):
    path, record = demo_file
    meta = weights_metadata(path)
    assert meta["idh_pseudocolor"] == "demo_pretraining" and meta["model_name"] == "test_resnet"
    assert (
        meta["photographs"] == "15"
        and meta["description"] == "demo pretraining on 15 photographs, not ImageNet"
    )
    assert "which photograph" in meta["task"] and float(meta["heldout_accuracy"]) == pytest.approx(
        record["models"]["test_resnet"]["heldout_accuracy"], abs=1e-4
    )
    assert (
        record["photographs"] == 15
        and record["settings"]["steps"] == 3
        and "scikit-image" in record["versions"]
    )


@pytest.mark.parametrize("in_chans", [3, 4])
def test_create_model_loads_demo_weights_through_the_weights_file_path(demo_file, in_chans):
    path, _ = demo_file
    saved = load_file(path)
    model, info = create_model(
        "test_resnet", pretrained=True, weights_file=str(path), in_chans=in_chans, num_classes=2
    )
    assert (
        info.pretrained_loaded
        and info.demo_pretraining
        and info.source == f"demo-pretraining:{path}"
    )
    # inputs standardized as the pretraining's were (its header), not as timm's test_resnet hub
    # weights (0.5)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (
        weights_metadata(path)["mean"] == "[0.485, 0.456, 0.406]" and info.normalization == imagenet
    )
    assert timm.data.resolve_model_data_config(model)["mean"] == imagenet[0]
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (2, saved["fc.weight"].shape[1])  # a new 2-class head
    adapted = {"fc.weight", "fc.bias"} | ({"conv1.0.weight"} if in_chans == 4 else set())
    assert all(torch.equal(loaded[k], saved[k]) for k in saved if k not in adapted)
    if in_chans == 4:  # timm repeats the RGB filters and scales them by 3/4
        assert loaded["conv1.0.weight"].shape[1] == 4
        torch.testing.assert_close(loaded["conv1.0.weight"][:, :3], saved["conv1.0.weight"] * 0.75)


def test_demo_weights_are_refused_for_another_model(demo_file):
    with pytest.raises(
        PretrainedWeightsUnavailable,
        match="demo-pretrained weights for 'test_resnet', not 'test_byobnet'",
    ):
        create_model("test_byobnet", pretrained=True, weights_file=str(demo_file[0]))


def test_is_demo_weights_only_for_demo_files(demo_file, tmp_path):
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    ordinary, pickled = tmp_path / "ordinary.safetensors", tmp_path / "ordinary.pth"
    save_file({k: v.contiguous() for k, v in state.items()}, ordinary)
    torch.save(state, pickled)
    assert is_demo_weights(demo_file[0])
    assert not is_demo_weights(ordinary) and not is_demo_weights(pickled)
    _, info = create_model("test_resnet", pretrained=True, weights_file=str(ordinary))
    assert info.source == f"file:{ordinary}" and not info.demo_pretraining


def test_unknown_and_missing_settings_are_refused():
    params = dict(project_parameters(REPO)["demo_pretraining"])
    with pytest.raises(ValueError, match=r"demo_pretraining\.step is not a setting"):
        DemoPretrainingSettings.from_params({**params, "step": 10})
    del params["steps"]
    with pytest.raises(ValueError, match=r"demo_pretraining\.steps is missing"):
        DemoPretrainingSettings.from_params(params)
    assert PretrainSettings is type(TINY)


def test_demo_weights_from_before_the_header_recorded_their_standardization_get_imagenets(
    demo_file, tmp_path
):
    """Every demo weights file made before ``mean``/``std`` were in the header was pretrained on
    ImageNet-standardized crops."""
    path, _ = demo_file
    meta = {k: v for k, v in weights_metadata(path).items() if k not in ("mean", "std")}
    older = tmp_path / "test_resnet.safetensors"
    save_file(load_file(path), older, metadata=meta)
    _, info = create_model("test_resnet", pretrained=True, weights_file=str(older))
    assert info.demo_pretraining and info.normalization == (
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
