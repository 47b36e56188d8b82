"""demo_pretraining: the demo's pretrained arm, pretrained offline on photographs (not ImageNet)."""

from idh_pseudocolor.pipelines.demo_pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
