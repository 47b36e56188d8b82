"""segmentation pipeline: train the tumor-segmentation model on the training patients' expert
masks, measure it on the held-out test patients, and compare the study's prediction with the
automatic masks against the expert ones (the report's "Automatic tumor masks" section)."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.segmentation.nodes import (
    compare_masks,
    evaluate_segmentation,
    summarize_segmentation,
    train_segmentation,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                train_segmentation,
                ["subject_manifest", "development_split", "params:segmentation"],
                ["segmentation_model", "segmentation_training"],
                name="train_segmentation",
            ),
            node(
                evaluate_segmentation,
                ["segmentation_model", "subject_manifest", "test_split", "params:segmentation"],
                ["segmentation_dice", "automatic_masks", "segmentation_overlays@matplotlib"],
                name="evaluate_segmentation",
            ),
            node(
                compare_masks,
                [
                    "automatic_masks",
                    "subject_manifest",
                    "test_split",
                    "winner_models",
                    "params:data_engineering",
                    "params:reporting",
                ],
                "mask_comparison",
                name="compare_masks",
            ),
            node(
                summarize_segmentation,
                [
                    "segmentation_training",
                    "segmentation_dice",
                    "mask_comparison",
                    "segmentation_overlays@image",
                ],
                "segmentation_summary",
                name="summarize_segmentation",
            ),
        ]
    )
