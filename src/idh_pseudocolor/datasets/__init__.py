"""Catalog datasets that kedro-datasets does not provide: a NIfTI cohort index and NumPy archives."""

from idh_pseudocolor.datasets.cohort_dataset import CohortDataset
from idh_pseudocolor.datasets.npz_dataset import NpzDataset
from idh_pseudocolor.datasets.optuna_dataset import OptunaStorageDataset
from idh_pseudocolor.search import StudyLocation

__all__ = ["CohortDataset", "NpzDataset", "OptunaStorageDataset", "StudyLocation"]
