"""data_engineering pipeline definition."""

from kedro.pipeline import Pipeline, node, pipeline

from idh_pseudocolor.pipelines.data_engineering.nodes import (
    extract_slices,
    split_cohort,
    summarize_quality,
)


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                extract_slices,
                inputs=["cohort", "params:data_engineering", "params:environment"],
                outputs=["subject_manifest", "slice_arrays", "cohort_record"],
                name="extract_slices",
            ),
            node(
                split_cohort,
                inputs=["subject_manifest", "params:data_engineering"],
                outputs=["development_split", "test_split", "split_sizes"],
                name="split_cohort",
            ),
            node(
                summarize_quality,
                inputs=[
                    "subject_manifest",
                    "split_sizes",
                    "slice_arrays",
                    "params:data_engineering",
                ],
                outputs=["qc_summary", "qc_montage"],
                name="summarize_quality",
            ),
        ]
    )
