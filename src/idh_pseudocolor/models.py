"""timm model factory with explicit, recorded pretrained-weight provenance."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, resolve_model_data_config
from timm.models import load_state_dict

#: the safetensors header entry that marks weights made by the demo's own pretraining
#: (idh_pseudocolor.pretraining), not ImageNet
DEMO_MARKER = ("idh_pseudocolor", "demo_pretraining")
#: ImageNet's input mean/std (timm's constants): what the demo pretraining standardizes with, and
#: what every pretrained run used before weights files and bundles recorded their own
IMAGENET_NORMALIZATION = (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were requested but could not be loaded; never silently trained from
    scratch."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a run really started from; stored with every run's metrics."""

    model_name: str
    pretrained_requested: bool
    pretrained_loaded: bool
    source: str  # "none", "file:<path>", "demo-pretraining:<path>" or "hub"
    demo_pretraining: bool = False  # the demo's own photograph pretraining, not ImageNet
    # the input standardization the loaded weights expect, per RGB channel (timm's data config
    # for the model; the demo pretraining's own for its weights); None from scratch: inputs stay in
    # [0, 1]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` for the inputs, or None when they are not standardized."""
        return (
            None if self.mean is None or self.std is None else (tuple(self.mean), tuple(self.std))
        )


def data_normalization(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std that timm's data config gives for ``model`` (from its ``pretrained_cfg``)."""
    config = resolve_model_data_config(model)
    return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata in a safetensors file's header; ``{}`` for a file that is not safetensors (a
    .pth)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError):  # a pickle/zip .pth, or a header safetensors cannot parse
        return {}


def _marks_demo(metadata: dict[str, str]) -> bool:
    return metadata.get(DEMO_MARKER[0]) == DEMO_MARKER[1]


def is_demo_weights(path: str | Path) -> bool:
    """Whether ``path`` holds weights from the demo's photograph pretraining (a paper run refuses
    them)."""
    return _marks_demo(weights_metadata(Path(path).expanduser()))


def _how_to_provide(model_name: str) -> str:
    return (
        f"Pretrained weights for '{model_name}' are not "
        "available. Provide them in one of these ways:\n"
        "  1. online: let timm download them from the Hugging Face hub (needs network access);\n"
        "  2. HF cache: copy a cache that holds them into $HF_HOME "
        "(or ~/.cache/huggingface) and set HF_HUB_OFFLINE=1;\n"
        "  3. a local file: set the parameter weights_file to "
        f"a .safetensors/.pth state dict for '{model_name}';\n"
        "  4. or train from scratch: pretrained: false."
    )


def create_model(
    model_name: str,
    pretrained: bool,
    weights_file: str | None = None,
    in_chans: int = 3,
    num_classes: int = 2,
) -> tuple[torch.nn.Module, WeightsInfo]:
    """A timm classifier with ``num_classes`` outputs and ``in_chans`` inputs.

    With ``pretrained`` the ImageNet weights come from ``weights_file`` if given, else from the
    hub / HF cache; timm replaces the classifier and adapts the first convolution for
    ``in_chans != 3``. A file from the demo's photograph pretraining (its header says so) is
    recorded as ``source="demo-pretraining:<path>"``, ``demo_pretraining=True``, and must be for
    ``model_name``. Failure raises :class:`PretrainedWeightsUnavailable` with the ways to
    provide weights.

    The returned :class:`WeightsInfo` carries the input ``mean``/``std`` the weights expect:
    timm's data config for the model (``resolve_model_data_config``), or for demo weights the
    standardization their header records (set into the model's ``pretrained_cfg``).
    """
    if not pretrained:
        model = timm.create_model(
            model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
        )
        return model, WeightsInfo(model_name, False, False, "none")
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise PretrainedWeightsUnavailable(
                f"weights_file {path} does not exist.\n" + _how_to_provide(model_name)
            )
        meta = weights_metadata(path)
        demo = _marks_demo(meta)
        if demo and meta.get("model_name") != model_name:
            raise PretrainedWeightsUnavailable(
                f"{path} holds demo-pretrained weights for {meta.get('model_name')!r}, "
                f"not {model_name!r}.\n" + _how_to_provide(model_name)
            )
        try:
            model = timm.create_model(
                model_name,
                pretrained=True,
                num_classes=num_classes,
                in_chans=in_chans,
                pretrained_cfg_overlay={"file": str(path)},
            )
        except Exception as exc:  # wrong architecture, unreadable file, pickled objects refused ...
            raise PretrainedWeightsUnavailable(
                f"could not load {path}: {exc}\n" + _how_to_provide(model_name)
            ) from exc
        _check_file_covers(model, path, model_name)
        # the weights were trained on inputs standardized as their header says, not as timm's hub
        # weights
        if demo:
            mean, std = demo_normalization(meta)
            model.pretrained_cfg = {**model.pretrained_cfg, "mean": mean, "std": std}
        source = f"demo-pretraining:{path}" if demo else f"file:{path}"
        return model, WeightsInfo(model_name, True, True, source, demo, *data_normalization(model))
    try:
        model = timm.create_model(
            model_name, pretrained=True, num_classes=num_classes, in_chans=in_chans
        )
    except Exception as exc:  # no network, not in cache, unknown tag
        raise PretrainedWeightsUnavailable(
            f"{type(exc).__name__}: {exc}\n" + _how_to_provide(model_name)
        ) from exc
    return model, WeightsInfo(model_name, True, True, "hub", False, *data_normalization(model))


def _check_file_covers(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Every tensor of the network but its new classifier must come from the file. With a
    classifier of another size timm loads a file non-strictly, so a file of another architecture
    would load nothing and a random network would pass for a pretrained one."""
    try:
        in_file = set(load_state_dict(str(path)))  # timm's reader: safetensors, or weights_only
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"could not load {path}: {exc}\n" + _how_to_provide(model_name)
        ) from exc
    classifier = model.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    missing = [
        k
        for k in model.state_dict()
        if k not in in_file
        and not k.endswith("num_batches_tracked")
        and not any(k.startswith(f"{h}.") for h in heads)
    ]
    if missing:
        raise PretrainedWeightsUnavailable(
            f"could not load {path}: it is not a state dict of {model_name} ({len(missing)} of "
            f"the network's tensors are not in it, e.g. {', '.join(missing[:3])})\n"
            + _how_to_provide(model_name)
        )


def demo_normalization(metadata: dict[str, str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std a demo weights file was pretrained with (its header's
    ``mean``/``std``)."""
    if "mean" not in metadata or "std" not in metadata:
        return IMAGENET_NORMALIZATION
    return tuple(json.loads(metadata["mean"])), tuple(json.loads(metadata["std"]))
