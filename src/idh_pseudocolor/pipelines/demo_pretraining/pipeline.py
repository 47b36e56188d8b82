"""demo_pretraining pipeline: one node, one folder of weights files
(``demo_pretrained_weights``)."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.demo_pretraining.nodes import pretrain_demo_models


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                pretrain_demo_models,
                inputs="params:demo_pretraining",
                outputs="demo_pretrained_weights",
                name="pretrain_demo_models",
            ),
        ]
    )
