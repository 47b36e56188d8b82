"""four_channel: configuration 28 (all four sequences as a 4-channel input), behind a switch."""

from idh_pseudocolor.pipelines.four_channel.pipeline import create_pipeline

__all__ = ["create_pipeline"]
