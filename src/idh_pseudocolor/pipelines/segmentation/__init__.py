"""segmentation pipeline: a tumor-segmentation model for patients without an expert mask."""

from idh_pseudocolor.pipelines.segmentation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
