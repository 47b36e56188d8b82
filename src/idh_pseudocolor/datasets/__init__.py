"""Catalog datasets that kedro-datasets does not provide: a NIfTI cohort index, NumPy archives, an
Optuna storage, trained runs, pretrained weights files, the segmentation model and its masks.

Each class is imported when first named (PEP 562), so a plain catalog load (``kedro catalog``,
``kedro viz``, a notebook reading one CSV) imports only the datasets it uses, and none of them
imports torch or Lightning until it saves or loads weights.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CohortDataset": "cohort_dataset",
    "MaskFolderDataset": "mask_folder_dataset",
    "ModelBundleDataset": "model_bundle_dataset",
    "NpzDataset": "npz_dataset",
    "OptionalJSONDataset": "optional_json_dataset",
    "OptunaStorageDataset": "optuna_dataset",
    "SegmentationModelDataset": "segmentation_model_dataset",
    "StudyLocation": "optuna_dataset",
    "WeightsFolderDataset": "weights_folder_dataset",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
