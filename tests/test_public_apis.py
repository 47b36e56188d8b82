"""The package uses other projects through their public names only (one commented wrapper aside)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "idh_pseudocolor"
#: the one module allowed a private import: Optuna has no public heartbeat check (see its docstring)
WRAPPERS = {"optuna_compat.py"}


def private_imports(path: Path) -> list[str]:
    """``module:line name`` for every import of a leading-underscore module or name of another
    package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module != "__future__"
        ):
            if node.module.split(".")[0] == "idh_pseudocolor":
                continue
            names = [alias.name for alias in node.names]
            if any(part.startswith("_") for part in node.module.split(".")) or any(
                n.startswith("_") for n in names
            ):
                found.append(
                    f"{path.name}:{node.lineno} from {node.module} import {', '.join(names)}"
                )
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno} import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] != "idh_pseudocolor"
                and any(part.startswith("_") for part in alias.name.split("."))
            ]
    return found


def test_no_private_names_of_other_packages_are_imported():
    found = [
        hit
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in WRAPPERS
        for hit in private_imports(path)
    ]
    assert found == []


def test_the_check_finds_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from kedro.framework.hooks.manager import _NullPluginManager\n"
        "import optuna.storages._heartbeat\n"
    )
    assert len(private_imports(module)) == 2


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
