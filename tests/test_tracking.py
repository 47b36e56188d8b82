"""idh_pseudocolor.tracking on a real MLflow SQLite store: nested runs, their values, and a store
that fails (one warning, nothing raised, nothing more tried)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from idh_pseudocolor import tracking
from idh_pseudocolor.hooks import check_reachable, project_store


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A real SQLite store with a parent run, made this process's target."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="parent").info.run_id
    target = tracking.Target(uri, experiment, parent)
    monkeypatch.setenv(tracking.TARGET_ENV, target.to_env())
    return client, target


def test_a_run_nests_under_the_parent_with_its_values(store):
    client, target = store
    row = {"config_id": 15, "model_name": "m", "seed": 42, "auroc": 0.75, "f1": float("nan")}
    params, metrics = tracking.split_record(row, {"auroc", "f1"})
    assert params == {"config_id": "15", "model_name": "m", "seed": "42"}
    assert metrics == {"auroc": 0.75}  # NaN is no MLflow metric
    history = [{"epoch": 0, "val_loss": 0.7}, {"epoch": 1, "val_loss": 0.5}]
    run_id = tracking.log_run("sweep", "run-a", params, metrics, history=history)
    run = client.get_run(run_id)
    assert run.data.tags[tracking.PARENT_TAG] == target.parent_run_id
    assert run.data.tags[tracking.KIND_TAG] == "sweep" and run.info.run_name == "run-a"
    assert run.data.params == params
    assert run.data.metrics == {"auroc": 0.75, "epoch/val_loss": 0.5}
    steps = client.get_metric_history(run_id, "epoch/val_loss")
    assert [(m.step, m.value) for m in steps] == [(0, 0.7), (1, 0.5)]
    assert run.info.status == "FINISHED"


def test_many_params_go_in_batches(store):
    client, _ = store
    params = {f"p{i:03d}": i for i in range(250)}  # MLflow takes 100 per batch
    run_id = tracking.log_run("sweep", "wide", params, {})
    assert client.get_run(run_id).data.params == {k: str(v) for k, v in params.items()}


def test_nothing_is_logged_without_a_target(monkeypatch):
    monkeypatch.delenv(tracking.TARGET_ENV, raising=False)
    assert tracking.current_target() is None
    assert tracking.log_run("sweep", "x", {"a": 1}, {"b": 1.0}) is None
    assert tracking.start_study_run("s", {}) is None


def test_trials_nest_under_the_study_run(store):
    client, target = store
    study_run = tracking.start_study_run("search-s", {"n_trials": 3})
    study = optuna.create_study(direction="maximize", study_name="s")

    def objective(trial):
        x = trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
        trial.set_user_attr("val_auroc", 0.5)
        if trial.number == 1:
            raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=3, callbacks=[tracking.TrialTracker(study_run)])
    tracking.end_study_run(study_run, {"best_val_f1": study.best_value})
    runs = client.search_runs(
        [target.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{study_run}'"
    )
    by_trial = {int(r.data.params["trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1, 2]
    for trial in study.trials:
        run = by_trial[trial.number]
        assert float(run.data.params["learning_rate"]) == trial.params["learning_rate"]
        assert run.data.params["state"] == trial.state.name
        assert run.data.metrics["val_auroc"] == 0.5 and run.data.metrics["duration_s"] >= 0
    assert by_trial[1].info.status == "KILLED" and "val_f1_returned" not in by_trial[1].data.metrics
    assert by_trial[0].data.metrics["val_f1_returned"] == study.trials[0].value
    study_info = client.get_run(study_run)
    assert study_info.data.tags[tracking.PARENT_TAG] == target.parent_run_id
    assert study_info.data.metrics["best_val_f1"] == study.best_value
    assert study_info.info.status == "FINISHED"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failing_store_warns_once_and_is_not_tried_again(monkeypatch, caplog):
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv(tracking.TARGET_ENV, tracking.Target(uri, "1", "p").to_env())
    monkeypatch.setattr(tracking, "_failed", set())
    with caplog.at_level(logging.WARNING, logger="idh_pseudocolor.tracking"):
        assert tracking.log_run("sweep", "a", {"x": 1}, {}) is None
        assert uri in tracking._failed
        tried = []
        monkeypatch.setattr(tracking, "_client", lambda uri: tried.append(uri))
        assert tracking.log_run("sweep", "b", {"x": 1}, {}) is None
        assert tried == []  # skipped, not retried: no client asked for
    warnings = [r for r in caplog.records if "MLflow tracking at" in r.getMessage()]
    assert len(warnings) == 1 and uri in warnings[0].getMessage()
    with pytest.raises(OSError):  # connection refused: nothing listens there
        check_reachable(uri, timeout=1)


def test_a_relative_sqlite_store_is_the_projects(tmp_path):
    made = project_store("sqlite:///data/10_tracking/mlflow.db", tmp_path)
    assert made == f"sqlite:///{(tmp_path / 'data/10_tracking/mlflow.db').resolve()}"
    absolute = f"sqlite:///{tmp_path}/x.db"  # sqlite:////abs/x.db
    assert project_store(absolute, Path("/elsewhere")) == absolute
    assert project_store("http://host:5000", tmp_path) == "http://host:5000"


def test_a_session_reads_mlflow_yml_without_opening_the_store(kedro_project, monkeypatch):
    """kedro-mlflow's commands (``kedro mlflow ui``) read ``context.mlflow``: the project's own
    store, resolved; only a run opens (and creates) it."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    monkeypatch.chdir(kedro_project.parent)  # not the project: the store is still the project's
    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project) as session:
        context = session.load_context()
    db = (kedro_project / "data/10_tracking/mlflow.db").resolve()
    assert context.mlflow.server.mlflow_tracking_uri == f"sqlite:///{db}"
    assert context.mlflow.tracking.experiment.name == "idh_pseudocolor"
    assert not (kedro_project / "data/10_tracking").exists()
