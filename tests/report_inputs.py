"""Shared inputs of the report's tests (no tests here): hand-made predictions and sweeps, every
keyword argument of ``render_report`` built from them, one Jinja macro rendered as the report
renders it, and the project's reporting settings as conf states them."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from idh_pseudocolor.parameters import ReportingSettings
from idh_pseudocolor.report import html, stats
from tests.conftest import REPO, project_parameters

#: a model name that is markup: the report must show it as text wherever it lands
ATTACK = '<script>alert("x")</script>'


@cache
def reporting_settings() -> ReportingSettings:
    """``params:reporting`` as the project resolves it (conf/base/parameters_reporting.yml, the
    one home of the bootstrap's resamples and seed and of the calibration bins)."""
    return ReportingSettings.from_params(project_parameters(REPO)["reporting"])


def render_macro(name: str, *args, **kwargs) -> str:
    """One macro of templates/macros.j2, rendered as the report renders it."""
    return str(getattr(html.environment().get_template("macros.j2").module, name)(*args, **kwargs))


def fixed_predictions(
    n: int = 40, seeds=(42, 43, 44), shift: float = 0.25, seed: int = 1
) -> pd.DataFrame:
    """Three seeds' predictions on the same patients, informative but imperfect."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(int)
    frames = []
    for s in seeds:
        prob = np.clip(0.35 + shift * labels + rng.normal(0, 0.18, n), 0.01, 0.99)
        frames.append(
            pd.DataFrame(
                {
                    "config_id": 15,
                    "model_name": "m",
                    "pretrained": False,
                    "pretrained_loaded": False,
                    "seed": s,
                    "subject_id": [f"P{i:03d}" for i in range(n)],
                    "label": labels,
                    "prob_mutant": prob,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def sweep_and_final():
    """A sweep of the scratch arm and a final evaluation of both arms, seeds 42 and 43."""
    final = pd.concat(
        [fixed_predictions(seeds=(42, 43)).assign(pretrained=flag) for flag in (False, True)],
        ignore_index=True,
    )
    final["val_auroc"] = final["seed"].map({42: 0.800, 43: 0.900})
    final["best_epoch"] = final["seed"].map({42: 6, 43: 9})
    sweep = pd.DataFrame(
        {
            "config_id": [15, 15, 15, 3],
            "model_name": "m",
            "seed": [42, 43, 44, 42],
            "pretrained": False,
            "auroc": [0.810, 0.850, 0.7, 0.5],
            "best_epoch": [6, 7, 3, 1],
        }
    )
    return final, sweep


def report_inputs(label: str = ATTACK, search_plots=()) -> dict:
    """Every keyword argument of ``html.render_report`` from :func:`sweep_and_final`, with
    ``label`` wherever the data can carry text (the model's name, the winner, the settings, the
    QC summary, the planted-truth check, the demo pretraining). 50 bootstrap resamples from seed
    0, 5 calibration bins; a retrain tolerance of 0.02, which seed 43 of the scratch arm exceeds
    (0.900 against the sweep's 0.850); 28 configurations x 2 models, in which gray T1 ranks 4th."""
    import matplotlib.pyplot as plt

    predictions, sweep = sweep_and_final()
    predictions["model_name"] = label
    sweep["model_name"] = label
    results = pd.DataFrame(
        [
            {
                "config_id": c,
                "configuration": str(c),
                "model_name": m,
                "auroc_mean": 0.6 + c / 100 + k / 50,
                "auroc_std": 0.02,
                "f1_mean": 0.5,
                "f1_std": 0.05,
                "seeds": 3,
            }
            for c in range(28)
            for k, m in enumerate(["a", "b"])
        ]
    )
    fig = plt.figure()
    return dict(
        figures={"figure_1": fig, "figure_2": fig, "figure_3": fig, "calibration": fig},
        table=stats.table_2(predictions, 50, 0, 5),
        comparison=stats.pretrained_comparison(predictions, 50, 0),
        agreement=stats.retrain_agreement(predictions, sweep, 0.02),
        winner={
            "config_id": 27,
            "configuration": f"27: {label}",
            "sum_mean_val_auroc": 1.8,
            "per_model_mean_val_auroc": {label: 0.9},
            "best_params_id": label,
        },
        study_results=results,
        best_params={
            "hyperparameters": {label: label},
            "provenance": {
                "trial": 3,
                "completed_trials": 9,
                "validation_f1": 0.7,
                "model_name": label,
                "config_id": 21,
            },
        },
        qc_summary={
            "synthetic_phantom_cohort": True,
            label: label,
            "splits": {label: {"subjects": 3}},
        },
        test_metrics=pd.DataFrame({"model_name": [label], "auroc_mean": [0.5]}),
        search_plots=list(search_plots),
        parameters={
            "environment": {"kind": "demo", "rehearsal": False},
            "reporting": {"figure_1_subject": label},
        },
        generated=label,
        planted={
            "applicable": True,
            "passed": False,
            "cue": label,
            "planted_sequences": [label],
            "holding": [1],
            "criteria": [{"criterion": label, "passed": False}],
        },
        demo_pretraining={"description": label, "photographs": 15, "source": label, "task": label},
    )
