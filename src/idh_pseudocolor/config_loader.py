"""Configuration layers: base, the paper's settings, the environment, the machine.

Kedro's ``OmegaConfigLoader`` merges exactly two folders, ``conf/base`` and one environment.
The paper path needs more: ``--env a4000`` and ``--env l4`` share every setting of the paper
(``conf/paper``) and differ only in hardware, and per-machine settings in ``conf/local``
(credentials, ``data_root``) must apply under every environment, not only when no ``--env``
is given. This loader merges, in order (later wins, nested keys merged)::

    conf/base  ->  conf/paper (a4000, l4)  ->  conf/<env>
               ->  conf/rehearsal (env+rehearsal)  ->  conf/local

``--env l4+rehearsal`` adds the rehearsal layer, which may change only the scale of a run
(trials, epochs, image size, models, accelerator; see :mod:`idh_pseudocolor.paper_path`). Each
layer is resolved on its own, as Kedro does, except ``globals``, which are merged first and
resolved once so that ``outputs: ${data_root}/paper`` follows a ``data_root`` set in
``conf/local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import MissingConfigException, OmegaConfigLoader
from omegaconf import OmegaConf

#: Kedro's CONFIG_LOADER_ARGS (settings.py): layers hold only deltas, nested keys merge into the
#: layers below
LOADER_ARGS: dict[str, Any] = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft", "credentials": "soft"},
}

#: environments that are the paper's study: they sit on the ``paper`` layer
PAPER_ENVIRONMENTS = ("a4000", "l4")
PAPER_LAYER = "paper"
REHEARSAL_LAYER = "rehearsal"
MACHINE_LAYER = "local"


def layers_for(
    env: str | None, base_env: str = "base", machine_env: str = MACHINE_LAYER
) -> list[str]:
    """The conf folders merged for ``--env``, first to last."""
    parts = [p for p in (env or machine_env).split("+") if p]
    if not parts:
        raise ValueError(f"Empty --env {env!r}")
    main, extras = parts[0], parts[1:]
    unknown = [p for p in extras if p != REHEARSAL_LAYER]
    if (
        unknown
        or main in (PAPER_LAYER, REHEARSAL_LAYER)
        or (extras and main not in PAPER_ENVIRONMENTS)
    ):
        raise ValueError(
            f"--env {env!r}: use one environment (a4000, l4, local or your own); "
            f"the paper's environments ({', '.join(PAPER_ENVIRONMENTS)}) "
            f"may be followed by '+{REHEARSAL_LAYER}' (e.g. --env l4+{REHEARSAL_LAYER}); "
            f"'{PAPER_LAYER}' and '{REHEARSAL_LAYER}' are layers, not environments"
        )
    layers = [base_env]
    if main in PAPER_ENVIRONMENTS:
        layers.append(PAPER_LAYER)
    layers.append(main)
    layers.extend(extras)
    out = [
        layer for i, layer in enumerate(layers) if layer not in layers[:i] and layer != machine_env
    ]
    return [*out, machine_env]  # the machine's settings always last


class LayeredConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` over several layers (see the module docstring)."""

    def layers(self) -> list[str]:
        return layers_for(self.env, self.base_env or "base", self.default_run_env or MACHINE_LAYER)

    def __getitem__(self, key: str) -> dict[str, Any]:
        self._register_runtime_params_resolver()
        if key in self:
            return self.data[key]  # set explicitly on the loader (UserDict storage)
        if key not in self.config_patterns:
            raise KeyError(f"No config patterns were found for '{key}' in your config loader")
        patterns = [*self.config_patterns[key]]
        read_env = key == "credentials"
        processed: set[Path] = set()
        per_layer = []
        for i, layer in enumerate(self.layers()):
            path = self._get_conf_env_path(layer)
            if (
                i > 0
                and layer in (MACHINE_LAYER, self.default_run_env)
                and not self._fs.isdir(Path(path).as_posix())
            ):
                continue  # a machine without conf/local: nothing to add
            per_layer.append(self._read_dir_configs(path, patterns, key, processed, read_env))
        if not processed and key != "globals":
            raise MissingConfigException(
                f"No files of YAML or JSON format found in the layers {self.layers()} "
                f"of {self.conf_source} matching the glob pattern(s): {patterns}"
            )
        # merged first, resolved once (no runtime_params in globals, as in Kedro)
        if key == "globals":
            OmegaConf.clear_resolver("runtime_params")
            configs = [c for layer in per_layer for c in layer.values()]
            if not configs:
                return {}
            merged = OmegaConf.to_container(OmegaConf.unsafe_merge(*configs), resolve=True)
            return {k: v for k, v in merged.items() if not str(k).startswith("_")}
        result: dict[str, Any] = {}
        for configs in per_layer:
            resolved = self._merge_and_resolve(key, configs)
            result = self._soft_merge(result, resolved) if result else resolved
        return result


def expected_environment(env: str | None) -> dict[str, bool]:
    """What ``--env`` makes a run: a paper run (on the paper layer) and/or a rehearsal. Parameters
    cannot change this: the checks compare ``environment`` with it."""
    layers = layers_for(env)
    return {"paper": PAPER_LAYER in layers, "rehearsal": REHEARSAL_LAYER in layers}


def project_parameters(
    project: str | Path = ".", env: str | None = None, runtime_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters ``kedro run --env ENV`` resolves to in ``project`` (its ``conf`` layers), for
    code outside a Kedro session (the CLI, benchmarks, notebooks) that must use the same values."""
    conf = Path(project) / "conf"
    if not conf.is_dir():
        raise FileNotFoundError(f"{conf} is not a folder: run this inside the project")
    loader = LayeredConfigLoader(str(conf), env=env, runtime_params=runtime_params, **LOADER_ARGS)
    return loader["parameters"]
