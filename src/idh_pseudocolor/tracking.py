"""Experiment tracking in MLflow: every search trial, training run and the study's outputs.

A ``kedro run`` has one MLflow run (the *parent*, started by the project's kedro-mlflow hook,
:class:`idh_pseudocolor.hooks.StudyTracking`). Training loops call :func:`log_run` once per
finished run and the search logs each trial under a *study run* (:func:`start_study_run`,
:class:`TrialTracker`); all are nested under the parent with MLflow's ``mlflow.parentRunId`` tag.

Worker processes (ParallelRunner, Dask) know the parent through one environment variable,
:data:`TARGET_ENV` (tracking URI, experiment and parent run), set by the hook in the driver and
carried to Dask workers by :class:`idh_pseudocolor.runner.DaskRunner`. Every call here goes
through an explicit :class:`~mlflow.tracking.MlflowClient` with explicit run ids, never MLflow's
thread-local "active run", so processes and threads cannot log into each other's runs.

Tracking never changes results and never stops a run: without a target nothing is logged; a
failing store gives one warning per process and the rest of that process's tracking is skipped.
No Kedro here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: the environment variable through which worker processes find the run they log under
TARGET_ENV = "IDH_PSEUDOCOLOR_MLFLOW"
#: tags users filter on in the MLflow UI (``tags.kind = 'sweep'``)
KIND_TAG = "kind"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
#: the registered model of the final evaluation's runs (a pyfunc: four sequences -> P(mutant))
REGISTERED_MODEL = "idh-pseudocolor-winner"


@dataclass(frozen=True)
class Target:
    """Where nested runs go: a tracking store, its experiment and the kedro run's parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, value: str) -> Target:
        return cls(**json.loads(value))


def current_target() -> Target | None:
    """This process's tracking target, or None where nothing is tracked (a plain function call,
    the CLI, a benchmark, a run whose tracking is off or whose store was unreachable)."""
    value = os.environ.get(TARGET_ENV)
    return Target.from_env(value) if value else None


@contextmanager
def targeting(target: Target | None) -> Iterator[None]:
    """Make ``target`` this process's target for a block (a Dask worker running one node)."""
    previous = os.environ.get(TARGET_ENV)
    if target is None:
        os.environ.pop(TARGET_ENV, None)
    else:
        os.environ[TARGET_ENV] = target.to_env()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TARGET_ENV, None)
        else:
            os.environ[TARGET_ENV] = previous


_failed: set[str] = set()  # tracking URIs that failed in this process: warned once, then skipped
_clients: dict[str, Any] = {}


def _client(uri: str):
    from mlflow.tracking import MlflowClient  # mlflow only where something is tracked

    if uri not in _clients:
        _clients[uri] = MlflowClient(tracking_uri=uri)
    return _clients[uri]


def failed(target: Target, exc: BaseException) -> None:
    """One warning per process and store: what failed and that the run goes on untracked."""
    if target.tracking_uri not in _failed:
        _failed.add(target.tracking_uri)
        logger.warning(
            "MLflow tracking at %s failed (%s: %s): the run goes on and its results are "
            "unaffected, but this process logs nothing more to MLflow",
            target.tracking_uri,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )


def _usable(target: Target | None) -> bool:
    return target is not None and target.tracking_uri not in _failed


def split_record(
    record: Mapping[str, Any], metric_keys: set[str] | frozenset[str]
) -> tuple[dict[str, str], dict[str, float]]:
    """A row's values as MLflow params (text, every key not in ``metric_keys``) and metrics
    (finite numbers of ``metric_keys``; MLflow has no missing metric, so NaN is left out)."""
    params, metrics = {}, {}
    for key, value in record.items():
        if key in metric_keys:
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metrics[key] = float(value)
        elif value is not None:
            params[key] = str(value)
    return params, metrics


def log_run(
    kind: str,
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    *,
    history: list[Mapping[str, float]] | None = None,
    tags: Mapping[str, str] | None = None,
    started: float | None = None,
    status: str = "FINISHED",
    parent_run_id: str | None = None,
) -> str | None:
    """One finished run (a sweep run, a trial, a fold's run...) as a nested MLflow run under the
    kedro run's parent (or ``parent_run_id``): its params, its metrics, the per-epoch ``history``
    as steps of ``epoch/<key>`` metrics. Returns the MLflow run id (None: nothing logged)."""
    target = current_target()
    if not _usable(target):
        return None
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    start = int((started or time.time()) * 1000)
    try:
        client = _client(target.tracking_uri)
        run = client.create_run(
            target.experiment_id,
            start_time=start,
            tags={
                PARENT_TAG: parent_run_id or target.parent_run_id,
                KIND_TAG: kind,
                **(tags or {}),
            },
            run_name=name,
        )
        run_id = run.info.run_id
        entries = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for step, epoch in enumerate(history or []):
            entries += [
                Metric(f"epoch/{k}", float(v), now, step)  # not the best epoch's ``k``
                for k, v in epoch.items()
                if isinstance(v, int | float) and math.isfinite(v) and k != "epoch"
            ]
        values = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(values), 100):  # MLflow's limits per batch
            client.log_batch(run_id, params=values[i : i + 100])
        for i in range(0, len(entries), 1000):
            client.log_batch(run_id, metrics=entries[i : i + 1000])
        client.set_terminated(run_id, status=status, end_time=now)
        return run_id
    except Exception as exc:  # noqa: BLE001 - tracking must never stop a run
        failed(target, exc)
        return None


def log_table(kind: str, table: Any, name: Callable[[dict[str, Any]], str]) -> None:
    """One nested run per row of a metrics table (a pandas DataFrame): its numbers as metrics,
    the rest as params, named by ``name(row)``."""
    for row in table.to_dict("records"):
        numbers = {
            k for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        params, metrics = split_record(row, numbers)
        log_run(kind, name(row), params, metrics)


def start_study_run(name: str, params: Mapping[str, Any]) -> str | None:
    """The search's run: the trials nest under it (Optuna's own MLflow callback has none)."""
    target = current_target()
    if not _usable(target):
        return None
    from mlflow.entities import Param

    try:
        client = _client(target.tracking_uri)
        run = client.create_run(
            target.experiment_id,
            tags={PARENT_TAG: target.parent_run_id, KIND_TAG: "search"},
            run_name=name,
        )
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id
    except Exception as exc:  # noqa: BLE001
        failed(target, exc)
        return None


def end_study_run(run_id: str | None, metrics: Mapping[str, float], status: str = "FINISHED"):
    """Close the search's run with its summary metrics (best F1, trials by state)."""
    target = current_target()
    if run_id is None or not _usable(target):
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    try:
        client = _client(target.tracking_uri)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.set_terminated(run_id, status=status)
    except Exception as exc:  # noqa: BLE001
        failed(target, exc)


class TrialTracker:
    """An Optuna callback: each finished trial (complete, pruned or failed) a nested run under the
    study run, with its Table 1 parameters, the F1 it returned, its state and duration."""

    STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

    def __init__(self, study_run_id: str | None) -> None:
        self.study_run_id = study_run_id

    def __call__(self, study, trial) -> None:
        if self.study_run_id is None or trial.user_attrs.get("surplus"):
            return
        state = trial.state.name
        metrics = {
            k: v
            for k, v in trial.user_attrs.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if trial.value is not None:
            metrics["val_f1_returned"] = trial.value
        if trial.duration is not None:
            metrics["duration_s"] = trial.duration.total_seconds()
        params = {
            **trial.params,
            "trial": trial.number,
            "state": state,
            "study": study.study_name,
            **{k: v for k, v in trial.user_attrs.items() if isinstance(v, str | bool) or v is None},
        }
        log_run(
            "trial",
            f"trial-{trial.number}",
            params,
            metrics,
            tags={"state": state},
            started=trial.datetime_start.timestamp() if trial.datetime_start else None,
            status=self.STATUS.get(state, "FINISHED"),
            parent_run_id=self.study_run_id,
        )


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter blocks as ``permutation_study.fixed.batch_size`` keys (what users filter
    on in the MLflow UI); lists stay one value."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """A run's parameter blocks, flattened, in batches (one call per 100, not one per key)."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    values = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten(params).items()]
    for i in range(0, len(values), 100):
        client.log_batch(run_id, params=values[i : i + 100])


def log_artifacts(client, run_id: str, files: Mapping[str, os.PathLike | str], folder: str):
    """Files (the report, Table 2, the figures) as artifacts of the run under ``folder``."""
    for path in files.values():
        client.log_artifact(run_id, str(path), folder)


def report_link() -> dict[str, str] | None:
    """The kedro run's MLflow run for the report: its id, and how to open it (a link where the
    store is a server, the ``mlflow ui`` command where it is a local file)."""
    target = current_target()
    if target is None:
        return None
    page = f"#/experiments/{target.experiment_id}/runs/{target.parent_run_id}"
    server = target.tracking_uri.startswith(("http://", "https://"))
    return {
        "run_id": target.parent_run_id,
        "experiment_id": target.experiment_id,
        "tracking_uri": target.tracking_uri,
        "url": f"{target.tracking_uri.rstrip('/')}/{page}" if server else "",
        "ui_command": f"mlflow ui --backend-store-uri {target.tracking_uri}",
        "page": f"http://127.0.0.1:5000/{page}",
    }
