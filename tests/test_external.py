"""external.py on hand-built predictions: each arm compared with its own internal arm, the seed
ensemble averaged per patient, metrics equal to scikit-learn, and a difference interval that
comes from resampling both cohorts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from idh_pseudocolor.external import check_normalization, external_metrics
from tests.conftest import conf_normalization


def predictions(n: int, shift: dict[tuple[str, bool], float], seed: int) -> pd.DataFrame:
    """Two seeds per arm; each arm separates the classes by its own ``shift``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3 == 0
    rows = []
    for (model, pretrained), s in shift.items():
        for run_seed in (42, 43):
            p = np.clip(0.3 + s * labels + rng.normal(0, 0.3, n), 0.01, 0.99)
            rows += [
                {
                    "config_id": 15,
                    "model_name": model,
                    "pretrained": pretrained,
                    "pretrained_loaded": pretrained,
                    "seed": run_seed,
                    "subject_id": f"P{i:03d}",
                    "label": int(labels[i]),
                    "prob_mutant": float(p[i]),
                }
                for i in range(n)
            ]
    return pd.DataFrame(rows)


def ensemble(frame: pd.DataFrame, model: str, pretrained: bool) -> tuple[np.ndarray, np.ndarray]:
    part = frame[(frame["model_name"] == model) & (frame["pretrained"] == pretrained)]
    wide = part.pivot(index="subject_id", columns="seed", values="prob_mutant")
    labels = part.drop_duplicates("subject_id").set_index("subject_id")["label"]
    return labels.loc[wide.index].to_numpy(), wide.mean(axis=1).to_numpy()


ARMS = {("a", True): 0.5, ("a", False): 0.2, ("b", False): 0.05}


def test_each_arm_against_its_own_internal_arm():
    external = predictions(45, ARMS, seed=1)
    internal = predictions(30, {("a", True): 0.6, ("a", False): 0.6}, seed=2)  # no ("b", False)
    table = external_metrics(external, internal, n_resamples=400, seed=0, calibration_bins=5)
    assert table[["model_name", "pretrained"]].values.tolist() == [
        ["a", True],
        ["a", False],
        ["b", False],
    ]
    for _, row in table.iterrows():
        y, p = ensemble(external, row["model_name"], row["pretrained"])
        assert row["auroc"] == pytest.approx(roc_auc_score(y, p))
        assert row["brier"] == pytest.approx(brier_score_loss(y, p))
        assert row["patients"] == 45 and row["mutant"] == 15 and row["seeds"] == 2
        assert row["auroc_ci_low"] <= row["auroc"] <= row["auroc_ci_high"]
    for arm in (("a", True), ("a", False)):
        row = table[(table["model_name"] == arm[0]) & (table["pretrained"] == arm[1])].iloc[0]
        yi, pi = ensemble(internal, *arm)
        assert row["auroc_internal"] == pytest.approx(roc_auc_score(yi, pi))
        assert row["brier_internal"] == pytest.approx(brier_score_loss(yi, pi))
        assert row["auroc_difference"] == pytest.approx(row["auroc"] - row["auroc_internal"])
        assert row["internal_patients"] == 30
        assert row["auroc_difference_ci_low"] < row["auroc_difference"]
        assert row["auroc_difference"] < row["auroc_difference_ci_high"]
    # the weak arm a/scratch lost much AUROC against its strong internal arm: the CI says so
    weak = table[(table["model_name"] == "a") & ~table["pretrained"]].iloc[0]
    assert weak["auroc_difference_ci_high"] < 0
    lonely = table[table["model_name"] == "b"].iloc[0]
    assert math.isnan(lonely["auroc_internal"]) and math.isnan(lonely["auroc_difference_ci_low"])
    assert lonely["internal_patients"] == 0 and not math.isnan(lonely["auroc"])


def test_the_difference_interval_widens_with_the_smaller_cohort():
    """Resampling both cohorts: a tiny internal test makes the difference less certain."""
    external = predictions(60, {("a", True): 0.3}, seed=3)
    wide = external_metrics(external, predictions(12, {("a", True): 0.3}, 4), 1000, 0, 5)
    narrow = external_metrics(external, predictions(240, {("a", True): 0.3}, 4), 1000, 0, 5)

    def width(t):
        return t["auroc_difference_ci_high"].iloc[0] - t["auroc_difference_ci_low"].iloc[0]

    assert width(wide) > width(narrow)
    assert wide["auroc_ci_low"].iloc[0] == narrow["auroc_ci_low"].iloc[0]  # external: the same


def test_runs_trained_on_other_slices_are_refused():
    class Run:
        def __init__(self, name, normalization):
            self.name, self.normalization = name, normalization

    same = conf_normalization()
    check_normalization([Run("r1", same), Run("r2", same)], conf_normalization())
    with pytest.raises(ValueError, match="run r2 was trained on slices normalized as"):
        check_normalization([Run("r1", same), Run("r2", conf_normalization(method="zscore"))], same)
