"""The project's one process pool: results in input order, and no pool left alive after a map
(an idle joblib pool held Kedro's ParallelRunner workers open for minutes at exit)."""

from __future__ import annotations

import multiprocessing

import pytest

from idh_pseudocolor.parallel import in_order, worker_count


def _square_and_pid(x: int) -> tuple[int, int]:
    import os

    return x * x, os.getpid()


def _loky_children() -> list[str]:
    return [p.name for p in multiprocessing.active_children() if "Loky" in p.name]


def test_worker_count_is_bounded_by_the_items_and_at_least_one():
    assert worker_count(8, 3) == 3
    assert worker_count(2, 10) == 2
    assert worker_count(4, 0) == 1
    assert worker_count(None, 1) == 1


def test_results_come_back_in_input_order_from_other_processes():
    import os

    tasks = [(x,) for x in range(7)]
    results = list(in_order(_square_and_pid, tasks, 2, desc="t", unit="x", progress=False))
    assert [r[0] for r in results] == [x * x for x in range(7)]
    assert all(pid != os.getpid() for _, pid in results)


def test_one_worker_runs_here_without_a_pool():
    import os

    results = list(in_order(_square_and_pid, [(3,)], 4, desc="t", unit="x", progress=False))
    assert results == [(9, os.getpid())]


def test_no_pool_outlives_a_map_even_one_stopped_early():
    from joblib import Parallel, delayed

    # joblib on its own keeps its workers alive for reuse: the thing in_order must undo
    list(Parallel(n_jobs=2)(delayed(_square_and_pid)(x) for x in range(4)))
    assert _loky_children(), "joblib no longer keeps its pool: revisit parallel.stop_pool"
    list(in_order(_square_and_pid, [(x,) for x in range(4)], 2, desc="t", unit="x", progress=False))
    assert _loky_children() == []

    results = in_order(
        _square_and_pid, [(x,) for x in range(6)], 2, desc="t", unit="x", progress=False
    )
    assert next(results)[0] == 0
    results.close()
    assert _loky_children() == []


def test_an_error_in_a_task_reaches_the_caller_and_stops_the_pool():
    with pytest.raises(ZeroDivisionError):
        list(in_order(divmod, [(1, 1), (1, 0)], 2, desc="t", unit="x", progress=False))
    assert _loky_children() == []
