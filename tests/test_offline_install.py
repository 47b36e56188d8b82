"""The project installs offline from a wheelhouse into an environment that already has its own
torch, as on a GPU box: nothing is downloaded at install time and that torch stays as it was.

The "box" is a fresh venv into which torch, torchvision and everything they need are hard-linked
from this environment (their RECORD files, dist-info included), so pip sees them installed;
then ``pip install --no-index`` from the wheelhouse, the phantom generator and a real
``kedro run`` of data_engineering run with that venv's own executables.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parents[1]


def _load_tool(path: Path):
    """tools/wheelhouse.py, a developer tool outside the package, as a module (registered
    before it runs: its dataclasses look their module up in sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"_tools_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wheelhouse_tool = _load_tool(REPO / "tools" / "wheelhouse.py")
TORCH = wheelhouse_tool.TORCH
build_wheelhouse = wheelhouse_tool.build_wheelhouse
closure = wheelhouse_tool.closure
target_environment = wheelhouse_tool.target_environment


def _offline_env(venv: Path) -> dict[str, str]:
    """This process's environment with no pip settings (no index, no find-links, no
    constraints from the machine's config) and the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIP_")
        and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        KEDRO_DISABLE_TELEMETRY="1",
        DO_NOT_TRACK="1",
        MPLBACKEND="Agg",
    )
    return env


def _run(args: list[str | Path], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _preinstall_torch(venv: Path, env: dict[str, str]) -> list[str]:
    """Hard-link (or copy) the installed files of torch, torchvision and their whole closure into
    the venv's site-packages, replacing any of them the venv came with (setuptools)."""
    site = Path(
        _run(
            [
                venv / "bin/python",
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            env,
        ).strip()
    )
    pins = closure([Requirement(name) for name in sorted(TORCH)], target_environment(), exclude=())
    names = {canonicalize_name(p.name) for p in pins}
    own = [d.name.split("-")[0] for d in site.glob("*.dist-info")]
    clash = [name for name in own if canonicalize_name(name) in names]
    if clash:
        _run([venv / "bin/python", "-m", "pip", "uninstall", "--yes", *clash], env)
    for pin in pins:
        dist = metadata.distribution(pin.name)
        base = Path(dist.locate_file(""))
        assert dist.files, f"{pin} has no RECORD"
        for file in dist.files:
            source = Path(dist.locate_file(file))
            rel = os.path.relpath(source, base)
            # console scripts in bin/, stale entries
            if rel.startswith("..") or not source.is_file():
                continue
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, dest)
            except OSError:
                shutil.copy2(source, dest)
    return sorted(str(p) for p in pins)


def test_offline_install_beside_preinstalled_torch(tmp_path, kedro_project):
    wheelhouse = tmp_path / "wheelhouse"
    wheels = build_wheelhouse(wheelhouse, project=REPO)
    names = {str(parse_wheel_filename(w.name)[0]) for w in wheels}
    assert "idh-pseudocolor" in names and "kedro" in names
    assert not names & TORCH and not [
        n for n in names if n.startswith(("nvidia-", "triton", "cuda-"))
    ], names
    assert (wheelhouse / "requirements.txt").is_file()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = _offline_env(venv)
    preinstalled = _preinstall_torch(venv, env)
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
