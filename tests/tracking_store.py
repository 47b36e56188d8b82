"""Reading what a Kedro run tracked, through MLflow's client API on the real store."""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from idh_pseudocolor.tracking import KIND_TAG, PARENT_TAG


def project_client(project: Path) -> MlflowClient:
    """The client of the project's embedded store (conf/base/mlflow.yml)."""
    db = project / "data/10_tracking/mlflow.db"
    assert db.is_file(), f"no tracking store at {db}"
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def experiment_id(client: MlflowClient) -> str:
    experiment = client.get_experiment_by_name("idh_pseudocolor")
    assert experiment is not None, "the project's experiment was not created"
    return experiment.experiment_id


def parent_runs(client: MlflowClient, experiment: str | None = None) -> list[Run]:
    """The kedro runs (runs without a parent) of the demo's experiment or ``experiment``."""
    runs = client.search_runs([experiment or experiment_id(client)], max_results=1000)
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def children(client: MlflowClient, parent: str, kind: str | None = None) -> list[Run]:
    where = f"tags.`{PARENT_TAG}` = '{parent}'"
    if kind:
        where += f" and tags.`{KIND_TAG}` = '{kind}'"
    return client.search_runs([experiment_id(client)], where, max_results=5000)
