"""data_engineering end to end through real Kedro sessions on real phantom NIfTI cohorts."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.datasets import NpzDataset
from idh_pseudocolor.phantom import generate_cohort


def run_data_engineering(project: Path, **runtime_params) -> None:
    bootstrap_project(project)
    params = {"data_engineering": {"progress": False, "n_workers": 2}, **runtime_params}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["data_engineering"])


def outputs(project: Path):
    manifest = pd.read_csv(
        project / "data/02_intermediate/subject_manifest.csv", dtype={"subject_id": str}
    )
    arrays = NpzDataset(str(project / "data/03_primary/slice_arrays.npz")).load()
    splits = pd.concat(
        [
            pd.read_csv(project / "data/03_primary/development_split.csv"),
            pd.read_csv(project / "data/03_primary/test_split.csv"),
        ]
    )
    qc = json.loads((project / "data/08_reporting/qc_summary.json").read_text())
    return manifest, arrays, splits, qc


def test_session_run_on_phantom_cohort(kedro_project, tiny_cohort):
    run_data_engineering(kedro_project, cohort_path=str(tiny_cohort))
    manifest, arrays, splits, qc = outputs(kedro_project)
    assert (manifest["status"] == "included").all() and len(manifest) == 24
    assert (manifest["slice_index"] == (manifest["z_min"] + manifest["z_max"]) // 2).all()
    n, c, h, w = arrays["images"].shape
    assert (n, c) == (24, 4) and arrays["masks"].shape == (n, h, w)
    assert list(arrays["sequences"]) == ["T1", "T1ce", "T2", "FLAIR"]
    assert 0.0 <= arrays["images"].min() and arrays["images"].max() <= 1.0
    assert arrays["masks"].reshape(n, -1).any(axis=1).all()  # the mid slice holds tumor
    assert sorted(arrays["subject_ids"]) == sorted(manifest["subject_id"])
    truth = dict(zip(manifest["subject_id"], manifest["label"], strict=True))
    assert [truth[s] for s in arrays["subject_ids"]] == arrays["labels"].tolist()
    assert sorted(splits["subject_id"]) == sorted(manifest["subject_id"])
    assert splits["split"].value_counts().to_dict() == {"train": 16, "val": 4, "test": 4}
    assert qc["synthetic_phantom_cohort"] is True and qc["included"] == 24 and qc["excluded"] == 0
    assert (kedro_project / "data/08_reporting/qc_montage.png").stat().st_size > 10_000
    # the fixture's conf/local/mlflow.yml turns tracking off for every pipeline: no store opened
    assert not (kedro_project / "data/10_tracking").exists()


def test_brats_layout_with_csv_labels_via_runtime_params(kedro_project, tmp_path):
    cohort = tmp_path / "brats"
    generate_cohort(
        cohort, n_subjects=14, seed=4, voxel_size=4.0, layout="brats", n_workers=1, progress=False
    )
    run_data_engineering(
        kedro_project, cohort_path=str(cohort), cohort_layout="brats", cohort_labels="labels.csv"
    )
    manifest, arrays, splits, _ = outputs(kedro_project)
    assert (manifest["status"] == "included").all() and len(manifest) == 14
    assert manifest["label"].sum() == 5 and manifest["file_T1ce"].str.endswith("_t1ce.nii.gz").all()


def test_same_subject_in_egd_and_brats_layout_gives_the_same_slice(kedro_project, tmp_path):
    egd, brats = tmp_path / "egd", tmp_path / "brats"
    generate_cohort(egd, n_subjects=14, seed=9, voxel_size=4.0, n_workers=1, progress=False)
    generate_cohort(
        brats, n_subjects=14, seed=9, voxel_size=4.0, layout="brats", n_workers=1, progress=False
    )
    run_data_engineering(kedro_project, cohort_path=str(egd))
    egd_arrays = outputs(kedro_project)[1]
    run_data_engineering(
        kedro_project, cohort_path=str(brats), cohort_layout="brats", cohort_labels="labels.csv"
    )
    brats_arrays = outputs(kedro_project)[1]
    # RAS vs LPS storage
    np.testing.assert_allclose(egd_arrays["images"], brats_arrays["images"], atol=1e-6)
    np.testing.assert_array_equal(egd_arrays["masks"], brats_arrays["masks"])


def _set_idh(folder: Path, value) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    meta["Genetic_and_Histological_labels"]["IDH"] = value
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_bad_subjects_are_excluded_with_reasons_and_the_run_goes_on(kedro_project, cohort_copy):
    s = {i: cohort_copy / f"PHANTOM-{i:04d}" for i in range(1, 25)}
    (s[1] / "T2.nii.gz").unlink()  # missing
    (s[2] / "FLAIR.nii.gz").write_bytes(b"\x00garbage")  # unreadable
    data = (s[3] / "T1.nii.gz").read_bytes()
    (s[3] / "T1.nii.gz").write_bytes(data[: len(data) * 2 // 3])  # truncated
    ref = nib.load(s[4] / "T1.nii.gz")
    # 4-D
    nib.save(nib.Nifti1Image(np.zeros((*ref.shape, 2), np.float32), ref.affine), s[4] / "T1.nii.gz")
    # shape
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), ref.affine), s[5] / "T2.nii.gz")
    # empty mask
    nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine), s[6] / "MASK.nii.gz")
    nan = ref.get_fdata().astype(np.float32)
    nan[...] = np.nan
    nib.save(nib.Nifti1Image(nan, ref.affine), s[7] / "FLAIR.nii.gz")  # non-finite
    _set_idh(s[8], -1)  # unknown label
    _set_idh(s[9], "banana")  # unparseable label
    (s[10] / "metadata.json").unlink()  # no label source at all
    shifted = ref.affine.copy()
    shifted[:3, 3] += 8
    # not co-registered
    nib.save(nib.Nifti1Image(ref.get_fdata().astype(np.float32), shifted), s[11] / "T1GD.nii.gz")

    run_data_engineering(kedro_project, cohort_path=str(cohort_copy))
    manifest, arrays, splits, qc = outputs(kedro_project)
    reasons = manifest.set_index("subject_id")["reason"].fillna("")
    expected = {
        1: ("T2.nii.gz", "missing T2 file"),
        2: ("FLAIR.nii.gz", "unreadable FLAIR volume"),
        3: ("T1.nii.gz", "corrupt T1 volume"),
        4: ("T1.nii.gz", "not 3-D"),
        5: ("T2.nii.gz", "differs from mask shape"),
        6: ("MASK.nii.gz", "empty tumor mask"),
        7: ("FLAIR.nii.gz", "non-finite"),
        8: ("metadata.json", "IDH status unknown"),
        9: ("metadata.json", "unparseable IDH value 'banana'"),
        10: ("metadata.json", "no metadata.json"),
        11: ("T1GD.nii.gz", "affine differs"),
    }
    for i, (file, text) in expected.items():
        reason = reasons[f"PHANTOM-{i:04d}"]
        assert f"PHANTOM-{i:04d}/{file}" in reason and text in reason, (i, reason)
    assert qc["excluded"] == 11 and qc["included"] == 13 and len(qc["exclusions"]) == 11
    assert set(manifest.loc[manifest["status"] == "included", "subject_id"]) == set(
        arrays["subject_ids"]
    )
    assert len(splits) == 13 and not set(splits["subject_id"]) & {
        f"PHANTOM-{i:04d}" for i in expected
    }


def test_nothing_usable_fails_with_a_clear_message(kedro_project, cohort_copy):
    for folder in cohort_copy.iterdir():
        if folder.is_dir():
            (folder / "MASK.nii.gz").unlink()
    with pytest.raises(
        ValueError, match=r"No usable subject in the cohort \(24 found.*missing mask file"
    ):
        run_data_engineering(kedro_project, cohort_path=str(cohort_copy))


def test_missing_cohort_folder_names_it_and_the_fix(kedro_project, tmp_path):
    with pytest.raises(Exception, match="nowhere does not exist.*idh-pseudocolor phantom"):
        run_data_engineering(kedro_project, cohort_path=str(tmp_path / "nowhere"))
