"""The project installs offline from a wheelhouse into an environment that already has its own
torch, as on a GPU box: nothing is downloaded at install time and that torch stays as it was.

The "box" is a fresh venv into which torch, torchvision and everything they need are hard-linked
from this environment (their RECORD files, dist-info included), so pip sees them installed;
then ``pip install --no-index`` from the wheelhouse, the phantom generator and a real
``kedro run`` of data_engineering run with that venv's own executables.
"""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.box import REPO, new_box, torch_closure, wheelhouse_tool
from tests.box import run as _run

TORCH = wheelhouse_tool.TORCH
build_wheelhouse = wheelhouse_tool.build_wheelhouse


def _selection(wheels: list[Path]) -> set[str]:
    return {canonicalize_name(str(parse_wheel_filename(w.name)[0])) for w in wheels}


def test_offline_install_beside_preinstalled_torch(tmp_path, kedro_project):
    wheelhouse = tmp_path / "wheelhouse"
    wheels = build_wheelhouse(wheelhouse, project=REPO)
    names = _selection(wheels)
    assert "idh-pseudocolor" in names and "kedro" in names
    assert not names & TORCH and not [
        n for n in names if n.startswith(("nvidia-", "triton", "cuda-"))
    ], names
    assert (wheelhouse / "requirements.txt").is_file()

    venv, env, preinstalled = new_box(tmp_path / "venv", torch_closure())
    assert f"torch=={metadata.version('torch')}" in preinstalled
    torch_metadata = next(venv.glob("lib/python*/site-packages/torch-*.dist-info/METADATA"))
    before = os.stat(torch_metadata)

    log = _run(
        [
            venv / "bin/python",
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            wheelhouse,
            # bytecode on first import instead of for every installed module: the same files
            # (pip install 102 s -> 55 s here with MLflow's closure; the box compiles as it likes)
            "--no-compile",
            "idh_pseudocolor",
        ],
        env,
    )
    installed = next(
        (line for line in log.splitlines() if line.startswith("Successfully installed")), ""
    )
    assert "idh_pseudocolor" in installed.replace("-", "_"), log[-3000:]
    assert not {"torch", "torchvision"} & {
        word.rsplit("-", 1)[0] for word in installed.split()[2:]
    }, installed
    # every requirement met, torch's included
    _run([venv / "bin/python", "-m", "pip", "check"], env)
    after = os.stat(torch_metadata)
    # the box's torch, untouched
    assert (after.st_ino, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )

    seen = _run(
        [
            venv / "bin/python",
            "-c",
            "import importlib.metadata as m, torch, torchvision, idh_pseudocolor; "
            "print(m.version('torch'), m.version('torchvision'), "
            "torch.__file__, idh_pseudocolor.__file__)",
        ],
        env,
    ).split()
    assert seen[:2] == [metadata.version("torch"), metadata.version("torchvision")]
    # the venv's torch, the wheel's package
    assert all(Path(path).is_relative_to(venv) for path in seen[2:])

    _run(
        [
            venv / "bin/idh-pseudocolor",
            "phantom",
            "--subjects",
            "12",
            "--seed",
            "3",
            "--voxel-size",
            "4",
            "--out",
            "data/01_raw/cohort",
        ],
        env,
        cwd=kedro_project,
    )
    _run(
        [
            venv / "bin/kedro",
            "run",
            "--pipelines",
            "data_engineering",
            "--params",
            "data_engineering.progress=false",
        ],
        env,
        cwd=kedro_project,
    )
    assert (kedro_project / "data/03_primary/slice_arrays.npz").is_file()
    assert len(pd.read_csv(kedro_project / "data/02_intermediate/subject_manifest.csv")) == 12


def test_device_wheels_fit_one_carry_and_run_the_gpu_check_beside_the_box_s_packages(tmp_path):
    """``make device-wheels``: what the device machines lack for benchmarks/gpu_check.py, for
    their Python, within one call's carry. Then a stand-in box holding only torch's closure and
    the packages of tools/device_packages.txt that this machine has gets the same selection
    (built for this machine's Python) through the device's own command, benchmarks/device.sh,
    and the GPU check's four stages run there (tiny): nothing the check imports is missing or
    left out."""
    tool = wheelhouse_tool
    box_names = tool.read_names(tool.DEVICE_PACKAGES)
    assert {"torch", "timm", "pytorch-lightning", "numpy", "pandas"} <= set(box_names)
    # make device-wheels' command, with a cap it cannot meet: the wheels are there, the exit not
    with pytest.raises(SystemExit, match=r"MiB is over --max-mib 1\b"):
        tool.main(["--device", "--out", str(tmp_path / "device"), "--max-mib", "1"])
    target = sorted((tmp_path / "device").glob("*.whl"))
    requirements = (tmp_path / "device/requirements.txt").read_text()
    assert "left out (install with --no-deps): dask, distributed" in requirements
    selection = _selection(target)
    assert {"idh-pseudocolor", "kedro", "optuna", "kedro-mlflow", "nibabel"} <= selection
    never = {canonicalize_name(n) for n in [*box_names, *TORCH, *tool.DEVICE_LEAVE_OUT]}
    assert not selection & never, selection & never
    assert tool.total_mib(target) <= tool.DEVICE_MAX_MIB, tool.summary(target)
    # compiled wheels are the device's Python's (cp312) or any 3.x's (abi3)
    compiled = [w.name for w in target if not w.name.endswith("-none-any.whl")]
    assert compiled and all("cp312" in n or "abi3" in n for n in compiled), compiled

    host_dir = tmp_path / "host"
    host = build_wheelhouse(host_dir, skip=box_names, leave_out=tool.DEVICE_LEAVE_OUT)
    # the same selection, plus what markers add for this machine's older Python
    assert selection <= _selection(host)
    venv, env, held = new_box(tmp_path / "box", [*torch_closure(), *box_names])
    assert f"torch=={metadata.version('torch')}" in held
    assert not any(h.split("==")[0] in _selection(host) for h in held)
    # the device's command: benchmarks/device.sh with the box's python3 first on PATH
    results = tmp_path / "out"
    env = {
        **env,
        "OUT": str(results),
        "DEVICE_WHEELS": str(host_dir),
        "DEVICE_SITE": str(tmp_path / "site"),
        "DEVICE_TIMEOUT": "900",
    }
    done = subprocess.run(
        ["bash", REPO / "benchmarks/device.sh", "gpu_check", "--tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1000,
    )
    out = results / "gpu_check"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == [
        "phantom",
        "data_engineering",
        "configuration_15",
        "gpu_study",
    ]
    assert all(s["exit_code"] == 0 and s["seconds"] > 0 for s in summary["stages"].values())
    versions = summary["versions"]
    assert versions["torch"].split("+")[0] == metadata.version("torch").split("+")[0]
    assert versions["kedro"] == metadata.version("kedro")
    assert versions["idh_pseudocolor"] != "not installed"
    runs = summary["configuration_15"]
    assert sorted({(r["model_name"], r["seed"]) for r in runs}) == [
        (m, s) for m in ("test_byobnet", "test_resnet") for s in (42, 43, 44)
    ]
    assert all(r["epochs_run"] == 3 and 0 <= r["auroc"] <= 1 for r in runs)
    assert summary["gpu_study"]["runs"] and (out / "conf/local/parameters.yml").is_file()
    assert not (REPO / "data/rehearsal").exists() or not any(
        (REPO / "data/rehearsal").rglob("configuration_15/*")
    )
    # what the box held before the install (no kedro: that came with the wheels), and the check
    freeze = (results / "device_freeze.txt").read_text().lower()
    assert "torch==" in freeze and "kedro==" not in freeze
    # pip check saw the wheels' folder: the project's left-out requirements are named
    assert "simpleitk" in (results / "pip_check.txt").read_text().lower()
