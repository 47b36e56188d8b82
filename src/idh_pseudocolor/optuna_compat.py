"""The one place this project reaches into Optuna's private API.

Optuna has no public accessor for whether a study's storage runs a heartbeat (a RDB storage
made with ``heartbeat_interval``): :func:`optuna.storages.fail_stale_trials` is public, but the
check it relies on lives in ``optuna.storages._heartbeat`` and the storage is the study's
private ``_storage``. The search needs the answer: without a heartbeat, a dead worker's RUNNING
trial would never be failed and other workers would wait for it forever. Nor does Optuna fail a
trial that never beat at all (its worker died between claiming it and the first beat): the
search finds those through the heartbeat table (:func:`never_beaten`) and fails them itself.
``tests/test_search.py`` fails when a new Optuna moves or changes either.
"""

from __future__ import annotations

import optuna

# private: Optuna has no public accessor
from optuna.storages._heartbeat import is_heartbeat_enabled


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage marks trials of dead workers as failed (a heartbeat is set)."""
    return is_heartbeat_enabled(study._storage)  # private attribute: no public accessor either


def _backend(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage itself: Optuna wraps an RDB storage in a private cache
    (``_CachedStorage._backend``) that has neither the engine nor the grace period."""
    return getattr(study._storage, "_backend", study._storage)


def never_beaten(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's RUNNING trials that never recorded a heartbeat.

    A worker killed between claiming a trial (``study.ask``) and its heartbeat thread's first
    beat leaves such a trial; Optuna's stale check skips trials without a heartbeat row, so it
    would stay RUNNING for ever. Read from the heartbeat table (``_rdb.models``, private) through
    the storage's engine.
    """
    import sqlalchemy
    from optuna.storages._rdb import models

    storage = _backend(study)
    if not isinstance(storage, optuna.storages.RDBStorage):
        return []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return []
    beats = sqlalchemy.select(models.TrialHeartbeatModel.trial_id).where(
        # private: FrozenTrial keeps its storage id to itself
        models.TrialHeartbeatModel.trial_id.in_([t._trial_id for t in running])
    )
    with storage.engine.connect() as connection:
        beaten = {row[0] for row in connection.execute(beats)}
    return [t for t in running if t._trial_id not in beaten]


def grace_seconds(study: optuna.Study) -> float:
    """How long a trial may go without a heartbeat before the storage calls it stale (Optuna's
    default, twice the interval, where no grace period was set)."""
    storage = _backend(study)
    grace = getattr(storage, "grace_period", None)
    return float(grace if grace is not None else 2 * storage.get_heartbeat_interval())


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Mark a RUNNING trial FAIL, as Optuna's own stale check does; False when another worker
    finished or failed it first."""
    try:
        return study._storage.set_trial_state_values(
            trial._trial_id, state=optuna.trial.TrialState.FAIL
        )
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
