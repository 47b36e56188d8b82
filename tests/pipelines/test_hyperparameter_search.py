"""The search through real Kedro sessions and a real SQLite study, including a SIGKILL
mid-search."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.datasets import OptunaStorageDataset
from idh_pseudocolor.search import SearchSettings, open_study
from tests.conftest import REPO, project_parameters, table_1, tracked, write_weights
from tests.tracking_store import children, parent_runs, project_client

FAST_SEARCH = {
    "hyperparameter_search": {
        "n_trials": 3,
        "progress": False,
        "fixed": {"image_size": 32, "early_stopping_patience": 2},
        "search_space": {"max_epochs_superconvergence": [1, 3], "max_epochs_constant": [2, 3]},
    },
    "data_engineering": {"progress": False},
}


def prepare(
    project: Path, cohort: Path, n_trials: int = 3, grace: int = 2, env: str | None = None
) -> None:
    """Data for the search, and conf/local deltas: a fast search and a short heartbeat."""
    params = {
        **FAST_SEARCH,
        "hyperparameter_search": {**FAST_SEARCH["hyperparameter_search"], "n_trials": n_trials},
    }
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    (project / "conf/local/catalog.yml").write_text(
        yaml.safe_dump({"search_study": {"heartbeat_interval": 1, "grace_period": grace}})
    )
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params={"cohort_path": str(cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])


def study_at(project: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="idh_search",
        storage=f"sqlite:///{project / 'data/06_models/hyperparameter_search.db'}",
    )


def test_search_through_a_kedro_session(kedro_project, tiny_cohort):
    tracked(kedro_project)
    prepare(kedro_project, tiny_cohort)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["hyperparameter_search"])
    study = study_at(kedro_project)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    best = yaml.safe_load((kedro_project / "data/06_models/best_params.yml").read_text())
    hp = best["hyperparameters"]
    # the winner as the storage holds it, mapped here to training vocabulary by hand
    p = study.best_trial.params
    schedule = (
        {
            "peak_fraction": p["peak_fraction"],
            "lr_interval": p["lr_interval"],
            "max_epochs": p["max_epochs_superconvergence"],
        }
        if p["superconvergence"]
        else {
            "peak_fraction": 0.437,
            "lr_interval": "epoch",
            "max_epochs": p["max_epochs_constant"],
        }
    )
    assert hp == {
        "learning_rate": p["learning_rate"],
        "pretrained": p["pretrained"],
        "superconvergence": p["superconvergence"],
        "mask_non_tumor": p["mask_non_tumor"],
        **schedule,
    }
    assert [
        type(hp[k])
        for k in (
            "learning_rate",
            "pretrained",
            "superconvergence",
            "peak_fraction",
            "lr_interval",
            "max_epochs",
            "mask_non_tumor",
        )
    ] == [float, bool, bool, float, str, int, bool]
    assert 1 <= hp["max_epochs"] <= 3  # the demo's delta of Table 1's epoch ranges
    assert best["provenance"]["trial"] == study.best_trial.number
    assert best["provenance"]["validation_f1"] == pytest.approx(study.best_value)
    for name in ("search_history.json", "search_importance.json"):
        assert (kedro_project / "data/08_reporting" / name).stat().st_size > 1000
    trials = (kedro_project / "data/07_model_output/search_trials.csv").read_text()
    assert "val_auroc" in trials and "pretrained_loaded" in trials
    check_tracked_search(kedro_project, study)


def check_tracked_search(project: Path, study: optuna.Study) -> None:
    """MLflow (the project's embedded store): one kedro run with the search's parameters, a
    study run under it and each trial under that, with its Table 1 values, F1 and state."""
    client = project_client(project)
    # one per kedro run: data_engineering's, then the search's
    names = sorted(r.info.run_name for r in parent_runs(client))
    assert names == ["data_engineering", "hyperparameter_search"]
    (parent,) = [r for r in parent_runs(client) if r.info.run_name == "hyperparameter_search"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["hyperparameter_search.n_trials"] == "3"
    (study_run,) = children(client, parent.info.run_id, "search")
    assert study_run.data.metrics["best_val_f1"] == pytest.approx(study.best_value)
    assert study_run.data.metrics["trials_complete"] == 3
    runs = {int(r.data.params["trial"]): r for r in children(client, study_run.info.run_id)}
    assert sorted(runs) == [t.number for t in study.trials]
    for trial in study.trials:
        run = runs[trial.number]
        assert run.data.tags["kind"] == "trial" and run.data.params["state"] == trial.state.name
        assert {k: run.data.params[k] for k in trial.params} == {
            k: str(v) for k, v in trial.params.items()
        }
        assert run.data.metrics["val_f1_returned"] == pytest.approx(trial.value)
        assert run.data.metrics["val_auroc"] == pytest.approx(trial.user_attrs["val_auroc"])


def test_best_params_of_a_constant_learning_rate_winner(kedro_project, tiny_cohort):
    """The search's one trial is a constant-learning-rate point, enqueued with fixed values and
    really trained: best_params.yml takes its epochs from ``max_epochs_constant`` and fills the
    OneCycle fields it has not (peak, interval) with the paper's optimum, all in training
    vocabulary."""
    from dataclasses import fields

    from idh_pseudocolor.training import RunConfig

    prepare(kedro_project, tiny_cohort, n_trials=1)
    db = kedro_project / "data/06_models/hyperparameter_search.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    # max_epochs_constant within FAST_SEARCH's [2, 3]
    chosen = {
        "learning_rate": 1e-4,
        "pretrained": False,
        "superconvergence": False,
        "max_epochs_constant": 2,
        "mask_non_tumor": True,
    }
    optuna.create_study(
        study_name="idh_search", storage=f"sqlite:///{db}", direction="maximize"
    ).enqueue_trial(chosen)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["hyperparameter_search"])

    (trial,) = study_at(kedro_project).trials
    assert trial.state.name == "COMPLETE" and trial.params == chosen
    # trained for max_epochs_constant (patience 2 cannot stop it sooner)
    assert trial.user_attrs["epochs_run"] == 2
    best = yaml.safe_load((kedro_project / "data/06_models/best_params.yml").read_text())
    assert best["hyperparameters"] == {
        "learning_rate": 1e-4,
        "pretrained": False,
        "superconvergence": False,
        "peak_fraction": 0.437,
        "lr_interval": "epoch",
        "max_epochs": 2,
        "mask_non_tumor": True,
    }
    # training's own names
    assert set(best["hyperparameters"]) <= {f.name for f in fields(RunConfig)}
    provenance = best["provenance"]
    assert (provenance["trial"], provenance["completed_trials"], provenance["n_trials"]) == (
        0,
        1,
        1,
    )
    assert provenance["validation_f1"] == pytest.approx(trial.value)


def test_search_runs_and_resumes_on_a_journal_file(kedro_project, tiny_cohort, tmp_path):
    """``storage: journal`` in conf/local (docs/search.md): the study lives in that file, and a
    second run asking for more trials continues the same study (numbers go on, earlier trials kept
    as they were)."""
    prepare(kedro_project, tiny_cohort, n_trials=2)
    journal = tmp_path / "shared" / "idh_search.log"
    (kedro_project / "conf/local/catalog.yml").write_text(
        yaml.safe_dump({"search_study": {"storage": "journal", "filepath": str(journal)}})
    )

    def search(n_trials: int) -> list[optuna.trial.FrozenTrial]:
        local = yaml.safe_load((kedro_project / "conf/local/parameters.yml").read_text())
        local["hyperparameter_search"]["n_trials"] = n_trials
        (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
        with KedroSession.create(project_path=kedro_project) as session:
            session.run(pipeline_names=["hyperparameter_search"])
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        )
        return optuna.load_study(study_name="idh_search", storage=storage).trials

    first = search(2)
    assert [(t.number, t.state.name) for t in first] == [(0, "COMPLETE"), (1, "COMPLETE")]
    second = search(3)
    assert [(t.number, t.state.name) for t in second] == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "COMPLETE"),
    ]
    kept = [(t.params, t.value, t.datetime_start, t.datetime_complete) for t in second[:2]]
    # not redone
    assert kept == [(t.params, t.value, t.datetime_start, t.datetime_complete) for t in first]
    assert not (
        kedro_project / "data/06_models/hyperparameter_search.db"
    ).exists()  # nothing went to SQLite
    provenance = yaml.safe_load((kedro_project / "data/06_models/best_params.yml").read_text())[
        "provenance"
    ]
    assert (provenance["completed_trials"], provenance["n_trials"]) == (3, 3)
    assert provenance["validation_f1"] == pytest.approx(max(t.value for t in second))
    assert second[provenance["trial"]].value == pytest.approx(provenance["validation_f1"])


def _complete_count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_search_survives_sigkill_and_finishes_exactly(kedro_project, tiny_cohort):
    prepare(kedro_project, tiny_cohort, n_trials=4, grace=2)
    db = kedro_project / "data/06_models/hyperparameter_search.db"
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "hyperparameter_search"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=kedro_project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    try:
        while _complete_count(db) < 2:
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.time() < deadline, "no trial completed in time"
            time.sleep(0.2)
    finally:  # killed at a random point of its work, or, the test failing, not left running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    before = {
        t.number: (t.value, t.params)
        for t in study_at(kedro_project).trials
        if t.state.name == "COMPLETE"
    }
    assert 2 <= len(before) < 4
    time.sleep(3)  # past the heartbeat grace period: a trial left RUNNING is now stale
    rerun = subprocess.run(
        cmd, cwd=kedro_project, env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    trials = study_at(kedro_project).trials
    after = {t.number: (t.value, t.params) for t in trials if t.state.name == "COMPLETE"}
    assert len(after) == 4  # exactly the target
    assert all(after[n] == before[n] for n in before)  # nothing completed was lost or redone
    # the killed trial, if any, is FAILED
    assert {t.state.name for t in trials} <= {
        "COMPLETE",
        "FAIL",
    }
    assert not any(t.state.name == "RUNNING" for t in trials)


def test_resuming_with_other_settings_is_refused(tmp_path):
    location = OptunaStorageDataset("s", filepath=str(tmp_path / "s.db")).load()
    demo = SearchSettings.from_params(project_parameters(REPO, None)["hyperparameter_search"])
    open_study(location, replace(demo, model_name="resnet18"))
    # same settings: resumes
    open_study(location, replace(demo, model_name="resnet18", worker=1, progress=False))
    # hardware
    open_study(
        location,
        replace(demo, model_name="resnet18", fixed=replace(demo.fixed, precision="bf16-mixed")),
    )
    with pytest.raises(ValueError, match="created with other settings"):
        open_study(location, replace(demo, model_name="resnet34"))
    with pytest.raises(ValueError, match="created with other settings"):
        open_study(
            location, replace(demo, model_name="resnet18", fixed=replace(demo.fixed, batch_size=8))
        )


def test_a4000_environment_is_table_1_and_holds_only_deltas():
    def params(env):
        return project_parameters(REPO, env)["hyperparameter_search"]

    paper, demo = params("a4000"), params("local")
    assert paper["search_space"] == table_1()
    assert (
        paper["model_name"] == "resnext101_32x16d.fb_swsl_ig1b_ft_in1k" and paper["config_id"] == 21
    )
    assert (
        paper["n_trials"] == 297
        and paper["fixed"]["batch_size"] == 16
        and paper["fixed"]["image_size"] == 224
    )
    assert paper["sampler"] == demo["sampler"]  # inherited from base, not repeated
    differing = {k for k in table_1() if demo["search_space"][k] != table_1()[k]}
    # the documented DEMO keys
    assert differing == {
        "pretrained",
        "max_epochs_superconvergence",
        "max_epochs_constant",
    }
    a4000_text = (REPO / "conf/a4000/parameters_hyperparameter_search.yml").read_text()
    assert "sampler" not in a4000_text and "learning_rate" not in a4000_text
    # the A4000 box and the L4 cluster differ in hardware settings only, so they can share one study
    from idh_pseudocolor.search import SearchSettings

    l4 = params("l4")
    assert l4["fixed"]["precision"] != paper["fixed"]["precision"]
    assert (
        SearchSettings.from_params(l4).fingerprint()
        == SearchSettings.from_params(paper).fingerprint()
    )


def test_two_workers_share_one_postgresql_study_exactly(kedro_project, tiny_cohort, postgres_url):
    """The A4000 box and an L4 machine (`kedro run --env a4000` / `--env l4`, rehearsed on CPU) add
    trials to one study in a real PostgreSQL server, named in conf/local as docs/scaling.md says:
    exactly n trials, no repeats."""
    import uuid

    n_trials = 8
    prepare(kedro_project, tiny_cohort, n_trials=n_trials, env="a4000+rehearsal")
    # Table 1 has pretrained trials:
    local = yaml.safe_load((kedro_project / "conf/local/parameters.yml").read_text())
    # offline weights
    local["hyperparameter_search"]["fixed"]["weights_file"] = write_weights(
        kedro_project, ["test_resnet"]
    )
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
    # a kept server (IDH_TEST_POSTGRES_URL) never holds it already
    study_name = f"two_workers_{uuid.uuid4().hex[:8]}"
    (kedro_project / "conf/local/credentials.yml").write_text(
        yaml.safe_dump({"optuna_db": {"con": postgres_url}})
    )
    (kedro_project / "conf/local/catalog.yml").write_text(
        yaml.safe_dump(
            {
                "search_study": {
                    "credentials": "optuna_db",
                    "study_name": study_name,
                    "heartbeat_interval": 1,
                    "grace_period": 30,
                }
            }
        )
    )
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kedro",
                "run",
                "--env",
                box,
                "--pipelines",
                "hyperparameter_search",
                "--params",
                f"hyperparameter_search.worker={k}",
            ],
            cwd=kedro_project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, box in enumerate(("a4000+rehearsal", "l4+rehearsal"))
    ]
    try:
        for proc in workers:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:  # a failing test leaves no search behind to slow the rest of the suite
        for proc in workers:
            proc.kill()
            proc.wait()

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == n_trials  # exactly the target, although two workers raced for it
    # each trained by one of the two (a worker started late may find every trial claimed)
    assert all(t.user_attrs.get("worker") in (0, 1) for t in complete)
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == n_trials  # no point evaluated twice (per-worker sampler seeds)
    others = [t for t in study.trials if t.state.name != "COMPLETE"]
    # only given-up surplus claims
    assert all(t.state.name == "FAIL" and t.user_attrs.get("surplus") for t in others)
    assert not (
        kedro_project / "data/06_models"
    ).exists()  # nothing went to the demo's SQLite study
    best = yaml.safe_load((kedro_project / "data/rehearsal/06_models/best_params.yml").read_text())
    assert (
        best["provenance"]["trial"] == study.best_trial.number
        and best["provenance"]["completed_trials"] == n_trials
    )
