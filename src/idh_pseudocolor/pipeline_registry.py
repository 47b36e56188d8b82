"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# What `kedro run` (and so `make run`) runs: the whole study. Not four_channel: configuration
# 28 is this project's extension, off unless asked for (`kedro run --pipelines four_channel`).
# demo_pretraining (the demo's pretrained arm; an empty record where it is disabled) is part of
# permutation_study, whose final evaluation reads it; it is also a pipeline of its own.
# external_validation runs without an external cohort too (empty outputs, the report says so).
# segmentation: the automatic tumor masks and what they cost the study (the report's section).
DEFAULT = (
    "data_engineering",
    "demo_pretraining",
    "hyperparameter_search",
    "permutation_study",
    "external_validation",
    "segmentation",
    "reporting",
)


def register_pipelines() -> dict[str, Pipeline]:
    # Kedro may load only the pipelines a run asks for
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT if name in pipelines), Pipeline([])
    )
    return pipelines
