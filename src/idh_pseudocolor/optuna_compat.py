"""The one place this project reaches into Optuna's private API.

Optuna has no public accessor for whether a study's storage runs a heartbeat (a RDB storage
made with ``heartbeat_interval``): :func:`optuna.storages.fail_stale_trials` is public, but the
check it relies on lives in ``optuna.storages._heartbeat`` and the storage is the study's
private ``_storage``. The search needs the answer: without a heartbeat, a dead worker's RUNNING
trial would never be failed and other workers would wait for it forever.
``tests/test_search.py`` fails when a new Optuna moves or changes either.
"""

from __future__ import annotations

import optuna

# private: Optuna has no public accessor
from optuna.storages._heartbeat import is_heartbeat_enabled


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage marks trials of dead workers as failed (a heartbeat is set)."""
    return is_heartbeat_enabled(study._storage)  # private attribute: no public accessor either
