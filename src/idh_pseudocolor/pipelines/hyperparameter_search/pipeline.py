"""hyperparameter_search pipeline definition."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.hyperparameter_search.nodes import search_hyperparameters
from idh_pseudocolor.runner import GPU_TAG


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                search_hyperparameters,
                inputs=[
                    "slice_arrays",
                    "development_split",
                    "search_study",
                    "params:hyperparameter_search",
                    "params:environment",
                ],
                outputs=[
                    "search_trials",
                    "best_params",
                    "search_history_plot",
                    "search_importance_plot",
                ],
                name="search_hyperparameters",
                tags=[GPU_TAG],  # under DaskRunner, a search worker holds one GPU
            )
        ]
    )
