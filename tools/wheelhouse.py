"""A folder of wheels that installs this project offline beside a torch the box already has.

A GPU box usually brings its own torch (built for its CUDA) and torchvision, and often has no
internet. ``pip install --no-index --find-links DIR idh_pseudocolor`` then needs every other
wheel in DIR, and nothing that would replace the box's torch. This tool (``make wheelhouse``)
collects them on an online machine:

* this project's wheel (``pip wheel --no-deps``);
* the closure of its requirements (plus the extras asked for), read from the metadata of the
  distributions installed here, with markers evaluated for the target Python; the walk never
  enters torch or torchvision (the box has them and what they need) nor the names skipped
  (the box has those too), so a wheel that only they pull in is left out;
* each pinned to the version installed here: the box gets what was tested, and no resolver
  has to agree with PyPI on the day.

Wheels are downloaded for the target (``--python-version``, ``--platform``); a package with
no wheel on PyPI (sdist only) is built here, and must then be pure Python.

    .venv/bin/python tools/wheelhouse.py --out dist/wheelhouse --python-version 3.12 \\
        --platform manylinux2014_x86_64 --skip numpy pandas --extras explain
"""

from __future__ import annotations

import argparse
import email.parser
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

# The box's own builds: never downloaded, never walked into (their CUDA wheels are GBs).
TORCH = frozenset({"torch", "torchvision"})
# Newest glibc a manylinux target is assumed to have: today's numpy/scipy wheels are
# manylinux_2_27/2_28 only, and every current CUDA image has glibc >= 2.28.
MANYLINUX_GLIBC_MAX = 28
# The device machines lent for GPU checks (docs/benchmarks.md): their Python and platform, the
# packages their image holds, and what one call may carry (64 MiB with the working tree, ~3 MiB).
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORM = "manylinux2014_x86_64"
DEVICE_PACKAGES = REPO / "tools" / "device_packages.txt"
# Never imported by benchmarks/gpu_check.py's stages (phantom, data_engineering, one sweep
# configuration, gpu_study): registration (SimpleITK alone is 52 MB), Optuna's plots, PostgreSQL,
# Dask. tests/test_offline_install.py runs the GPU check without them.
DEVICE_LEAVE_OUT = ("simpleitk", "plotly", "psycopg", "psycopg-binary", "dask", "distributed")
DEVICE_MAX_MIB = 60.0
_MANYLINUX = re.compile(r"manylinux(?:1|2010|2014|_\d+_\d+)_(\w+)")
_NO_WHEEL = re.compile(r"No matching distribution found for (\S+)")


@dataclass(frozen=True)
class Pin:
    """One distribution of the closure, at the version installed here."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def platform_tags(platform: str | None) -> list[str]:
    """pip ``--platform`` values for ``platform``. A manylinux tag (any spelling) stands for
    "a manylinux box of that architecture": pip does not expand legacy aliases to the PEP 600
    tags that current wheels carry, so every tag up to glibc 2.MANYLINUX_GLIBC_MAX is listed."""
    if not platform:
        return []
    match = _MANYLINUX.fullmatch(platform)
    if not match:
        return [platform]
    arch = match.group(1)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(MANYLINUX_GLIBC_MAX, 4, -1)]
    return tags + [f"manylinux{legacy}_{arch}" for legacy in ("2014", "2010", "1")]


def target_environment(
    python_version: str | None = None, platform: str | None = None
) -> dict[str, str]:
    """Marker environment of the target: this machine's, with the target's Python version
    and, for a Linux platform tag, its architecture (markers decide which dependencies exist)."""
    env = dict(default_environment())
    if python_version:
        parts = python_version.split(".")
        env["python_version"] = ".".join(parts[:2])
        env["python_full_version"] = python_version if len(parts) > 2 else f"{python_version}.0"
    if platform and "linux" in platform:
        env.update(sys_platform="linux", platform_system="Linux", os_name="posix")
        match = _MANYLINUX.fullmatch(platform) or re.fullmatch(r"linux_(\w+)", platform)
        if match:
            env["platform_machine"] = match.group(1)
    return env


def _applies(requirement: Requirement, env: Mapping[str, str], extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**env, "extra": extra})


def closure(
    requirements: Iterable[Requirement],
    env: Mapping[str, str],
    exclude: Collection[str] = TORCH,
    extras: Collection[str] = (),
) -> list[Pin]:
    """Every installed distribution the requirements need on the target, transitively, pinned
    to its installed version; ``exclude`` (canonical names) is neither pinned nor walked into.

    ``extras`` are the extras of the top-level requirements' owner (the project); the
    requirements' own ``[extra]`` selections are followed further down. A needed distribution
    that is not installed here is an error: its version could not be pinned."""
    exclude = {canonicalize_name(name) for name in exclude}
    found: dict[str, metadata.Distribution] = {}
    expanded: set[tuple[str, str]] = set()
    missing: list[str] = []
    queue = [r for r in requirements if any(_applies(r, env, e) for e in ("", *extras))]
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        if name in exclude:
            continue
        if name not in found:
            try:
                found[name] = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(str(requirement))
                continue
        dist = found[name]
        if requirement.specifier and not requirement.specifier.contains(
            dist.version, prereleases=True
        ):
            raise RuntimeError(
                f"{requirement} is needed, "
                f"but {dist.metadata['Name']} {dist.version} is installed here"
            )
        for extra in ("", *sorted(canonicalize_name(e) for e in requirement.extras)):
            if (name, extra) in expanded:
                continue
            expanded.add((name, extra))
            queue += [r for r in map(Requirement, dist.requires or []) if _applies(r, env, extra)]
    if missing:
        raise RuntimeError(
            "needed on the target but not installed here, so no version to pin: "
            + ", ".join(sorted(set(missing)))
            + " (install the project with these extras here, on the target's Python version)"
        )
    return sorted(
        (Pin(d.metadata["Name"], d.version) for d in found.values()), key=lambda p: p.name.lower()
    )


def wheel_requirements(wheel: Path, extras: Collection[str] = ()) -> list[Requirement]:
    """``Requires-Dist`` of a built wheel: exactly what pip will ask for on the box. An extra
    the wheel does not provide is an error (a typo would silently leave its wheels out)."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(
            n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1
        )
        message = email.parser.Parser().parsestr(archive.read(meta).decode())
    provided = {canonicalize_name(e) for e in message.get_all("Provides-Extra") or []}
    unknown = {canonicalize_name(e) for e in extras} - provided
    if unknown:
        raise RuntimeError(
            f"{wheel.name} has no extra {', '.join(sorted(unknown))} "
            f"(it has: {', '.join(sorted(provided))})"
        )
    return [Requirement(line) for line in message.get_all("Requires-Dist") or []]


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def build_project_wheel(project: Path, out: Path) -> Path:
    """This project's wheel, built from a copy of its sources: an in-tree build keeps a
    ``build/`` folder whose stale modules would end up in later wheels."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "project"
        copy.mkdir()
        for name in (
            "pyproject.toml",
            "setup.cfg",
            "setup.py",
            "README.md",
            "LICENSE",
            "MANIFEST.in",
        ):
            if (project / name).exists():
                shutil.copy2(project / name, copy / name)
        shutil.copytree(
            project / "src",
            copy / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
        )
        before = set(out.glob("*.whl"))
        _checked(
            _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(copy)),
            f"building the wheel of {project}",
        )
    (wheel,) = set(out.glob("*.whl")) - before
    return wheel


def download(
    pins: Sequence[Pin], out: Path, python_version: str | None, platform: str | None
) -> list[Pin]:
    """Wheels of ``pins`` for the target into ``out``; the pins with no wheel on the index are
    built here instead (pure Python only, since they could not run elsewhere otherwise).
    Returns the pins that were built."""
    target = ["--only-binary=:all:"]
    if python_version:
        target += ["--python-version", python_version, "--implementation", "cp"]
    for tag in platform_tags(platform):
        target += ["--platform", tag]
    todo, built = list(pins), []
    while todo:  # pip stops at the first pin with no wheel: set it aside and go on
        result = _pip("download", "--no-deps", "--dest", str(out), *target, *map(str, todo))
        if result.returncode == 0:
            break
        match = _NO_WHEEL.search(result.stderr)
        pin = next(
            (
                p
                for p in todo
                if match
                and canonicalize_name(match.group(1).split("==")[0]) == canonicalize_name(p.name)
            ),
            None,
        )
        if pin is None:
            _checked(result, "pip download")
        todo.remove(pin)
        built.append(pin)
    for pin in built:
        before = set(out.glob("*.whl"))
        _checked(
            _pip("wheel", "--no-deps", "--wheel-dir", str(out), str(pin)),
            f"building a wheel of {pin}",
        )
        for wheel in set(out.glob("*.whl")) - before:
            if not wheel.name.endswith("-none-any.whl") and (python_version or platform):
                raise RuntimeError(
                    f"{pin} has no wheel for the target and "
                    f"builds a compiled one here ({wheel.name})"
                )
    return built


def build_wheelhouse(
    out: Path,
    project: Path = REPO,
    python_version: str | None = None,
    platform: str | None = None,
    skip: Iterable[str] = (),
    extras: Iterable[str] = (),
    leave_out: Iterable[str] = (),
) -> list[Path]:
    """Fill ``out`` (its old wheels removed) with this project's wheel and its dependencies'
    for the target, minus torch, torchvision and ``skip`` (the box has them); writes
    ``out/requirements.txt`` with the pins. ``leave_out``: distributions the box lacks but the
    intended use never imports (the GPU check does not read DICOM): neither pinned nor walked
    into, so ``pip install --no-deps`` is the only way to install such a folder. Returns the
    wheels."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    project_wheel = build_project_wheel(project.resolve(), out)
    extras = [canonicalize_name(e) for e in extras]
    skipped = {canonicalize_name(name) for name in skip}
    left_out = {canonicalize_name(name) for name in leave_out}
    pins = closure(
        wheel_requirements(project_wheel, extras),
        target_environment(python_version, platform),
        exclude=TORCH | skipped | left_out,
        extras=extras,
    )
    note = f"; left out (install with --no-deps): {', '.join(sorted(left_out))}" if left_out else ""
    (out / "requirements.txt").write_text(
        f"# {project_wheel.name}'s dependencies"
        f"{' with [' + ','.join(extras) + ']' if extras else ''}, "
        "pinned to the versions they were tested with; "
        f"the box's own, not here: {', '.join(sorted(TORCH | skipped))}{note}\n"
        + "".join(f"{pin}\n" for pin in pins)
    )
    built = download(pins, out, python_version, platform)
    wheels = sorted(out.glob("*.whl"))
    for pin in built:
        _say(f"built here (no wheel on the index): {pin}")
    return wheels


def read_names(path: Path) -> list[str]:
    """Distribution names, one per line; ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def total_mib(wheels: Sequence[Path]) -> float:
    return sum(w.stat().st_size for w in wheels) / 2**20


def _say(text: str) -> None:
    print(text)  # a command-line tool's report


def summary(wheels: Sequence[Path]) -> str:
    """Count and size of the wheels, with the largest named: what a transfer limit cares about."""
    sizes = sorted(((w.stat().st_size, w.name) for w in wheels), reverse=True)
    total = sum(size for size, _ in sizes)
    largest = "".join(f"  {size / 1e6:7.2f} MB  {name}\n" for size, name in sizes[:10])
    return (
        "largest:\n"
        f"{largest}{len(sizes)} wheels, {total / 1e6:.1f} MB ({total / 2**20:.1f} MiB) in all"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python tools/wheelhouse.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="Folder for the wheels (its old wheels are removed).",
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="Project root to build the wheel of (default: this repository).",
    )
    parser.add_argument(
        "--python-version", help="Target Python, e.g. 3.12 (default: this interpreter's)."
    )
    parser.add_argument(
        "--platform", help="Target platform tag, e.g. manylinux2014_x86_64 (default: this machine)."
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], help="Distributions the target already has."
    )
    parser.add_argument(
        "--device",
        action="store_true",
        help="The GPU check's wheels for the device machines: their Python and platform, "
        f"--skip-file {DEVICE_PACKAGES.relative_to(REPO)}, "
        f"--leave-out {' '.join(DEVICE_LEAVE_OUT)}, "
        f"--max-mib {DEVICE_MAX_MIB:g} (an option given replaces its default).",
    )
    parser.add_argument(
        "--skip-file",
        type=Path,
        help="A file of distributions the target already has, one per line (added to --skip).",
    )
    parser.add_argument(
        "--leave-out",
        nargs="*",
        default=[],
        help="Distributions the intended use never imports (install the folder with --no-deps).",
    )
    parser.add_argument(
        "--max-mib",
        type=float,
        help="Fail if the wheels weigh more (a transfer limit, e.g. a device's carry).",
    )
    parser.add_argument(
        "--extras",
        nargs="*",
        default=[],
        help="Extras of this project to include, e.g. explain viz.",
    )
    args = parser.parse_args(argv)
    if args.device:
        args.python_version = args.python_version or DEVICE_PYTHON
        args.platform = args.platform or DEVICE_PLATFORM
        args.skip_file = args.skip_file or DEVICE_PACKAGES
        args.leave_out = args.leave_out or list(DEVICE_LEAVE_OUT)
        args.max_mib = DEVICE_MAX_MIB if args.max_mib is None else args.max_mib
    skip = [*args.skip, *(read_names(args.skip_file) if args.skip_file else [])]
    try:
        wheels = build_wheelhouse(
            args.out,
            args.project,
            args.python_version,
            args.platform,
            skip,
            args.extras,
            args.leave_out,
        )
    except RuntimeError as err:
        raise SystemExit(f"wheelhouse: {err}") from err
    _say(f"{summary(wheels)} -> {args.out}")
    if args.max_mib is not None and total_mib(wheels) > args.max_mib:
        raise SystemExit(
            f"wheelhouse: {total_mib(wheels):.1f} MiB is over --max-mib {args.max_mib:g}: "
            f"{args.out} is too large to carry"
        )
    if args.leave_out:
        _say(
            "on the box: pip install --no-index --no-deps --no-compile --target SITE "
            f"{args.out}/*.whl, then PYTHONPATH=SITE (the device machines: benchmarks/device.sh)"
        )
    else:
        _say(f"on the box: pip install --no-index --find-links {args.out} idh_pseudocolor")


if __name__ == "__main__":
    main()
