"""The package's shape, read from its imports: no import circle, no pipeline reaching into another
pipeline's nodes, no Kedro in the science modules, and a module map that names every module."""

from __future__ import annotations

import ast
from pathlib import Path

import idh_pseudocolor

SRC = Path(idh_pseudocolor.__file__).parent
#: the modules that are Kedro's glue: everything else is plain, testable science
KEDRO_GLUE = {
    "config_loader",
    "hooks",
    "settings",
    "runner",
    "worker_logging",
    "pipeline_registry",
    "datasets",
    "pipelines",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module this file imports (at import time or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def package_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in src.rglob("*.py")}
    return {
        name: {m for m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_no_module_imports_itself_through_others():
    assert cycles(package_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_pipeline_imports_another_pipelines_nodes():
    crossing = [
        f"{name} -> {dep}"
        for name, deps in package_graph().items()
        if name.startswith("idh_pseudocolor.pipelines.")
        for dep in deps
        if dep.startswith("idh_pseudocolor.pipelines.")
        and dep.endswith(".nodes")
        and dep.split(".")[2] != name.split(".")[2]
    ]
    assert crossing == []


def test_the_science_modules_do_not_import_kedro():
    kedro_users = [
        name
        for name, path in ((module_name(p), p) for p in SRC.rglob("*.py"))
        if name.split(".")[1:2] and name.split(".")[1] not in KEDRO_GLUE
        if any(m == "kedro" or m.startswith("kedro.") for m in imports(path))
    ]
    assert kedro_users == []


def test_the_module_map_names_every_module():
    """The package docstring is a new contributor's map: every top-level module is on it."""
    top_level = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
        or (p.is_dir() and (p / "__init__.py").exists())
    }
    unnamed = sorted(m for m in top_level if f"``{m}``" not in idh_pseudocolor.__doc__)
    assert unnamed == []
