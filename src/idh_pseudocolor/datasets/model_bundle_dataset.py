"""``ModelBundleDataset``: trained runs as safetensors files plus one JSON manifest.

kedro-datasets has no PyTorch dataset, and a pickled checkpoint would run code on load;
safetensors holds tensors only. The manifest is written last, so a folder without it (a
crash mid-save) counts as missing and ``--only-missing-outputs`` recomputes it.

A folder whose subfolders are bundles (the fallback nodes each write one: ``slot_1``, ...) loads
as their union, so several nodes can write one bundle without copying each other's weights.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path

MANIFEST = "manifest.json"


class ModelBundleDataset(AbstractDataset[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]):
    """Saves/loads ``{run_name: {"state_dict": {name: tensor}, "meta": {...}}}`` in a folder.

    ``meta`` must be JSON-serializable (the run's configuration, weights provenance, metrics).
    Local paths or any fsspec URL.
    """

    def __init__(
        self,
        path: str,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, folder = get_protocol_and_path(path)
        self._protocol, self._folder = protocol, PurePosixPath(folder)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self._path = path
        self.metadata = metadata

    def _file(self, name: str) -> str:
        return str(self._folder / name)

    def load(self) -> dict[str, dict[str, Any]]:
        parts = self._parts()
        if parts:  # the subfolders' bundles, not a manifest a former layout may have left here
            bundle: dict[str, dict[str, Any]] = {}
            for part in parts:
                runs = self._load_folder(self._folder / part)
                twice = sorted(set(runs) & set(bundle))
                if twice:
                    raise DatasetError(
                        f"Model bundle {self._path}: {', '.join(twice)} in more than one of "
                        f"its parts ({', '.join(parts)})"
                    )
                bundle.update(runs)
            return bundle
        if not self._fs.exists(self._file(MANIFEST)):
            raise DatasetError(
                f"No complete model bundle at {self._path} "
                f"({MANIFEST} missing): rerun the node that writes it"
            )
        return self._load_folder(self._folder)

    def _load_folder(self, folder: PurePosixPath) -> dict[str, dict[str, Any]]:
        from safetensors.torch import load  # torch only when weights are read

        manifest = json.loads(self._fs.cat_file(str(folder / MANIFEST)))
        bundle = {}
        for run, entry in manifest["runs"].items():
            state = (
                load(self._fs.cat_file(str(folder / entry["file"]))) if entry.get("file") else None
            )
            bundle[run] = {"state_dict": state, "meta": entry["meta"]}
        return bundle

    def _parts(self) -> list[str]:
        """Names of the subfolders that hold a complete bundle each, sorted."""
        root = str(self._folder)
        if not self._fs.isdir(root):
            return []
        names = [
            PurePosixPath(entry["name"]).name
            for entry in self._fs.ls(root, detail=True)
            if entry["type"] == "directory"
        ]
        return sorted(n for n in names if self._fs.exists(str(self._folder / n / MANIFEST)))

    def save(self, data: dict[str, dict[str, Any]]) -> None:
        import torch  # only when weights are written
        from safetensors.torch import save

        self._fs.makedirs(str(self._folder), exist_ok=True)
        if self._fs.exists(self._file(MANIFEST)):
            self._fs.rm(self._file(MANIFEST))  # incomplete until the new manifest is written
        runs = {}
        for run, entry in data.items():
            state = entry.get("state_dict")
            file = None
            if state is not None:
                file = f"{run}.safetensors"
                tensors = {
                    k: v.detach().to("cpu").contiguous()
                    for k, v in state.items()
                    if isinstance(v, torch.Tensor)
                }
                with self._fs.open(self._file(file), "wb") as fh:
                    fh.write(save(tensors))
            runs[run] = {"file": file, "meta": entry.get("meta", {})}
        with self._fs.open(self._file(MANIFEST), "w") as fh:
            json.dump({"runs": runs}, fh, indent=1, default=str)

    def _exists(self) -> bool:
        return self._fs.exists(self._file(MANIFEST)) or bool(self._parts())

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}
