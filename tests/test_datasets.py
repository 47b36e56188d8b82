import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError, Version

from idh_pseudocolor.datasets import CohortDataset, NpzDataset


def test_npz_round_trip(tmp_path):
    data = {"images": np.random.default_rng(0).random((3, 4, 5, 6), dtype=np.float32), "ids": np.array(["a", "bb", "c"])}
    ds = NpzDataset(str(tmp_path / "sub" / "arrays.npz"))
    assert not ds.exists()
    ds.save(data)
    assert ds.exists()
    loaded = ds.load()
    np.testing.assert_array_equal(loaded["images"], data["images"])
    assert loaded["ids"].tolist() == ["a", "bb", "c"]


def test_npz_versioned_and_refuses_pickled_objects(tmp_path):
    ds = NpzDataset(str(tmp_path / "arrays.npz"), version=Version(None, None))
    ds.save({"x": np.arange(3)})
    assert ds.load()["x"].tolist() == [0, 1, 2]
    with pytest.raises(DatasetError):
        ds.save({"x": [1, 2]})  # type: ignore[dict-item]
    unsafe = NpzDataset(str(tmp_path / "unsafe.npz"))
    unsafe.save({"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(DatasetError, match="allow_pickle"):
        unsafe.load()


def test_cohort_dataset_is_read_only(tiny_cohort):
    ds = CohortDataset(path=str(tiny_cohort))
    assert ds.exists() and len(ds.load()) == 24
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(pd.DataFrame())
