"""Thin nodes over idh_pseudocolor.training and idh_pseudocolor.study."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from idh_pseudocolor.configurations import configuration_label
from idh_pseudocolor.models import PretrainedWeightsUnavailable
from idh_pseudocolor.paper import (
    best_params_id,
    check_best_params,
    check_cohort,
    check_one_source,
    check_weights_files,
    check_winner_source,
)
from idh_pseudocolor.pipeline_settings import (
    DataEngineeringSettings,
    EnvironmentSettings,
    PermutationStudySettings,
    SearchSettings,
)
from idh_pseudocolor.study import final_metrics_table, summarize, winner
from idh_pseudocolor.training import (
    RunConfig,
    RunResult,
    software_versions,
    train_run,
    training_device,
)

#: columns that say where and when a run ran; they differ between identical runs
PROVENANCE_COLUMNS = ("worker", "device", "started_at", "finished_at")

logger = logging.getLogger(__name__)


def log_run(
    cfg: RunConfig, result: RunResult, seconds: float, done: int, total: int, elapsed: float
) -> None:
    """One line per finished run, so a long node shows progress in a terminal and in log files;
    the ETA assumes the node's remaining runs take as long as its finished ones did on average."""
    arm = "pretrained" if cfg.pretrained else "scratch"
    eta = datetime.timedelta(seconds=round(elapsed / done * (total - done)))
    logger.info(
        "%s: %s %s seed %d: %d epochs, best val AUROC %.3f (epoch %d), %.1f s [%d/%d, ETA %s]",
        configuration_label(cfg.config_id),
        cfg.model_name,
        arm,
        cfg.seed,
        result.epochs_run,
        result.metrics["auroc"],
        result.best_epoch,
        seconds,
        done,
        total,
        eta,
    )


def where_and_when(cfg: RunConfig, started_at: float) -> dict[str, Any]:
    """Which process, machine and device ran a run, when, with which threads and library versions:
    the sweep's audit trail and what its numbers depend on besides settings and seed."""
    device = training_device(cfg.accelerator)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "device": name,
        "torch_threads": cfg.torch_threads,
        **software_versions(),
        "started_at": started_at,
        "finished_at": time.time(),
    }


def node_settings(
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
) -> tuple[PermutationStudySettings, DataEngineeringSettings, SearchSettings, EnvironmentSettings]:
    """The four settings blocks a training node checks (CHECKED_PARAMETERS), typed."""
    return (
        PermutationStudySettings.from_params(params),
        DataEngineeringSettings.from_params(data_params),
        SearchSettings.from_params(search_params),
        EnvironmentSettings.from_params(environment),
    )


def checked_best_params(
    best_params: dict[str, Any],
    settings: PermutationStudySettings,
    search: SearchSettings,
    consumer: str,
) -> dict[str, Any]:
    """best_params' identity for the runs' rows, after checking it came from this environment's
    search."""
    accepted = check_best_params(
        best_params,
        search.fingerprint_id(),
        search.n_trials,
        settings.accept_best_params,
        consumer=consumer,
    )
    return {
        "best_params_id": best_params_id(best_params),
        "best_params_accepted_by_override": accepted,
    }


def run_name(cfg: RunConfig) -> str:
    return (
        f"configuration_{cfg.config_id}-{cfg.model_name}-"
        f"{'pretrained' if cfg.pretrained else 'scratch'}-seed{cfg.seed}"
    )


def checkpoint(result: RunResult, data: DataEngineeringSettings) -> dict[str, Any]:
    """A run's best-epoch weights and what is needed to rebuild, judge and apply it (the slice
    normalization its inputs had, so ``predict`` prepares new patients the same way)."""
    meta = {
        "config": asdict(result.config),
        "weights": result.weights.as_dict(),
        "best_epoch": result.best_epoch,
        "validation": result.metrics,
        "normalization": asdict(data.normalization),
    }
    return {"state_dict": result.state_dict, "meta": meta}


def train_configuration(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    best_params: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    *,
    config_id: int,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All runs (models x seeds) of one configuration; validation metrics, predictions and
    (with ``keep_checkpoints``) each run's best-epoch weights.

    Hyperparameters come from the search's ``best_params`` (refused if this environment's search
    did not produce it), overridable by ``permutation_study.overrides``; the test split is not read.
    """
    settings, data, search, env = node_settings(params, data_params, search_params, environment)
    check_cohort(slice_arrays, env)
    check_weights_files(settings.fixed.weights_file, env)
    source = checked_best_params(best_params, settings, search, f"configuration {config_id}")
    keep = settings.keep_checkpoints
    checkpoints: dict[str, Any] = {}
    hp = settings.hyperparameters(best_params)
    train_ids = development_split.loc[development_split["split"] == "train", "subject_id"].tolist()
    val = development_split[development_split["split"] == "val"]
    runs, predictions = [], []
    node_started = time.time()
    for model_name in settings.models:
        for seed in settings.seeds:
            cfg = RunConfig(
                model_name=model_name,
                config_id=config_id,
                seed=seed,
                **{**settings.fixed.run_config(), **hp},
            )
            started = time.time()
            result = train_run(
                slice_arrays, train_ids, val["subject_id"].tolist(), cfg, keep_state=keep
            )
            log_run(
                cfg,
                result,
                time.time() - started,
                len(runs) + 1,
                len(settings.models) * len(settings.seeds),
                time.time() - node_started,
            )
            if keep:
                checkpoints[run_name(cfg)] = checkpoint(result, data)
            runs.append(
                {
                    "config_id": config_id,
                    "model_name": model_name,
                    "seed": seed,
                    "pretrained": cfg.pretrained,
                    **result.metrics,
                    "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run,
                    "pretrained_loaded": result.weights.pretrained_loaded,
                    "weights_source": result.weights.source,
                    **source,
                    **where_and_when(cfg, started),
                }
            )
            predictions.append(
                pd.DataFrame(
                    {
                        "config_id": config_id,
                        "model_name": model_name,
                        "seed": seed,
                        "subject_id": result.val_subject_ids,
                        "label": val["label"].to_numpy(),
                        "prob_mutant": result.val_prob_mutant,
                    }
                )
            )
    return pd.DataFrame(runs), pd.concat(predictions, ignore_index=True), checkpoints


def aggregate_study(
    params: dict[str, Any], *validation_runs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All runs in one table, mean/std per configuration and model, and the winner (paper's
    rule)."""
    settings = PermutationStudySettings.from_params(params)
    runs = pd.concat(validation_runs, ignore_index=True)
    sources = (
        runs["best_params_id"]
        if "best_params_id" in runs
        else pd.Series(["unrecorded"] * len(runs))
    )
    check_one_source(sources.fillna("unrecorded"))
    summary = summarize(runs)
    return (
        runs,
        summary,
        {**winner(summary, models=list(settings.models)), "best_params_id": str(sources.iloc[0])},
    )


def compare_four_channel(
    study_runs: pd.DataFrame, four_channel_runs: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Configuration 28 (all four sequences) ranked among the paper's 28 by the same rule.

    It is an extension: it never enters the paper's winner; this table only says where it lands.
    """
    settings = PermutationStudySettings.from_params(params)
    both = pd.concat([study_runs, four_channel_runs], ignore_index=True)
    if "best_params_id" in both:
        check_one_source(both["best_params_id"].fillna("unrecorded"))
    summary = summarize(both)
    ranking = winner(summary, models=list(settings.models))["ranking"]
    summary["rank_by_sum_mean_auroc"] = summary["config_id"].map(
        {c: i + 1 for i, c in enumerate(ranking)}
    )
    return summary.sort_values(["rank_by_sum_mean_auroc", "model_name"]).reset_index(drop=True)


def demo_weights_files(
    demo_pretrained_weights: dict[str, Any] | None, models: list[str]
) -> dict[str, str] | None:
    """The demo's photograph-pretrained weights per model, or None where the demo pretraining is
    off.

    A model without a file is refused: with network access it would otherwise quietly get
    ImageNet weights from the hub, and the arm would mix two kinds of pretraining.
    """
    demo = demo_pretrained_weights or {}
    if not demo.get("record", {}).get("enabled"):
        return None
    missing = [m for m in models if m not in demo.get("files", {})]
    if missing:
        raise PretrainedWeightsUnavailable(
            f"no demo-pretrained weights for {', '.join(missing)}: add them to "
            "demo_pretraining.models (conf/base/parameters_demo_pretraining.yml), "
            "or set permutation_study.fixed.weights_file"
        )
    return {m: demo["files"][m] for m in models}


def checked_winner_inputs(
    slice_arrays: dict[str, np.ndarray],
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    blocks: tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]],
    demo_pretrained_weights: dict[str, Any] | None,
    consumer: str,
) -> tuple[PermutationStudySettings, DataEngineeringSettings, Any, dict[str, Any]]:
    """What every training of the winner checks first (the final evaluation, each
    cross-validation fold): the settings, a paper run's cohort and weights, that best_params and
    the winner come from this environment's search; returns the settings, the weights file(s) of
    the pretrained arm and best_params' identity."""
    settings, data, search, env = node_settings(*blocks)
    check_cohort(slice_arrays, env)
    weights_file = settings.fixed.weights_file
    if not weights_file and True in settings.final_evaluation.pretrained:
        weights_file = demo_weights_files(demo_pretrained_weights, list(settings.models))
    check_weights_files(weights_file, env)
    source = checked_best_params(best_params, settings, search, consumer)
    check_winner_source(study_winner, best_params, consumer)
    return settings, data, weights_file, source


def evaluate_winner(
    slice_arrays: dict[str, np.ndarray],
    development_split: pd.DataFrame,
    test_split: pd.DataFrame,
    best_params: dict[str, Any],
    study_winner: dict[str, Any],
    params: dict[str, Any],
    data_params: dict[str, Any],
    search_params: dict[str, Any],
    environment: dict[str, Any],
    demo_pretrained_weights: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The only use of the test split: the winning configuration, each model, pretrained and from
    scratch, every seed; trained on train, best epoch chosen on validation, scored on test.

    Returns per-run test predictions (with each run's validation AUROC and best epoch), a
    metrics table per model x pretrained (mean and std over seeds of each metric and the
    seed-ensemble's metrics) and the runs' weights, which ``predict`` applies to new patients.
    The pretrained arm loads ``fixed.weights_file`` (or the hub / HF cache); where none is set and
    the demo pretrained its networks (``demo_pretrained_weights``), it loads those files, through
    the same weights-file path, and every row says so.
    """
    settings, data, weights_file, source = checked_winner_inputs(
        slice_arrays,
        best_params,
        study_winner,
        (params, data_params, search_params, environment),
        demo_pretrained_weights,
        "the final evaluation",
    )
    train_ids = development_split.loc[development_split["split"] == "train", "subject_id"].tolist()
    val_ids = development_split.loc[development_split["split"] == "val", "subject_id"].tolist()
    predictions_table, models = winner_runs(
        slice_arrays,
        train_ids,
        val_ids,
        test_split,
        int(study_winner["config_id"]),
        settings,
        data,
        settings.hyperparameters(best_params),
        weights_file,
        source["best_params_id"],
    )
    return predictions_table, final_metrics_table(predictions_table), models


def winner_runs(
    slice_arrays: dict[str, np.ndarray],
    train_ids: list[str],
    val_ids: list[str],
    test: pd.DataFrame,
    config_id: int,
    settings: PermutationStudySettings,
    data: DataEngineeringSettings,
    hyperparameters: dict[str, Any],
    weights_file: str | dict[str, str] | None,
    best_params_id: str,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The winner's runs (each model, arm and seed) trained on ``train_ids``, best epoch chosen on
    ``val_ids``, scored on the ``test`` patients: one row per run x test patient, and each run's
    weights. The final evaluation's loop, also each cross-validation fold's."""
    test_ids, test_labels = test["subject_id"].tolist(), test["label"].to_numpy()
    predictions, models = [], {}
    arms = settings.final_evaluation.pretrained
    total = len(settings.models) * len(arms) * len(settings.seeds)
    node_started = time.time()
    for model_name in settings.models:
        for pretrained in arms:
            for seed in settings.seeds:
                cfg = RunConfig(
                    model_name=model_name,
                    config_id=config_id,
                    seed=seed,
                    **{
                        **settings.fixed.run_config(),
                        **hyperparameters,
                        "pretrained": pretrained,
                        "weights_file": weights_file,
                    },
                )
                started = time.time()
                result = train_run(
                    slice_arrays, train_ids, val_ids, cfg, evaluate_ids=test_ids, keep_state=True
                )
                log_run(
                    cfg,
                    result,
                    time.time() - started,
                    len(predictions) + 1,
                    total,
                    time.time() - node_started,
                )
                models[run_name(cfg)] = checkpoint(result, data)
                predictions.append(
                    pd.DataFrame(
                        {
                            "config_id": config_id,
                            "model_name": model_name,
                            "pretrained": pretrained,
                            "pretrained_loaded": result.weights.pretrained_loaded,
                            "seed": seed,
                            "weights_source": result.weights.source,
                            "demo_pretraining": result.weights.demo_pretraining,
                            # the run's own validation score: picks the paper's single "best model"
                            # seed and checks the retrained run against the sweep's run of the same
                            # configuration
                            "val_auroc": float(result.metrics["auroc"]),
                            "best_epoch": int(result.best_epoch),
                            "best_params_id": best_params_id,
                            "subject_id": test_ids,
                            "label": test_labels,
                            "prob_mutant": result.eval_prob_mutant,
                        }
                    )
                )
    return pd.concat(predictions, ignore_index=True), models
