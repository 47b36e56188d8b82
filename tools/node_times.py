"""Where a `kedro run`'s time went, read from its log: each node's busy seconds, summed by kind.

Why: on a box with W workers a run cannot end sooner than (the nodes' busy seconds) / W, however
it is scheduled. Set against the pipeline time Kedro reports, that bound says whether a faster
run needs better scheduling (idle workers) or less work (issue 24: `make run` on two cores).

A node is busy from Kedro's ``Running node:`` record (written where the node runs, a worker
process under ParallelRunner) to the runner's ``Completed node:`` record; the log's timestamps
(conf/logging.yml: whole seconds) make each time good to about a second. Namespaced copies of one
node (``configuration_22.train_configuration``) are summed under one kind
(``configuration_*.train_configuration``).

    make run | tee run.log            # or: kedro run ... > run.log
    .venv/bin/python tools/node_times.py run.log --workers 2
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
#: Kedro's str(node): "name: func([inputs]) -> [outputs]" (the name without its namespace), or
#: without "name: " for a node given no name
_RUNNING = re.compile(_STAMP + r".*?Running node: (?:(?P<name>[^:\s(]+): )?(?P<signature>.*)$")
_COMPLETED = re.compile(_STAMP + r".*?Completed node: (?P<name>\S+)\s*$")
#: Kedro's name for a node given none: its function's name and a hash
_UNNAMED = re.compile(r"(?P<func>\w+)__[0-9a-f]{8}")
_DIGITS = re.compile(r"\d+")
_PIPELINE = re.compile(r"Pipeline execution completed successfully in (?P<s>[\d.]+) sec")


@dataclass(frozen=True)
class NodeTime:
    name: str  # as Kedro names it, namespace included
    started: datetime
    seconds: float


@dataclass(frozen=True)
class RunTimes:
    nodes: list[NodeTime]
    pipeline_seconds: float | None  # what Kedro reported; None if the run did not finish
    unmatched: list[str]  # completed nodes whose start the log does not show

    @property
    def busy_seconds(self) -> float:
        return sum(n.seconds for n in self.nodes)

    def by_kind(self) -> dict[str, tuple[int, float]]:
        """Kind -> (nodes, busy seconds), busiest first."""
        kinds: dict[str, list[float]] = defaultdict(list)
        for n in self.nodes:
            kinds[kind(n.name)].append(n.seconds)
        return dict(sorted(((k, (len(v), sum(v))) for k, v in kinds.items()), key=_busiest))


def _busiest(item: tuple[str, tuple[int, float]]) -> tuple[float, str]:
    return -item[1][1], item[0]


def kind(name: str) -> str:
    """``configuration_22.train_configuration`` -> ``configuration_*.train_configuration``."""
    namespace, _, base = name.rpartition(".")
    return f"{_DIGITS.sub('*', namespace)}.{base}" if namespace else base


def _time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")


def read_log(text: str) -> RunTimes:
    """The busy time of every node that completed in ``text`` (a `kedro run`'s output)."""
    starts: list[tuple[str | None, str, datetime]] = []  # (name, the rest of the line, when)
    completed: list[tuple[str, datetime]] = []
    pipeline_seconds = None
    for line in text.splitlines():  # splits at progress bars' carriage returns too
        if m := _RUNNING.search(line):
            starts.append((m["name"], m["signature"], _time(m["at"])))
        elif m := _COMPLETED.search(line):
            completed.append((m["name"], _time(m["at"])))
        elif m := _PIPELINE.search(line):
            pipeline_seconds = float(m["s"])
    begun = _match(starts, completed)
    nodes = [
        NodeTime(name, begun[i], (at - begun[i]).total_seconds())
        for i, (name, at) in enumerate(completed)
        if i in begun
    ]
    unmatched = [name for i, (name, _) in enumerate(completed) if i not in begun]
    return RunTimes(nodes, pipeline_seconds, unmatched)


def _match(
    starts: list[tuple[str | None, str, datetime]], completed: list[tuple[str, datetime]]
) -> dict[int, datetime]:
    """Completed node (by index) -> its start. A start's line names the node without its
    namespace (``extract_slices`` for ``external.extract_slices`` too), so namespaced nodes take
    the earliest start of their base name that mentions a dataset of their namespace first; nodes
    without one then take the earliest left of their name; a namespaced node whose datasets are
    all outside its namespace, last, the earliest left of its base name."""
    free = list(range(len(starts)))
    begun: dict[int, datetime] = {}

    def take(i: int, name: str, at: datetime, in_namespace: str | None) -> None:
        for j in free:
            start_name, signature, when = starts[j]
            if (
                _same_node(start_name, signature, name)
                and when <= at
                and (in_namespace is None or _names_dataset_in(signature, in_namespace))
            ):
                free.remove(j)
                begun[i] = when
                return

    for i, (full, at) in enumerate(completed):
        namespace, _, base = full.rpartition(".")
        if namespace:
            take(i, base, at, namespace)
    for i, (full, at) in enumerate(completed):
        if "." not in full:
            take(i, full, at, None)
    for i, (full, at) in enumerate(completed):
        if i not in begun and "." in full:
            take(i, full.rpartition(".")[2], at, None)
    return begun


def _same_node(start_name: str | None, signature: str, name: str) -> bool:
    """A start's line is node ``name``'s (namespace aside): the same name, or, for a node given
    none, a line without one whose function Kedro's made-up name holds."""
    if start_name is not None:
        return start_name == name
    unnamed = _UNNAMED.fullmatch(name)
    return unnamed is not None and signature.startswith(unnamed["func"] + "(")


def _names_dataset_in(signature: str, namespace: str) -> bool:
    """``func([a;ns.b]) -> [c]`` names a dataset of ``ns`` (not of ``xns``)."""
    return re.search(rf"[\[;]{re.escape(namespace)}\.", signature) is not None


def summary(times: RunTimes, workers: int) -> str:
    lines = [f"{'busy s':>8}  {'nodes':>5}  kind"]
    for name, (count, seconds) in times.by_kind().items():
        lines.append(f"{seconds:8.0f}  {count:5d}  {name}")
    bound = times.busy_seconds / workers
    lines.append(f"{times.busy_seconds:8.0f}  {len(times.nodes):5d}  all nodes")
    lines.append(f"lower bound on {workers} workers: {bound:.0f} s (busy seconds / workers)")
    if times.pipeline_seconds:
        lines.append(
            f"pipeline time (Kedro): {times.pipeline_seconds:.1f} s; "
            f"bound / pipeline time: {bound / times.pipeline_seconds:.2f}"
        )
    else:
        lines.append("pipeline time: not in the log (the run did not finish)")
    if times.unmatched:
        lines.append("no start found for: " + ", ".join(times.unmatched))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a kedro run's output (stdout)")
    parser.add_argument("--workers", type=int, default=2, help="workers the bound divides by")
    args = parser.parse_args(argv)
    times = read_log(args.log.read_text(errors="replace"))
    if not times.nodes:
        print(f"{args.log}: no completed node in this log", file=sys.stderr)
        return 1
    print(summary(times, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
