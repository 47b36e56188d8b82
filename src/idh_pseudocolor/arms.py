"""An arm: one model trained one way, finetuned from pretrained weights or from scratch (the final
evaluation's model x pretrained). Its keys in every table, and the one set of words for it in
tables, figures, log lines and file names."""

from __future__ import annotations

#: the columns that name an arm in every predictions and metrics table
ARM_KEYS: tuple[str, str] = ("model_name", "pretrained")

#: the demo's finetuned arm starts from its own photograph pretraining: said wherever it is named
DEMO_FINETUNED = "finetuned from demo pretraining (photographs, not ImageNet)"


def arm_label(pretrained: bool, demo: bool = False) -> str:
    """How Table 2, the figures and the report name an arm: "finetuned", "no pretraining" (the
    paper's words), or the demo's finetuned arm, which must never read as ImageNet's."""
    if not pretrained:
        return "no pretraining"
    return DEMO_FINETUNED if demo else "finetuned"


def method_label(model_name: str, pretrained: bool, demo: bool = False) -> str:
    """A row of Table 2: ``"<model>, <arm>"``."""
    return f"{model_name}, {arm_label(pretrained, demo)}"


def arm_slug(pretrained: bool) -> str:
    """The arm in run names, file names and log lines: ``pretrained`` or ``scratch``."""
    return "pretrained" if pretrained else "scratch"
