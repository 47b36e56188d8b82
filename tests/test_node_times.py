"""tools/node_times.py on the log of a real `kedro run` under ParallelRunner (two workers)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time

from tests.box import REPO, load_tool

node_times = load_tool(REPO / "tools" / "node_times.py")
kind, main, read_log = node_times.kind, node_times.main, node_times.read_log

SLEEP_S = 1.5

# A node "wait" and two namespaced copies of it (their log lines all say "wait"; the plain one
# three times as long), three ready nodes on two workers; then a node whose name has no
# namespace but whose output does (as the project's external_quality), then one more, then one
# without a name.
RUN = f"""
import kedro.framework.project  # applies conf/logging.yml: one line a record, whole seconds
from kedro.io import MemoryDataset, SharedMemoryDataCatalog
from kedro.pipeline import node, pipeline
from kedro.runner import ParallelRunner
from tests.test_node_times import label, wait

part = pipeline([node(wait, "start", "slept", name="wait")])
parts = (
    pipeline([node(wait, "long", "slept_long", name="wait")])
    + pipeline(part, namespace="part_1", inputs="start")
    + pipeline(part, namespace="part_12", inputs="start")
)
after = pipeline([
    node(wait, ["part_1.slept", "part_12.slept", "slept_long"], "later.slept", name="after_parts"),
    node(wait, "later.slept", "done", name="last"),
    node(label, "done", "text"),  # no name: Kedro's log names it by its signature
])
catalog = SharedMemoryDataCatalog(
    {{"start": MemoryDataset({SLEEP_S}), "long": MemoryDataset({3 * SLEEP_S})}}
)
ParallelRunner(max_workers=2).run(parts + after, catalog)
"""


def wait(seconds: float, *more: float) -> float:
    """A node that is busy ``seconds`` (a pickled name, so worker processes can import it)."""
    time.sleep(seconds)
    return seconds


def label(value: float) -> str:
    return str(value)


def test_busy_seconds_and_the_bound_from_a_parallel_kedro_run(tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if k not in ("KEDRO_LOGGING_CONFIG", "COLUMNS")}
    done = subprocess.run(
        [sys.executable, "-c", RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    times = read_log(done.stdout)

    # every node found with its namespace, none left without a start; the one given no name
    # under the name Kedro makes up for it (its log line has none)
    unnamed = [n for n in times.nodes if re.fullmatch(r"label__[0-9a-f]{8}", n.name)]
    assert len(unnamed) == 1 and unnamed[0].seconds <= 1.0, times.nodes
    assert sorted(n.name for n in times.nodes if n not in unnamed) == [
        "after_parts",
        "last",
        "part_1.wait",
        "part_12.wait",
        "wait",
    ], done.stdout
    assert times.unmatched == []
    # each busy about as long as it slept (the log's whole seconds, and the hand-over of the
    # result to the driver), the plain "wait" matched to its own start, not to a copy's
    slept = {"wait": 3 * SLEEP_S}
    for n in times.nodes:
        if n not in unnamed:
            assert -1.0 <= n.seconds - slept.get(n.name, SLEEP_S) <= 2.0, times.nodes
    # three ready nodes, two workers: two of them ran side by side (which two varies)
    spans = {
        n.name: (n.started.timestamp(), n.started.timestamp() + n.seconds) for n in times.nodes
    }
    assert any(
        max(spans[a][0], spans[b][0]) < min(spans[a][1], spans[b][1])
        for a, b in itertools.combinations(("wait", "part_1.wait", "part_12.wait"), 2)
    ), spans
    # the two copies summed under one kind
    assert times.by_kind()["part_*.wait"][0] == 2
    assert kind("fallback_slot_3.train_fallbacks") == "fallback_slot_*.train_fallbacks"
    assert kind("plot_figure_1") == "plot_figure_1"
    # two workers: the run cannot beat busy / 2 (worker start-up comes on top)
    assert times.pipeline_seconds is not None
    assert times.busy_seconds / 2 <= times.pipeline_seconds + 1

    log = tmp_path / "run.log"
    log.write_text(done.stdout)
    assert main([str(log), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "lower bound on 2 workers" in printed and "part_*.wait" in printed

    # a node whose start is missing from the log is listed, not counted as zero
    cut = "\n".join(line for line in done.stdout.splitlines() if "Running node: last:" not in line)
    assert read_log(cut).unmatched == ["last"]
    log.write_text(cut)
    assert main([str(log)]) == 0 and "no start found for: last" in capsys.readouterr().out
    # a dataset of namespace "part_1", not one of "subpart_1"
    assert node_times._names_dataset_in("wait([start]) -> [part_1.slept]", "part_1")
    assert not node_times._names_dataset_in("wait([start]) -> [subpart_1.slept]", "part_1")


def test_a_log_without_completed_nodes_is_refused(tmp_path, capsys):
    log = tmp_path / "empty.log"
    log.write_text("2026-12-07 16:22:18 INFO    kedro.framework.session: nothing ran\n")
    assert main([str(log)]) == 1
    assert "no completed node" in capsys.readouterr().err
