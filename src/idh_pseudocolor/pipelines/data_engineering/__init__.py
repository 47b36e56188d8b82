"""data_engineering: cohort -> validated mid-tumor slices, subject manifest, splits, QC."""

from idh_pseudocolor.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
