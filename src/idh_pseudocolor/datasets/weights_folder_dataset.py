"""``WeightsFolderDataset``: pretrained weights files, one per model, plus a JSON record.

The files are what a user without internet passes as ``weights_file``: loading returns their
paths, not tensors, so a training node hands them to timm exactly like a downloaded file. The
record is written last, so a folder without it (a crash mid-save) counts as missing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path

RECORD = "record.json"


class WeightsFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """Saves ``{"models": {model: {"state_dict": {...}, "metadata": {str: str}}}, "record": {...}}``
    as ``<model>.safetensors`` files (``metadata`` in each header) and ``record.json``.

    Loads ``{"files": {model: absolute local path}, "record": {...}}``. A remote folder (any
    fsspec URL) is copied to a local temporary folder first, since timm reads local files.
    """

    def __init__(
        self,
        path: str,
        record_name: str = RECORD,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, folder = get_protocol_and_path(path)
        self._protocol, self._folder = protocol, PurePosixPath(folder)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self._path, self._record = path, record_name
        self.metadata = metadata

    def _file(self, name: str) -> str:
        return str(self._folder / name)

    def load(self) -> dict[str, Any]:
        if not self._fs.exists(self._file(self._record)):
            raise DatasetError(
                f"No complete weights folder at {self._path} ({self._record} missing): "
                "run `kedro run --pipelines demo_pretraining` (permutation_study includes it)"
            )
        stored = json.loads(self._fs.cat_file(self._file(self._record)))
        local = (
            Path(self._folder)
            if self._protocol == "file"
            else Path(tempfile.mkdtemp(prefix="weights-"))
        )
        files = {}
        for model, name in stored["files"].items():
            if self._protocol != "file":
                self._fs.get(self._file(name), str(local / name))
            files[model] = str((local / name).resolve())
        return {"files": files, "record": stored["record"]}

    def save(self, data: dict[str, Any]) -> None:
        from safetensors.torch import save  # torch only when weights are written

        self._fs.makedirs(str(self._folder), exist_ok=True)
        if self._fs.exists(self._file(self._record)):
            self._fs.rm(self._file(self._record))  # incomplete until the new record is written
        for old in self._fs.glob(self._file("*.safetensors")):  # no stale model from an earlier run
            self._fs.rm(old)
        files = {}
        for model, entry in data.get("models", {}).items():
            files[model] = f"{model}.safetensors"
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in entry["state_dict"].items()}
            metadata = {str(k): str(v) for k, v in (entry.get("metadata") or {}).items()}
            with self._fs.open(self._file(files[model]), "wb") as fh:
                fh.write(save(tensors, metadata=metadata))
        with self._fs.open(self._file(self._record), "w") as fh:
            json.dump({"files": files, "record": data.get("record", {})}, fh, indent=1, default=str)

    def _exists(self) -> bool:
        return self._fs.exists(self._file(self._record))

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "record": self._record}
