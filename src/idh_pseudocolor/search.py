"""The paper's hyperparameter search (Table 1) with Optuna: space, sampler, resumable loop, outputs.

Resuming is Optuna's own mechanism: completed trials live in the storage, a rerun loads the
study and runs only what is missing, and a trial left RUNNING by a killed process is marked
FAILED by the storage heartbeat (or, killed before its first beat, by the search once the grace
period has passed).

Several workers (processes, machines) may share one study in an RDB storage such as
PostgreSQL: each trial is claimed in the storage when it starts, a worker that would start
trial number ``n_trials + 1`` gives it up (state FAIL, user attribute ``surplus``) and then
waits for the other workers' running trials, so the study ends with exactly ``n_trials``
COMPLETE trials. Give each worker its own ``worker`` index: it offsets the sampler seed, so
workers do not propose the same random start-up points.

The settings (:class:`~idh_pseudocolor.parameters.SearchSettings`, importable from here too)
come from ``conf/base/parameters_hyperparameter_search.yml``, the only home of their defaults;
Table 1 itself is the paper's ``search_space`` in ``conf/paper`` (checked against
:data:`idh_pseudocolor.paper_path.PAPER_SETTINGS`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytorch_lightning as pl
from optuna.trial import FrozenTrial, TrialState

from idh_pseudocolor.datasets.optuna_dataset import StudyLocation
from idh_pseudocolor.optuna_compat import (
    fail_trial,
    grace_seconds,
    heartbeat_enabled,
    never_beaten,
)
from idh_pseudocolor.parameters import (
    SamplerSettings,
    SearchSettings,
    SearchSpace,
    jsonable,
)
from idh_pseudocolor.training import InputCache, RunConfig, RunResult, train_run

__all__ = [
    "PAPER_OPTIMUM",
    "SearchSettings",
    "StudyLocation",
    "best_params",
    "open_study",
    "run_search",
    "trials_table",
]

logger = logging.getLogger(__name__)


#: The paper's optimum (Table 1), in RunConfig's vocabulary: what best_params reports for the
#: schedule settings a constant-learning-rate trial does not have.
PAPER_OPTIMUM = {
    "learning_rate": 1.08e-4,
    "pretrained": True,
    "superconvergence": True,
    "peak_fraction": 0.437,
    "lr_interval": "epoch",
    "max_epochs": 40,
    "mask_non_tumor": False,
}


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """One point of the search space, in RunConfig's vocabulary (max-epochs range depends on the
    schedule)."""
    hp: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "pretrained": trial.suggest_categorical("pretrained", space.pretrained),
        "superconvergence": trial.suggest_categorical("superconvergence", space.superconvergence),
    }
    if hp["superconvergence"]:
        hp["peak_fraction"] = trial.suggest_float("peak_fraction", *space.peak_fraction)
        hp["lr_interval"] = trial.suggest_categorical("lr_interval", space.lr_interval)
        hp["max_epochs"] = trial.suggest_int(
            "max_epochs_superconvergence", *space.max_epochs_superconvergence
        )
    else:
        hp["max_epochs"] = trial.suggest_int("max_epochs_constant", *space.max_epochs_constant)
        # a constant rate has no peak or interval: the paper's, unused, as best_params reports them
        hp["peak_fraction"] = PAPER_OPTIMUM["peak_fraction"]
        hp["lr_interval"] = PAPER_OPTIMUM["lr_interval"]
    hp["mask_non_tumor"] = trial.suggest_categorical("mask_non_tumor", space.mask_non_tumor)
    return hp


def make_sampler(sampler: SamplerSettings, worker: int) -> optuna.samplers.TPESampler:
    """TPE with every option explicit (``sampler`` in the YAML): Optuna 5 changed TPE's defaults.

    ``worker`` offsets the seed: workers sharing a study with one seed would draw identical points.
    """
    options = asdict(sampler)
    if sampler.seed is not None:
        options["seed"] = sampler.seed + worker
    return optuna.samplers.TPESampler(**options)


class PruningCallback(pl.Callback):
    """Reports validation F1 each epoch to the trial and stops hopeless trials (Optuna's pruner
    decides)."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val_f1") -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch}")


def _count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def open_study(location: StudyLocation, settings: SearchSettings) -> optuna.Study:
    """Create the study, or resume it after checking it was made with the same settings."""
    pruner = (
        optuna.pruners.MedianPruner(**asdict(settings.pruner))
        if settings.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=location.study_name,
        storage=location.storage,
        sampler=make_sampler(settings.sampler, settings.worker),
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
    stored = study.user_attrs.get("settings")
    wanted = jsonable(settings.fingerprint())
    if stored is None:
        study.set_user_attr("settings", wanted)
        study.set_user_attr("objective", "validation F1 at the best epoch (lowest validation loss)")
    elif stored != wanted:
        raise ValueError(
            f"Study '{location.study_name}' in {location.url} was created with other settings "
            f"({stored}); these are {wanted}. "
            "Resume with the same settings or set another study_name."
        )
    return study


class SurplusTrial(Exception):
    """A trial beyond ``n_trials`` started by a worker that lost the race to claim the last one."""


_CLAIMED = (TrialState.COMPLETE, TrialState.RUNNING)


def _claimed_before(study: optuna.Study, number: int) -> int:
    """Trials complete or running that the storage numbered before trial ``number``."""
    return sum(t.number < number for t in study.get_trials(deepcopy=False, states=_CLAIMED))


def run_search(
    study: optuna.Study,
    arrays: dict[str, np.ndarray],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    settings: SearchSettings,
    train: Callable[..., RunResult] = train_run,
    poll_seconds: float = 2.0,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> optuna.Study:
    """Run trials until the study holds ``n_trials`` COMPLETE trials (stale ones count as failed),
    together with any other workers on the same study (see the module docstring). ``callbacks``
    are Optuna's, called after each of this worker's trials (tracking)."""
    # without a heartbeat a dead worker's RUNNING trial would block forever
    shared = heartbeat_enabled(study)
    objective = _Objective(study, arrays, train_ids, val_ids, settings, train, shared)
    stop_at_target = optuna.study.MaxTrialsCallback(
        settings.n_trials, states=(TrialState.COMPLETE,)
    )
    unbeaten = _UnbeatenClaims(study) if shared else None
    rounds_without_progress = 0
    while (done := _count(study, TrialState.COMPLETE)) < settings.n_trials:
        if unbeaten is not None:
            with warnings.catch_warnings():  # experimental in Optuna since 2.9, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # dead workers' trials become FAIL, free to redo
                optuna.storages.fail_stale_trials(study)
            unbeaten.fail_expired()
        claimed = _count(study, *_CLAIMED) if shared else done
        if claimed >= settings.n_trials:  # the rest is running on other workers: wait for them
            logger.info(
                "Search %s: %d complete, %d running elsewhere; waiting",
                study.study_name,
                done,
                claimed - done,
            )
            time.sleep(poll_seconds)
            continue
        logger.info(
            "Search %s: %d of %d trials complete", study.study_name, done, settings.n_trials
        )
        study.optimize(
            objective,
            n_trials=settings.n_trials - claimed,
            callbacks=[stop_at_target, *callbacks],
            catch=(SurplusTrial,),
            show_progress_bar=settings.progress,
            gc_after_trial=True,
        )
        rounds_without_progress = (
            0 if _count(study, TrialState.COMPLETE) > done else rounds_without_progress + 1
        )
        if rounds_without_progress >= 3:  # e.g. a pruner that prunes everything
            raise RuntimeError(
                f"Search {study.study_name}: no trial completed in 3 rounds; "
                "check the pruner settings"
            )
    return study


class _UnbeatenClaims:
    """RUNNING trials that never recorded a heartbeat: a worker killed between claiming a trial
    and its first beat (milliseconds) leaves one, Optuna's stale check never fails it, and every
    worker would wait for it for ever. Such a trial is failed once this worker has seen it
    unbeaten for longer than the grace period, timed by this worker's own clock (the machines'
    clocks need not agree); a live worker beats within milliseconds of claiming."""

    def __init__(self, study: optuna.Study, clock: Callable[[], float] = time.monotonic) -> None:
        self.study, self.grace, self.clock = study, grace_seconds(study), clock
        self.first_seen: dict[int, float] = {}

    def fail_expired(self) -> None:
        now = self.clock()
        unbeaten = {trial.number: trial for trial in never_beaten(self.study)}
        self.first_seen = {number: self.first_seen.get(number, now) for number in unbeaten}
        for number, seen in self.first_seen.items():
            if now - seen > self.grace and fail_trial(self.study, unbeaten[number]):
                logger.warning(
                    "Search %s: trial %d, claimed at least %.0f s ago, never sent a heartbeat "
                    "(its worker died before the first beat): marked FAIL, to be redone",
                    self.study.study_name,
                    number,
                    now - seen,
                )


class _Objective:
    """One trial: claim it (a shared study gives up a trial beyond ``n_trials``), train the point
    TPE suggests, record what the run did, return its validation F1 (0 where undefined)."""

    def __init__(
        self,
        study: optuna.Study,
        arrays: dict[str, np.ndarray],
        train_ids: Sequence[str],
        val_ids: Sequence[str],
        settings: SearchSettings,
        train: Callable[..., RunResult],
        shared: bool,
    ) -> None:
        self.study, self.arrays, self.settings, self.train = study, arrays, settings, train
        self.train_ids, self.val_ids, self.shared = train_ids, val_ids, shared
        # the trials' inputs, composed once for all of them: training and validation inputs for
        # each of Table 1's choices that change them (masking, pretrained standardization)
        self.inputs = InputCache(arrays, max_entries=8)

    def __call__(self, trial: optuna.Trial) -> float:
        settings = self.settings
        trial.set_user_attr("worker", settings.worker)
        if self.shared and _claimed_before(self.study, trial.number) >= settings.n_trials:
            trial.set_user_attr("surplus", True)
            self.study.stop()
            raise SurplusTrial(
                f"trial {trial.number}: the study's {settings.n_trials} trials are all claimed"
            )
        hp = suggest(trial, settings.search_space)
        cfg = RunConfig(
            model_name=settings.model_name,
            config_id=settings.config_id,
            **{**settings.fixed.run_config(), **hp},
        )
        callbacks = [PruningCallback(trial)] if settings.pruning else []
        result = self.train(
            self.arrays, self.train_ids, self.val_ids, cfg, callbacks=callbacks, inputs=self.inputs
        )
        for key, value in result.metrics.items():
            trial.set_user_attr(f"val_{key}", None if math.isnan(value) else value)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("pretrained_loaded", result.weights.pretrained_loaded)
        trial.set_user_attr("weights_source", result.weights.source)
        f1 = result.metrics["f1"]
        return 0.0 if math.isnan(f1) else f1


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objective, hyperparameters, validation metrics, weights provenance
    (and the worker that ran it; ``surplus`` marks a trial given up because all were claimed)."""
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "datetime_start", "duration", "params", "user_attrs")
    )
    frame.columns = [c.replace("params_", "").replace("user_attrs_", "") for c in frame.columns]
    if "duration" in frame:
        frame["duration_s"] = frame.pop("duration").dt.total_seconds()
    return frame


def best_params(study: optuna.Study, settings: SearchSettings) -> dict[str, Any]:
    """The best trial's hyperparameters in RunConfig's vocabulary, plus where they came from."""
    best = study.best_trial
    p = dict(best.params)
    if p["superconvergence"]:
        peak_fraction, lr_interval, max_epochs = (
            p["peak_fraction"],
            p["lr_interval"],
            p["max_epochs_superconvergence"],
        )
    else:
        # a constant learning rate has no peak or interval: RunConfig ignores them, the paper's
        # fill them in
        peak_fraction, lr_interval, max_epochs = (
            PAPER_OPTIMUM["peak_fraction"],
            PAPER_OPTIMUM["lr_interval"],
            p["max_epochs_constant"],
        )
    hp = {
        "learning_rate": float(p["learning_rate"]),
        "pretrained": bool(p["pretrained"]),
        "superconvergence": bool(p["superconvergence"]),
        "peak_fraction": float(peak_fraction),
        "lr_interval": str(lr_interval),
        "max_epochs": int(max_epochs),
        "mask_non_tumor": bool(p["mask_non_tumor"]),
    }
    return {
        "hyperparameters": hp,
        "provenance": {
            "study_name": study.study_name,
            "search_fingerprint": settings.fingerprint_id(),
            "trial": best.number,
            "validation_f1": float(best.value),
            "completed_trials": _count(study, TrialState.COMPLETE),
            "n_trials": settings.n_trials,
            "model_name": settings.model_name,
            "config_id": settings.config_id,
            "pretrained_loaded": best.user_attrs.get("pretrained_loaded"),
        },
    }
