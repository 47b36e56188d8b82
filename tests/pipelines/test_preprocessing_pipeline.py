"""The preprocessing pipeline in a real Kedro session: a raw phantom study (NIfTI, no tumor mask)
to a cohort with a mask from another tool (``preprocessing.masks``; the model's masks are tested
through the command in tests/test_segmentation.py), its report as a catalog dataset, and the
report's section once the study reads that cohort."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.cohort import PHANTOM_MARKER, cohort_record
from idh_pseudocolor.report import html
from tests.conftest import raw_nifti_study
from tests.report_inputs import report_inputs


def run_preprocessing(project, params: dict) -> None:
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump({"preprocessing": params}))
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["preprocessing"])


def test_raw_studies_become_a_cohort_through_kedro(kedro_project, tmp_path):
    raw, out = raw_nifti_study(tmp_path), tmp_path / "cohort"
    masks = tmp_path / "their_masks"  # another tool's, on the output grid (the planted tumor)
    masks.mkdir()
    shutil.copy(raw / ".truth/PHANTOM-0001/MASK.nii.gz", masks / "PHANTOM-0001.nii.gz")
    params = {
        "raw": str(raw),
        "out": str(out),
        "labels": str(raw / "labels.csv"),
        "voxel_size": 2.0,
        "masks": str(masks),
        "segmentation_model": str(tmp_path / "no_model_here"),  # a warning, never used
        "n_workers": 1,
        "progress": False,
    }
    run_preprocessing(kedro_project, params)

    report = pd.read_csv(kedro_project / "data/08_reporting/preprocessing_report.csv")
    assert report[["subject_id", "status", "mask_source"]].values.tolist() == [
        ["PHANTOM-0001", "written", "given"]
    ]
    pd.testing.assert_frame_equal(report, pd.read_csv(out / "preprocessing_report.csv"))
    subject = out / "SUBJECTS" / "PHANTOM-0001"
    assert {p.name for p in subject.glob("*.nii.gz")} == {
        "T1.nii.gz", "T1GD.nii.gz", "T2.nii.gz", "FLAIR.nii.gz", "MASK.nii.gz"
    }  # fmt: skip
    written = json.loads((subject / "preprocessing.json").read_text())["mask"]
    assert written["source"] == "given" and written["grid"] == "template"
    np.testing.assert_array_equal(
        np.asarray(nib.load(subject / "MASK.nii.gz").dataobj) > 0,
        np.asarray(nib.load(masks / "PHANTOM-0001.nii.gz").dataobj) > 0,
    )
    # the raw phantom's patients stay marked as the phantom's: the paper path refuses them
    marker = json.loads((out / "SUBJECTS" / PHANTOM_MARKER).read_text())
    assert marker["synthetic"] is True and marker["planted_sequences"] == ["T2", "FLAIR"]

    # what the study's report shows once it reads this cohort (cohort_path=<out>/SUBJECTS)
    record = cohort_record(out / "SUBJECTS")
    assert record["synthetic"] and record["preprocessing"]["status"] == {"written": 1}
    assert record["preprocessing"]["mask_sources"] == {"given": 1}
    page = html.render_report(**report_inputs(label="m"), cohort_record=record)
    section = page[page.index('<h2 id="preprocessing">') : page.index('<h2 id="segmentation">')]
    assert "1 patients,\n1 written" in section and "1 given" in section
    assert section.count("<tr><td>") == 4  # one registration row per sequence
    assert f"{report['T2_mi_after'].iloc[0]:.3f}" in section
    assert section.count('alt="Registration QC of PHANTOM-0001" src="data:image/png;base64,') == 1
    curated = html.render_report(**report_inputs(label="m"), cohort_record={"synthetic": False})
    assert 'id="preprocessing"' not in curated


def test_the_pipeline_without_raw_studies_says_what_to_set(kedro_project):
    with pytest.raises(ValueError, match=r"preprocessing\.raw is not set: kedro run --pipelines"):
        run_preprocessing(kedro_project, {})
