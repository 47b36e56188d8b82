"""The package uses other projects through their public names only (commented exceptions aside).

Flagged, in every module of the package (function-level imports included):

* a leading-underscore module or name of another package;
* a deep path where a shallower package of the same distribution exposes the very same object
  (``from kedro.runner.task import Task`` while ``kedro.runner.Task`` is that class);
* vendored code (a module path with a part named ``externals``, ``vendor``, ``_vendor`` or
  ``vendored``): another project's copy of a third project, which it may drop or replace;
* Lightning's progress-bar internals (``pytorch_lightning.callbacks.progress.*``,
  ``lightning.pytorch.callbacks.progress.*``): only the callbacks themselves are public, from
  ``pytorch_lightning.callbacks``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "idh_pseudocolor"
#: modules allowed a private import: Optuna has no public heartbeat check (see its docstring)
WRAPPERS = {"optuna_compat.py"}
#: single imports allowed where no public path exists, as (file name, module): joblib has no public
#: way to shut its reusable loky process pool down, and the DaskRunner must (a node's pool would
#: outlive a Kedro or Dask worker and hold it open at exit: parallel.stop_pool).
#: joblib's maintainers point users at this very call (joblib/joblib#945).
ALLOWED_IMPORTS = {("parallel.py", "joblib.externals.loky")}
VENDORED = {"externals", "vendor", "_vendor", "vendored"}
#: packages whose submodules are internal even where they have no leading underscore
INTERNAL_PACKAGES = (
    "pytorch_lightning.callbacks.progress",
    "lightning.pytorch.callbacks.progress",
)
_MISSING = object()


def shallower_public_path(module: str, name: str) -> str | None:
    """The shallowest package above ``module`` (of the same top-level package) whose attribute
    ``name`` is the very object ``module.name``; None if there is none (or it does not import).
    Only for modules three or more levels deep (``kedro.runner.task``): a documented two-level
    module such as ``nibabel.orientations`` or ``pytorch_lightning.callbacks`` is public."""
    if module.count(".") < 2:
        return None
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    parts = module.split(".")
    for depth in range(1, len(parts)):
        parent = ".".join(parts[:depth])
        try:
            if getattr(importlib.import_module(parent), name, _MISSING) is obj:
                return parent
        except ImportError:
            continue
    return None


def _internal_reason(dotted: str) -> str | None:
    parts = dotted.split(".")
    if any(part.startswith("_") for part in parts):
        return "private"
    if VENDORED & set(parts):
        return "vendored"
    if any(dotted == p or dotted.startswith(p + ".") for p in INTERNAL_PACKAGES):
        return "Lightning internals"
    return None


def internal_imports(path: Path, allowed: set[tuple[str, str]] = frozenset()) -> list[str]:
    """``file:line import ... (why)`` for every import of another package's private, vendored or
    internal module or name, and for every deep path whose object a shallower package exposes."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module
            if (
                node.level != 0
                or not module
                or module == "__future__"
                or module.split(".")[0] == "idh_pseudocolor"
                or (path.name, module) in allowed
            ):
                continue
            names = [alias.name for alias in node.names]
            where = f"{path.name}:{node.lineno} from {module} import {', '.join(names)}"
            reason = _internal_reason(module) or next(
                (r for n in names if (r := _internal_reason(n))), None
            )
            if reason:
                found.append(f"{where} ({reason})")
                continue
            for name in names:
                public = None if name == "*" else shallower_public_path(module, name)
                if public:
                    found.append(f"{where} ({name} is public as {public}.{name})")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "idh_pseudocolor" or (
                    (path.name, alias.name) in allowed
                ):
                    continue
                if reason := _internal_reason(alias.name):
                    found.append(f"{path.name}:{node.lineno} import {alias.name} ({reason})")
    return found


def private_imports(path: Path) -> list[str]:
    """The hits of :func:`internal_imports` that are leading-underscore modules or names."""
    return [hit for hit in internal_imports(path) if hit.endswith("(private)")]


def test_no_internal_paths_of_other_packages_are_imported():
    found = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in WRAPPERS
        for hit in internal_imports(path, ALLOWED_IMPORTS)
    ]
    assert found == []


def test_the_check_finds_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from kedro.framework.hooks.manager import _NullPluginManager\n"
        "import optuna.storages._heartbeat\n"
    )
    assert len(private_imports(module)) == 2


def test_the_check_finds_deep_vendored_and_lightning_internal_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from kedro.runner.task import Task\n"  # kedro.runner.Task is the same class
        "from distributed.diagnostics.plugin import WorkerPlugin\n"  # distributed.WorkerPlugin
        "from kedro.runner import Task\n"  # the public path: not flagged
        "from kedro.io.core import get_protocol_and_path\n"  # kedro.io lacks it: not flagged
        "from joblib.externals.loky import get_reusable_executor\n"
        "import joblib.externals.loky\n"
        "from pip._vendor import rich\n"
        "def f():\n"
        "    from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm\n"
        "    import lightning.pytorch.callbacks.progress.rich_progress\n"
        "from pytorch_lightning.callbacks import TQDMProgressBar\n"  # public: not flagged
    )
    found = internal_imports(module)
    assert found == [
        "m.py:1 from kedro.runner.task import Task (Task is public as kedro.runner.Task)",
        "m.py:2 from distributed.diagnostics.plugin import WorkerPlugin "
        "(WorkerPlugin is public as distributed.WorkerPlugin)",
        "m.py:5 from joblib.externals.loky import get_reusable_executor (vendored)",
        "m.py:6 import joblib.externals.loky (vendored)",
        "m.py:7 from pip._vendor import rich (private)",
        "m.py:9 from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm "
        "(Lightning internals)",
        "m.py:10 import lightning.pytorch.callbacks.progress.rich_progress (Lightning internals)",
    ]
    # an allowance names one import of one file, not the file
    allowed = internal_imports(module, {("m.py", "joblib.externals.loky")})
    assert len(allowed) == len(found) - 2 and not any("joblib" in hit for hit in allowed)


def test_worker_tasks_get_a_hook_manager_that_knows_kedros_node_hooks_and_runs_none():
    from idh_pseudocolor.runner import worker_hook_manager

    manager = worker_hook_manager()
    assert manager.get_plugins() == set()
    assert (
        manager.hook.before_node_run(
            node=None, catalog=None, inputs={}, is_async=False, run_id=None
        )
        == []
    )
    assert manager.hook.after_dataset_loaded(dataset_name="a", data=1, node=None) == []
