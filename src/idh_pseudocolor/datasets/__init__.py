"""Catalog datasets that kedro-datasets does not provide: a NIfTI cohort index, NumPy archives, an
Optuna storage, trained runs and pretrained weights files."""

from idh_pseudocolor.datasets.cohort_dataset import CohortDataset
from idh_pseudocolor.datasets.model_bundle_dataset import ModelBundleDataset
from idh_pseudocolor.datasets.npz_dataset import NpzDataset
from idh_pseudocolor.datasets.optional_json_dataset import OptionalJSONDataset
from idh_pseudocolor.datasets.optuna_dataset import OptunaStorageDataset
from idh_pseudocolor.datasets.weights_folder_dataset import WeightsFolderDataset
from idh_pseudocolor.search import StudyLocation

__all__ = [
    "CohortDataset",
    "ModelBundleDataset",
    "NpzDataset",
    "OptionalJSONDataset",
    "OptunaStorageDataset",
    "StudyLocation",
    "WeightsFolderDataset",
]
