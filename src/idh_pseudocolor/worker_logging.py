"""The DaskRunner's logging: conf/logging.yml's levels on every Dask worker, the records in the
driver.

Workers take the levels of the run's logging configuration (as Kedro loaded it in the driver)
without its handlers; ``Client.forward_logging`` sends their records to the driver, whose
handlers write each once. Imported by the runner only when it starts a run, so importing
the pipelines does not import Dask.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import dask
from distributed import WorkerPlugin

PLUGIN_NAME = "idh-pseudocolor-logging"  # the worker plugin's name on the cluster


def worker_logging(config: dict[str, Any], package_name: str | None) -> dict[str, Any]:
    """The driver's logging configuration for a worker: its levels and filters, no handlers (the
    records go to the driver, whose handlers write them), existing loggers left enabled."""
    config = copy.deepcopy(dict(config))
    config["handlers"] = {}
    config["disable_existing_loggers"] = False
    loggers = config.setdefault("loggers", {})
    for settings in loggers.values():
        settings.pop("handlers", None)
    if package_name:  # as Kedro's configure_project would add it (and then reconfigure)
        loggers.setdefault(package_name, {"level": "INFO"})
    config["root"] = {**config.get("root", {}), "handlers": []}
    return config


class ProjectLogging(WorkerPlugin):
    """Applies the run's logging levels on a worker (see :func:`worker_logging`), with the
    project configured first so that neither Kedro's import nor ``configure_project`` applies
    a configuration of its own later on that worker."""

    def __init__(self, config: dict[str, Any], package_name: str | None) -> None:
        self.config, self.package_name = config, package_name

    def setup(self, worker: Any) -> None:
        from kedro.framework import project

        if self.package_name and project.PACKAGE_NAME != self.package_name:
            project.configure_project(self.package_name)
        project.configure_logging(worker_logging(self.config, self.package_name))


def dask_logging(config: dict[str, Any]) -> None:
    """Dask's own loggers (``distributed``) at the level ``config`` gives them. Importing Dask sets
    them to Dask's default (INFO) after Kedro applied conf/logging.yml, and a worker process sets
    them when it starts, before any plugin runs: the driver's logger is set back here, the workers
    get the level through Dask's configuration in their environment."""
    level = (config.get("loggers", {}).get("distributed") or {}).get("level")
    if level is None:
        return
    logging.getLogger("distributed").setLevel(level)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    name = level if isinstance(level, str) else logging.getLevelName(level)
    dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ": {
                **environ,
                "DASK_LOGGING__DISTRIBUTED": name.lower(),
            }
        }
    )
