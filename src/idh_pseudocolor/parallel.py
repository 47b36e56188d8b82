"""One home for the project's process pool: subjects (patients, studies) mapped in parallel
processes with a progress bar, results in input order.

joblib's loky pool is kept alive for reuse after ``Parallel`` returns, for 300 s. Inside a
Kedro ParallelRunner (or Dask) worker that idle pool holds the worker open at exit, so a
``make run`` whose last nodes read volumes in parallel would wait minutes after its last task.
Every map here therefore stops the pool when it is done: a node's pool is never reused by the
next node anyway, and starting one costs about a second. (Keeping it for reuse and stopping it
at the process's exit instead was tried: a process forked from one holding a live pool, as
ParallelRunner forks its workers, then hangs at its first map.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def worker_count(requested: int | None, n_items: int) -> int:
    """Processes for ``n_items``: ``requested`` (None or 0: every core), never more than the
    items, at least one."""
    # pragma: no mutate start
    return max(1, min(requested or os.cpu_count() or 1, n_items or 1))
    # pragma: no mutate end


def in_order(
    function: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]],
    n_workers: int | None,
    *,
    desc: str,
    unit: str,
    progress: bool = True,
) -> Iterator[T]:
    """``function(*task)`` for every task, yielded in the order of ``tasks``: in this process when
    one worker is enough, else in ``n_workers`` processes (one task at a time each, so memory
    stays at a few subjects per worker). The pool is stopped once the last result is in (or the
    caller stops early)."""
    from tqdm.auto import tqdm

    n = worker_count(n_workers, len(tasks))
    if n == 1:
        results: Iterator[T] = (function(*task) for task in tasks)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n, return_as="generator", batch_size=1)(
            delayed(function)(*task) for task in tasks
        )
    try:
        # pragma: no mutate start
        yield from tqdm(results, total=len(tasks), desc=desc, unit=unit, disable=not progress)
        # pragma: no mutate end
    finally:
        if n > 1:
            stop_pool()


def stop_pool() -> None:
    """Shut joblib's reusable process pool down now (waiting for its workers to exit).

    joblib has no public way to do it (``Parallel`` leaves the pool running for reuse): its
    vendored loky is the one place that can, as joblib's maintainers advise (joblib#945). The only
    import of vendored code in the package (tests/test_public_apis.py ALLOWED_IMPORTS).
    """
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
