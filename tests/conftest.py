"""Shared fixtures: real NIfTI files, real phantom cohorts and a throw-away copy of the project."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on two cores: while one worker runs torch on two threads (the segmentation
    # model's fixture), the other worker holds a core. OpenMP's threads then spin-wait for each
    # other by default: measured, that fixture's training took 117 s wall and 149 s CPU instead
    # of 74 s and 75 s with waiting threads asleep. The same threads compute the same numbers.
    # Set before torch loads; subprocesses inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nibabel as nib
import numpy as np
import pytest
import yaml

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SEQUENCE_FILES = {
    "T1": "T1.nii.gz",
    "T1ce": "T1GD.nii.gz",
    "T2": "T2.nii.gz",
    "FLAIR": "FLAIR.nii.gz",
}


def raw_nifti_study(folder: Path) -> Path:
    """One raw NIfTI phantom study at 2 mm through the command line (``folder/raw``), as a user
    would make it."""
    from click.testing import CliRunner

    from idh_pseudocolor.cli import cli

    raw = folder / "raw"
    made = CliRunner().invoke(
        cli,
        ["phantom", "--raw", "nifti", "--subjects", "1", "--seed", "4", "--voxel-size", "2"]
        + ["--out", str(raw), "--workers", "1"],
    )
    assert made.exit_code == 0, made.output
    return raw


#: the slowest tests (CI's --durations on a fresh clone here), longest first. They start first, and
#: pytest-xdist hands out the rest one at a time to whichever worker is free (--maxschedchunk=1 in
#: pyproject.toml): longest-first list scheduling, so no long test ends the run alone on one worker
#: while the other idles. Only the order changes, never what a test runs or asserts.
SLOWEST_FIRST = (
    "tests/pipelines/test_planted_truth.py::test_demo_scale_sweep_recovers_the_planted_truth",
    "tests/test_offline_install.py::test_offline_install_beside_preinstalled_torch",
    "tests/test_offline_install.py::test_device_wheels_fit_one_carry_and_run_the_gpu_check_beside_the_box_s_packages",
    "tests/test_preprocess.py::test_a_dicom_study_lands_on_the_template_grid_within_a_millimetre",
    "tests/pipelines/test_paper_path.py::"
    "test_rehearsal_of_the_whole_journey_through_the_documented_commands",
    "tests/test_segmentation.py::test_held_out_dice_reaches_the_goal",
    "tests/test_preprocess.py::test_a_missing_sequence_is_reported_and_the_other_three_are_written",
    "tests/pipelines/test_reporting.py::test_whole_study_then_report_opens_in_chromium",
)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {nodeid: i for i, nodeid in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable: the rest keep order


def made_once(tmp_path_factory, name: str, make) -> Path:
    """A folder that ``make(folder)`` fills once per test run. Under xdist the first worker to
    ask makes it in the run's shared folder and the other waits (two workers making the same
    costly fixture at once on two cores doubled its cost in CI); a failed make is retried."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()  # under xdist: <run>/popen-gw<n>, the run's is its parent
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with FileLock(f"{root}.lock"):
        if not (root / ".made").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            make(root)
            (root / ".made").touch()
    return root


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 24-subject phantom cohort on the 4 mm grid, EGD layout (shared, do not modify)."""
    from idh_pseudocolor.phantom import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "egd"
    generate_cohort(out, n_subjects=24, seed=3, voxel_size=4.0, n_workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def report_cohort(tmp_path_factory) -> Path:
    """48 phantom subjects on the 4 mm grid: enough test patients of each class for a bootstrap."""
    from idh_pseudocolor.phantom import generate_cohort

    out = tmp_path_factory.mktemp("cohort48") / "egd"
    generate_cohort(out, n_subjects=48, seed=5, voxel_size=4.0, n_workers=1, progress=False)
    return out


@pytest.fixture()
def cohort_copy(tiny_cohort, tmp_path) -> Path:
    """A private copy of the tiny cohort that a test may break."""
    dest = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, dest)
    return dest


@pytest.fixture()
def kedro_project(tmp_path) -> Path:
    """This project's pyproject and conf in a temporary folder, so runs never touch ./data."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # the package itself is installed; Kedro only needs the folder
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    for layer in ("01_raw", "02_intermediate", "03_primary", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    untracked(root)
    return root


def untracked(project: Path) -> None:
    """MLflow tracking off for every pipeline of ``project`` (conf/local/mlflow.yml, the documented
    switch): a test about something else pays no tracking store. Tests of tracking call
    :func:`tracked`."""
    import pkgutil

    from idh_pseudocolor import pipelines

    # every pipeline the project has (as Kedro's find_pipelines finds them), and the default run
    names = ["__default__", *(m.name for m in pkgutil.iter_modules(pipelines.__path__))]
    (project / "conf/local/mlflow.yml").write_text(
        yaml.safe_dump({"tracking": {"disable_tracking": {"pipelines": names}}})
    )


def tracked(project: Path) -> None:
    """Tracking as a user has it: conf/base/mlflow.yml's SQLite store under data/."""
    (project / "conf/local/mlflow.yml").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    """A real PostgreSQL server for the test session (SQLAlchemy URL).

    ``$IDH_TEST_POSTGRES_URL`` points at an existing server; otherwise pgserver (PostgreSQL
    binaries from PyPI) starts one in a temporary folder and stops it afterwards.
    """
    url = os.environ.get("IDH_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()


def write_subject(
    folder: Path,
    volumes: dict[str, np.ndarray],
    mask: np.ndarray,
    affine: np.ndarray | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write one EGD-layout subject from arrays (float32 sequences, uint8 mask)."""
    import json

    affine = np.eye(4) if affine is None else affine
    folder.mkdir(parents=True, exist_ok=True)
    for seq, name in SEQUENCE_FILES.items():
        nib.save(nib.Nifti1Image(volumes[seq].astype(np.float32), affine), folder / name)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "MASK.nii.gz")
    meta = metadata or {"Genetic_and_Histological_labels": {"IDH": 1, "1p19q": 0, "Grade": 2}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def project_parameters(
    project: Path, env: str | None = None, runtime_params: dict | None = None
) -> dict:
    """The parameters a `kedro run --env ENV` in ``project`` resolves to (the project's own
    loader)."""
    from idh_pseudocolor.config_loader import project_parameters as resolved

    return resolved(project, env, runtime_params)


def write_best_params(
    project: Path, hyperparameters: dict, env: str | None = None, outputs: str = "data"
) -> dict:
    """A best_params file as this environment's finished search writes it (provenance included)."""
    import yaml

    from idh_pseudocolor.search import SearchSettings

    settings = SearchSettings.from_params(project_parameters(project, env)["hyperparameter_search"])
    best = {
        "hyperparameters": dict(hyperparameters),
        "provenance": {
            "study_name": "written by a test",
            "search_fingerprint": settings.fingerprint_id(),
            "completed_trials": settings.n_trials,
            "n_trials": settings.n_trials,
            "model_name": settings.model_name,
            "config_id": settings.config_id,
        },
    }
    path = project / outputs / "06_models/best_params.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(best))
    return best


def write_weights(folder: Path, models: list[str]) -> dict[str, str]:
    """Local 'pretrained' weights files, as a user without internet provides them."""
    import timm
    import torch
    from safetensors.torch import save_file

    files = {}
    for i, name in enumerate(models):
        torch.manual_seed(100 + i)
        net = timm.create_model(name, pretrained=False)
        files[name] = str(folder / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, files[name])
    return files


def run_config(**overrides):
    """A RunConfig as the demo's sweep builds one (conf/base's ``permutation_study.fixed``) with
    the paper's optimum as hyperparameters and timm's tiny ``test_resnet`` on configuration 15;
    ``overrides`` change any field. RunConfig itself has no defaults: conf is their only home."""
    from idh_pseudocolor.search import PAPER_OPTIMUM
    from idh_pseudocolor.training import RunConfig

    values = {
        "model_name": "test_resnet",
        "config_id": 15,
        "seed": 42,
        **PAPER_OPTIMUM,
        **_demo_fixed(),
    }
    return RunConfig(**{**values, **overrides})


@functools.lru_cache(maxsize=1)
def _demo_fixed() -> dict:
    from idh_pseudocolor.parameters import PermutationStudySettings

    params = project_parameters(REPO)["permutation_study"]
    return PermutationStudySettings.from_params(params).fixed.run_config()


def table_1() -> dict:
    """The paper's search space (Table 1) as the paper path's settings table states it."""
    from idh_pseudocolor.paper_path import PAPER_SETTINGS

    prefix = "hyperparameter_search.search_space."
    return {
        k.removeprefix(prefix): v for k, (v, _) in PAPER_SETTINGS.items() if k.startswith(prefix)
    }


def conf_normalization(**overrides):
    """The slice normalization conf/base gives data_engineering (its only home), with
    ``overrides`` (e.g. ``method="minmax"``)."""
    from dataclasses import replace

    from idh_pseudocolor.parameters import DataEngineeringSettings

    data = DataEngineeringSettings.from_params(project_parameters(REPO)["data_engineering"])
    return replace(data.normalization.normalization(), **overrides)
