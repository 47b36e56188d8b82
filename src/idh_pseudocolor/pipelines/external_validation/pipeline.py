"""external_validation pipeline definition.

The second cohort's slices come from data_engineering's own ``extract_slices`` node, reused
under the ``external`` namespace (same checks, same exclusion reasons, same normalization
parameters); only its outputs are renamed (``external.subject_manifest`` ...). The development
cohort's test split is not read here: the comparison uses the final evaluation's predictions.
"""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.data_engineering.pipeline import (
    create_pipeline as data_engineering,
)
from idh_pseudocolor.pipelines.external_validation.nodes import (
    evaluate_external,
    external_quality,
    score_external_cohort,
)

SHARED_PARAMETERS = {
    "params:data_engineering": "params:data_engineering",
    "params:environment": "params:environment",
}


def create_pipeline(**kwargs) -> Pipeline:
    extraction = pipeline(
        data_engineering().only_nodes("extract_slices"),
        namespace="external",
        parameters=SHARED_PARAMETERS,
    )
    evaluation = pipeline(
        [
            node(
                external_quality,
                [
                    "external.subject_manifest",
                    "external.slice_arrays",
                    "external.cohort_record",
                    "params:data_engineering",
                ],
                ["external.qc_summary", "external.qc_montage"],
                name="external_quality",
            ),
            node(
                score_external_cohort,
                [
                    "winner_models",
                    "external.slice_arrays",
                    "external.cohort_record",
                    "params:data_engineering",
                ],
                "external_predictions",
                name="score_external_cohort",
            ),
            node(
                evaluate_external,
                [
                    "external_predictions",
                    "test_predictions",
                    "external.cohort_record",
                    "external.qc_summary",
                    "params:reporting",
                ],
                [
                    "external_metrics",
                    "external_validation@matplotlib",
                    "external_validation_summary",
                ],
                name="evaluate_external",
            ),
        ],
        tags="external_validation",
    )
    return extraction + evaluation
