"""hyperparameter_search: the paper's Optuna search (Table 1) on one configuration and model."""

from idh_pseudocolor.pipelines.hyperparameter_search.pipeline import create_pipeline

__all__ = ["create_pipeline"]
