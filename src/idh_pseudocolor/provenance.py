"""Short, stable fingerprints of what a result came from (standard library only).

Every hand-off of the paper path compares fingerprints: the search records the fingerprint of its
settings in ``best_params``, every run records the ``best_params`` it trained with, the report
refuses a winner from another ``best_params``. Kept apart from the settings and the guards that
use them, so both can import it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def best_params_id(best_params: Mapping[str, Any]) -> str:
    """Which best_params a run was trained with (hyperparameters and provenance)."""
    return digest(
        {
            "hyperparameters": best_params.get("hyperparameters"),
            "provenance": best_params.get("provenance"),
        }
    )
