"""preprocessing pipeline: raw studies (a PACS export) -> a cohort in the EGD layout."""

from idh_pseudocolor.pipelines.preprocessing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
