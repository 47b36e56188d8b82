"""Project hooks: checks that must happen before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from idh_pseudocolor.cohort import cohort_record
from idh_pseudocolor.config_loader import expected_environment
from idh_pseudocolor.paper_path import check_cohort, check_parameters
from idh_pseudocolor.parameters import (
    EnvironmentSettings,
    PermutationStudySettings,
    SearchSettings,
    check_settings,
)

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
