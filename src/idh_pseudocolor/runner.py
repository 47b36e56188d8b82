r"""``DaskRunner``: Kedro nodes as Dask tasks, so independent runs spread over GPUs and machines.

Kedro schedules (which node is ready), Dask places (which worker process, on which machine,
holding which GPU). Use it from the command line::

    kedro run --pipelines permutation_study --runner idh_pseudocolor.runner.DaskRunner
    kedro run ... --runner idh_pseudocolor.runner.DaskRunner \
        --runner-params scheduler=tcp://head:8786
    kedro run ... --runner idh_pseudocolor.runner.DaskRunner --runner-params runs_per_gpu=4

Without ``scheduler`` (or ``$IDH_DASK_SCHEDULER``) the runner starts a local cluster: with
CUDA GPUs, ``runs_per_gpu`` single-threaded worker processes per GPU (default 1; or
``$IDH_RUNS_PER_GPU``), each seeing only its own card through ``CUDA_VISIBLE_DEVICES``
(``devices`` picks the cards, default every visible one); without, a ``LocalCluster`` of
``n_workers`` single-threaded processes. Every GPU worker advertises ``GPU=1`` and nodes tagged
``gpu`` ask for it, so a card trains at most ``runs_per_gpu`` configurations at once, each in
its own process (own CUDA context, torch seed and thread count: threads in one process would
share them).

Everything a node reads or writes must be a persisted catalog dataset at a path every worker
can open (a shared folder or an fsspec URL: set ``data_root`` in ``conf/<env>/globals.yml``);
the runner refuses a pipeline that would pass data through memory between nodes.

Logging: every worker takes the run's logging levels (``conf/logging.yml`` as Kedro loaded it in
the driver) and sends its records to the driver (Dask's ``Client.forward_logging``), whose
handlers write them once, with the driver's own lines: a node's INFO line from a worker on
another machine reaches the terminal or log file of the ``kedro run`` that started it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import socket
import traceback
from typing import TYPE_CHECKING, Any

from kedro.framework.hooks.markers import HOOK_NAMESPACE
from kedro.framework.hooks.specs import DatasetSpecs, NodeSpecs
from kedro.io import MemoryDataset
from kedro.runner import AbstractRunner, Task
from pluggy import PluginManager

from idh_pseudocolor import tracking
from idh_pseudocolor.parallel import stop_pool

if TYPE_CHECKING:
    from kedro.io import CatalogProtocol
    from kedro.pipeline import Node, Pipeline

logger = logging.getLogger(__name__)

GPU_TAG = "gpu"  # nodes that train or predict with a network
LOOPBACK = "127.0.0.1"  # where a cluster this runner starts listens


def worker_hook_manager() -> PluginManager:
    """A hook manager that knows Kedro's node and dataset hooks and has no implementations, so
    ``Task`` calls them and nothing runs (pluggy and Kedro's public hook specs)."""
    manager = PluginManager(HOOK_NAMESPACE)
    manager.add_hookspecs(NodeSpecs)
    manager.add_hookspecs(DatasetSpecs)
    return manager


class NodeFailedOnWorker(RuntimeError):
    """A node raised on a Dask worker; the message holds the worker's full traceback."""

    def __reduce__(self):
        return (NodeFailedOnWorker, (str(self),))  # travels without its cause or traceback


class _RemoteTask:
    """What travels to a worker: the node and catalog, not the driver's hook manager.

    On the worker, Kedro's project settings are configured once (Dask workers are spawned
    processes) and Kedro's own :class:`Task` runs the node with a hook manager that has no
    implementations (:func:`worker_hook_manager`).
    """

    def __init__(
        self,
        node: Node,
        catalog: CatalogProtocol,
        is_async: bool,
        run_id: str | None,
        package_name: str | None,
    ) -> None:
        self.node, self.catalog, self.is_async, self.run_id, self.package_name = (
            node,
            catalog,
            is_async,
            run_id,
            package_name,
        )
        # the driver's MLflow parent run: the worker's runs nest under it (tracking.py)
        self.tracking = tracking.current_target()

    def __call__(self) -> Node:
        from kedro.framework import project

        if self.package_name and project.PACKAGE_NAME != self.package_name:
            project.configure_project(self.package_name)
        # Node and dataset hooks do not run on workers: the driver's hook objects (kedro-viz's
        # dataset statistics among them) cannot travel, and copies on a worker would never report
        # back.
        task = Task(
            node=self.node,
            catalog=self.catalog,
            is_async=self.is_async,
            run_id=self.run_id,
            hook_manager=worker_hook_manager(),
        )
        try:
            with tracking.targeting(self.tracking):
                task.execute()
        except Exception as exc:  # the original may not pickle (tracebacks, figures): send the text
            raise NodeFailedOnWorker(
                f"node {self.node.name} failed on {socket.gethostname()}:{os.getpid()}:\n"
                f"{traceback.format_exc()}"
            ) from exc
        finally:
            # a node's pool would outlive a closing Dask worker and hold its streams open
            stop_pool()
        return self.node


class _DaskExecutor(cf.Executor):
    """A concurrent.futures view of a Dask client that asks for a GPU only for ``gpu`` nodes."""

    def __init__(self, client: Any, gpu_resources: bool, package_name: str | None) -> None:
        self._package_name = package_name
        self._plain = client.get_executor(pure=False)
        self._gpu = (
            client.get_executor(pure=False, resources={"GPU": 1}) if gpu_resources else self._plain
        )

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        # Kedro's task holds the driver's hook manager, which cannot travel
        if isinstance(fn, Task):
            fn = _RemoteTask(fn.node, fn.catalog, fn.is_async, fn.run_id, self._package_name)
        node = getattr(fn, "node", None)
        executor = self._gpu if node is not None and GPU_TAG in node.tags else self._plain
        return executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for executor in {id(self._plain): self._plain, id(self._gpu): self._gpu}.values():
            executor.shutdown(wait=wait)


class DaskRunner(AbstractRunner):
    """Runs ready nodes concurrently as Dask tasks (see the module docstring)."""

    def __init__(
        self,
        scheduler: str | None = None,
        n_workers: int | None = None,
        runs_per_gpu: int | None = None,
        devices: str | int | None = None,
        is_async: bool = False,
    ) -> None:
        super().__init__(is_async=is_async)
        self._scheduler = scheduler or os.environ.get("IDH_DASK_SCHEDULER") or None
        self._n_workers = int(n_workers) if n_workers else None
        if runs_per_gpu is None:
            runs_per_gpu = os.environ.get("IDH_RUNS_PER_GPU") or 1
        self._runs_per_gpu = _positive("runs_per_gpu", runs_per_gpu)
        # "0;1" from --runner-params (a single card arrives as an int), "0,1" or [0, 1] from Python
        self._devices = None if devices is None else _device_list(devices)
        if self._scheduler and (self._devices is not None or self._runs_per_gpu > 1):
            logger.warning(
                "DaskRunner: devices / runs_per_gpu shape the local cluster only; the workers "
                "of the scheduler at %s are started with their own (docs/scaling.md)",
                self._scheduler,
            )
        self._client: Any = None
        self._cluster: Any = None
        self._forwarding = False  # workers' records come to this process (see _forward_logging)
        self.worker_pids: list[int] = []
        self._package_name: str | None = None

    # -- the cluster -------------------------------------------------------------------------
    def _connect(self) -> Any:
        import dask
        from dask.distributed import Client, LocalCluster
        from kedro.framework.project import LOGGING

        from idh_pseudocolor.worker_logging import dask_logging

        # non-daemonic workers may start processes of their own (slice extraction uses joblib)
        dask.config.set({"distributed.worker.daemon": False})
        # Dask's own loggers at conf/logging.yml's level, here and in its workers
        dask_logging(dict(LOGGING))

        if self._scheduler:
            logger.info("DaskRunner: connecting to the scheduler at %s", self._scheduler)
            return Client(self._scheduler)
        devices = self._devices if self._devices is not None else _cuda_devices()
        if devices:
            if self._n_workers and self._n_workers != len(devices) * self._runs_per_gpu:
                raise ValueError(
                    f"DaskRunner: with GPUs the workers are devices x runs_per_gpu "
                    f"({len(devices)} x {self._runs_per_gpu}), not n_workers={self._n_workers}; "
                    "pick the cards with CUDA_VISIBLE_DEVICES (or --runner-params "
                    '"devices=0;1") and the runs per card with runs_per_gpu; for CPU workers '
                    'on a GPU box, hide the cards: CUDA_VISIBLE_DEVICES=""'
                )
            self._cluster = gpu_cluster(devices, self._runs_per_gpu)
            logger.info(
                "DaskRunner: %d run(s) at once on each of %d GPU(s) (CUDA_VISIBLE_DEVICES %s)",
                self._runs_per_gpu,
                len(devices),
                ", ".join(devices),
            )
        else:
            if self._runs_per_gpu > 1:
                logger.warning(
                    "DaskRunner: runs_per_gpu=%d has no effect without a CUDA GPU; n_workers "
                    "sets the number of CPU workers",
                    self._runs_per_gpu,
                )
            # silence_logs: Dask's own start-up lines on its "distributed" loggers only; nodes'
            # records are forwarded to the driver (_forward_logging) and never silenced
            self._cluster = LocalCluster(
                n_workers=self._n_workers or max(1, (os.cpu_count() or 1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            )
        logger.info("DaskRunner: started %s", self._cluster)
        return Client(self._cluster)

    def _forward_logging(self, package_name: str | None) -> None:
        """Workers log at the run's levels and send their records here (see the module
        docstring)."""
        from kedro.framework.project import LOGGING

        from idh_pseudocolor.worker_logging import PLUGIN_NAME, ProjectLogging

        self._client.register_plugin(ProjectLogging(dict(LOGGING), package_name), name=PLUGIN_NAME)
        # after the plugin: its handler must outlive the workers' configuration
        self._client.forward_logging()
        self._forwarding = True

    def _close(self) -> None:
        if self._client is not None:
            # a cluster this run does not own keeps running
            if self._cluster is None and self._forwarding:
                from idh_pseudocolor.worker_logging import PLUGIN_NAME

                self._client.unforward_logging()
                self._client.unregister_worker_plugin(PLUGIN_NAME)
            self._client.close()
        self._forwarding = False
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    # -- AbstractRunner ------------------------------------------------------------------------
    def _get_required_workers_count(self, pipeline: Pipeline) -> int:
        return max(1, len(pipeline.nodes))

    def _get_executor(self, max_workers: int) -> cf.Executor:
        workers = self._client.scheduler_info().get("workers", {})
        self.worker_pids = sorted(self._client.run(os.getpid).values())
        gpu_resources = any("GPU" in w.get("resources", {}) for w in workers.values())
        return _DaskExecutor(self._client, gpu_resources, self._package_name)

    def _run(
        self,
        pipeline: Pipeline,
        catalog: CatalogProtocol,
        hook_manager: PluginManager | None = None,
        run_id: str | None = None,
    ) -> None:
        # Workers share no memory: every dataset passed between nodes or kept must be persisted.
        in_memory = sorted(
            name
            for name in pipeline.datasets() - pipeline.inputs()  # everything some node writes
            if isinstance(catalog.get(name, fallback_to_runtime_pattern=True), MemoryDataset)
        )
        if in_memory:
            raise ValueError(
                "DaskRunner needs every node output in a persisted "
                "catalog dataset that all workers can read; these are in "
                f"memory: {', '.join(in_memory)}. Add them to conf/base/catalog.yml."
            )
        from kedro.framework.project import PACKAGE_NAME

        self._client = self._connect()
        try:
            self._package_name = PACKAGE_NAME
            self._forward_logging(PACKAGE_NAME)
            super()._run(pipeline, catalog, hook_manager, run_id)
        finally:
            self._close()


def gpu_cluster(devices: list[str], runs_per_gpu: int = 1) -> Any:
    """A local Dask cluster of ``runs_per_gpu`` worker processes per card, each pinned to its
    card through ``CUDA_VISIBLE_DEVICES`` and advertising ``GPU=1``.

    dask-cuda's ``LocalCUDACluster`` is one worker per GPU by design; several runs per card
    need several processes on one card, which Dask's ``SpecCluster`` of nannies with their own
    environment gives directly. No per-worker host memory limit: a run's host memory is CUDA's
    libraries, its model and its split, and the worker's kept networks
    (``fixed.initial_weights_cache``: up to ~8 GB with the paper's pair), nothing Dask could
    spill, and a share of the host's RAM
    (``LocalCluster``'s rule) would shrink with every added run until Dask restarted workers
    whose runs fit.
    """
    from dask.distributed import Nanny, Scheduler, SpecCluster

    if not devices:
        raise ValueError("gpu_cluster needs at least one device")
    workers = {
        f"gpu{device}-{slot}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "resources": {"GPU": 1},
                "env": {"CUDA_VISIBLE_DEVICES": device},
                "memory_limit": 0,
                "host": LOOPBACK,
                "silence_logs": logging.WARNING,
            },
        }
        for device in devices
        for slot in range(runs_per_gpu)
    }
    # this machine only, as LocalCluster: a Dask scheduler runs whatever pickled code reaches it
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": LOOPBACK}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)


def _positive(name: str, value: Any) -> int:
    """A whole number >= 1 from Python or from ``--runner-params`` / an environment variable."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"DaskRunner: {name} must be a whole number >= 1, got {value!r}")
    return int(text)


def _device_list(devices: Any) -> list[str]:
    """``"0,1"``, ``"0;1"``, ``0`` or ``[0, 1]`` -> ``["0", "1"]``: CUDA_VISIBLE_DEVICES entries
    (ordinals or GPU-/MIG- UUIDs). ``;`` separates too, since ``kedro run --runner-params`` splits
    its value at commas."""
    if isinstance(devices, list | tuple):
        items = [str(d).strip() for d in devices]
    else:
        items = [d.strip() for d in str(devices).replace(";", ",").split(",")]
    items = [d for d in items if d]
    if len(set(items)) != len(items):
        raise ValueError(f"DaskRunner: devices lists a card twice: {devices!r}")
    return items


def _cuda_devices() -> list[str]:
    """The cards this process may use, named as a child process must see them: the entries of
    an inherited CUDA_VISIBLE_DEVICES (``2,3`` stays ``2,3``; ``""`` hides every card), else
    ``0 .. n-1``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return []
    count = _cuda_device_count()
    if not count:
        return []
    if visible:
        entries = _device_list(visible)
        # ordinals: CUDA shows as many as exist; UUIDs (MIG instances among them): keep them all,
        # each worker sees one, although this process's CUDA counts one MIG instance only
        if all(e.isdigit() for e in entries):
            return entries[:count]
        return entries
    return [str(i) for i in range(count)]


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch / broken driver: no GPUs
        return 0
