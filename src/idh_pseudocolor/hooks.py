"""Project hooks: checks that must happen before any node runs, and experiment tracking."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException
from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks import MlflowHook

from idh_pseudocolor import tracking
from idh_pseudocolor.cohort import cohort_record
from idh_pseudocolor.config_loader import expected_environment
from idh_pseudocolor.paper_path import check_cohort, check_parameters
from idh_pseudocolor.parameters import (
    EnvironmentSettings,
    PermutationStudySettings,
    SearchSettings,
    check_settings,
)

logger = logging.getLogger(__name__)

#: the parameter blocks whose ``fixed.accelerator`` a training node uses
TRAINING_PARAMETERS = {
    "params:hyperparameter_search": SearchSettings,
    "params:permutation_study": PermutationStudySettings,
}


class PaperSettingsCheck:
    """Refuse, before the first node, parameters that are not settings (every pipeline's typed
    settings are built: an unknown or missing key is named) and a paper run whose resolved
    parameters are not the paper's."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        env = run_params.get("env")
        expected = expected_environment(env)
        parameters = catalog.load("parameters")
        check_settings(parameters)
        check_parameters(parameters, env, paper=expected["paper"], rehearsal=expected["rehearsal"])
        # the phantom marker of every cohort this run reads, before any node writes anything
        # (extract_slices checks the slices again; here no other node has run yet)
        environment = EnvironmentSettings.from_params(parameters["environment"])
        for name in ("cohort", "external.cohort"):
            if name in pipeline.inputs():
                folder = getattr(catalog.get(name), "path", None)
                if folder is not None and cohort_record(folder)["synthetic"]:
                    check_cohort({"phantom": True}, environment)


class HardwareCheck:
    """Refuse, before the first node, a run whose environment asks for hardware this machine lacks.

    Without it ``--env l4`` on a laptop would extract slices and then die inside torch with
    "Found no NVIDIA driver". Under the DaskRunner the check is the workers' (the driver of a
    remote cluster need not have a GPU): every training run checks its device before it starts.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from idh_pseudocolor.training import (  # torch only when running
            HardwareUnavailable,
            require_accelerator,
        )

        runner = str(run_params.get("runner") or "")
        if "DaskRunner" in runner:
            return
        env = run_params.get("env") or "local"
        wanted: dict[str, str] = {}
        # a node trains with the first block it reads (the sweep's before the search's)
        for node in pipeline.nodes:
            name = next((p for p in list(TRAINING_PARAMETERS)[::-1] if p in node.inputs), None)
            if name and name not in wanted:
                wanted[name] = (
                    TRAINING_PARAMETERS[name].from_params(catalog.load(name)).fixed.accelerator
                )
        for name, accelerator in wanted.items():
            try:
                require_accelerator(accelerator)
            except HardwareUnavailable as exc:
                key = name.removeprefix("params:") + ".fixed.accelerator"
                base = env.split("+")[0]
                raise HardwareUnavailable(
                    f"--env {env} asks for accelerator '{accelerator}' ({key}), but {exc}. "
                    "Run it on the GPU machine, or rehearse the same path on this CPU at "
                    f"toy scale: kedro run --env {base}+rehearsal ... (docs/reproducing.md, "
                    f"'Rehearse on a laptop'); --params {key}=cpu changes only this setting."
                ) from None


# -- experiment tracking (kedro-mlflow) ---------------------------------------------------------
class StudyTracking(MlflowHook):
    """kedro-mlflow's hook, made safe for this project's runs (docs/tracking.md).

    What it adds to kedro-mlflow: a relative ``sqlite:///`` store is the project's (not the
    working directory's); an unreachable store is one warning and an untracked run, never a
    failed or slower one; parameters are logged once per run, in one batch, from the driver (no
    node hook in ParallelRunner/Dask workers logging into the parent concurrently); worker
    processes find the parent through :data:`idh_pseudocolor.tracking.TARGET_ENV` and log each
    trial and run as a nested run (:mod:`idh_pseudocolor.tracking`); after the run the
    reporting outputs become the parent's artifacts and the final evaluation's runs a registered
    model (:mod:`idh_pseudocolor.mlflow_model`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.off = False  # tracking disabled for this session (store unreachable)
        self.uri: str | None = None

    def _took(self, what: str, started: float) -> None:
        logger.info(
            "MLflow run %s: %s in %.1f s (%s)",
            self.run_id,
            what,
            time.perf_counter() - started,
            self.uri,
        )

    def _give_up(self, what: str, exc: BaseException) -> None:
        uri = getattr(self, "uri", None) or "the MLflow tracking store"
        logger.warning(
            "MLflow tracking is off for this run: %s failed at %s (%s: %s). The run goes on and "
            "its results are unaffected; docs/tracking.md says how to point it elsewhere.",
            what,
            uri,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        self.off = True
        os.environ.pop(tracking.TARGET_ENV, None)

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """mlflow.yml read (``context.mlflow``, as kedro-mlflow's commands expect), nothing more:
        the store is opened when a run starts, after the checks, so a run refused before its
        first node, or a session that never runs (``kedro mlflow ui``), touches no store."""
        from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

        self.off, self.context, self.run_id = False, context, None
        self._is_mlflow_enabled = False
        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            conf = loader["mlflow"]
        except MissingConfigException:
            conf = {}
        uri = (conf.get("server") or {}).get("mlflow_tracking_uri")
        if uri:
            conf["server"]["mlflow_tracking_uri"] = project_store(uri, context.project_path)
            self.uri = conf["server"]["mlflow_tracking_uri"]
        loader["mlflow"] = conf
        try:
            context.__setattr__("mlflow", KedroMlflowConfig.model_validate(conf))
        except Exception as exc:  # noqa: BLE001 - said when a run starts (_give_up)
            logger.debug("mlflow.yml: %s", exc)

    def _set_up(self) -> None:
        """kedro-mlflow's set-up (tracking URI, experiment) for a run: a SQLite store's folder
        made, an HTTP server first asked whether it is up."""
        if self.uri and self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if self.uri:
            check_reachable(self.uri)
        super().after_context_created(self.context)

    @hook_impl
    def after_catalog_created(  # noqa: PLR0913 - Kedro's hook spec
        self,
        catalog: Any,
        conf_catalog: dict[str, Any],
        conf_creds: dict[str, Any],
        parameters: dict[str, Any],
        save_version: str,
        load_versions: dict[str, str],
    ) -> None:
        """Nothing: kedro-mlflow's own datasets, which this hook names, are not in the catalog."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self.off:
            return
        names = run_params.get("pipeline_names") or ["__default__"]
        config = getattr(self.context, "mlflow", None)
        if config is not None and set(names) <= set(config.tracking.disable_tracking.pipelines):
            logger.info("MLflow: %s untracked (mlflow.yml disable_tracking)", "+".join(names))
            return  # not even the store is opened
        try:
            started = time.perf_counter()
            self._set_up()
            super().before_pipeline_run(run_params, pipeline, catalog)
            if not self._is_mlflow_enabled:
                return
            client = self.mlflow_config.server._mlflow_client
            params = {
                name.removeprefix("params:"): catalog.load(name)
                for name in sorted(pipeline.inputs())
                if name.startswith("params:")
            }
            tracking.log_params(client, self.run_id, params)
            run = client.get_run(self.run_id)
            target = tracking.Target(
                tracking_uri=self.mlflow_config.server.mlflow_tracking_uri,
                experiment_id=run.info.experiment_id,
                parent_run_id=self.run_id,
            )
            os.environ[tracking.TARGET_ENV] = target.to_env()
            self._took("started", started)
        except Exception as exc:  # noqa: BLE001
            self._give_up("starting the run", exc)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool):
        """Nothing per node: parameters went in once, before the run (see the class)."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self.off or not self._is_mlflow_enabled:
            os.environ.pop(tracking.TARGET_ENV, None)
            return
        try:
            started = time.perf_counter()
            self._log_outputs(pipeline, catalog)
            super().after_pipeline_run(run_params, pipeline, catalog)
            self._took("outputs logged", started)
        except Exception as exc:  # noqa: BLE001
            self._give_up("logging the run's outputs", exc)
            _end_run("FAILED")
        finally:
            os.environ.pop(tracking.TARGET_ENV, None)

    def _log_outputs(self, pipeline: Any, catalog: Any) -> None:
        """The reporting outputs as the parent's artifacts; the final evaluation's runs (with
        the fallbacks) as a registered model, its URI a tag of the parent."""
        from idh_pseudocolor.mlflow_model import register_model  # mlflow.pyfunc: only here

        client = self.mlflow_config.server._mlflow_client
        tracking.log_artifacts(client, self.run_id, reporting_files(pipeline, catalog), "reporting")
        outputs = pipeline.all_outputs()
        if "winner_models" in outputs:
            uri = register_model(
                self.run_id, catalog.get("winner_models")._path, fallback_bundle(outputs, catalog)
            )
            client.set_tag(self.run_id, "registered_model", uri)
            logger.info("MLflow: the final evaluation's runs registered as %s", uri)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog):
        os.environ.pop(tracking.TARGET_ENV, None)
        if self.off or not self._is_mlflow_enabled:
            return
        try:
            super().on_pipeline_error(error, run_params, pipeline, catalog)
        except Exception as exc:  # noqa: BLE001
            self._give_up("closing the failed run", exc)


def _end_run(status: str) -> None:
    import mlflow

    try:
        while mlflow.active_run():
            mlflow.end_run(status)
    except Exception:  # noqa: BLE001, S110 - the run goes on untracked either way
        pass


def project_store(uri: str, project_path: str | os.PathLike) -> str:
    """A relative ``sqlite:///data/...`` store made the project's: MLflow would resolve it
    against the working directory, so ``kedro run`` elsewhere would write another store."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(project_path) / uri.removeprefix(prefix)).resolve())
    return uri


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """An HTTP tracking server accepts a connection within ``timeout`` seconds, or this raises
    (MLflow's own client would retry for minutes before the first node). Nothing is fetched."""
    if not uri.startswith(("http://", "https://")):
        return
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((parts.hostname, port), timeout=timeout).close()


def reporting_files(pipeline: Any, catalog: Any) -> dict[str, Path]:
    """The reporting layer's local files this run wrote (the latest version of versioned ones):
    the report, Table 2, the figures and tables that become the parent run's artifacts."""
    files = {}
    for name in sorted(pipeline.all_outputs()):
        if name == "report_history" or name not in catalog:
            continue
        dataset = catalog.get(name)
        layer = ((getattr(dataset, "metadata", None) or {}).get("kedro-viz") or {}).get("layer")
        if layer != "reporting" or getattr(dataset, "_protocol", "file") not in ("file", None):
            continue
        get_path = getattr(dataset, "_get_load_path", None)
        try:
            path = Path(str(get_path())) if get_path else None
        except Exception:  # noqa: BLE001 - e.g. a versioned dataset never saved
            path = None
        if path is not None and path.is_file():
            files[name] = path
    return files


def fallback_bundle(outputs: set[str], catalog: Any) -> str | None:
    """The folder holding the fallback nodes' bundles (``fallback_models``, loaded as one bundle),
    where this run wrote them all; else None."""
    names = sorted(n for n in outputs if n.startswith("fallback_slot_") and n.endswith(".models"))
    parts = [catalog.get(n) for n in names]
    if not parts or not all(part.exists() for part in parts):
        return None
    folders = {part._path.rstrip("/").rsplit("/", 1)[0] for part in parts}
    if len(folders) != 1:
        raise ValueError(f"the fallback bundles {names} are not in one folder: {sorted(folders)}")
    return folders.pop()
