"""make mutation: mutation testing of the modules that shape the reported numbers.

Each module is mutated by mutmut (``[tool.mutmut]`` in pyproject.toml: the fork server, the
patterns left unmutated) and judged by *its own* unit tests (MODULE_TESTS below), in a
throw-away copy of the project under ``.mutation/<module>/``: a mutant of ``splits`` is not run
against the training tests that merely call it, which keeps the whole run within half an hour on
two cores. Prints, per module, mutants killed / tested (the score), the ones without a covering
test, and every surviving mutant with its diff; writes the same to ``.mutation/results.md``.

    .venv/bin/python tools/mutation.py                 # every module
    .venv/bin/python tools/mutation.py splits metrics  # some
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"
BIN = Path(sys.executable).parent

#: module (under src/idh_pseudocolor) -> the tests that are about it
MODULE_TESTS: dict[str, list[str]] = {
    "metrics": [
        "tests/test_metrics.py",
        # Table 2's numbers against scikit-learn, and the paired test of the two arms
        "tests/test_report_stats.py::test_table_2_metrics_match_scikit_learn",
        "tests/test_report_stats.py::test_paired_comparison_of_pretrained_and_scratch",
    ],
    "permutation_study": ["tests/test_permutation_study.py"],
    "splits": ["tests/test_splits.py"],
    "configurations": ["tests/test_configurations.py"],
    "pseudocolor": ["tests/test_pseudocolor.py"],
    "slices": ["tests/test_slices.py"],
    "training": [
        "tests/test_training.py",
        # slow, and about what a run prints, refuses or compiles, not its numbers (make test
        # runs them)
        "--deselect=tests/test_training.py::"
        "test_the_epoch_bar_is_drawn_where_a_person_watches_and_nowhere_else",
        "--deselect=tests/test_training.py::"
        "test_importing_the_training_module_changes_no_logging_or_warnings_state",
        "--deselect=tests/test_training.py::"
        "test_torch_compile_is_optional_and_keeps_timm_weight_names",
        "--deselect=tests/test_training.py::"
        "test_requested_but_unavailable_weights_fail_fast_with_instructions",
        "--deselect=tests/test_training.py::test_one_training_step_of_the_paper_architectures",
    ],
    "report/stats": [
        "tests/test_report_stats.py",
        # the undefined resamples' count in Table 2 and the report's note on it
        "tests/test_metrics.py::"
        "test_undefined_resamples_are_counted_and_the_interval_comes_from_the_others",
        "tests/test_reporting_html.py",
        "tests/test_figures.py",
    ],
}

DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({n: get_diff_for_mutant(n, path=sys.argv[1]) for n in names}))
"""

#: mutmut's exit codes -> status
STATUS = {
    0: "survived",
    1: "killed",
    3: "killed",
    -24: "timeout",  # SIGXCPU: the CPU limit
    24: "timeout",
    -9: "timeout",  # SIGKILL one second after it
    33: "no tests",
}


def config_for(module: str, base: str) -> str:
    """pyproject.toml with [tool.mutmut] narrowed to one module and its tests."""
    section = re.search(r"^\[tool\.mutmut\]\n(.*?)(?=^\[)", base, flags=re.S | re.M)
    if section is None:
        raise SystemExit("pyproject.toml has no [tool.mutmut] section")
    kept = re.sub(
        r"^(only_mutate|pytest_add_cli_args_test_selection) = \[.*?^\]\n",
        "",
        section.group(1),
        flags=re.S | re.M,
    )
    narrowed = (
        f'only_mutate = ["src/idh_pseudocolor/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(MODULE_TESTS[module])}\n"
    )
    return base.replace(section.group(0), "[tool.mutmut]\n" + narrowed + kept)


def prepare(module: str) -> Path:
    work = WORK / module.replace("/", "_")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in ("src", "tests", "conf"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    base = (REPO / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(config_for(module, base))
    return work


def results(work: Path, module: str) -> dict:
    meta = json.loads((work / f"mutants/src/idh_pseudocolor/{module}.py.meta").read_text())
    statuses = {k: STATUS.get(v, f"exit {v}") for k, v in meta["exit_code_by_key"].items()}
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survived = sorted(k for k, s in statuses.items() if s == "survived")
    # every diff from one process (mutmut show would start one per mutant)
    shown = subprocess.run(
        [str(BIN / "python"), "-c", DIFFS, f"src/idh_pseudocolor/{module}.py"],
        cwd=work,
        input=json.dumps(survived),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    diffs = {
        name: "\n".join(
            line
            for line in diff.splitlines()
            if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
        )
        for name, diff in json.loads(shown).items()
    }
    tested = counts.get("killed", 0) + counts.get("survived", 0) + counts.get("timeout", 0)
    return {
        "counts": counts,
        "tested": tested,
        "score": (counts.get("killed", 0) + counts.get("timeout", 0)) / tested if tested else 0,
        "survived": diffs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULE_TESTS))
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    # one thread per mutant: --max-children mutants side by side already fill the cores, and the
    # CPU-time limit on each mutant then means what it says
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # joblib in the mutant's own process: each mutant's loky workers outlive it (idle for
        # 5 minutes), and hundreds of them filled 20 GB within two minutes of the slices run
        "JOBLIB_MULTIPROCESSING": "0",
    }
    report = [f"# make mutation: {time.strftime('%Y-%m-%d %H:%M')}\n"]
    table = ["| module | killed / tested | score | no tests | minutes |", "|---|---|---|---|---|"]
    started_all = time.time()
    for module in args.modules:
        work = prepare(module)
        started = time.time()
        print(f"== {module}: mutmut run ({' '.join(MODULE_TESTS[module])})", flush=True)
        done = subprocess.run(
            [str(BIN / "mutmut"), "run", "--max-children", str(args.max_children)],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"mutmut failed on {module} (exit {done.returncode})")
        minutes = (time.time() - started) / 60
        r = results(work, module)
        killed = r["counts"].get("killed", 0) + r["counts"].get("timeout", 0)
        line = (
            f"| {module} | {killed} / {r['tested']} | {100 * r['score']:.1f}% | "
            f"{r['counts'].get('no tests', 0)} | {minutes:.1f} |"
        )
        table.append(line)
        print(line, flush=True)
        report.append(f"\n## {module}: {len(r['survived'])} surviving\n")
        for name, diff in r["survived"].items():
            report.append(f"\n`{name}`\n```diff\n{diff}\n```\n")
    table.append(f"\nAll modules: {(time.time() - started_all) / 60:.1f} minutes.")
    text = "\n".join(table) + "\n" + "".join(report)
    (WORK / "results.md").write_text(text)
    print("\n".join(table))
    print(f"surviving mutants and their diffs: {WORK / 'results.md'}")


if __name__ == "__main__":
    main()
