"""permutation_study pipeline: one namespace per configuration (kedro-viz shows the fan-out;
``kedro run --namespaces configuration_15`` runs a subset), then aggregation, the winner on test
and the fallback configurations for patients missing sequences."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.configurations import FOUR_CHANNEL_ID, PAPER_CONFIGURATION_IDS, namespace
from idh_pseudocolor.pipelines import demo_pretraining
from idh_pseudocolor.pipelines.permutation_study.nodes import (
    aggregate_study,
    collect_fallbacks,
    evaluate_winner,
    train_configuration,
    train_fallbacks,
)
from idh_pseudocolor.runner import GPU_TAG

SHARED_INPUTS = {"slice_arrays", "development_split", "best_params"}
#: the sweep's own settings, the slice normalization (kept with the weights), the search's
#: settings (best_params must match them) and the environment (paper runs refuse the phantom)
CHECKED_PARAMETERS = (
    "params:permutation_study",
    "params:data_engineering",
    "params:hyperparameter_search",
    "params:environment",
)

#: what the winner's recipe reads: the final evaluation's and each fallback node's inputs
WINNER_INPUTS = [
    "slice_arrays",
    "development_split",
    "test_split",
    "best_params",
    "study_winner",
    *CHECKED_PARAMETERS,
    "demo_pretrained_weights",
]


def configuration_pipeline(config_id: int) -> Pipeline:
    func = update_wrapper(partial(train_configuration, config_id=config_id), train_configuration)
    return pipeline(
        [
            node(
                func,
                inputs=["slice_arrays", "development_split", "best_params", *CHECKED_PARAMETERS],
                outputs=["validation_runs", "validation_predictions", "checkpoints"],
                name="train_configuration",
                tags=[GPU_TAG],
            )
        ],
        namespace=namespace(config_id),
        inputs=SHARED_INPUTS,
        parameters=set(CHECKED_PARAMETERS),
        tags=["extension"] if config_id == FOUR_CHANNEL_ID else None,
    )


#: nodes sharing the fallback configurations (best rank first, dealt round robin): with
#: ``fallback.min_sequences: 3`` there are at most three besides the winner, one per node
FALLBACK_SLOTS = 3
FALLBACK_TAG = "fallbacks"  # kedro run --tags fallbacks: the fallbacks alone


def fallback_namespace(slot: int) -> str:
    return f"fallback_slot_{slot + 1}"


def fallback_pipeline(slot: int) -> Pipeline:
    func = update_wrapper(
        partial(train_fallbacks, slot=slot, slots=FALLBACK_SLOTS), train_fallbacks
    )
    return pipeline(
        [
            node(
                func,
                inputs=WINNER_INPUTS,
                outputs=["test_predictions", "models"],
                name="train_fallbacks",
                tags=[GPU_TAG, FALLBACK_TAG],
            )
        ],
        namespace=fallback_namespace(slot),
        inputs=set(WINNER_INPUTS) - set(CHECKED_PARAMETERS),
        parameters=set(CHECKED_PARAMETERS),
    )


def create_pipeline(**kwargs) -> Pipeline:
    per_configuration = sum(
        (configuration_pipeline(c) for c in PAPER_CONFIGURATION_IDS), Pipeline([])
    )
    aggregate = node(
        aggregate_study,
        inputs=[
            "params:permutation_study",
            *[f"{namespace(c)}.validation_runs" for c in PAPER_CONFIGURATION_IDS],
        ],
        outputs=["study_runs", "study_results", "study_winner"],
        name="aggregate_study",
    )
    final = node(
        evaluate_winner,
        inputs=WINNER_INPUTS,
        outputs=["test_predictions", "test_metrics", "winner_models"],
        name="evaluate_winner_on_test",
        tags=[GPU_TAG],
    )
    # beside the final evaluation (all wait for aggregate_study only): the winner's recipe for
    # the best-ranked configurations that patients missing a sequence can use (predict), dealt to
    # FALLBACK_SLOTS nodes so that they train at once on free workers or GPUs
    fallbacks = sum((fallback_pipeline(slot) for slot in range(FALLBACK_SLOTS)), Pipeline([]))
    collect = node(
        collect_fallbacks,
        inputs=[
            "study_winner",
            "params:permutation_study",
            *[f"{fallback_namespace(slot)}.test_predictions" for slot in range(FALLBACK_SLOTS)],
        ],
        outputs=["fallback_configurations", "fallback_test_metrics"],
        name="collect_fallbacks",
        tags=[FALLBACK_TAG],
    )
    # the final evaluation's pretrained arm needs the demo's weights (an empty record where the
    # demo pretraining is off, as in the paper's envs), so `--pipelines permutation_study` makes
    # them
    return (
        per_configuration
        + pipeline([aggregate, final, collect])
        + fallbacks
        + demo_pretraining.create_pipeline()
    )
