"""external_validation: a second cohort through the same slice extraction, scored by the final
evaluation's trained runs, against the internal test patients."""

from idh_pseudocolor.pipelines.external_validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
