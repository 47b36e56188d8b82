"""reporting: the paper's figures, Table 2 with confidence intervals, and the HTML report."""

from idh_pseudocolor.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
