"""Many runs: the loops that train a configuration's runs (the sweep) and the winner's runs (the
final evaluation, each cross-validation fold), what every run records (its row, its log line,
where and when it ran), and its bundle entry, written here and read back by ``predict`` and the
external validation.

A run is configuration x model x pretrained x seed (SPEC); one run's training is
:func:`idh_pseudocolor.training.train_run`. No Kedro here: the pipelines' nodes call these.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from idh_pseudocolor import tracking
from idh_pseudocolor.arms import arm_slug
from idh_pseudocolor.configurations import (
    PAPER_CONFIGURATION_IDS,
    SEQUENCES,
    configuration,
    configuration_label,
)
from idh_pseudocolor.models import (
    IMAGENET_NORMALIZATION,
    PretrainedWeightsUnavailable,
    WeightsInfo,
    create_model,
)
from idh_pseudocolor.paper_path import (
    check_best_params,
    check_cohort,
    check_weights_files,
    check_winner_source,
)
from idh_pseudocolor.parameters import (
    DataEngineeringSettings,
    EnvironmentSettings,
    PermutationStudySettings,
    SearchSettings,
)
from idh_pseudocolor.permutation_study import final_metrics_table
from idh_pseudocolor.provenance import best_params_id
from idh_pseudocolor.slices import Normalization
from idh_pseudocolor.training import (
    InputCache,
    RunConfig,
    RunResult,
    software_versions,
    train_run,
    training_device,
)

logger = logging.getLogger(__name__)

#: columns that say where and when a run ran; they differ between identical runs
PROVENANCE_COLUMNS = ("worker", "device", "started_at", "finished_at")


# -- what every run records -------------------------------------------------------------------
def run_name(cfg: RunConfig) -> str:
    """A run's name in bundles and checkpoints, e.g.
    ``configuration_15-vgg16.tv_in1k-pretrained-seed42``."""
    return (
        f"configuration_{cfg.config_id}-{cfg.model_name}-{arm_slug(cfg.pretrained)}-seed{cfg.seed}"
    )


def log_run(
    cfg: RunConfig, result: RunResult, seconds: float, done: int, total: int, elapsed: float
) -> None:
    """One line per finished run, so a long node shows progress in a terminal and in log files;
    the ETA assumes the node's remaining runs take as long as its finished ones did on average."""
    eta = datetime.timedelta(seconds=round(elapsed / done * (total - done)))
    logger.info(
        "%s: %s %s seed %d: %d epochs, best val AUROC %.3f (epoch %d), %.1f s [%d/%d, ETA %s]",
        configuration_label(cfg.config_id),
        cfg.model_name,
        arm_slug(cfg.pretrained),
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


def bundle_entry(
    result: RunResult, data: DataEngineeringSettings, study_rank: int | None = None
) -> dict[str, Any]:
    """A run's best-epoch weights and what is needed to rebuild, judge and apply it (the slice
    normalization its inputs had, so ``predict`` prepares new patients the same way; the
    configuration's study rank, so ``predict`` picks among the winner and the fallbacks without
    the study's tables)."""
    meta = {
        "config": asdict(result.config),
        "weights": result.weights.as_dict(),
        "best_epoch": result.best_epoch,
        "validation": result.metrics,
        "normalization": asdict(data.normalization),
        **({} if study_rank is None else {"study_rank": int(study_rank)}),
    }
    return {"state_dict": result.state_dict, "meta": meta}


class _Progress:
    """Counts a node's finished runs for :func:`log_run`."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.time()

    def finished(self, cfg: RunConfig, result: RunResult, run_started: float) -> None:
        self.done += 1
        now = time.time()
        log_run(cfg, result, now - run_started, self.done, self.total, now - self.started)


# -- the checks a training node makes first -----------------------------------------------------
def node_settings(
    params: Mapping[str, Any],
    data_params: Mapping[str, Any],
    search_params: Mapping[str, Any],
    environment: Mapping[str, Any],
) -> tuple[PermutationStudySettings, DataEngineeringSettings, SearchSettings, EnvironmentSettings]:
    """The four settings blocks a training node checks, typed."""
    return (
        PermutationStudySettings.from_params(params),
        DataEngineeringSettings.from_params(data_params),
        SearchSettings.from_params(search_params),
        EnvironmentSettings.from_params(environment),
    )


def checked_best_params(
    best_params: Mapping[str, Any],
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


def demo_weights_files(
    demo_pretrained_weights: Mapping[str, Any] | None, models: Sequence[str]
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


@dataclass(frozen=True)
class WinnerInputs:
    """What training the winner needs once its inputs are checked."""

    settings: PermutationStudySettings
    data: DataEngineeringSettings
    weights_file: str | dict[str, str] | None  # of the pretrained arm
    best_params_id: str


def checked_winner_inputs(
    slice_arrays: Mapping[str, np.ndarray],
    best_params: Mapping[str, Any],
    study_winner: Mapping[str, Any],
    blocks: tuple[Mapping[str, Any], ...],
    demo_pretrained_weights: Mapping[str, Any] | None,
    consumer: str,
) -> WinnerInputs:
    """What every training of the winner checks first (the final evaluation, each
    cross-validation fold): the settings (``blocks``: the permutation_study, data_engineering,
    hyperparameter_search and environment parameters), a paper run's cohort and weights, that
    best_params and the winner come from this environment's search."""
    settings, data, search, env = node_settings(*blocks)
    check_cohort(slice_arrays, env)
    weights_file = settings.fixed.weights_file
    if not weights_file and True in settings.final_evaluation.pretrained:
        weights_file = demo_weights_files(demo_pretrained_weights, list(settings.models))
    check_weights_files(weights_file, env)
    source = checked_best_params(best_params, settings, search, consumer)
    check_winner_source(study_winner, best_params, consumer)
    return WinnerInputs(settings, data, weights_file, source["best_params_id"])


# -- the loops ----------------------------------------------------------------------------------
def configuration_runs(
    slice_arrays: Mapping[str, np.ndarray],
    train_ids: Sequence[str],
    validation: pd.DataFrame,
    config_id: int,
    settings: PermutationStudySettings,
    data: DataEngineeringSettings,
    hyperparameters: Mapping[str, Any],
    source: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The sweep's runs of one configuration (models x seeds), scored on the ``validation``
    patients (``subject_id``, ``label``): one row per run, one prediction per run x patient, and
    (with ``keep_checkpoints``) each run's bundle entry. ``source`` is best_params' identity."""
    keep = settings.keep_checkpoints
    val_ids = validation["subject_id"].tolist()
    runs, predictions, checkpoints = [], [], {}
    progress = _Progress(len(settings.models) * len(settings.seeds))
    composed = InputCache(slice_arrays)  # the configuration's inputs, made once for its runs
    for model_name in settings.models:
        for seed in settings.seeds:
            cfg = RunConfig(
                model_name=model_name,
                config_id=config_id,
                seed=seed,
                **{**settings.fixed.run_config(), **hyperparameters},
            )
            started = time.time()
            result = train_run(
                slice_arrays, train_ids, val_ids, cfg, keep_state=keep, inputs=composed
            )
            progress.finished(cfg, result, started)
            if keep:
                checkpoints[run_name(cfg)] = bundle_entry(result, data)
            row = _run_row(cfg, result, source, started)
            runs.append(row)
            track_run("sweep", cfg, result, row, started)
            predictions.append(
                pd.DataFrame(
                    {
                        "config_id": config_id,
                        "model_name": model_name,
                        "seed": seed,
                        "subject_id": result.val_subject_ids,
                        "label": validation["label"].to_numpy(),
                        "prob_mutant": result.val_prob_mutant,
                    }
                )
            )
    return pd.DataFrame(runs), pd.concat(predictions, ignore_index=True), checkpoints


def _run_row(
    cfg: RunConfig, result: RunResult, source: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """A sweep run's row of ``study_runs``: its key, validation metrics at the best epoch, what it
    started from, the best_params it used, where and when it ran."""
    return {
        "config_id": cfg.config_id,
        "model_name": cfg.model_name,
        "seed": cfg.seed,
        "pretrained": cfg.pretrained,
        **result.metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "pretrained_loaded": result.weights.pretrained_loaded,
        "weights_source": result.weights.source,
        **source,
        **where_and_when(cfg, started),
    }


def track_run(
    kind: str,
    cfg: RunConfig,
    result: RunResult,
    row: Mapping[str, Any],
    started: float,
    tags: Mapping[str, str] | None = None,
) -> None:
    """A finished run as a nested MLflow run of ``kind`` (``sweep``, ``final_evaluation``,
    ``fold``, ``fallback``): ``row``'s values, the metrics among them as metrics, the per-epoch
    history as metric steps (nothing where this process tracks nothing: :mod:`tracking`)."""
    metric_keys = {*result.metrics, *(f"val_{k}" for k in result.metrics)}
    metric_keys |= {"best_epoch", "epochs_run", "test_auroc"}
    params, metrics = tracking.split_record(row, metric_keys)
    tracking.log_run(
        kind,
        run_name(cfg),
        {
            "configuration": configuration_label(cfg.config_id),
            "arm": arm_slug(cfg.pretrained),
            **params,
        },
        metrics,
        history=result.history,
        tags={"configuration_id": str(cfg.config_id), **(tags or {})},
        started=started,
    )


def _winner_row(
    cfg: RunConfig, result: RunResult, test: pd.DataFrame, best_params: str, started: float
) -> dict[str, Any]:
    """A winner run's record for tracking: its key, validation metrics, its test AUROC."""
    labels = test["label"].to_numpy()
    auroc = (
        float(roc_auc_score(labels, result.eval_prob_mutant))
        if len(set(labels.tolist())) == 2
        else float("nan")
    )
    return {
        "config_id": cfg.config_id,
        "model_name": cfg.model_name,
        "pretrained": cfg.pretrained,
        "seed": cfg.seed,
        **{f"val_{k}": v for k, v in result.metrics.items()},
        "test_auroc": auroc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "pretrained_loaded": result.weights.pretrained_loaded,
        "weights_source": result.weights.source,
        "best_params_id": best_params,
        **where_and_when(cfg, started),
    }


def winner_runs(
    slice_arrays: Mapping[str, np.ndarray],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    test: pd.DataFrame,
    config_id: int,
    inputs: WinnerInputs,
    hyperparameters: Mapping[str, Any],
    study_rank: int | None = None,
    kind: str = "final_evaluation",
    tags: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The winner's runs (each model, arm and seed) trained on ``train_ids``, best epoch chosen on
    ``val_ids``, scored on the ``test`` patients: one row per run x test patient, and each run's
    bundle entry (recording ``study_rank`` when given). The final evaluation's loop, also each
    cross-validation fold's and each fallback configuration's."""
    settings = inputs.settings
    test_ids = test["subject_id"].tolist()
    arms = settings.final_evaluation.pretrained
    predictions, models = [], {}
    progress = _Progress(len(settings.models) * len(arms) * len(settings.seeds))
    # each arm's training, validation and test inputs, made once for its seeds (and, where the
    # models standardize alike, for both models)
    composed = InputCache(slice_arrays, max_entries=6)
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
                        "weights_file": inputs.weights_file,
                    },
                )
                started = time.time()
                result = train_run(
                    slice_arrays,
                    train_ids,
                    val_ids,
                    cfg,
                    evaluate_ids=test_ids,
                    keep_state=True,
                    inputs=composed,
                )
                progress.finished(cfg, result, started)
                models[run_name(cfg)] = bundle_entry(result, inputs.data, study_rank)
                predictions.append(_test_rows(cfg, result, test, inputs.best_params_id))
                row = _winner_row(cfg, result, test, inputs.best_params_id, started)
                track_run(kind, cfg, result, row, started, tags)
    return pd.concat(predictions, ignore_index=True), models


#: a winner-recipe run's test predictions (:func:`_test_rows`), so that a node with no runs
#: still writes a table with them
TEST_PREDICTION_COLUMNS = [
    "config_id",
    "model_name",
    "pretrained",
    "pretrained_loaded",
    "seed",
    "weights_source",
    "demo_pretraining",
    "val_auroc",
    "best_epoch",
    "best_params_id",
    "subject_id",
    "label",
    "prob_mutant",
]


def _test_rows(
    cfg: RunConfig, result: RunResult, test: pd.DataFrame, best_params: str
) -> pd.DataFrame:
    """A winner run's predictions for the test patients, with what the run started from and its
    own validation score, which picks the paper's single "best model" seed and checks the
    retrained run against the sweep's run of the same configuration."""
    return pd.DataFrame(
        {
            "config_id": cfg.config_id,
            "model_name": cfg.model_name,
            "pretrained": cfg.pretrained,
            "pretrained_loaded": result.weights.pretrained_loaded,
            "seed": cfg.seed,
            "weights_source": result.weights.source,
            "demo_pretraining": result.weights.demo_pretraining,
            "val_auroc": float(result.metrics["auroc"]),
            "best_epoch": int(result.best_epoch),
            "best_params_id": best_params,
            "subject_id": test["subject_id"].tolist(),
            "label": test["label"].to_numpy(),
            "prob_mutant": result.eval_prob_mutant,
        }
    )


# -- fallbacks for patients missing sequences ---------------------------------------------------
#: fallback_configurations' columns: a set of present sequences and the configuration it gets
FALLBACK_COLUMNS = [
    "present_sequences",
    "missing_sequences",
    "config_id",
    "configuration",
    "study_rank",
    "winner",
]


def sequence_set(sequences: Iterable[str]) -> str:
    """``'T1ce+T2+FLAIR'`` (in SEQUENCES order), ``'none'`` for no sequence: a CSV cell."""
    chosen = set(sequences)
    return "+".join(s for s in SEQUENCES if s in chosen) or "none"


def best_fitting(ranked: Sequence[int], present: Iterable[str]) -> int | None:
    """The first configuration of ``ranked`` (best first) whose channels are all ``present``."""
    have = set(present)
    return next((c for c in ranked if set(configuration(c)) <= have), None)


def study_ranking(study_winner: Mapping[str, Any]) -> list[int]:
    """The study's ranking of the paper's 28 configurations, best first: study_results ordered by
    the winner's rule (sum over models of mean validation AUROC, ties to the lower id), as
    aggregate_study records it beside the winner; rank 1 is the winner."""
    ranking = [int(c) for c in study_winner.get("ranking") or ()]
    if not ranking or ranking[0] != int(study_winner["config_id"]):
        raise ValueError(
            "study_winner records no ranking with its winner first (made before rankings were "
            "recorded?): rerun aggregate_study (kedro run --nodes aggregate_study)"
        )
    return ranking


def fallback_choices(ranking: Sequence[int], min_sequences: int) -> pd.DataFrame:
    """For every set of at least ``min_sequences`` present sequences (all four included: the
    winner), the best-ranked configuration of ``ranking`` that uses only them
    (:data:`FALLBACK_COLUMNS`). Only the paper's 28 count; ranks are positions in ``ranking``
    (1 = the winner). A set that no ranked configuration fits is left out. Two sequences only fit
    grays, one colour configuration needs three."""
    ranked = [int(c) for c in ranking if c in PAPER_CONFIGURATION_IDS]
    rows = []
    for size in range(len(SEQUENCES), min_sequences - 1, -1):
        for present in combinations(SEQUENCES, size):
            best = best_fitting(ranked, present)
            if best is None:
                continue
            rows.append(
                {
                    "present_sequences": sequence_set(present),
                    "missing_sequences": sequence_set(set(SEQUENCES) - set(present)),
                    "config_id": best,
                    "configuration": configuration_label(best),
                    "study_rank": ranked.index(best) + 1,
                    "winner": best == ranked[0],
                }
            )
    return pd.DataFrame(rows, columns=FALLBACK_COLUMNS)


def fallback_runs(
    slice_arrays: Mapping[str, np.ndarray],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    test: pd.DataFrame,
    choices: pd.DataFrame,
    inputs: WinnerInputs,
    hyperparameters: Mapping[str, Any],
    slot: int = 0,
    slots: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The fallback configurations of ``choices`` other than the winner, trained as the winner is
    (:func:`winner_runs`), best rank first: test predictions and bundle entries. With ``slots``
    > 1, only every ``slots``-th from the ``slot``-th (0-based): one node's share, so several
    nodes train the fallbacks at once."""
    todo = choices[~choices["winner"].astype(bool)].drop_duplicates("config_id")
    todo = todo.sort_values("study_rank", kind="stable").iloc[slot::slots]
    predictions, models = [], {}
    for row in todo.itertuples():
        logger.info(
            "fallback %s (study rank %d) for patients missing %s",
            row.configuration,
            row.study_rank,
            "; ".join(choices.loc[choices["config_id"] == row.config_id, "missing_sequences"]),
        )
        table, bundle = winner_runs(
            slice_arrays,
            train_ids,
            val_ids,
            test,
            int(row.config_id),
            inputs,
            hyperparameters,
            study_rank=int(row.study_rank),
            kind="fallback",
        )
        predictions.append(table)
        models.update(bundle)
    if not predictions:
        return pd.DataFrame(columns=TEST_PREDICTION_COLUMNS), models
    return pd.concat(predictions, ignore_index=True), models


def ranked_fallback_predictions(
    parts: Iterable[pd.DataFrame], choices: pd.DataFrame
) -> pd.DataFrame:
    """The fallback nodes' test predictions as one table, best-ranked configuration first (the
    order one node training them all would give)."""
    parts = [p for p in parts if len(p)]
    predictions = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=TEST_PREDICTION_COLUMNS)
    )
    expected = set(choices.loc[~choices["winner"].astype(bool), "config_id"].astype(int))
    trained = set(predictions["config_id"].astype(int))
    if trained != expected:  # e.g. min_sequences changed since the fallback nodes ran
        raise ValueError(
            f"the fallback nodes trained configurations {sorted(trained)}, but the study's "
            f"fallbacks for these settings are {sorted(expected)}: rerun them "
            "(kedro run --pipelines permutation_study --tags fallbacks)"
        )
    if predictions.empty:
        return predictions
    rank = choices.drop_duplicates("config_id").set_index("config_id")["study_rank"]
    order = predictions["config_id"].map(rank).argsort(kind="stable")
    return predictions.iloc[order].reset_index(drop=True)


def fallback_metrics_table(predictions: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per fallback configuration and model x pretrained, the final evaluation's table
    (:func:`~idh_pseudocolor.permutation_study.final_metrics_table`) with the configuration's
    rank and the patients it serves (``missing_sequences``): set beside test_metrics, what a
    missing sequence costs."""
    if predictions.empty:
        return pd.DataFrame(
            columns=["config_id", "configuration", "study_rank", "missing_sequences"]
        )
    parts = []
    for config_id, part in predictions.groupby("config_id", sort=False):
        served = choices[choices["config_id"] == config_id]
        key = {
            "config_id": int(config_id),
            "configuration": configuration_label(int(config_id)),
            "study_rank": int(served["study_rank"].iloc[0]),
            "missing_sequences": "; ".join(served["missing_sequences"]),
        }
        table = final_metrics_table(part)
        parts.append(pd.concat([pd.DataFrame([key] * len(table)), table], axis=1))
    return pd.concat(parts, ignore_index=True)


# -- a bundle read back -------------------------------------------------------------------------
#: machine settings that runs recorded only from a later version on, with the value every run
#: used before: an older bundle still loads (they change where and how fast a run computes, never
#: its weights)
UNRECORDED_MACHINE_SETTINGS: dict[str, Any] = {
    "cudnn_benchmark": False,
    "initial_weights_cache": 0,
    "compile": False,
    "channels_last": False,
    "device_resident": True,
    "fused_optimizer": True,
    "torch_threads": None,
    "deterministic": True,
}


#: the slice normalization every run used before bundles recorded it
UNRECORDED_NORMALIZATION: dict[str, Any] = {"method": "percentile", "lower": 0.5, "upper": 99.5}


@dataclass
class TrainedRun:
    """One run of a bundle, rebuilt: its settings, its network in eval mode, the slice
    normalization its inputs had and what it started from (with the input standardization its
    weights expect)."""

    name: str
    config: RunConfig
    model: torch.nn.Module
    normalization: Normalization
    weights: WeightsInfo
    study_rank: int | None = None  # of its configuration; None: the bundle predates the record


def recorded_config(name: str, record: Mapping[str, Any]) -> RunConfig:
    """A bundle entry's RunConfig; a machine setting it predates takes the value runs used then,
    any other missing setting is an error naming the run."""
    known = {f.name for f in fields(RunConfig)}
    values = {**UNRECORDED_MACHINE_SETTINGS, **{k: v for k, v in record.items() if k in known}}
    missing = sorted(known - set(values))
    if missing:
        raise ValueError(f"bundle run {name} does not record {', '.join(missing)}")
    return RunConfig(**values)


def _weights_info(meta: Mapping[str, Any], cfg: RunConfig) -> WeightsInfo:
    """The run's :class:`WeightsInfo` from its bundle entry. A bundle saved before the input
    standardization was recorded used ImageNet's for every pretrained run (the only one then)."""
    known = {f.name for f in fields(WeightsInfo)}
    recorded = {k: v for k, v in (meta.get("weights") or {}).items() if k in known}
    info = WeightsInfo(
        **{
            "model_name": cfg.model_name,
            "pretrained_requested": cfg.pretrained,
            "pretrained_loaded": cfg.pretrained,
            "source": "unrecorded",
            **recorded,
        }
    )
    if cfg.pretrained and info.normalization is None:
        mean, std = IMAGENET_NORMALIZATION
        info = WeightsInfo(**{**info.as_dict(), "mean": mean, "std": std})
    return info


def load_runs(
    bundle: Mapping[str, Mapping[str, Any]],
    model_name: str | None = None,
    pretrained: bool | None = None,
    allow_none: bool = False,
) -> list[TrainedRun]:
    """Rebuild the bundle's runs (weights strictly loaded into fresh timm models), optionally
    only one model and/or only pretrained or from-scratch runs. None matching is an error naming
    what the bundle has, unless ``allow_none`` (a fallback bundle may hold none)."""
    runs = []
    for name, entry in bundle.items():
        if entry["state_dict"] is None:
            continue
        cfg = recorded_config(name, entry["meta"]["config"])
        if (model_name and cfg.model_name != model_name) or (
            pretrained is not None and cfg.pretrained != pretrained
        ):
            continue
        model, _ = create_model(
            cfg.model_name, pretrained=False, in_chans=len(configuration(cfg.config_id))
        )
        model.load_state_dict(entry["state_dict"])
        runs.append(
            TrainedRun(
                name,
                cfg,
                model.eval(),
                Normalization(**entry["meta"].get("normalization", UNRECORDED_NORMALIZATION)),
                _weights_info(entry["meta"], cfg),
                entry["meta"].get("study_rank"),
            )
        )
    if not runs and not allow_none:
        available = sorted(
            {
                (e["meta"]["config"]["model_name"], e["meta"]["config"]["pretrained"])
                for e in bundle.values()
                if e["state_dict"] is not None
            }
        )
        raise ValueError(
            f"No trained run matches model={model_name!r}, pretrained={pretrained!r}; "
            f"the bundle has (model, pretrained) = {available}"
        )
    return runs
