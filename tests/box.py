"""A stand-in for a GPU box on this machine: a fresh venv that already "has" some packages
(hard-linked from this environment, dist-info included, so pip and importlib see them
installed), driven with no pip settings and no network index. Used by the offline-install and
device-wheels tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def load_tool(path: Path):
    """A developer tool under tools/ (outside the package) as a module, registered before it
    runs: its dataclasses look their module up in sys.modules."""
    spec = importlib.util.spec_from_file_location(f"_tools_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wheelhouse_tool = load_tool(REPO / "tools" / "wheelhouse.py")


def offline_env(venv: Path) -> dict[str, str]:
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


def run(args: list[str | Path], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def site_packages(venv: Path, env: dict[str, str]) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(run([venv / "bin/python", "-c", code], env).strip())


def torch_closure() -> list[str]:
    """torch, torchvision and everything they need, as installed here (canonical names)."""
    pins = wheelhouse_tool.closure(
        [Requirement(name) for name in sorted(wheelhouse_tool.TORCH)],
        wheelhouse_tool.target_environment(),
        exclude=(),
    )
    return sorted({canonicalize_name(p.name) for p in pins})


def preinstall(venv: Path, env: dict[str, str], names: Iterable[str]) -> list[str]:
    """Hard-link (or copy) the installed files of the distributions ``names`` that this
    environment has into the venv's site-packages, replacing any of them the venv came with
    (setuptools). Returns them as ``name==version``."""
    site = site_packages(venv, env)
    wanted = {canonicalize_name(n) for n in names}
    here = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name in wanted and name not in here:
            here[name] = dist
    own = [d.name.split("-")[0] for d in site.glob("*.dist-info")]
    clash = [name for name in own if canonicalize_name(name) in here]
    if clash:
        run([venv / "bin/python", "-m", "pip", "uninstall", "--yes", *clash], env)
    for dist in here.values():
        base = Path(dist.locate_file(""))
        assert dist.files, f"{dist.metadata['Name']} has no RECORD"
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
    return sorted(f"{name}=={dist.version}" for name, dist in here.items())


def new_box(path: Path, names: Iterable[str]) -> tuple[Path, dict[str, str], list[str]]:
    """A fresh venv at ``path`` holding ``names`` (and nothing else but pip): the venv, its
    offline environment and what was put in it."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    env = offline_env(path)
    return path, env, preinstall(path, env, names)
