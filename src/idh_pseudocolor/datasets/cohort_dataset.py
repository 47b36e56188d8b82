"""``CohortDataset``: a folder of NIfTI subjects seen through the catalog as an index table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path

from idh_pseudocolor.cohort import discover_cohort


class CohortDataset(AbstractDataset[None, pd.DataFrame]):
    """Loads one row per subject: file paths, raw label value and clinical metadata.

    Volumes are not read here: a cohort is gigabytes, and the data_engineering pipeline reads
    only the planes it needs, in parallel. Read-only: the pipeline never writes raw data.

    Example (``conf/local/catalog.yml`` or runtime parameters)::

        cohort:
          type: idh_pseudocolor.datasets.CohortDataset
          path: /data/BraTS2021
          layout: brats              # egd | brats | custom
          labels: /data/idh_labels.csv  # absolute, or relative to the cohort folder
          id_column: ID
          label_column: IDH

    ``optional: true`` (the external validation cohort): no path, or no folder there, loads an
    empty frame whose ``attrs["absent"]`` says why, so a run without that cohort still runs and
    its report says what was not done. The development cohort is never optional.
    """

    def __init__(
        self,
        path: str | None,
        layout: str = "egd",
        labels: str | None = None,
        id_column: str = "ID",
        label_column: str = "IDH",
        files: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        optional: bool = False,
    ) -> None:
        self._optional = optional
        if path is None or str(path) == "":
            if not optional:
                raise DatasetError("CohortDataset needs a path (the cohort folder)")
            self._path, self._layout, self._labels = None, layout, None
            self.metadata = metadata
            return
        protocol = get_protocol_and_path(str(path))[0]
        if protocol != "file":
            raise DatasetError(
                f"The cohort at {path} is on {protocol}://, but NIfTI volumes are read "
                "with nibabel from a local or mounted folder: copy or mount the cohort "
                "and give its path (kedro run --params cohort_path=/data/EGD/SUBJECTS)."
            )
        self._path = Path(path)
        self._layout = layout
        # a relative labels path is taken relative to the cohort folder
        self._labels = str(self._path / labels) if labels else None
        self._id_column = id_column
        self._label_column = label_column
        self._files = files
        self.metadata = metadata

    @property
    def path(self) -> Path | None:
        """The cohort folder (None: an optional cohort not given)."""
        return self._path

    def load(self) -> pd.DataFrame:
        if self._optional and (self._path is None or not self._path.is_dir()):
            frame = pd.DataFrame(columns=["subject_id", "label_raw", "problem"])
            frame.attrs["absent"] = (
                "no cohort given" if self._path is None else f"no cohort folder at {self._path}"
            )
            return frame
        return discover_cohort(
            self._path,
            layout=self._layout,
            labels=self._labels,
            id_column=self._id_column,
            label_column=self._label_column,
            files=self._files,
        )

    def save(self, data: None) -> None:
        raise DatasetError(
            "CohortDataset is read-only: raw cohorts are never written by the pipeline"
        )

    def _exists(self) -> bool:
        return self._path is not None and self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "layout": self._layout, "labels": self._labels}
