"""cross_validation (opt-in): the final evaluation over K stratified outer folds of all
patients, per-fold and pooled metrics, and where the single split's number sits among them."""

from idh_pseudocolor.pipelines.cross_validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
