"""Benchmark: how long a Kedro ParallelRunner worker takes to exit after a node that read
subjects in parallel, with joblib's pool left for reuse (baseline) against
:func:`idh_pseudocolor.parallel.in_order`, which stops it (ours). Same work, same run.

The worker process is what ParallelRunner starts (a ``ProcessPoolExecutor`` child); at exit
Python joins its child processes, and joblib's idle pool lives on for loky's idle timeout
(300 s), so ``make run`` sat idle that long after its last node. Prints both exit times and
the ratio.

    python benchmarks/worker_exit.py            # about 5 minutes: the baseline waits for loky
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import platform
import time


def _square(x: int) -> int:
    return x * x


def node_plain() -> int:
    """A node as it was: joblib's Parallel, its pool left running for reuse."""
    from joblib import Parallel, delayed

    return sum(Parallel(n_jobs=2, batch_size=1)(delayed(_square)(x) for x in range(8)))


def node_ours() -> int:
    """The same node through the project's one process pool."""
    from idh_pseudocolor.parallel import in_order

    return sum(
        in_order(_square, [(x,) for x in range(8)], 2, desc="bench", unit="x", progress=False)
    )


def worker_exit_seconds(node) -> tuple[int, float, float]:
    """(result, node seconds, seconds from the node's return until the worker has exited)."""
    context = multiprocessing.get_context("fork")
    executor = cf.ProcessPoolExecutor(max_workers=1, mp_context=context)
    start = time.perf_counter()
    result = executor.submit(node).result()
    returned = time.perf_counter()
    executor.shutdown(wait=True)
    return result, returned - start, time.perf_counter() - returned


def main() -> None:
    print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} cores")
    ours = worker_exit_seconds(node_ours)
    plain = worker_exit_seconds(node_plain)
    assert ours[0] == plain[0] == sum(x * x for x in range(8))
    print(f"node then worker exit, ours (in_order):      {ours[1]:6.2f} s + {ours[2]:7.2f} s")
    print(f"node then worker exit, baseline (joblib):    {plain[1]:6.2f} s + {plain[2]:7.2f} s")
    print(
        f"the baseline's worker exits {plain[2] - ours[2]:.1f} s later "
        f"(ratio of exit times {plain[2] / max(ours[2], 1e-3):.0f}x)"
    )


if __name__ == "__main__":
    main()
