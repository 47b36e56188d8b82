"""`idh-pseudocolor predict` on phantom subjects: the CSV's probability is the model's output on
the same slice, pictures are written, and a broken subject is reported, not fatal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from idh_pseudocolor.datasets import ModelBundleDataset
from idh_pseudocolor.models import create_model
from idh_pseudocolor.parameters import DataEngineeringSettings
from idh_pseudocolor.runs import bundle_entry, run_name
from idh_pseudocolor.slices import extract_many, stack_slices
from idh_pseudocolor.training import (
    RunConfig,
    predict_proba,
    prepare_inputs,
    split_index,
    train_run,
)
from tests.conftest import REPO, conf_normalization, project_parameters, run_config


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    """Two seeds of a tiny model trained on the tiny phantom cohort, saved as the study saves
    them."""
    subjects = sorted(p.name for p in tiny_cohort.iterdir() if p.is_dir())
    files = [
        (
            s,
            {
                k: str(tiny_cohort / s / f)
                for k, f in {
                    "T1": "T1.nii.gz",
                    "T1ce": "T1GD.nii.gz",
                    "T2": "T2.nii.gz",
                    "FLAIR": "FLAIR.nii.gz",
                    "mask": "MASK.nii.gz",
                }.items()
            },
        )
        for s in subjects
    ]
    slices = list(extract_many(files, conf_normalization(), 1, progress=False))
    arrays = stack_slices(slices, {s.subject_id: i % 2 for i, s in enumerate(slices)})
    ids = arrays["subject_ids"].tolist()
    # percentile, as extracted
    data = DataEngineeringSettings.from_params(project_parameters(REPO)["data_engineering"])
    assert data.normalization.normalization() == conf_normalization()
    bundle = {}
    for seed in (42, 43):
        cfg = run_config(
            model_name="test_resnet",
            config_id=15,
            seed=seed,
            pretrained=False,
            max_epochs=1,
            image_size=32,
            learning_rate=1e-3,
            early_stopping=False,
        )
        bundle[run_name(cfg)] = bundle_entry(
            train_run(arrays, ids[:16], ids[16:], cfg, keep_state=True), data
        )
    path = tmp_path_factory.mktemp("bundle") / "winner_models"
    ModelBundleDataset(path=str(path)).save(bundle)
    return path, arrays, bundle


def run_predict(*args) -> subprocess.CompletedProcess:
    """The installed `idh-pseudocolor predict` command, in its own process."""
    command = [
        sys.executable,
        "-c",
        "from idh_pseudocolor.cli import main; main()",
        "predict",
        *map(str, args),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_probability_equals_the_models_output_on_the_same_slice(trained, tiny_cohort, tmp_path):
    bundle_path, arrays, bundle = trained
    subject = "PHANTOM-0003"
    done = run_predict(tiny_cohort / subject, "--models", bundle_path, "--out", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert table["subject_id"].tolist() == [subject] and table["seeds"].tolist() == [2]

    expected = []
    # the trained weights applied to the data_engineering slice of that patient
    for entry in bundle.values():
        cfg = RunConfig(**entry["meta"]["config"])
        model, _ = create_model(cfg.model_name, pretrained=False)
        model.load_state_dict(entry["state_dict"])
        x, _ = prepare_inputs(arrays, split_index(arrays, [subject]), cfg)
        expected.append(float(predict_proba(model, x)[0]))
    row = table.iloc[0]
    assert row["prob_mutant"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert row["prob_std_over_seeds"] == pytest.approx(np.std(expected, ddof=1), abs=1e-6)
    assert [row["prob_seed42"], row["prob_seed43"]] == pytest.approx(expected, abs=1e-6)
    assert (
        row["slice_index"] == arrays["slice_index"][arrays["subject_ids"].tolist().index(subject)]
    )
    (picture,) = (tmp_path / "pictures").iterdir()
    assert (
        picture.name == f"{subject}__test_resnet__scratch.png" and picture.stat().st_size > 20_000
    )


def test_cohort_folder_with_a_broken_subject(trained, cohort_copy, tmp_path):
    bundle_path, _, _ = trained
    broken = cohort_copy / "PHANTOM-0002" / "T2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    done = run_predict(
        cohort_copy, "--models", bundle_path, "--out", tmp_path, "--no-pictures", "--workers", "2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "predictions.csv")
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert len(table) == 23 and "PHANTOM-0002" not in set(table["subject_id"])
    assert errors["subject_id"].tolist() == ["PHANTOM-0002"] and errors["file"].iloc[0].endswith(
        "T2.nii.gz"
    )
    assert "skipped PHANTOM-0002" in done.stderr


def test_asking_for_runs_the_bundle_does_not_have_is_a_clear_error(trained, tiny_cohort, tmp_path):
    bundle_path, _, _ = trained
    done = run_predict(
        tiny_cohort / "PHANTOM-0001",
        "--models",
        bundle_path,
        "--weights",
        "pretrained",
        "--out",
        tmp_path,
    )
    assert done.returncode != 0
    assert "No trained run matches" in done.stderr and "test_resnet" in done.stderr


def test_a_pretrained_run_is_applied_to_inputs_standardized_as_in_its_training(trained, tmp_path):
    """The bundle records the standardization the run's weights expected (timm's data config;
    test_resnet's is 0.5, not ImageNet's) and predict composes with it; a bundle from before
    that record used ImageNet's for every pretrained run."""
    from dataclasses import asdict
    from types import SimpleNamespace

    import torch

    from idh_pseudocolor.models import WeightsInfo
    from idh_pseudocolor.predict import _inputs, load_runs
    from idh_pseudocolor.pseudocolor import compose

    _, arrays, bundle = trained
    entry = next(iter(bundle.values()))
    cfg = RunConfig(**{**entry["meta"]["config"], "pretrained": True})
    weights = WeightsInfo(
        "test_resnet", True, True, "file:x.safetensors", False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    )
    meta = {**entry["meta"], "config": asdict(cfg), "weights": weights.as_dict()}
    older = {
        **meta,
        "weights": {k: v for k, v in weights.as_dict().items() if k not in ("mean", "std")},
    }
    ModelBundleDataset(path=str(tmp_path / "b")).save(
        {
            "now": {"state_dict": entry["state_dict"], "meta": meta},
            "older": {"state_dict": entry["state_dict"], "meta": older},
        }
    )
    runs = {run.name: run for run in load_runs(ModelBundleDataset(path=str(tmp_path / "b")).load())}
    i = arrays["subject_ids"].tolist().index("PHANTOM-0003")
    subject = SimpleNamespace(image=arrays["images"][i], mask=arrays["masks"][i])
    raw = compose(
        arrays["images"][i : i + 1], arrays["masks"][i : i + 1], cfg.config_id, cfg.image_size
    )
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name, (mean, std) in {"now": ((0.5,) * 3, (0.5,) * 3), "older": imagenet}.items():
        assert runs[name].weights.normalization == (mean, std)
        expected = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(_inputs(runs[name], subject), expected)
