"""The node: pretrain the demo's models on bundled photographs, or write an empty record when
off."""

from __future__ import annotations

import logging
from typing import Any

from idh_pseudocolor.parameters import DemoPretrainingSettings
from idh_pseudocolor.pretraining import pretrain_models

logger = logging.getLogger(__name__)


def pretrain_demo_models(params: dict[str, Any]) -> dict[str, Any]:
    """``{"models": {model: {"state_dict", "metadata"}}, "record": {...}}`` for
    ``demo_pretrained_weights``.

    With ``enabled: false`` (the paper's environments) no model is pretrained and the record says
    so, so the pipeline has the same shape in every environment.
    """
    settings = DemoPretrainingSettings.from_params(params)
    if not settings.enabled:
        return {"models": {}, "record": {"enabled": False}}
    models, record = pretrain_models(list(settings.models), settings.pretraining)
    for name, result in record["models"].items():
        logger.info(
            "%s: %s; held-out pretext accuracy %.3f (chance %.3f), %.1f s",
            name,
            record["description"],
            result["heldout_accuracy"],
            result["chance"],
            result["seconds"],
        )
    return {"models": models, "record": record}
