"""models.create_model with timm's tiny test_resnet: where the weights came from, and what they
expect, recorded; every way of not getting the requested weights refused. No network: every
weights file is written by the test.

Covered elsewhere: a .pth file's tensors really used and a missing file (tests/test_training.py),
the hub offline in a fresh interpreter (tests/test_training.py), real demo-pretrained files
(tests/test_pretraining.py)."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch
from safetensors.torch import save_file

from idh_pseudocolor.models import (
    DEMO_MARKER,
    PretrainedWeightsUnavailable,
    WeightsInfo,
    create_model,
    is_demo_weights,
)
from tests.conftest import write_weights

#: every way to provide weights, as the error lists them
WAYS = (
    "1. online",
    "2. HF cache",
    "3. a local file",
    "4. or train from scratch: pretrained: false",
)
TEST_RESNET_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # its timm pretrained_cfg


def state_dict(model_name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = timm.create_model(model_name, pretrained=False)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def demo_file(path, model_name: str, mean, std, seed: int = 7):
    """A safetensors file as the demo pretraining writes it: its header says what it is."""
    metadata = {
        DEMO_MARKER[0]: DEMO_MARKER[1],
        "model_name": model_name,
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
    }
    save_file(state_dict(model_name, seed), path, metadata=metadata)
    return path


def assert_lists_the_ways(message: str) -> None:
    assert "Pretrained weights for 'test_resnet' are not available" in message
    assert all(way in message for way in WAYS), message


@pytest.mark.parametrize("in_chans", [3, 4])
def test_from_scratch_records_no_weights_and_no_standardization(in_chans):
    model, info = create_model("test_resnet", pretrained=False, in_chans=in_chans, num_classes=2)
    assert info == WeightsInfo("test_resnet", False, False, "none")
    assert info.source == "none" and not info.demo_pretraining
    assert info.normalization is None and info.as_dict()["mean"] is None
    assert model.conv1[0].in_channels == in_chans and model.fc.out_features == 2


def test_weights_from_a_safetensors_file_are_those_tensors_and_timms_standardization(tmp_path):
    path = write_weights(tmp_path, ["test_resnet"])["test_resnet"]
    saved = state_dict("test_resnet", 100)  # write_weights seeds its first model with 100
    model, info = create_model("test_resnet", pretrained=True, weights_file=path)
    assert info == WeightsInfo(
        "test_resnet", True, True, f"file:{path}", False, *TEST_RESNET_NORMALIZATION
    )
    assert info.normalization == TEST_RESNET_NORMALIZATION
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    assert all(torch.equal(loaded[k], saved[k]) for k in saved if not k.startswith("fc."))
    fresh, _ = create_model("test_resnet", pretrained=False)  # not what a new model draws
    assert not torch.equal(
        fresh.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"]
    )


def test_in_chans_4_adapts_the_files_first_convolution(tmp_path):
    path = write_weights(tmp_path, ["test_resnet"])["test_resnet"]
    saved = state_dict("test_resnet", 100)["conv1.0.weight"]
    model, info = create_model("test_resnet", pretrained=True, weights_file=path, in_chans=4)
    weight = model.state_dict()["conv1.0.weight"]
    assert weight.shape == (saved.shape[0], 4, *saved.shape[2:])
    # timm repeats the RGB filters over the channels and scales them by 3/4
    torch.testing.assert_close(weight[:, :3], saved * 0.75)
    torch.testing.assert_close(weight[:, 3], saved[:, 0] * 0.75)
    assert info.normalization == TEST_RESNET_NORMALIZATION  # RGB's: compose() extends it


def test_a_missing_file_is_refused_with_the_ways(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="does not exist") as missing:
        create_model("test_resnet", pretrained=True, weights_file=str(tmp_path / "none.pth"))
    assert_lists_the_ways(str(missing.value))


def test_a_file_of_another_architecture_is_refused_with_the_ways(tmp_path):
    """timm loads a file non-strictly when the classifier changes size (always, here): a file of
    another network would load nothing, so every non-classifier tensor must be in the file."""
    other = write_weights(tmp_path, ["test_byobnet"])["test_byobnet"]
    with pytest.raises(PretrainedWeightsUnavailable, match="could not load") as wrong:
        create_model("test_resnet", pretrained=True, weights_file=other)
    assert other in str(wrong.value)
    assert_lists_the_ways(str(wrong.value))


def test_the_hub_offline_with_an_empty_cache_is_refused_never_trained_from_scratch(
    tmp_path, monkeypatch
):
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("network access in a test that must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub read both when timm imported it: give its constants what the environment
    # now says
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(PretrainedWeightsUnavailable) as exc:
        create_model("test_resnet", pretrained=True)
    assert_lists_the_ways(str(exc.value))
    assert exc.value.__cause__ is not None
    assert str(exc.value).startswith(type(exc.value.__cause__).__name__)


def test_demo_weights_are_recognised_and_standardized_as_their_header_says(tmp_path):
    mean, std = (0.1, 0.2, 0.3), (0.9, 0.8, 0.7)
    path = demo_file(tmp_path / "demo.safetensors", "test_resnet", mean, std)
    assert is_demo_weights(path) and is_demo_weights(str(path))
    model, info = create_model("test_resnet", pretrained=True, weights_file=str(path))
    assert info == WeightsInfo(
        "test_resnet", True, True, f"demo-pretraining:{path}", True, mean, std
    )
    assert timm.data.resolve_model_data_config(model)["std"] == std  # not test_resnet's 0.5
    torch.testing.assert_close(
        model.state_dict()["conv1.0.weight"], state_dict("test_resnet", 7)["conv1.0.weight"]
    )


def test_only_the_marker_makes_demo_weights(tmp_path):
    plain = write_weights(tmp_path, ["test_resnet"])["test_resnet"]
    other_value = tmp_path / "other.safetensors"
    save_file(
        state_dict("test_resnet", 1),
        other_value,
        metadata={DEMO_MARKER[0]: "something else", "model_name": "test_resnet"},
    )
    assert not is_demo_weights(plain) and not is_demo_weights(other_value)
    _, info = create_model("test_resnet", pretrained=True, weights_file=str(other_value))
    assert info.source == f"file:{other_value}" and not info.demo_pretraining


def test_demo_weights_for_another_model_are_refused(tmp_path):
    path = demo_file(tmp_path / "byob.safetensors", "test_byobnet", (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(PretrainedWeightsUnavailable) as exc:
        create_model("test_resnet", pretrained=True, weights_file=str(path))
    message = str(exc.value)
    assert "demo-pretrained weights for 'test_byobnet', not 'test_resnet'" in message
    assert_lists_the_ways(message)
