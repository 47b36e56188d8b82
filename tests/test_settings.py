"""Every pipeline's typed settings (idh_pseudocolor.parameters): the YAML under conf/base
is the only home of defaults, an unknown or missing key is refused with its name and file, and
every environment (the demo, the paper's, their rehearsals) builds every pipeline's settings."""

from __future__ import annotations

import copy
import re
from dataclasses import MISSING, fields, is_dataclass

import pytest
import yaml

from idh_pseudocolor.parameters import (
    PIPELINE_SETTINGS,
    SOURCES,
    DemoPretrainingSettings,
    PermutationStudySettings,
    SearchSettings,
    check_settings,
)
from tests.conftest import REPO, project_parameters

ENVIRONMENTS = [None, "a4000", "l4", "a4000+rehearsal", "l4+rehearsal"]


@pytest.fixture(scope="module")
def resolved() -> dict[str | None, dict]:
    return {env: project_parameters(REPO, env) for env in ENVIRONMENTS}


def changed(parameters: dict, path: str, value=None, *, delete: bool = False) -> dict:
    """A copy of ``parameters`` with the dotted key ``path`` set to ``value`` (or removed)."""
    out = copy.deepcopy(parameters)
    *parents, last = path.split(".")
    block = out
    for key in parents:
        block = block[key]
    if delete:
        del block[last]
    else:
        block[last] = value
    return out


def test_every_environment_builds_every_pipelines_settings(resolved):
    for env, parameters in resolved.items():
        settings = check_settings(parameters)
        assert set(settings) == set(PIPELINE_SETTINGS), env
        assert all(isinstance(settings[section], cls) for section, cls in PIPELINE_SETTINGS.items())
    demo, l4, rehearsal = (check_settings(resolved[env]) for env in (None, "l4", "l4+rehearsal"))
    assert (
        demo["environment"].kind == "demo"
        and l4["environment"].paper
        and rehearsal["environment"].rehearsal
    )
    assert demo["demo_pretraining"].pretraining.steps == 150 and demo[
        "demo_pretraining"
    ].pretraining.crop_scale == (0.2, 0.4)
    # the paper's: off, all null
    assert l4["demo_pretraining"].pretraining is None and l4["demo_pretraining"].models == ()
    assert (
        l4["hyperparameter_search"].n_trials == 297
        and l4["permutation_study"].fixed.accelerator == "gpu"
    )
    assert (
        l4["permutation_study"].fixed.channels_last is True
        and rehearsal["permutation_study"].fixed.accelerator == "cpu"
    )
    # a YAML setting, not a default in code
    assert demo["permutation_study"].keep_checkpoints is False
    assert (
        demo["hyperparameter_search"].sampler.seed == 42
        and demo["data_engineering"].splits.seed == 42
    )


@pytest.mark.parametrize(
    "path",
    [
        "permutation_study.foo",
        "permutation_study.fixed.weight_deacy",
        "permutation_study.overrides.pretrained",
        "hyperparameter_search.sampler.sed",
        "hyperparameter_search.search_space.momentum",
        "hyperparameter_search.n_trial",
        "data_engineering.splits.tran",
        "data_engineering.normalization.clip",
        "demo_pretraining.step",
        "environment.paper",
        "cross_validation.fold",
    ],
)
def test_an_unknown_key_is_refused_with_its_name_and_file(resolved, path):
    section = path.split(".")[0]
    parameters = changed(resolved[None], path, 1)
    expected = re.escape(f"{path} is not a setting ({SOURCES[section]} lists them")
    with pytest.raises(ValueError, match=expected):
        check_settings(parameters)
    with pytest.raises(ValueError, match=expected):  # what the node itself builds
        PIPELINE_SETTINGS[section].from_params(parameters[section])


@pytest.mark.parametrize(
    "path",
    [
        "permutation_study.keep_checkpoints",
        "permutation_study.fixed.cudnn_benchmark",
        "permutation_study.overrides.lr_interval",
        "hyperparameter_search.sampler.seed",
        "hyperparameter_search.pruner.n_warmup_steps",
        "hyperparameter_search.worker",
        "data_engineering.normalization.upper",
        "demo_pretraining.steps",
        "environment.rehearsal",
    ],
)
def test_a_missing_key_is_refused_with_its_name_and_file(resolved, path):
    section = path.split(".")[0]
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is missing ({SOURCES[section]} sets it)")
    ):
        check_settings(changed(resolved[None], path, delete=True))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("permutation_study.seeds", "42"),
        ("permutation_study.fixed.early_stopping", "yes"),
        ("permutation_study.fixed", [16]),
        ("hyperparameter_search.n_trials", 16.5),
        ("hyperparameter_search.config_id", True),
        ("hyperparameter_search.search_space.learning_rate", [6e-6]),
        ("data_engineering.n_workers", "all"),
        ("environment.kind", "paper_run"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_its_name(resolved, path, value):
    with pytest.raises(ValueError, match=re.escape(path)):
        check_settings(changed(resolved[None], path, value))


def test_the_settings_hold_no_defaults_the_yaml_is_their_only_home():
    import idh_pseudocolor.parameters as module

    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and is_dataclass(c) and c.__module__ == module.__name__
    ]
    assert len(classes) == 21  # every block and nested section
    for cls in classes:
        with_default = [
            f.name
            for f in fields(cls)
            if f.default is not MISSING or f.default_factory is not MISSING
        ]
        assert with_default == [], f"{cls.__name__}: {with_default}"
    for section, source in SOURCES.items():  # each block's file defines it
        assert section in yaml.safe_load((REPO / source).read_text()), source


def test_no_parameter_is_looked_up_with_a_default_in_src():
    lookup = re.compile(
        r"\b(params|parameters|environment|env|search_params|data_params|block|options)\.get\("
    )
    found = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for p in sorted((REPO / "src").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if lookup.search(line)
    ]
    assert found == []


def test_nodes_use_the_typed_settings(resolved):
    """The sweep's overrides and the demo pretraining as the nodes see them."""
    base, l4 = resolved[None], resolved["l4"]
    best = {
        "hyperparameters": {
            "learning_rate": 1e-4,
            "pretrained": True,
            "superconvergence": False,
            "peak_fraction": 0.4,
            "lr_interval": "step",
            "max_epochs": 120,
            "mask_non_tumor": True,
        }
    }
    demo = PermutationStudySettings.from_params(base["permutation_study"]).hyperparameters(best)
    # the demo's pins; pretrained from best
    assert demo == {
        "learning_rate": 4e-3,
        "pretrained": True,
        "superconvergence": True,
        "peak_fraction": 0.3,
        "lr_interval": "epoch",
        "max_epochs": 10,
        "mask_non_tumor": False,
    }
    assert (
        PermutationStudySettings.from_params(l4["permutation_study"]).hyperparameters(best)
        == best["hyperparameters"]
    )
    assert (
        DemoPretrainingSettings.from_params(
            {**base["demo_pretraining"], "enabled": False}
        ).pretraining
        is None
    )
    with pytest.raises(ValueError, match=re.escape("demo_pretraining.image_size = 'big'")):
        DemoPretrainingSettings.from_params({**base["demo_pretraining"], "image_size": "big"})
    search = SearchSettings.from_params(base["hyperparameter_search"])
    assert (
        search.fixed.run_config()["seed"] == 42
        and "seed"
        not in PermutationStudySettings.from_params(base["permutation_study"]).fixed.run_config()
    )


def test_a_kedro_run_refuses_an_unknown_key_before_any_node(kedro_project, tiny_cohort):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(kedro_project)
    typo = {"cohort_path": str(tiny_cohort), "permutation_study": {"keep_checkpoint": True}}
    with (
        KedroSession.create(project_path=kedro_project, runtime_params=typo) as session,
        pytest.raises(
            ValueError, match=re.escape("permutation_study.keep_checkpoint is not a setting")
        ),
    ):
        # a pipeline that does not even read the block
        session.run(pipeline_names=["data_engineering"])
    assert not any(p.is_file() for p in (kedro_project / "data").rglob("*"))  # nothing ran


def test_every_run_setting_is_reachable_from_conf_and_nowhere_has_a_default(resolved):
    """A RunConfig field is the loop's (model, configuration, seed), a hyperparameter (the
    search's best_params, Table 1) or a fixed setting of the pipeline's YAML block: a field that
    conf cannot set (as weight_decay once was, a default in code only) fails here, and so does a
    default anywhere in RunConfig or the slice normalization."""
    from idh_pseudocolor.paper_path import flatten
    from idh_pseudocolor.parameters import FixedSettings, setting_keys
    from idh_pseudocolor.search import PAPER_OPTIMUM
    from idh_pseudocolor.slices import Normalization
    from idh_pseudocolor.training import RunConfig

    run_fields = {f.name for f in fields(RunConfig)}
    fixed = {f.name for f in fields(FixedSettings)}
    assert run_fields == {"model_name", "config_id", "seed"} | set(PAPER_OPTIMUM) | fixed
    for cls in (RunConfig, Normalization):
        assert [f.name for f in fields(cls) if f.default is not MISSING] == [], cls.__name__
    for block in ("hyperparameter_search", "permutation_study"):
        for name in fixed:  # each pipeline's YAML sets every fixed field, weight decay included
            assert f"{block}.fixed.{name}" in setting_keys()
    for env, parameters in resolved.items():  # and every environment resolves every setting
        keys = set(flatten(parameters))
        missing = [k for k in setting_keys() if k not in keys and not k.endswith(".weights_file")]
        assert missing == [], env
        assert parameters["permutation_study"]["fixed"]["weight_decay"] == 0.01


def test_machine_keys_are_the_settings_marked_machine():
    """The paper path's free keys come from the settings classes, not from a second list."""
    from idh_pseudocolor.paper_path import MACHINE_KEYS
    from idh_pseudocolor.parameters import machine_keys

    assert MACHINE_KEYS == machine_keys()
    assert "permutation_study.fixed.accelerator" in MACHINE_KEYS
    assert "permutation_study.fixed.weights_file.*" in MACHINE_KEYS
    assert "data_engineering.n_workers" in MACHINE_KEYS
    # an experiment setting is never the machine's
    for key in ("permutation_study.fixed.weight_decay", "permutation_study.fixed.batch_size"):
        assert key not in MACHINE_KEYS
