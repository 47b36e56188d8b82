"""cross_validation pipeline definition.

One node per fold, as the permutation study has one per configuration, so the DaskRunner (or
ParallelRunner) trains folds side by side. The graph is built before parameters are read, so it
holds MAX_FOLDS fold nodes; those beyond ``cross_validation.folds`` return an empty table.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.cross_validation.nodes import (
    MAX_FOLDS,
    assign_cross_validation_folds,
    summarize_cross_validation,
    train_fold,
)
from idh_pseudocolor.runner import GPU_TAG


def fold_dataset(fold: int) -> str:
    return f"cross_validation_fold_{fold}"


def create_pipeline(**kwargs) -> Pipeline:
    fold_nodes = []
    for fold in range(MAX_FOLDS):
        func = update_wrapper(partial(train_fold, fold=fold), train_fold)
        fold_nodes.append(
            node(
                func,
                [
                    "slice_arrays",
                    "cross_validation_folds",
                    "best_params",
                    "study_winner",
                    "params:cross_validation",
                    "params:permutation_study",
                    "params:data_engineering",
                    "params:hyperparameter_search",
                    "params:environment",
                    "demo_pretrained_weights",
                ],
                fold_dataset(fold),
                name=f"train_fold_{fold}",
                tags=[GPU_TAG],
            )
        )
    return pipeline(
        [
            node(
                assign_cross_validation_folds,
                ["subject_manifest", "params:cross_validation"],
                "cross_validation_folds",
                name="assign_cross_validation_folds",
            ),
            *fold_nodes,
            node(
                summarize_cross_validation,
                [
                    "cross_validation_folds",
                    "test_metrics",
                    "params:cross_validation",
                    "params:reporting",
                    *[fold_dataset(f) for f in range(MAX_FOLDS)],
                ],
                [
                    "cross_validation_predictions",
                    "cross_validation_fold_metrics",
                    "cross_validation_pooled_metrics",
                    "cross_validation_summary",
                    "cross_validation_folds_figure@matplotlib",
                ],
                name="summarize_cross_validation",
            ),
        ],
        tags="cross_validation",
    )
