"""``NpzDataset``: a dict of NumPy arrays in one uncompressed ``.npz`` (no pickle)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import get_filepath_str, get_protocol_and_path


class NpzDataset(AbstractVersionedDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """Saves/loads ``{name: array}``; local paths or any fsspec URL, optionally versioned.

    Uncompressed so loading is a plain read; ``allow_pickle=False`` on load, so a tampered
    file cannot run code. String arrays must use NumPy's unicode dtype.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> dict[str, np.ndarray]:
        path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(path, "rb") as fh, np.load(fh, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def save(self, data: dict[str, np.ndarray]) -> None:
        if not isinstance(data, dict) or not all(isinstance(v, np.ndarray) for v in data.values()):
            raise DatasetError("NpzDataset saves a dict of numpy arrays")
        path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        with self._fs.open(path, "wb") as fh:
            np.savez(fh, **data)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(str(self._filepath))
