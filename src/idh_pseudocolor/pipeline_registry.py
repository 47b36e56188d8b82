"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# What `kedro run` (and so `make run`) runs. permutation_study is registered but not yet part of
# the default: its CPU demo is not yet tuned to the 10-minute budget (issue 5).
DEFAULT = ("data_engineering", "hyperparameter_search")


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)  # Kedro may load only the pipelines a run asks for
    pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT if name in pipelines), Pipeline([]))
    return pipelines
