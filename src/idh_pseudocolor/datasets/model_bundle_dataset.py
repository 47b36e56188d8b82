"""``ModelBundleDataset``: trained runs as safetensors files plus one JSON manifest.

kedro-datasets has no PyTorch dataset, and a pickled checkpoint would run code on load;
safetensors holds tensors only. The manifest is written last, so a folder without it (a
crash mid-save) counts as missing and ``--only-missing-outputs`` recomputes it.

A folder whose subfolders are bundles (the fallback nodes each write one: ``slot_1``, ...) loads
as their union, so several nodes can write one bundle without copying each other's weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEIGHTS = ".safetensors"


class ModelBundleDataset(AbstractDataset[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]):
    """Saves/loads ``{run_name: {"state_dict": {name: tensor}, "meta": {...}}}`` in a folder.

    ``meta`` must be JSON-serializable (the run's configuration, weights provenance, metrics).
    Local paths or any fsspec URL. ``part="k/n"`` makes the bundle part k of n of its parent
    folder: the parent then loads as the union of its parts, and only when all n are complete
    (a part that never ran or crashed mid-save would otherwise drop runs without a word).
    Saving removes the weights files its new manifest no longer names (a smaller bundle than
    the last), and a part removes a whole bundle an older layout left in its parent.
    """

    def __init__(
        self,
        path: str,
        part: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, folder = get_protocol_and_path(path)
        self._protocol, self._folder = protocol, PurePosixPath(folder)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self._path = path
        self._part = _part(part, path) if part is not None else None
        self.metadata = metadata

    def _file(self, name: str) -> str:
        return str(self._folder / name)

    def _manifest(self, folder: PurePosixPath) -> dict[str, Any] | None:
        path = str(folder / MANIFEST)
        return json.loads(self._fs.cat_file(path)) if self._fs.exists(path) else None

    def load(self) -> dict[str, dict[str, Any]]:
        parts = self._parts()
        if parts:  # the subfolders' bundles, not a manifest a former layout may have left here
            bundle: dict[str, dict[str, Any]] = {}
            for name in parts:
                runs = self._load_folder(self._folder / name)
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
        """The subfolders that are parts of this bundle (``part`` in their manifests), sorted;
        [] where there are none. All n of an ``k/n`` set must be there and complete."""
        root = str(self._folder)
        if not self._fs.isdir(root):
            return []
        found: dict[str, str | None] = {}  # subfolder -> its "k/n", None: no manifest yet
        for entry in self._fs.ls(root, detail=True):
            name = PurePosixPath(entry["name"]).name
            if entry["type"] == "file":
                continue
            manifest = self._manifest(self._folder / name)
            if manifest is None:
                found[name] = None
            elif manifest.get("part"):
                found[name] = manifest["part"]
        named = {name: part for name, part in found.items() if part is not None}
        if not named:
            return []
        counts = {int(part.split("/")[1]) for part in named.values()}
        ks = sorted(int(part.split("/")[0]) for part in named.values())
        unfinished = sorted(name for name, part in found.items() if part is None)
        if len(counts) != 1 or ks != list(range(1, counts.pop() + 1)) or unfinished:
            have = ", ".join(f"{name} ({part})" for name, part in sorted(named.items()))
            raise DatasetError(
                f"Model bundle {self._path} is incomplete: its parts are {have}"
                + (
                    f"; {', '.join(unfinished)} has no {MANIFEST} (half-written)"
                    if unfinished
                    else ""
                )
                + ": rerun the nodes that write them (the fallbacks: kedro run --tags fallbacks)"
            )
        return sorted(named, key=lambda name: int(named[name].split("/")[0]))

    def save(self, data: dict[str, dict[str, Any]]) -> None:
        import torch  # only when weights are written
        from safetensors.torch import save

        self._fs.makedirs(str(self._folder), exist_ok=True)
        if self._part is not None:
            self._remove_bundle(self._folder.parent)  # an older layout's whole bundle
        if self._fs.exists(self._file(MANIFEST)):
            self._fs.rm(self._file(MANIFEST))  # incomplete until the new manifest is written
        runs = {}
        for run, entry in data.items():
            state = entry.get("state_dict")
            file = None
            if state is not None:
                file = f"{run}{WEIGHTS}"
                tensors = {
                    k: v.detach().to("cpu").contiguous()
                    for k, v in state.items()
                    if isinstance(v, torch.Tensor)
                }
                with self._fs.open(self._file(file), "wb") as fh:
                    fh.write(save(tensors))
            runs[run] = {"file": file, "meta": entry.get("meta", {})}
        kept = {entry["file"] for entry in runs.values() if entry["file"]}
        for path in self._fs.ls(str(self._folder), detail=False):
            name = PurePosixPath(path).name
            if name.endswith(WEIGHTS) and name not in kept:  # a run the bundle no longer has
                self._fs.rm(path)
        manifest: dict[str, Any] = {"runs": runs}
        if self._part is not None:
            manifest["part"] = self._part
        with self._fs.open(self._file(MANIFEST), "w") as fh:
            json.dump(manifest, fh, indent=1, default=str)

    def _remove_bundle(self, folder: PurePosixPath) -> None:
        """Removes the manifest and weights of a bundle saved directly in ``folder``."""
        manifest = self._manifest(folder)
        if manifest is None or manifest.get("part"):
            return
        logger.info("%s: removing the bundle an older layout left in %s", self._path, folder)
        self._fs.rm(str(folder / MANIFEST))
        for entry in manifest.get("runs", {}).values():
            if entry.get("file") and self._fs.exists(str(folder / entry["file"])):
                self._fs.rm(str(folder / entry["file"]))

    def _exists(self) -> bool:
        try:
            return bool(self._parts()) or self._fs.exists(self._file(MANIFEST))
        except DatasetError:  # an incomplete set of parts: missing, to be recomputed
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "part": self._part}


def _part(part: str, path: str) -> str:
    """``"k/n"`` with 1 <= k <= n, as the catalog gives it."""
    k, _, n = str(part).partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise DatasetError(
            f"ModelBundleDataset {path}: part must be 'k/n' (1 <= k <= n), not {part!r}"
        )
    return f"{int(k)}/{int(n)}"
