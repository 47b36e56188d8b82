"""preprocessing pipeline definition: not part of ``kedro run`` (it needs a folder of raw
studies); the study then reads its cohort (``--params cohort_path=<preprocessing.out>``)."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.preprocessing.nodes import preprocess_raw_studies


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                preprocess_raw_studies,
                inputs="params:preprocessing",
                outputs="preprocessing_report",
                name="preprocess_raw_studies",
            )
        ]
    )
