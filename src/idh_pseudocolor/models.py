"""timm model factory with explicit, recorded pretrained-weight provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch

PAPER_MODELS = ("vgg16.tv_in1k", "resnext101_32x16d.fb_swsl_ig1b_ft_in1k")


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were requested but could not be loaded; never silently trained from scratch."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a run really started from; stored with every run's metrics."""

    model_name: str
    pretrained_requested: bool
    pretrained_loaded: bool
    source: str  # "none", "file:<path>" or "hub"

    def as_dict(self) -> dict:
        return asdict(self)


def _how_to_provide(model_name: str) -> str:
    return (
        f"Pretrained weights for '{model_name}' are not available. Provide them in one of these ways:\n"
        f"  1. online: let timm download them from the Hugging Face hub (needs network access);\n"
        f"  2. HF cache: copy a cache that holds them into $HF_HOME (or ~/.cache/huggingface) and set HF_HUB_OFFLINE=1;\n"
        f"  3. a local file: set the parameter weights_file to a .safetensors/.pth state dict for '{model_name}';\n"
        f"  4. or train from scratch: pretrained: false."
    )


def create_model(
    model_name: str, pretrained: bool, weights_file: str | None = None, in_chans: int = 3, num_classes: int = 2
) -> tuple[torch.nn.Module, WeightsInfo]:
    """A timm classifier with ``num_classes`` outputs and ``in_chans`` inputs.

    With ``pretrained`` the ImageNet weights come from ``weights_file`` if given, else from the
    hub / HF cache; timm replaces the classifier and adapts the first convolution for
    ``in_chans != 3``. Failure raises :class:`PretrainedWeightsUnavailable` with the ways to
    provide weights.
    """
    if not pretrained:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        return model, WeightsInfo(model_name, False, False, "none")
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsUnavailable(f"weights_file {path} does not exist.\n" + _how_to_provide(model_name))
        try:
            model = timm.create_model(
                model_name, pretrained=True, num_classes=num_classes, in_chans=in_chans,
                pretrained_cfg_overlay={"file": str(path)},
            )
        except Exception as exc:  # wrong architecture, unreadable file, pickled objects refused ...
            raise PretrainedWeightsUnavailable(f"could not load {path}: {exc}\n" + _how_to_provide(model_name)) from exc
        return model, WeightsInfo(model_name, True, True, f"file:{path}")
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # no network, not in cache, unknown tag
        raise PretrainedWeightsUnavailable(f"{type(exc).__name__}: {exc}\n" + _how_to_provide(model_name)) from exc
    return model, WeightsInfo(model_name, True, True, "hub")

