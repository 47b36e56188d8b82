"""A JSON dataset that loads None where nothing was saved yet."""

from __future__ import annotations

from typing import Any

from kedro_datasets.json import JSONDataset


class OptionalJSONDataset(JSONDataset):
    """JSON as ``json.JSONDataset``, but loading None when the file does not exist.

    For the outputs of an opt-in pipeline (cross_validation) that the report reads: the report
    shows their section when they exist and is built all the same when they do not.
    """

    def load(self) -> Any:
        if not self._exists():
            return None
        return super().load()
