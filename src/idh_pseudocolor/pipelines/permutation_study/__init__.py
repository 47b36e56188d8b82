"""permutation_study: every configuration x model x seed on the validation split, then the
winner and, for patients missing sequences, the best-ranked configurations they can use."""

from idh_pseudocolor.pipelines.permutation_study.pipeline import create_pipeline

__all__ = ["create_pipeline"]
