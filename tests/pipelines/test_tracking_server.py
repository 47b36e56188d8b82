"""Tracking to a real MLflow tracking server (``mlflow server`` on 127.0.0.1, started here): the
runs through HTTP, the parent run's page in MLflow's UI in headless Chromium, and the same run
with the server down (one warning, the same results)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import yaml
from kedro.framework.session import KedroSession
from mlflow.tracking import MlflowClient

from idh_pseudocolor.tracking import KIND_TAG, PARENT_TAG
from tests.browser import visit
from tests.pipelines.test_hyperparameter_search import prepare


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_on_a_free_port(root: Path, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """:func:`start_server` on a port free a moment ago; another process (the other test worker's
    Dask or Jupyter) may take it before the server binds it, so a taken port means another
    try."""
    for attempt in range(attempts):
        port = _free_port()
        try:
            return start_server(root, port), port
        except RuntimeError as error:
            if "address already in use" not in str(error).lower() or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_server(root: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` with its own SQLite store and artifact folder; waits for /health."""
    log = (root / "server.log").open("w")
    # no job runner (its queue consumers are a dozen processes this test does not need); its own
    # session, so that the workers go with it
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
        + ["--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError((root / "server.log").read_text()[-3000:])
        try:
            # MLflow's own answer (Dask's servers answer /health too) from the server started
            # here (not one that took the port first while this one is failing to bind it)
            version = requests.get(f"http://127.0.0.1:{port}/version", timeout=1)
            if version.ok and version.text.strip() == mlflow.__version__ and server.poll() is None:
                return server
        except requests.RequestException:  # not listening yet, or another process's port
            time.sleep(0.3)
    stop_server(server)
    raise TimeoutError((root / "server.log").read_text()[-3000:])


def stop_server(server: subprocess.Popen) -> None:
    """The server and every process it started (uvicorn's workers)."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)


def point_at(project: Path, uri: str) -> None:
    """A team's conf/local/mlflow.yml: the server, artifacts where the server keeps them."""
    (project / "conf/local/mlflow.yml").write_text(
        yaml.safe_dump(
            {
                "server": {"mlflow_tracking_uri": uri},
                "tracking": {
                    "experiment": {"create_experiment_kwargs": {"artifact_location": None}}
                },
            }
        )
    )


def search_outputs(project: Path) -> tuple[pd.DataFrame, dict]:
    trials = pd.read_csv(project / "data/07_model_output/search_trials.csv")
    best = yaml.safe_load((project / "data/06_models/best_params.yml").read_text())
    keep = [c for c in trials.columns if c not in ("datetime_start", "duration_s", "worker")]
    return trials[keep], best["hyperparameters"]


def test_a_run_through_a_tracking_server_its_ui_and_the_server_down(
    kedro_project, tiny_cohort, tmp_path, caplog
):
    server, port = start_server_on_a_free_port(tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        point_at(kedro_project, url)
        prepare(kedro_project, tiny_cohort)  # data_engineering, tracked too
        with KedroSession.create(project_path=kedro_project) as session:
            session.run(pipeline_names=["hyperparameter_search"])
        assert not (kedro_project / "data/10_tracking/mlflow.db").exists()  # all on the server

        # through HTTP: the kedro run, its study run, the trials
        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("idh_pseudocolor").experiment_id
        runs = client.search_runs([experiment], max_results=100)
        (parent,) = [r for r in runs if r.info.run_name == "hyperparameter_search"]
        assert parent.info.status == "FINISHED" and PARENT_TAG not in parent.data.tags
        (study_run,) = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
        assert study_run.data.tags[KIND_TAG] == "search"
        trials = [r for r in runs if r.data.tags.get(PARENT_TAG) == study_run.info.run_id]
        tracked, best = search_outputs(kedro_project)
        assert sorted(int(r.data.params["trial"]) for r in trials) == tracked["number"].tolist()
        for run in trials:
            row = tracked.set_index("number").loc[int(run.data.params["trial"])]
            assert run.data.metrics["val_f1_returned"] == pytest.approx(row["value"])
            assert float(run.data.params["learning_rate"]) == pytest.approx(row["learning_rate"])

        # the reporting outputs, uploaded through the server's artifact proxy
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "reporting")}
        assert "reporting/search_history.json" in artifacts, artifacts

        # MLflow's UI: the parent's page lists its nested study run, whose page lists the trials
        # (links to each run's page, found in the DOM)
        links = "Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
        pages = {}
        for run, nested in ((parent, [study_run]), (study_run, trials)):
            shot = tmp_path / f"{run.info.run_name}.png"
            last = nested[-1].info.run_id
            pages[run.info.run_name] = visit(
                f"{url}/#/experiments/{experiment}/runs/{run.info.run_id}",
                shot,
                evaluate={"links": links, "text": "document.body.innerText"},
                wait_for=f"a[href*='{last}']",
                network_idle=False,
            )
            page = pages[run.info.run_name]
            assert not [e for e in page.errors if e.startswith("pageerror")], page.errors
            assert "Child runs" in page.checks["text"] and shot.stat().st_size > 20_000
            for child in nested:
                assert any(child.info.run_id in (h or "") for h in page.checks["links"])
                assert child.info.run_name in page.checks["text"]
    finally:
        stop_server(server)

    # the server down: one warning per kedro run, and the same search
    for stale in ("data/06_models/hyperparameter_search.db", "data/07_model_output"):
        path = kedro_project / stale
        path.unlink() if path.is_file() else shutil.rmtree(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with KedroSession.create(project_path=kedro_project) as session:
            session.run(pipeline_names=["hyperparameter_search"])
    warnings = [
        r.getMessage() for r in caplog.records if "MLflow tracking is off" in r.getMessage()
    ]
    assert len(warnings) == 1 and url in warnings[0], warnings
    untracked, untracked_best = search_outputs(kedro_project)
    pd.testing.assert_frame_equal(untracked, tracked)
    assert untracked_best == best
