"""`idh-pseudocolor predict` options on real NIfTI subjects and real (untrained, seeded) timm
models saved in a real model bundle: the bundle's slice normalization, several (model, arm)
groups, --model / --weights, BraTS file names, a 4-channel run and the exit code.

Expected probabilities are recomputed here from the files: the slice extracted with the
normalization the test names, composed, standardized by hand and passed through the model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from idh_pseudocolor.cohort import LAYOUTS
from idh_pseudocolor.datasets import ModelBundleDataset
from idh_pseudocolor.models import WeightsInfo, create_model
from idh_pseudocolor.parameters import DataEngineeringSettings
from idh_pseudocolor.pseudocolor import compose
from idh_pseudocolor.runs import bundle_entry, run_name
from idh_pseudocolor.slices import extract_subject
from idh_pseudocolor.training import RunConfig, RunResult
from tests.conftest import REPO, conf_normalization, project_parameters, run_config

SUBJECTS = ["PHANTOM-0003", "PHANTOM-0004"]
MEAN_STD = ((0.4, 0.45, 0.5), (0.2, 0.25, 0.3))  # deliberately neither ImageNet's nor 0.5


def data_settings(method: str) -> DataEngineeringSettings:
    params = project_parameters(REPO)["data_engineering"]
    return DataEngineeringSettings.from_params(
        {**params, "normalization": {**params["normalization"], "method": method}}
    )


def entry(
    model_name: str, seed: int, config_id: int = 15, pretrained: bool = False, method="percentile"
):
    """A bundle entry as the study writes it (``checkpoint``), with seeded untrained weights."""
    cfg = run_config(
        model_name=model_name,
        config_id=config_id,
        seed=seed,
        pretrained=pretrained,
        image_size=32,
        max_epochs=1,
    )
    torch.manual_seed(seed)
    in_chans = 4 if config_id == 28 else 3
    model, _ = create_model(model_name, pretrained=False, in_chans=in_chans)
    mean, std = MEAN_STD if pretrained else (None, None)
    weights = WeightsInfo(
        model_name,
        pretrained,
        pretrained,
        "file:w.safetensors" if pretrained else "none",
        mean=mean,
        std=std,
    )
    result = RunResult(
        config=cfg,
        weights=weights,
        best_epoch=0,
        epochs_run=1,
        metrics={"auroc": 0.5},
        state_dict=model.state_dict(),
    )
    return run_name(cfg), bundle_entry(result, data_settings(method))


def save_bundle(path: Path, *entries) -> Path:
    ModelBundleDataset(path=str(path)).save(dict(entries))
    return path


def expected_prob(folder: Path, sid: str, layout: str, entry_, method: str) -> float:
    """The model's P(mutant) on the subject's slice, derived here from the files."""
    files = {k: str(folder / t.format(id=sid)) for k, t in LAYOUTS[layout].items()}
    s = extract_subject(sid, files, conf_normalization(method=method))
    cfg = RunConfig(**entry_["meta"]["config"])
    x = compose(s.image[None], s.mask[None], cfg.config_id, cfg.image_size)
    if cfg.pretrained:
        mean, std = (list(v) for v in MEAN_STD)
        if x.shape[1] == 4:
            mean, std = mean + [float(np.mean(mean))], std + [float(np.mean(std))]
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    model, _ = create_model(cfg.model_name, pretrained=False, in_chans=x.shape[1])
    model.load_state_dict(entry_["state_dict"])
    with torch.no_grad():
        return float(torch.softmax(model.eval()(x), dim=1)[0, 1])


def run_predict(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from idh_pseudocolor.cli import main; main()", "predict"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_subjects(tiny_cohort, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two") / "cohort"
    for sid in SUBJECTS:
        shutil.copytree(tiny_cohort / sid, folder / sid)
    return folder


def test_slices_are_normalized_as_the_bundle_recorded(two_subjects, tmp_path):
    name, e = entry("test_resnet", 42, method="zscore")
    bundle = save_bundle(tmp_path / "bundle", (name, e))
    done = run_predict(two_subjects, "--models", bundle, "--out", tmp_path / "out", "--no-pictures")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out/predictions.csv").set_index("subject_id")
    for sid in SUBJECTS:
        zscore = expected_prob(two_subjects, sid, "egd", e, "zscore")
        percentile = expected_prob(two_subjects, sid, "egd", e, "percentile")
        assert table.loc[sid, "prob_mutant"] == pytest.approx(zscore, abs=1e-6)
        assert abs(zscore - percentile) > 1e-4  # the method matters, so this test can fail


def test_several_groups_in_one_table_and_the_model_and_weights_filters(two_subjects, tmp_path):
    entries = dict(
        [
            entry("test_resnet", 42),
            entry("test_resnet", 43),
            entry("test_resnet", 42, pretrained=True),
            entry("test_byobnet", 42),
        ]
    )
    bundle = save_bundle(tmp_path / "bundle", *entries.items())
    done = run_predict(two_subjects, "--models", bundle, "--out", tmp_path / "all", "--no-pictures")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "all/predictions.csv")
    groups = table.groupby(["model_name", "pretrained"])["seeds"].first().to_dict()
    assert groups == {
        ("test_byobnet", False): 1,
        ("test_resnet", False): 2,
        ("test_resnet", True): 1,
    }
    assert sorted(table["subject_id"].unique()) == SUBJECTS and len(table) == 3 * len(SUBJECTS)
    for sid in SUBJECTS:
        scratch = [
            expected_prob(two_subjects, sid, "egd", e, "percentile")
            for name, e in entries.items()
            if "test_resnet" in name and "scratch" in name
        ]
        row = table[
            (table.subject_id == sid) & (table.model_name == "test_resnet") & ~table.pretrained
        ].iloc[0]
        assert row["prob_mutant"] == pytest.approx(np.mean(scratch), abs=1e-6)
        assert row["prob_std_over_seeds"] == pytest.approx(np.std(scratch, ddof=1), abs=1e-6)
        pretrained = next(e for name, e in entries.items() if "pretrained" in name)
        row = table[(table.subject_id == sid) & table.pretrained].iloc[0]
        assert row["prob_mutant"] == pytest.approx(
            expected_prob(two_subjects, sid, "egd", pretrained, "percentile"), abs=1e-6
        )

    done = run_predict(
        two_subjects,
        "--models",
        bundle,
        "--model",
        "test_byobnet",
        "--out",
        tmp_path / "byob",
        "--no-pictures",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(pd.read_csv(tmp_path / "byob/predictions.csv")["model_name"]) == {"test_byobnet"}
    done = run_predict(
        two_subjects, "--models", bundle, "--weights", "pretrained", "--out", tmp_path / "ft"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    finetuned = pd.read_csv(tmp_path / "ft/predictions.csv")
    assert finetuned["pretrained"].tolist() == [True, True]
    pictures = sorted(p.name for p in (tmp_path / "ft/pictures").iterdir())
    assert pictures == [f"{sid}__test_resnet__pretrained.png" for sid in SUBJECTS]


def test_brats_named_cohort_and_subject_folders(tmp_path):
    from idh_pseudocolor.phantom import generate_cohort

    cohort = tmp_path / "brats"
    generate_cohort(
        cohort, n_subjects=3, seed=5, voxel_size=4.0, layout="brats", n_workers=1, progress=False
    )
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    assert (cohort / ids[0] / f"{ids[0]}_t1ce.nii.gz").is_file()  # really BraTS names
    name, e = entry("test_resnet", 42)
    bundle = save_bundle(tmp_path / "bundle", (name, e))
    done = run_predict(
        cohort, "--models", bundle, "--out", tmp_path / "cohort_out", "--no-pictures"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cohort_out/predictions.csv").set_index("subject_id")
    assert sorted(table.index) == ids
    for sid in ids:
        expected = expected_prob(cohort, sid, "brats", e, "percentile")
        assert table.loc[sid, "prob_mutant"] == pytest.approx(expected, abs=1e-6)
    done = run_predict(
        cohort / ids[1], "--models", bundle, "--out", tmp_path / "one", "--no-pictures"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert pd.read_csv(tmp_path / "one/predictions.csv")["subject_id"].tolist() == [ids[1]]


def test_a_four_channel_run(two_subjects, tmp_path):
    runs = dict(
        [
            entry("test_resnet", 42, config_id=28),
            entry("test_resnet", 43, config_id=28, pretrained=True),
        ]
    )
    bundle = save_bundle(tmp_path / "bundle", *runs.items())
    done = run_predict(two_subjects, "--models", bundle, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out/predictions.csv")
    assert set(table["configuration"]) == {"28: all four (extension)"}
    for (name, e), pretrained in zip(runs.items(), (False, True), strict=True):
        for sid in SUBJECTS:
            row = table[(table.subject_id == sid) & (table.pretrained == pretrained)].iloc[0]
            assert row["prob_mutant"] == pytest.approx(
                expected_prob(two_subjects, sid, "egd", e, "percentile"), abs=1e-6
            ), name
    assert len(list((tmp_path / "out/pictures").iterdir())) == 2 * len(SUBJECTS)


def test_exit_code_is_1_when_no_subject_could_be_predicted(two_subjects, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(two_subjects, broken)
    for sid in SUBJECTS:
        (broken / sid / "MASK.nii.gz").unlink()
    name, e = entry("test_resnet", 42)
    bundle = save_bundle(tmp_path / "bundle", (name, e))
    done = run_predict(broken, "--models", bundle, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "0 of 2 subject(s) predicted" in done.stdout
    errors = pd.read_csv(tmp_path / "out/errors.csv")
    assert errors["subject_id"].tolist() == SUBJECTS
    assert all(f.endswith("MASK.nii.gz") for f in errors["file"])
    written = (tmp_path / "out/predictions.csv").read_text()
    assert not any(sid in written for sid in SUBJECTS)  # no row for a subject that failed
