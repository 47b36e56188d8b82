"""cross_validation through a real Kedro session: K=3 folds of the tiny phantom, a tiny model;
the folds partition the patients, stratified, and every reported number is recomputed here from
the saved per-fold predictions with scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from sklearn.metrics import f1_score, roc_auc_score

from idh_pseudocolor.provenance import best_params_id
from tests.conftest import write_best_params
from tests.pipelines.test_permutation_study import BEST, TINY


def latest(folder):
    return sorted(folder.glob("*/*"))[-1]


def test_three_folds_partition_the_patients_and_pool_their_predictions(kedro_project, tiny_cohort):
    params = {**TINY, "cross_validation": {"folds": 3, "seed": 5, "val_fraction": 0.25}}
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    best = write_best_params(kedro_project, BEST["hyperparameters"])
    data = kedro_project / "data"
    bootstrap_project(kedro_project)
    with KedroSession.create(
        project_path=kedro_project, runtime_params={"cohort_path": str(tiny_cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering", "demo_pretraining"])
    # what the permutation study leaves for the final evaluation: the winner and its test metrics
    (data / "08_reporting/study_winner.json").write_text(
        json.dumps({"config_id": 15, "best_params_id": best_params_id(best), "ranking": [15]})
    )
    single = {"model_name": ["resnet10t"], "pretrained": [False], "ensemble_auroc": [0.9]}
    pd.DataFrame(single).to_csv(data / "08_reporting/test_metrics.csv", index=False)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["cross_validation"])

    manifest = pd.read_csv(data / "02_intermediate/subject_manifest.csv")
    folds = pd.read_csv(data / "03_primary/cross_validation_folds.csv")
    assert sorted(folds["subject_id"]) == sorted(manifest["subject_id"])  # every patient, once
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    mutants = folds.groupby("fold")["label"].sum()
    assert mutants.max() - mutants.min() <= 1  # stratified

    tested = []
    for fold in range(10):
        part = pd.read_csv(data / f"07_model_output/cross_validation/fold_{fold}.csv")
        if fold >= 3:
            assert part.empty  # fold nodes beyond cross_validation.folds do nothing
            continue
        assert set(part["subject_id"]) == set(folds.loc[folds["fold"] == fold, "subject_id"])
        assert set(part["seed"]) == {42} and set(part["config_id"]) == {15}
        tested += sorted(set(part["subject_id"]))
    assert sorted(tested) == sorted(folds["subject_id"])  # no patient in two test folds

    predictions = pd.read_csv(data / "07_model_output/cross_validation_predictions.csv")
    per_fold = pd.read_csv(latest(data / "08_reporting/cross_validation_fold_metrics.csv"))
    pooled = pd.read_csv(latest(data / "08_reporting/cross_validation_pooled_metrics.csv"))
    for fold, part in predictions.groupby("fold"):
        row = per_fold[per_fold["fold"] == fold].iloc[0]
        if part["label"].nunique() == 2:
            assert row["auroc"] == pytest.approx(roc_auc_score(part["label"], part["prob_mutant"]))
    y, p = predictions["label"].to_numpy(), predictions["prob_mutant"].to_numpy()
    row = pooled.iloc[0]
    assert row["auroc_pooled"] == pytest.approx(roc_auc_score(y, p))
    assert row["f1_pooled"] == pytest.approx(
        f1_score(y, p >= 0.5, zero_division=np.nan), nan_ok=True
    )
    assert row["auroc_fold_mean"] == pytest.approx(per_fold["auroc"].mean())
    assert row["auroc_fold_std"] == pytest.approx(per_fold["auroc"].std(ddof=1))

    summary = json.loads((data / "08_reporting/cross_validation_summary.json").read_text())
    assert summary["folds"] == 3 and summary["patients"] == len(folds)
    (sentence,) = summary["sentences"]
    assert sentence.startswith("resnet10t, no pretraining: the single split's test AUROC 0.900")
    assert (data / "08_reporting/figures/cross_validation_folds_figure.png").exists()


def test_the_report_shows_cross_validation_only_when_it_ran():
    """The report's section comes from the summary the pipeline writes; absent, no section."""
    from idh_pseudocolor.report.html import render_report
    from tests.report_inputs import report_inputs

    summary = {
        "folds": 3,
        "patients": 24,
        "fold_metrics": [
            {"fold": f, "model_name": "resnet10t", "pretrained": False, "auroc": a, "f1": 0.5}
            for f, a in enumerate((0.61, 0.74, 0.83))
        ],
        "pooled": [
            {
                "model_name": "resnet10t",
                "pretrained": False,
                "n_patients": 24,
                "auroc_pooled": 0.7123,
                "auroc_ci_low": 0.5,
                "auroc_ci_high": 0.9,
                "auroc_fold_mean": 0.7267,
                "auroc_fold_std": 0.111,
                "auroc_fold_min": 0.61,
                "auroc_fold_max": 0.83,
                "f1_pooled": 0.5,
                "f1_fold_mean": 0.5,
                "f1_fold_std": 0.0,
            }
        ],
        "single_split": [{"model_name": "resnet10t", "pretrained": False, "auroc": 0.9}],
        "sentences": ["resnet10t, no pretraining: the single split's test AUROC 0.900 lies above"],
    }
    with_cv = render_report(**report_inputs(), cross_validation=summary)
    assert 'id="cross-validation"' in with_cv and "0.712" in with_cv and "0.610–0.830" in with_cv
    assert "lies above" in with_cv
    without = render_report(**report_inputs())
    assert 'id="cross-validation"' not in without
