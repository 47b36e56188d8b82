"""Project hooks: checks that must happen before any node runs."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from idh_pseudocolor.config_loader import expected_environment
from idh_pseudocolor.paper import check_parameters

#: the parameter blocks whose ``fixed.accelerator`` a training node uses
TRAINING_PARAMETERS = ("params:hyperparameter_search", "params:permutation_study")


class PaperSettingsCheck:
    """Refuse, before the first node, a paper run whose resolved parameters are not the paper's."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        env = run_params.get("env")
        expected = expected_environment(env)
        check_parameters(catalog.load("parameters"), env, paper=expected["paper"], rehearsal=expected["rehearsal"])


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
        for node in pipeline.nodes:  # a node trains with the first block it reads (the sweep's before the search's)
            name = next((p for p in TRAINING_PARAMETERS[::-1] if p in node.inputs), None)
            if name and name not in wanted:
                block = catalog.load(name) or {}
                wanted[name] = str((block.get("fixed") or {}).get("accelerator", "cpu"))
        for name, accelerator in wanted.items():
            try:
                require_accelerator(accelerator)
            except HardwareUnavailable as exc:
                key = name.removeprefix("params:") + ".fixed.accelerator"
                base = env.split("+")[0]
                raise HardwareUnavailable(
                    f"--env {env} asks for accelerator '{accelerator}' ({key}), but {exc}. Run it on the GPU machine, "
                    f"or rehearse the same path on this CPU at toy scale: kedro run --env {base}+rehearsal ... "
                    f"(docs/reproducing.md, 'Rehearse on a laptop'); --params {key}=cpu changes only this setting."
                ) from None

