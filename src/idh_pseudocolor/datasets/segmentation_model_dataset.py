"""``SegmentationModelDataset``: the tumor-segmentation network as one safetensors file (no
pickle), its architecture and record in the file's metadata header; optionally versioned."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version


class SegmentationModelDataset(AbstractVersionedDataset[Any, Any]):
    """Saves/loads :class:`idh_pseudocolor.segmentation.SegmentationModel` (local paths).

    ``idh-pseudocolor predict`` / ``preprocess --segmentation-model`` read the same file, so the
    model a pipeline trained is the one a user applies, and Kedro versioning keeps earlier ones.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(filepath), version=version)

    def load(self) -> Any:
        from idh_pseudocolor.segmentation import load_model

        return load_model(self._get_load_path())

    def save(self, data: Any) -> None:
        from idh_pseudocolor.segmentation import SegmentationModel, save_model

        if not isinstance(data, SegmentationModel):
            raise DatasetError(f"SegmentationModelDataset saves a SegmentationModel, not {data!r}")
        save_model(data, self._get_save_path())

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_file()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}
