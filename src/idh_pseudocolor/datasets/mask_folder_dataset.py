"""``MaskFolderDataset``: tumor masks as NIfTI files, one folder per patient
(``<path>/<id>/MASK.nii.gz``, the EGD name), so a user opens them beside the scans in any viewer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

MASK_NAME = "MASK.nii.gz"


class MaskFolderDataset(AbstractDataset[dict[str, Any], dict[str, str]]):
    """Saves ``{subject_id: nibabel image}`` (the folder replaced, so no stale patient stays);
    loads ``{subject_id: path of its MASK.nii.gz}``: the study's slice extraction reads files."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        if not self._path.is_dir():
            raise DatasetError(f"no masks at {self._path}: run the segmentation pipeline")
        return {
            p.parent.name: str(p) for p in sorted(self._path.glob(f"*/{MASK_NAME}")) if p.is_file()
        }

    def save(self, data: dict[str, Any]) -> None:
        import nibabel as nib

        if self._path.exists():
            shutil.rmtree(self._path)
        for subject_id, image in data.items():
            if not isinstance(image, nib.spatialimages.SpatialImage):
                raise DatasetError(f"mask of {subject_id} is not a NIfTI image: {image!r}")
            (self._path / subject_id).mkdir(parents=True, exist_ok=True)
            nib.save(image, str(self._path / subject_id / MASK_NAME))
        self._path.mkdir(parents=True, exist_ok=True)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
