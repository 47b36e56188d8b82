"""The project's two before-the-first-node hooks, called as Kedro calls them: the parameters a
``kedro run --env ENV`` resolves (the project's conf and loader), a real DataCatalog and a real
Pipeline. Errors are told apart by class name and message, not by import path."""

from __future__ import annotations

import copy

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from idh_pseudocolor.cohort import cohort_record
from idh_pseudocolor.datasets import CohortDataset
from idh_pseudocolor.hooks import HardwareCheck, PaperSettingsCheck
from idh_pseudocolor.runner import DaskRunner
from tests.conftest import project_parameters

TRAINING_BLOCKS = ("hyperparameter_search", "permutation_study")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def catalog_for(parameters: dict, datasets: dict | None = None) -> DataCatalog:
    """What Kedro's catalog holds for the hooks: ``parameters``, every ``params:<block>`` the
    nodes read, and the ``datasets`` given."""
    entries = {"parameters": MemoryDataset(parameters)}
    entries |= {f"params:{block}": MemoryDataset(parameters[block]) for block in TRAINING_BLOCKS}
    return DataCatalog({**entries, **(datasets or {})})


def training_pipeline(*inputs: str) -> Pipeline:
    """One node that reads ``inputs`` (a cohort, settings blocks), as the real pipelines' do."""
    return Pipeline([node(lambda *args: 0, inputs=list(inputs), outputs="result", name="train")])


def run_params(env: str | None, runner: str = "SequentialRunner") -> dict:
    """What KedroSession.run passes its hooks (the runner as its name or str())."""
    return {"env": env, "runner": runner, "pipeline_names": None, "extra_params": {}}


def check_settings(
    parameters: dict, env: str | None, pipeline: Pipeline, datasets: dict | None = None
) -> None:
    PaperSettingsCheck().before_pipeline_run(
        run_params=run_params(env), pipeline=pipeline, catalog=catalog_for(parameters, datasets)
    )


def check_hardware(
    parameters: dict, env: str | None, pipeline: Pipeline, runner: str = "SequentialRunner"
) -> None:
    HardwareCheck().before_pipeline_run(
        run_params=run_params(env, runner), pipeline=pipeline, catalog=catalog_for(parameters)
    )


@pytest.fixture()
def demo(kedro_project) -> dict:
    return project_parameters(kedro_project)


@pytest.fixture()
def a4000(kedro_project) -> dict:
    return project_parameters(kedro_project, "a4000")


def test_a_demo_run_on_the_phantom_passes_both_checks(demo, tiny_cohort):
    pipeline = training_pipeline("cohort", "params:permutation_study")
    assert cohort_record(tiny_cohort)["synthetic"]  # the demo may read the phantom
    check_settings(demo, None, pipeline, {"cohort": CohortDataset(path=str(tiny_cohort))})
    check_hardware(demo, None, pipeline)
    assert demo["permutation_study"]["fixed"]["accelerator"] == "cpu"


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ("permutation_study", "sedes"),
        ("hyperparameter_search.fixed", "lerning_rate"),
        ("data_engineering", "splits_seed"),
    ],
)
def test_an_unknown_key_in_a_block_is_refused_by_name(demo, block, key):
    parameters = copy.deepcopy(demo)
    target = parameters
    for part in block.split("."):
        target = target[part]
    target[key] = 1
    with pytest.raises(ValueError, match="is not a setting") as exc:
        check_settings(parameters, None, training_pipeline("params:permutation_study"))
    section = block.split(".")[0]
    assert f"{block}.{key} is not a setting" in str(exc.value)
    assert f"conf/base/parameters_{section}.yml" in str(exc.value)


def test_a_missing_block_is_refused_by_name(demo):
    parameters = {k: v for k, v in demo.items() if k != "reporting"}
    with pytest.raises(ValueError, match=r"reporting is missing \(conf/base/parameters_reporting"):
        check_settings(parameters, None, training_pipeline("params:permutation_study"))


def test_the_paper_environment_passes_unchanged_and_refuses_a_demo_value(a4000, demo):
    pipeline = training_pipeline("params:hyperparameter_search")
    check_settings(a4000, "a4000", pipeline)  # the paper's own settings
    changed = copy.deepcopy(a4000)
    changed["hyperparameter_search"]["n_trials"] = demo["hyperparameter_search"]["n_trials"]
    with pytest.raises(RuntimeError) as exc:
        check_settings(changed, "a4000", pipeline)
    assert type(exc.value).__name__ == "PaperPathError"
    message = str(exc.value)
    assert "--env a4000 is a paper run" in message
    assert f"hyperparameter_search.n_trials = {demo['hyperparameter_search']['n_trials']!r}" in (
        message
    )
    assert "the paper's is 297" in message and "--env a4000+rehearsal" in message


def test_the_demos_parameters_under_a_paper_env_are_refused(demo):
    """``environment`` must agree with ``--env``: no parameter can switch the paper checks off."""
    with pytest.raises(RuntimeError) as exc:
        check_settings(demo, "a4000", training_pipeline("params:permutation_study"))
    assert type(exc.value).__name__ == "PaperPathError"
    assert "environment.kind='demo'" in str(exc.value)


@pytest.mark.filterwarnings("ignore:One or more dataset names contain '.'")  # as the catalog's
@pytest.mark.parametrize("name", ["cohort", "external.cohort"])
def test_a_paper_run_that_reads_the_phantom_cohort_is_refused(a4000, tiny_cohort, name):
    datasets = {name: CohortDataset(path=str(tiny_cohort))}
    with pytest.raises(RuntimeError) as exc:
        check_settings(a4000, "a4000", training_pipeline(name), datasets)
    assert type(exc.value).__name__ == "PaperPathError"
    assert "synthetic phantom cohort" in str(exc.value)
    assert "--env <a4000|l4>+rehearsal" in str(exc.value)
    # a pipeline that does not read the cohort is not stopped by it
    check_settings(a4000, "a4000", training_pipeline("params:permutation_study"), datasets)


def test_a_paper_run_passes_on_a_real_cohort_and_its_rehearsal_on_the_phantom(
    kedro_project, a4000, tiny_cohort, tmp_path
):
    real = tmp_path / "egd"  # a cohort folder without the phantom marker
    real.mkdir()
    real_cohort = {"cohort": CohortDataset(path=str(real))}
    check_settings(a4000, "a4000", training_pipeline("cohort"), real_cohort)
    rehearsal = project_parameters(kedro_project, "a4000+rehearsal")
    check_settings(
        rehearsal,
        "a4000+rehearsal",
        training_pipeline("cohort"),
        {"cohort": CohortDataset(path=str(tiny_cohort))},
    )


@cpu_only
@pytest.mark.parametrize("block", TRAINING_BLOCKS)
def test_a_gpu_environment_on_this_cpu_is_refused_with_the_key_and_the_rehearsal(a4000, block):
    assert a4000[block]["fixed"]["accelerator"] == "gpu"
    with pytest.raises(RuntimeError) as exc:
        check_hardware(a4000, "a4000", training_pipeline("cohort", f"params:{block}"))
    assert type(exc.value).__name__ == "HardwareUnavailable"
    message = str(exc.value)
    assert f"--env a4000 asks for accelerator 'gpu' ({block}.fixed.accelerator)" in message
    assert "sees no CUDA GPU" in message
    assert "kedro run --env a4000+rehearsal" in message
    assert f"--params {block}.fixed.accelerator=cpu" in message


@cpu_only
def test_hardware_is_checked_for_the_block_a_node_trains_with_and_only_there(a4000):
    on_cpu = copy.deepcopy(a4000)
    on_cpu["permutation_study"]["fixed"]["accelerator"] = "cpu"
    # a node that reads both blocks trains with the sweep's: the search's gpu is not asked for
    check_hardware(
        on_cpu,
        "a4000",
        training_pipeline("params:hyperparameter_search", "params:permutation_study"),
    )
    # no node reads a training block: nothing to check
    check_hardware(a4000, "a4000", training_pipeline("cohort"))
    with pytest.raises(RuntimeError, match="hyperparameter_search.fixed.accelerator"):
        check_hardware(on_cpu, "a4000", training_pipeline("params:hyperparameter_search"))


@cpu_only
def test_under_the_dask_runner_the_workers_check_their_own_hardware(a4000):
    runner = str(DaskRunner())  # how KedroSession names a runner instance to its hooks
    assert "DaskRunner" in runner
    check_hardware(a4000, "a4000", training_pipeline("params:permutation_study"), runner=runner)
    with pytest.raises(RuntimeError, match="accelerator 'gpu'"):
        check_hardware(a4000, "a4000", training_pipeline("params:permutation_study"))
