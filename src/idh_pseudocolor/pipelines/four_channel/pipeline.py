"""The switch for configuration 28: ``kedro run --pipelines four_channel`` trains it like the
other configurations (same models, seeds, hyperparameters) and ranks it against the 28
already in ``study_runs``. It never enters the paper's winner."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.configurations import FOUR_CHANNEL_ID, namespace
from idh_pseudocolor.pipelines.four_channel.nodes import compare_four_channel
from idh_pseudocolor.pipelines.permutation_study.pipeline import configuration_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    compare = node(
        compare_four_channel,
        inputs=[
            "study_runs",
            f"{namespace(FOUR_CHANNEL_ID)}.validation_runs",
            "params:permutation_study",
        ],
        outputs="four_channel_comparison",
        name="compare_four_channel",
    )
    return configuration_pipeline(FOUR_CHANNEL_ID) + pipeline([compare], tags=["extension"])
