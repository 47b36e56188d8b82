"""idh_pseudocolor.runs without training: run names, bundle entries read back, the demo's weights
and the checks a winner's training makes first."""

from __future__ import annotations

from dataclasses import asdict, fields
from itertools import product

import pytest

from idh_pseudocolor.configurations import PAPER_CONFIGURATION_IDS
from idh_pseudocolor.models import PretrainedWeightsUnavailable
from idh_pseudocolor.paper_path import PAPER_SETTINGS, PAPER_SWEEP_MODELS
from idh_pseudocolor.runs import (
    UNRECORDED_MACHINE_SETTINGS,
    demo_weights_files,
    recorded_config,
    run_name,
)
from idh_pseudocolor.training import RunConfig
from tests.conftest import run_config

SEEDS = PAPER_SETTINGS["permutation_study.seeds"][0]


def test_the_papers_168_sweep_runs_and_both_arms_have_distinct_names():
    """28 configurations x 2 models x 3 seeds, and the final evaluation's two arms: one name each
    (a bundle keyed by name would otherwise lose a run)."""
    names = {
        run_name(run_config(config_id=c, model_name=m, seed=s, pretrained=p))
        for c, m, s, p in product(PAPER_CONFIGURATION_IDS, PAPER_SWEEP_MODELS, SEEDS, (True, False))
    }
    assert len(names) == 28 * 2 * 3 * 2
    cfg = run_config(config_id=15, model_name="vgg16.tv_in1k", seed=42, pretrained=True)
    assert run_name(cfg) == "configuration_15-vgg16.tv_in1k-pretrained-seed42"


def test_a_recorded_run_config_reads_back_as_it_was_written():
    cfg = run_config(seed=43, pretrained=False, weight_decay=0.05)
    assert recorded_config("r", asdict(cfg)) == cfg
    # a key a later version dropped (the run's progress bar) is ignored
    assert recorded_config("r", {**asdict(cfg), "progress": None}) == cfg


def test_an_older_bundle_gets_the_machine_settings_runs_used_before_they_were_recorded():
    cfg = run_config(cudnn_benchmark=True)
    older = {k: v for k, v in asdict(cfg).items() if k not in UNRECORDED_MACHINE_SETTINGS}
    read = recorded_config("old", older)
    assert all(getattr(read, k) == v for k, v in UNRECORDED_MACHINE_SETTINGS.items())
    assert read.weight_decay == cfg.weight_decay and read.model_name == cfg.model_name
    # only machine settings: a missing experiment setting is an error naming the run
    assert set(UNRECORDED_MACHINE_SETTINGS) <= {f.name for f in fields(RunConfig)}
    with pytest.raises(ValueError, match="bundle run old does not record learning_rate"):
        recorded_config("old", {k: v for k, v in older.items() if k != "learning_rate"})


def test_the_demo_weights_are_used_only_when_the_demo_pretrained_every_model():
    assert demo_weights_files(None, ["a"]) is None
    assert demo_weights_files({"record": {"enabled": False}}, ["a"]) is None
    demo = {"record": {"enabled": True}, "files": {"a": "a.safetensors", "b": "b.safetensors"}}
    assert demo_weights_files(demo, ["b"]) == {"b": "b.safetensors"}
    with pytest.raises(PretrainedWeightsUnavailable, match="no demo-pretrained weights for c"):
        demo_weights_files(demo, ["a", "c"])
