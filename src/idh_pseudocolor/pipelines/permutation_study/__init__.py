"""permutation_study: every configuration x model x seed on the validation split, then the
winner."""

from idh_pseudocolor.pipelines.permutation_study.pipeline import create_pipeline

__all__ = ["create_pipeline"]
