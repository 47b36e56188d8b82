"""The paper path: the paper environments are the paper, every hand-off checks where its input came
from, and the whole journey (a4000 search -> l4 sweep -> final evaluation -> report) runs as a
rehearsal on this CPU through the documented commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.config_loader import layers_for
from idh_pseudocolor.paper_path import (
    MACHINE_KEYS,
    PAPER_SETTINGS,
    PAPER_SWEEP_MODELS,
    SCALE_KEYS,
    PaperPathError,
    check_best_params,
    deviations,
    flatten,
    matches,
    settings_markdown,
)
from idh_pseudocolor.provenance import best_params_id
from idh_pseudocolor.search import SearchSettings
from idh_pseudocolor.training import HardwareUnavailable
from tests.conftest import (
    REPO,
    project_parameters,
    table_1,
    tracked,
    write_best_params,
    write_weights,
)
from tests.tracking_store import parent_runs, project_client

HP = {
    "learning_rate": 1e-3,
    "pretrained": False,
    "superconvergence": True,
    "peak_fraction": 0.3,
    "lr_interval": "epoch",
    "max_epochs": 1,
    "mask_non_tumor": False,
}
QUIET = {"data_engineering": {"progress": False}, "hyperparameter_search": {"progress": False}}


def kedro_cli(project: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kedro", "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files_under(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


# ---- the environments are the paper ------------------------------------------------------------


@pytest.mark.parametrize("env", ["a4000", "l4"])
def test_paper_environment_resolves_to_the_papers_settings_key_by_key(env):
    params = project_parameters(REPO, env)
    assert deviations(params) == []
    flat = flatten(params)
    for key, (value, _) in PAPER_SETTINGS.items():
        assert key in flat, key
    # the table itself against independent sources: Table 1 and the paper's models
    space = {
        k.rsplit(".", 1)[1]: v for k, (v, _) in PAPER_SETTINGS.items() if ".search_space." in k
    }
    assert space == table_1()
    assert PAPER_SETTINGS["permutation_study.models"][0] == list(PAPER_SWEEP_MODELS)
    assert params["hyperparameter_search"]["fixed"]["accelerator"] == "gpu"
    assert params["permutation_study"]["fixed"]["accelerator"] == "gpu"
    # no demo value anywhere, machine keys included: no demo model named, the demo pretraining off
    demo_models = set(project_parameters(REPO, None)["permutation_study"]["models"])
    named = {v for v in flat.values() if isinstance(v, str)} | {
        m for v in flat.values() if isinstance(v, list) for m in v
    }
    assert not named & demo_models, named & demo_models
    assert (
        params["demo_pretraining"]["enabled"] is False
        and params["demo_pretraining"]["models"] == []
    )


def test_a_demo_value_in_a_paper_environment_is_found():
    demo = project_parameters(REPO, None)
    found = {line.split(" ")[0] for line in deviations(demo)}
    # the demo differs from the paper exactly where its files say DEMO (plus its kind and two
    # patience choices)
    assert {
        "permutation_study.models",
        "hyperparameter_search.n_trials",
        "demo_pretraining.enabled",
        "hyperparameter_search.search_space.pretrained",
        "permutation_study.overrides.max_epochs",
        "permutation_study.overrides.superconvergence",
    } <= found
    assert all(not matches(k, MACHINE_KEYS) for k in found)


def test_docs_show_the_table_of_paper_settings():
    assert settings_markdown() in (REPO / "docs/reproducing.md").read_text()


def test_rehearsal_layer_changes_only_the_scale():
    layer = flatten(yaml.safe_load((REPO / "conf/rehearsal/parameters.yml").read_text()))
    assert layer.pop("environment.rehearsal") is True  # the layer's mark, which --env alone sets
    assert layer and all(matches(k, SCALE_KEYS) for k in layer), [
        k for k in layer if not matches(k, SCALE_KEYS)
    ]
    # apart from the paper's
    assert set(yaml.safe_load((REPO / "conf/rehearsal/globals.yml").read_text())) == {"outputs"}
    assert not matches("environment.rehearsal", SCALE_KEYS)  # only --env makes a rehearsal


def test_configuration_layers():
    assert layers_for(None) == ["base", "local"]
    assert layers_for("l4") == ["base", "paper", "l4", "local"]
    assert layers_for("a4000+rehearsal") == ["base", "paper", "a4000", "rehearsal", "local"]
    assert layers_for("mybox") == ["base", "mybox", "local"]
    from idh_pseudocolor.config_loader import LayeredConfigLoader

    loader = LayeredConfigLoader(str(REPO / "conf"), env="l4")
    # Kedro's loader API: a key set explicitly is read back as is
    loader["custom"] = {"set": "by hand"}
    assert loader["custom"] == {"set": "by hand"}
    for bad in ("paper", "rehearsal", "l4+a4000", "local+rehearsal", "mybox+rehearsal"):
        with pytest.raises(ValueError, match="rehearsal"):
            layers_for(bad)


def test_machine_settings_in_conf_local_reach_the_paper_environments(kedro_project):
    """conf/local's data_root and credentials apply under --env l4 (Kedro alone would drop them)."""
    from idh_pseudocolor.config_loader import LayeredConfigLoader
    from idh_pseudocolor.settings import CONFIG_LOADER_ARGS

    local = kedro_project / "conf/local"
    (local / "globals.yml").write_text("data_root: /shared/idh\n")
    (local / "credentials.yml").write_text(
        yaml.safe_dump({"optuna_db": {"con": "postgresql+psycopg://u:p@db/idh"}})
    )
    (local / "catalog.yml").write_text(
        yaml.safe_dump({"search_study": {"credentials": "optuna_db"}})
    )
    for env in ("a4000", "l4"):
        loader = LayeredConfigLoader(str(kedro_project / "conf"), env=env, **CONFIG_LOADER_ARGS)
        catalog = loader["catalog"]
        assert catalog["best_params"]["filepath"] == "/shared/idh/paper/06_models/best_params.yml"
        assert (
            catalog["slice_arrays"]["filepath"] == "/shared/idh/paper/03_primary/slice_arrays.npz"
        )
        assert catalog["search_study"]["credentials"] == "optuna_db"
        # one study for both boxes
        assert catalog["search_study"]["study_name"] == "idh_search_paper"
        assert loader["credentials"]["optuna_db"]["con"].startswith("postgresql+psycopg://")
        rehearsal = LayeredConfigLoader(
            str(kedro_project / "conf"), env=f"{env}+rehearsal", **CONFIG_LOADER_ARGS
        )["catalog"]
        # same server, never the paper's study
        assert rehearsal["search_study"]["credentials"] == "optuna_db"
        assert rehearsal["search_study"]["study_name"] == "idh_search_rehearsal"
    demo = LayeredConfigLoader(str(kedro_project / "conf"), env=None, **CONFIG_LOADER_ARGS)[
        "catalog"
    ]
    # the demo's, apart
    assert demo["best_params"]["filepath"] == "/shared/idh/06_models/best_params.yml"


def test_object_storage_data_root_goes_there_or_refuses(kedro_project):
    from kedro.io import DatasetError

    from idh_pseudocolor.config_loader import LayeredConfigLoader
    from idh_pseudocolor.datasets import CohortDataset, OptunaStorageDataset
    from idh_pseudocolor.settings import CONFIG_LOADER_ARGS

    (kedro_project / "conf/local/globals.yml").write_text("data_root: memory://bucket/idh\n")
    catalog = LayeredConfigLoader(str(kedro_project / "conf"), env="l4", **CONFIG_LOADER_ARGS)[
        "catalog"
    ]
    paths = [
        entry.get("filepath") or entry.get("path")
        for entry in catalog.values()
        if isinstance(entry, dict)
    ]
    # the cohort and the study too
    assert paths and all(str(p).startswith("memory://bucket/idh") for p in paths if p)
    with pytest.raises(DatasetError, match="PostgreSQL"):
        OptunaStorageDataset(study_name="s", filepath=catalog["search_study"]["filepath"])
    with pytest.raises(DatasetError, match="mount"):
        CohortDataset(path=catalog["cohort"]["path"])


# ---- hand-offs ----------------------------------------------------------------------------------


def test_best_params_of_another_search_is_refused_and_can_be_accepted_explicitly():
    paper = SearchSettings.from_params(project_parameters(REPO, "l4")["hyperparameter_search"])
    demo = SearchSettings.from_params(project_parameters(REPO, None)["hyperparameter_search"])
    assert paper.fingerprint_id() != demo.fingerprint_id()
    demo_best = {
        "hyperparameters": HP,
        "provenance": {
            "search_fingerprint": demo.fingerprint_id(),
            "completed_trials": 16,
            "study_name": "idh_search",
            "model_name": "test_resnet",
            "config_id": 21,
        },
    }
    with pytest.raises(PaperPathError) as refused:
        check_best_params(demo_best, paper.fingerprint_id(), paper.n_trials)
    message = str(refused.value)
    # both sides named
    assert demo.fingerprint_id() in message and paper.fingerprint_id() in message
    # and the fix
    assert "16 trials" in message and "297" in message and best_params_id(demo_best) in message
    assert (
        check_best_params(
            demo_best, paper.fingerprint_id(), paper.n_trials, accept=best_params_id(demo_best)
        )
        is True
    )
    with pytest.raises(PaperPathError):
        check_best_params(
            demo_best, paper.fingerprint_id(), paper.n_trials, accept="0123456789abcdef"
        )
    mine = {
        "hyperparameters": HP,
        "provenance": {"search_fingerprint": paper.fingerprint_id(), "completed_trials": 297},
    }
    assert check_best_params(mine, paper.fingerprint_id(), paper.n_trials) is False
    unfinished = {
        "hyperparameters": HP,
        "provenance": {"search_fingerprint": paper.fingerprint_id(), "completed_trials": 40},
    }
    with pytest.raises(PaperPathError, match="40 trials"):
        check_best_params(unfinished, paper.fingerprint_id(), paper.n_trials)


def test_a_sweep_trained_with_two_best_params_is_refused():
    from idh_pseudocolor.pipelines.permutation_study.nodes import aggregate_study

    row = {
        "model_name": "m",
        "seed": 42,
        "auroc": 0.7,
        "accuracy": 0.6,
        "f1": 0.6,
        "precision": 0.6,
        "recall": 0.6,
        "specificity": 0.6,
    }
    a = pd.DataFrame([{**row, "config_id": 0, "best_params_id": "aaaa"}])
    b = pd.DataFrame([{**row, "config_id": 1, "best_params_id": "bbbb"}])
    params = {**project_parameters(REPO, None)["permutation_study"], "models": ["m"]}
    with pytest.raises(PaperPathError, match="2 different best_params"):
        aggregate_study(params, a, b)
    assert (
        aggregate_study(params, a, b.assign(best_params_id="aaaa"))[2]["best_params_id"] == "aaaa"
    )


def prepare_demo(project: Path, cohort: Path) -> dict[str, int]:
    """What `make run` leaves: the demo's slices and best_params under data/."""
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(QUIET))
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, runtime_params={"cohort_path": str(cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])
    write_best_params(project, HP)
    return files_under(project / "data")


def test_paper_environments_never_run_on_demo_settings_or_outputs(
    kedro_project, tiny_cohort, monkeypatch
):
    demo = prepare_demo(kedro_project, tiny_cohort)
    paper = kedro_project / "data/paper"
    # 1. a machine without a GPU (this one, or any, as torch reports it here): --env l4 stops before
    #    any node, and says how to rehearse
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with (
        KedroSession.create(project_path=kedro_project, env="l4") as session,
        pytest.raises(HardwareUnavailable, match=r"\+rehearsal"),
    ):
        session.run()
    # 2. on the CPU (a machine setting), the paper env reads its own outputs, not the demo's:
    #    with no cohort given it finds the phantom and refuses it before training
    cpu = {
        "hyperparameter_search": {"fixed": {"accelerator": "cpu"}},
        "permutation_study": {"fixed": {"accelerator": "cpu"}},
        "cohort_path": str(tiny_cohort),
    }
    for env in ("a4000", "l4"):
        with (
            KedroSession.create(project_path=kedro_project, env=env, runtime_params=cpu) as session,
            pytest.raises(PaperPathError, match="phantom"),
        ):
            session.run()
    # 3. no parameter can turn the checks off or make a paper run a rehearsal: that is --env's
    for sneaky, message in (
        ({"environment": {"rehearsal": True}}, "rehearsal=True"),
        ({"environment": {"kind": "demo"}}, "'demo'"),
    ):
        with (
            KedroSession.create(
                project_path=kedro_project, env="l4", runtime_params={**cpu, **sneaky}
            ) as session,
            pytest.raises(PaperPathError, match=message),
        ):
            session.run()
    # 4. a demo value in conf/local is refused under the paper env, before any node
    (kedro_project / "conf/local/parameters.yml").write_text(
        yaml.safe_dump({**QUIET, "permutation_study": {"seeds": [42]}})
    )
    with (
        KedroSession.create(project_path=kedro_project, env="l4", runtime_params=cpu) as session,
        pytest.raises(PaperPathError, match=r"permutation_study.seeds = \[42\]"),
    ):
        session.run()
    # nothing written, demo untouched
    assert not any(paper.rglob("*.*")) and files_under(kedro_project / "data") == demo


def test_the_sweep_refuses_the_demos_best_params_unless_accepted(kedro_project, tiny_cohort):
    prepare_demo(kedro_project, tiny_cohort)
    tiny = {**QUIET, "permutation_study": {"models": ["resnet10t"], "fixed": {"image_size": 32}}}
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(tiny))
    env = "l4+rehearsal"
    with KedroSession.create(
        project_path=kedro_project, env=env, runtime_params={"cohort_path": str(tiny_cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])
    rehearsal = kedro_project / "data/rehearsal"
    (rehearsal / "06_models").mkdir(parents=True)
    demo_best = (kedro_project / "data/06_models/best_params.yml").read_text()
    (rehearsal / "06_models/best_params.yml").write_text(demo_best)  # a user copies the wrong file
    with (
        KedroSession.create(project_path=kedro_project, env=env) as session,
        pytest.raises(PaperPathError, match="best_params refused by configuration 15"),
    ):
        session.run(pipeline_names=["permutation_study"], namespaces=["configuration_15"])
    assert not (rehearsal / "07_model_output").exists()
    ident = best_params_id(yaml.safe_load(demo_best))
    accept = {"permutation_study": {"accept_best_params": ident}}
    with KedroSession.create(project_path=kedro_project, env=env, runtime_params=accept) as session:
        session.run(pipeline_names=["permutation_study"], namespaces=["configuration_15"])
    runs = pd.read_csv(
        rehearsal / "07_model_output/permutation_study/configuration_15/validation_runs.csv"
    )
    assert runs["best_params_accepted_by_override"].all() and set(runs["best_params_id"]) == {ident}


# ---- the journey, rehearsed ---------------------------------------------------------------------


def test_rehearsal_of_the_whole_journey_through_the_documented_commands(
    kedro_project, report_cohort
):
    project = kedro_project
    tracked(project)
    weights = write_weights(project, ["test_resnet", "test_byobnet"])
    local = {
        **QUIET,
        "hyperparameter_search": {"progress": False, "fixed": {"weights_file": weights}},
        "permutation_study": {"fixed": {"weights_file": weights}},
    }
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local))
    cohort = f"cohort_path={report_cohort}"
    # the demo ran first on this machine
    assert kedro_cli(project, "--pipelines", "data_engineering", "--params", cohort).returncode == 0
    demo = files_under(project / "data")
    steps = [
        ("--env", "a4000+rehearsal", "--pipelines", "data_engineering", "--params", cohort),
        ("--env", "a4000+rehearsal", "--pipelines", "hyperparameter_search"),
        ("--env", "l4+rehearsal", "--pipelines", "permutation_study,reporting"),
    ]
    for step in steps:
        done = kedro_cli(project, *step)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    out = project / "data/rehearsal"
    best = yaml.safe_load((out / "06_models/best_params.yml").read_text())
    a4000 = SearchSettings.from_params(
        project_parameters(project, "a4000+rehearsal")["hyperparameter_search"]
    )
    l4 = SearchSettings.from_params(
        project_parameters(project, "l4+rehearsal")["hyperparameter_search"]
    )
    assert best["provenance"]["search_fingerprint"] == a4000.fingerprint_id() == l4.fingerprint_id()
    assert (
        best["provenance"]["study_name"] == "idh_search_rehearsal"
        and best["provenance"]["completed_trials"] == 2
    )
    runs = pd.read_csv(out / "07_model_output/study_runs.csv")
    # the sweep used that search
    assert len(runs) == 28 * 2 and set(runs["best_params_id"]) == {best_params_id(best)}
    assert not runs["best_params_accepted_by_override"].any()
    test = pd.read_csv(out / "07_model_output/test_predictions.csv")
    arms = test.groupby(["model_name", "pretrained"])["pretrained_loaded"].all()
    assert sorted(arms.index) == [
        ("test_byobnet", False),
        ("test_byobnet", True),
        ("test_resnet", False),
        ("test_resnet", True),
    ]
    assert (
        arms[("test_resnet", True)]
        and arms[("test_byobnet", True)]
        and not arms[("test_resnet", False)]
    )
    bundle = yaml.safe_load((out / "06_models/winner_models/manifest.json").read_text())["runs"]
    sources = {name: entry["meta"]["weights"]["source"] for name, entry in bundle.items()}
    assert {s for n, s in sources.items() if "pretrained" in n} == {
        f"file:{weights['test_resnet']}",
        f"file:{weights['test_byobnet']}",
    }
    report = (out / "08_reporting/report.html").read_text()  # the rehearsal's own report, saying so
    assert "Study: a rehearsal of the paper path" in report and best_params_id(best) in report
    # the demo's outputs untouched; the tracking store is shared by design, the rehearsal's runs
    # in their own experiment and the demo's one run as it was
    untouched = ("rehearsal/", "10_tracking/")
    assert {
        k: v for k, v in files_under(project / "data").items() if not k.startswith(untouched)
    } == {k: v for k, v in demo.items() if not k.startswith(untouched)}
    client = project_client(project)
    assert [r.info.run_name for r in parent_runs(client)] == ["data_engineering"]
    rehearsal = client.get_experiment_by_name("idh_pseudocolor_rehearsal").experiment_id
    rehearsed = parent_runs(client, rehearsal)
    assert {r.info.status for r in rehearsed} == {"FINISHED"}
    assert sorted(sorted(r.info.run_name.split("+")) for r in rehearsed) == [
        ["data_engineering"],
        ["hyperparameter_search"],
        ["permutation_study", "reporting"],
    ]


def test_the_real_paper_models_on_one_configuration(kedro_project, report_cohort):
    """--env l4 with the real VGG16 and ResNeXt-101 (random weights, 32 px, 1 epoch, 1 seed, 48
    patients)."""
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(QUIET))
    env = "l4+rehearsal"
    bootstrap_project(kedro_project)
    with KedroSession.create(
        project_path=kedro_project, env=env, runtime_params={"cohort_path": str(report_cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])
    write_best_params(kedro_project, HP, env=env, outputs="data/rehearsal")
    real = {"permutation_study": {"models": list(PAPER_SWEEP_MODELS)}}
    with KedroSession.create(project_path=kedro_project, env=env, runtime_params=real) as session:
        session.run(pipeline_names=["permutation_study"], namespaces=["configuration_15"])
    runs = pd.read_csv(
        kedro_project
        / "data/rehearsal/07_model_output/permutation_study/configuration_15/validation_runs.csv"
    )
    assert (
        runs["model_name"].tolist() == list(PAPER_SWEEP_MODELS) and (runs["epochs_run"] == 1).all()
    )
    assert runs["auroc"].between(0, 1).all() and not runs["pretrained_loaded"].any()
