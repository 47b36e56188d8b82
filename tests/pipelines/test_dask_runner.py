"""DaskRunner: configurations train concurrently in separate worker processes, with the same
results as a sequential run (real Kedro sessions, a real local Dask cluster, real tiny nets)."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import node, pipeline

from idh_pseudocolor.configurations import configuration_label
from idh_pseudocolor.runner import DaskRunner
from idh_pseudocolor.runs import PROVENANCE_COLUMNS
from tests.conftest import tracked, write_best_params
from tests.pipelines.test_permutation_study import BEST, prepare
from tests.tracking_store import children, parent_runs, project_client

CONFIGURATIONS = ["configuration_15", "configuration_21"]


def outputs(project) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = project / "data/07_model_output/permutation_study"
    runs = pd.concat(
        [pd.read_csv(root / ns / "validation_runs.csv") for ns in CONFIGURATIONS], ignore_index=True
    )
    predictions = pd.concat(
        [pd.read_csv(root / ns / "validation_predictions.csv") for ns in CONFIGURATIONS],
        ignore_index=True,
    )
    return runs, predictions


@pytest.fixture()
def run_log(tmp_path):
    """The driver's logging as conf/logging.yml makes it, plus a file handler writing each
    record's process id: what this process's handlers receive. Restored afterwards."""
    from kedro.framework.project import LOGGING, configure_logging

    before = copy.deepcopy(dict(LOGGING))
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf/logging.yml").read_text())
    path = tmp_path / "run.log"
    config["formatters"]["with_pid"] = {"format": "%(process)d %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["file"] = {
        "class": "logging.FileHandler",
        "filename": str(path),
        "formatter": "with_pid",
    }
    config["root"]["handlers"] = [*config["root"]["handlers"], "file"]
    configure_logging(config)
    try:
        yield path
    finally:
        configure_logging(before)


def test_runs_go_to_separate_workers_log_to_the_driver_and_equal_a_sequential_run(
    kedro_project, tiny_cohort, run_log
):
    tracked(kedro_project)
    prepare(kedro_project, tiny_cohort)
    params = yaml.safe_load((kedro_project / "conf/local/parameters.yml").read_text())
    params["permutation_study"]["overrides"] = {"max_epochs": 3}
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))

    # two runs at once on one "card" (runs_per_gpu; CPU processes stand in for the card's): the
    # runs equal those of the sequential runner
    runner = DaskRunner(devices=0, runs_per_gpu=2)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["permutation_study"], namespaces=CONFIGURATIONS, runner=runner)
    dask_runs, dask_predictions = outputs(kedro_project)
    assert len(runner.worker_pids) == 2 and os.getpid() not in runner.worker_pids
    workers = {int(w.rsplit(":", 1)[1]) for w in dask_runs["worker"]}
    # one configuration per worker process (placement, not timing)
    assert workers == set(runner.worker_pids)
    # each run's INFO line (permutation_study.nodes.log_run), logged on a worker at
    # conf/logging.yml's levels, reached this process's handlers: once each, from the worker that
    # trained the run
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [line for line in run_log.read_text().splitlines() if "best val AUROC" in line]
    assert len(lines) == len(dask_runs), run_log.read_text()[-3000:]
    for row in dask_runs.itertuples():
        arm = "pretrained" if row.pretrained else "scratch"
        said = (
            f"{configuration_label(row.config_id)}: {row.model_name} {arm} "
            f"seed {row.seed}: {row.epochs_run} epochs, best val AUROC"
        )
        (line,) = [x for x in lines if said in x]
        pid, level, _ = line.split(" ", 2)
        assert level == "INFO" and int(pid) == int(row.worker.rsplit(":", 1)[1])

    shutil.rmtree(kedro_project / "data/07_model_output/permutation_study")
    with KedroSession.create(
        project_path=kedro_project
    ) as session:  # this process's own thread count:
        # fixed.torch_threads rules
        session.run(pipeline_names=["permutation_study"], namespaces=CONFIGURATIONS)
    seq_runs, seq_predictions = outputs(kedro_project)
    assert set(seq_runs["worker"].str.rsplit(":", n=1).str[1].astype(int)) == {os.getpid()}
    results = [c for c in dask_runs.columns if c not in PROVENANCE_COLUMNS]
    pd.testing.assert_frame_equal(dask_runs[results], seq_runs[results])
    pd.testing.assert_frame_equal(dask_predictions, seq_predictions)

    # Kedro's ParallelRunner (what `make run` uses): other processes, the same numbers
    from kedro.runner import ParallelRunner

    shutil.rmtree(kedro_project / "data/07_model_output/permutation_study")
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(
            pipeline_names=["permutation_study"],
            namespaces=CONFIGURATIONS,
            runner=ParallelRunner(max_workers=2),
        )
    par_runs, par_predictions = outputs(kedro_project)
    assert os.getpid() not in set(par_runs["worker"].str.rsplit(":", n=1).str[1].astype(int))
    pd.testing.assert_frame_equal(par_runs[results], seq_runs[results])
    pd.testing.assert_frame_equal(par_predictions, seq_predictions)

    # MLflow: each kedro run one parent, each run nested under it, logged by the process that
    # trained it (Dask workers, this process, ParallelRunner's), with the values of its row
    client = project_client(kedro_project)
    parents = sorted(
        (r for r in parent_runs(client) if r.info.run_name == "permutation_study"),
        key=lambda r: r.info.start_time,
    )
    assert [p.info.status for p in parents] == ["FINISHED"] * 3
    for parent, table in zip(parents, (dask_runs, seq_runs, par_runs), strict=True):
        nested = children(client, parent.info.run_id, "sweep")
        assert sorted(r.data.params["worker"] for r in nested) == sorted(table["worker"])
        for row in table.itertuples():
            (run,) = [r for r in nested if r.data.params["config_id"] == str(row.config_id)]
            assert run.data.params["worker"] == row.worker
            assert run.data.metrics["auroc"] == pytest.approx(row.auroc)


def _meet(folder: str, me: str, other: str) -> int:
    """Leave a marker, then wait for the other node's: returns only when both run at once."""
    (Path(folder) / me).touch()
    deadline = time.monotonic() + 180
    while not (Path(folder) / other).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{me} ran without {other}: the nodes did not run at the same time")
        time.sleep(0.05)
    return os.getpid()


def _meeting_pair(folder: Path, task, tags=None):
    """Two nodes ``a`` and ``b`` that each run ``task`` (``_meet`` or a wrapper of it) waiting for
    the other, their results in a.json and b.json: a catalog and pipeline for the runner."""
    from functools import partial, update_wrapper

    from kedro_datasets.json import JSONDataset

    def meeting(me: str, other: str):
        return update_wrapper(partial(task, me=me, other=other), task)

    catalog = DataCatalog(
        {
            "folder": MemoryDataset(str(folder)),
            "a": JSONDataset(filepath=str(folder / "a.json")),
            "b": JSONDataset(filepath=str(folder / "b.json")),
        }
    )
    both = pipeline(
        [
            node(meeting("a", "b"), "folder", "a", name="a", tags=tags),
            node(meeting("b", "a"), "folder", "b", name="b", tags=tags),
        ]
    )
    return catalog, both


def test_independent_nodes_run_at_the_same_time_on_separate_workers(tmp_path, monkeypatch):
    """Deterministic concurrency: each node waits for the other's marker file (no wall-clock
    race)."""
    catalog, both = _meeting_pair(tmp_path, _meet)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU workers, on a GPU box too
    runner = DaskRunner(n_workers=2)
    runner.run(both, catalog)
    pids = {int((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")}
    assert pids == set(runner.worker_pids) and len(pids) == 2


def _card_and_pid(folder: str, me: str, other: str) -> list:
    """Meet the other node (both run at once), then say which card and process ran this one and
    how many GPU slots its worker has free while it runs (0: the node holds the worker's one)."""
    from distributed import get_worker

    pid = _meet(folder, me, other)
    free = get_worker().state.available_resources.get("GPU")
    return [os.environ.get("CUDA_VISIBLE_DEVICES"), pid, free]


def test_runs_per_gpu_trains_several_gpu_nodes_at_once_on_one_card(tmp_path, monkeypatch):
    """`runs_per_gpu=2` on one card: two ``gpu`` nodes run at the same time (each waits for the
    other's marker) in two processes that both see only card 0. CPU processes stand in for the
    card's: the runner is told the device instead of finding it."""
    catalog, both = _meeting_pair(tmp_path, _card_and_pid, tags=["gpu"])
    monkeypatch.setenv("IDH_RUNS_PER_GPU", "2")  # the setting's other spelling
    runner = DaskRunner(devices=0)
    runner.run(both, catalog)
    ran = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b")]
    assert [card for card, _, _ in ran] == ["0", "0"]
    assert [free for _, _, free in ran] == [0, 0]  # each held its worker's GPU slot
    pids = {pid for _, pid, _ in ran}
    assert pids == set(runner.worker_pids) and len(pids) == 2 and os.getpid() not in pids


def test_gpu_cluster_pins_runs_per_gpu_workers_to_each_card(monkeypatch):
    """Two cards x two runs: four single-threaded workers, two per card, each advertising one GPU
    slot and seeing only its card; the cards keep the names an inherited CUDA_VISIBLE_DEVICES
    gave them."""
    from dask.distributed import Client

    from idh_pseudocolor import runner
    from idh_pseudocolor.runner import gpu_cluster

    # what the runner finds: an inherited CUDA_VISIBLE_DEVICES names the cards (two visible)
    monkeypatch.setattr(runner, "_cuda_device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert runner._cuda_devices() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaa,MIG-bbbb,MIG-cccc")  # all kept
    assert runner._cuda_devices() == ["MIG-aaaa", "MIG-bbbb", "MIG-cccc"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hidden: a CPU cluster
    assert runner._cuda_devices() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert runner._cuda_devices() == ["0", "1"]

    with gpu_cluster(["2", "5"], runs_per_gpu=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(4)
        cards = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        info = client.scheduler_info()["workers"]
        scheduler = client.scheduler_info()["address"]
    assert sorted(cards.values()) == ["2", "2", "5", "5"]
    # this machine only (a Dask scheduler runs whatever pickled code reaches it)
    assert scheduler.startswith("tcp://127.0.0.1:") and all(
        address.startswith("tcp://127.0.0.1:") for address in info
    )
    assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in info.values())
    assert all(not w["memory_limit"] for w in info.values())  # no share of host RAM to outgrow


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runs_per_gpu": 0}, "runs_per_gpu must be a whole number >= 1"),
        ({"runs_per_gpu": 2.7}, "runs_per_gpu must be a whole number >= 1"),
        ({"runs_per_gpu": True}, "runs_per_gpu must be a whole number >= 1"),
        ({"devices": [0, 0]}, "lists a card twice"),
        ({"devices": "0;0"}, "lists a card twice"),
        (
            {"devices": "0,1", "runs_per_gpu": 2, "n_workers": 3},
            r"devices x runs_per_gpu \(2 x 2\)",
        ),
    ],
)
def test_runs_per_gpu_settings_that_cannot_work_are_refused(options, message, tmp_path):
    from kedro_datasets.json import JSONDataset

    catalog = DataCatalog(
        {"a": MemoryDataset(1), "b": JSONDataset(filepath=str(tmp_path / "b.json"))}
    )
    with pytest.raises(ValueError, match=message):
        DaskRunner(**options).run(pipeline([node(_double, "a", "b", name="first")]), catalog)
    assert not (tmp_path / "b.json").exists()


def _double(x):
    return 2 * x


def test_data_passed_in_memory_between_nodes_is_refused():
    catalog = DataCatalog({"a": MemoryDataset(1)})
    two_steps = pipeline(
        [node(_double, "a", "b", name="first"), node(_double, "b", "c", name="second")]
    )
    with pytest.raises(ValueError, match="in memory: b, c"):
        DaskRunner(n_workers=1).run(two_steps, catalog)


def _refuse(x):
    raise ValueError(f"subject PHANTOM-0007 has no tumour voxels (input {x})")


def test_a_node_failing_on_a_worker_reports_its_traceback(tmp_path):
    from kedro_datasets.json import JSONDataset

    catalog = DataCatalog(
        {"a": MemoryDataset(1), "b": JSONDataset(filepath=str(tmp_path / "b.json"))}
    )
    failing = pipeline([node(_refuse, "a", "b", name="refuse")])
    with pytest.raises(
        Exception, match=r"(?s)node refuse failed on .*:\d+.*PHANTOM-0007 has no tumour voxels"
    ):
        DaskRunner(n_workers=1).run(failing, catalog)


def test_kedro_cli_with_dask_runner_writes_under_a_shared_data_root(
    kedro_project, tiny_cohort, tmp_path
):
    """What a cluster user types: `kedro run --runner ...DaskRunner`, data under `data_root` from
    conf."""
    import subprocess
    import sys

    shared = tmp_path / "shared" / "data"
    (kedro_project / "conf/local/globals.yml").write_text(
        yaml.safe_dump({"data_root": str(shared)})
    )
    (kedro_project / "conf/local/parameters.yml").write_text(
        yaml.safe_dump({"data_engineering": {"progress": False}})
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kedro",
            "run",
            "--pipelines",
            "data_engineering",
            "--params",
            f"cohort_path={tiny_cohort}",
            "--runner",
            "idh_pseudocolor.runner.DaskRunner",
            "--runner-params",
            # one "card" (CPU processes stand in), two runs at once on it
            "devices=0,runs_per_gpu=2",
        ],
        cwd=kedro_project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "2 run(s) at once on each of 1 GPU(s) (CUDA_VISIBLE_DEVICES 0)" in said, said[-3000:]
    assert len(pd.read_csv(shared / "02_intermediate/subject_manifest.csv")) == 24
    assert (shared / "03_primary/slice_arrays.npz").is_file() and (
        shared / "08_reporting/qc_montage.png"
    ).is_file()
    assert not (
        kedro_project / "data/02_intermediate/subject_manifest.csv"
    ).exists()  # nothing went to the default


def test_an_existing_scheduler_is_used_and_left_running(tmp_path):
    """The cluster path: the runner connects to a scheduler it did not start and does not stop
    it."""
    from dask.distributed import Client, LocalCluster
    from kedro_datasets.json import JSONDataset

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        catalog = DataCatalog(
            {
                "a": MemoryDataset(3),
                "b": JSONDataset(filepath=str(tmp_path / "b.json")),
                "c": JSONDataset(filepath=str(tmp_path / "c.json")),
            }
        )
        two_steps = pipeline(
            [node(_double, "a", "b", name="first"), node(_double, "b", "c", name="second")]
        )
        runner = DaskRunner(scheduler=cluster.scheduler_address)
        runner.run(two_steps, catalog)
        assert (tmp_path / "c.json").read_text() == "12"
        with Client(cluster.scheduler_address) as client:  # still serving
            assert client.submit(_double, 5).result() == 10
            # and no longer sends its workers' log records to the run that has ended
            (plugins,) = client.run(lambda dask_worker: sorted(dask_worker.plugins)).values()
            assert not [p for p in plugins if "logging" in p], plugins
        # the cluster's one worker
        assert len(runner.worker_pids) == 1 and runner.worker_pids[0] != os.getpid()


def _pid(_):
    return os.getpid()


def test_gpu_tagged_nodes_go_to_the_worker_with_a_gpu_found_through_the_environment(
    tmp_path, monkeypatch
):
    """A cluster of one worker advertising GPU=1 and one without (CPU processes standing in): every
    node tagged ``gpu`` runs on the first, found through $IDH_DASK_SCHEDULER; untagged nodes may go
    to either."""
    from dask.distributed import Client, Nanny, Scheduler, SpecCluster
    from kedro_datasets.json import JSONDataset

    workers = {
        "with_gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "without": {"cls": Nanny, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        gpu_pid = next(
            pid
            for address, pid in client.run(os.getpid).items()
            if client.scheduler_info()["workers"][address].get("resources", {}).get("GPU")
        )
        names = [f"gpu_{i}" for i in range(6)] + [f"cpu_{i}" for i in range(6)]
        catalog = DataCatalog(
            {
                "a": MemoryDataset(0),
                **{n: JSONDataset(filepath=str(tmp_path / f"{n}.json")) for n in names},
            }
        )
        nodes = [
            node(_pid, "a", n, name=n, tags=["gpu"] if n.startswith("gpu") else None) for n in names
        ]
        monkeypatch.setenv("IDH_DASK_SCHEDULER", cluster.scheduler_address)
        DaskRunner().run(pipeline(nodes), catalog)
        ran_on = {n: int((tmp_path / f"{n}.json").read_text()) for n in names}
    assert {ran_on[n] for n in names if n.startswith("gpu")} == {gpu_pid}
    assert os.getpid() not in ran_on.values()


def test_the_whole_sweep_under_env_gives_the_same_numbers_on_both_runners(
    kedro_project, tiny_cohort, monkeypatch
):
    """All 28 configurations (one epoch at 32 px each), under `--env l4+rehearsal`: the DaskRunner's
    worker processes and the sequential runner give identical runs (torch threads are a run
    setting)."""
    env = "l4+rehearsal"
    local = {
        "data_engineering": {"progress": False},
        "permutation_study": {
            "seeds": [42],
            "overrides": {"max_epochs": 1},
            "fixed": {"image_size": 32},
        },
    }
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
    bootstrap_project(kedro_project)
    with KedroSession.create(
        project_path=kedro_project, env=env, runtime_params={"cohort_path": str(tiny_cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])
    write_best_params(
        kedro_project,
        {**BEST["hyperparameters"], "learning_rate": 6e-4},
        env=env,
        outputs="data/rehearsal",
    )
    study = kedro_project / "data/rehearsal/07_model_output"

    def sweep(runner=None) -> tuple[pd.DataFrame, pd.DataFrame]:
        shutil.rmtree(study, ignore_errors=True)
        with KedroSession.create(project_path=kedro_project, env=env) as session:
            session.run(
                pipeline_names=["permutation_study"],
                node_names=None,
                runner=runner,
                to_outputs=["study_runs"],
            )
        runs = pd.read_csv(study / "study_runs.csv")
        predictions = pd.concat(
            [
                pd.read_csv(p)
                for p in sorted(study.glob("permutation_study/*/validation_predictions.csv"))
            ]
        )
        return runs, predictions.reset_index(drop=True)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU workers, on a GPU box too
    dask_runner = DaskRunner(n_workers=2)
    dask_runs, dask_predictions = sweep(dask_runner)
    seq_runs, seq_predictions = sweep()
    # both worker processes trained
    assert len(dask_runs) == 28 * 2 and len(set(dask_runs["worker"])) == 2
    assert set(seq_runs["worker"]) == {f"{socket.gethostname()}:{os.getpid()}"}
    assert (dask_runs["torch_threads"] == 2).all() and (dask_runs["epochs_run"] >= 1).all()
    results = [c for c in dask_runs.columns if c not in PROVENANCE_COLUMNS]
    key = ["config_id", "model_name", "seed"]
    pd.testing.assert_frame_equal(
        dask_runs[results].sort_values(key).reset_index(drop=True),
        seq_runs[results].sort_values(key).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(dask_predictions, seq_predictions)
