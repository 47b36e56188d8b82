"""The preprocessing pipeline in a real Kedro session: a raw phantom study (NIfTI, no tumor mask)
to a cohort with the segmentation model's mask, its report as a catalog dataset, and the report's
section once the study reads that cohort."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.cohort import PHANTOM_MARKER, cohort_record
from idh_pseudocolor.report import html
from tests.conftest import raw_nifti_study
from tests.report_inputs import report_inputs
from tests.test_segmentation import shared_2mm  # noqa: F401  (the 2 mm model, made once per run)


def run_preprocessing(project, params: dict) -> None:
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump({"preprocessing": params}))
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["preprocessing"])


def test_raw_studies_become_a_cohort_through_kedro(kedro_project, shared_2mm, tmp_path):  # noqa: F811
    raw, out = raw_nifti_study(tmp_path), tmp_path / "cohort"
    params = {
        "raw": str(raw),
        "out": str(out),
        "labels": str(raw / "labels.csv"),
        "voxel_size": 2.0,
        "segmentation_model": str(shared_2mm / "model.safetensors"),
        "n_workers": 1,
        "progress": False,
    }
    run_preprocessing(kedro_project, params)

    report = pd.read_csv(kedro_project / "data/08_reporting/preprocessing_report.csv")
    assert report[["subject_id", "status", "mask_source"]].values.tolist() == [
        ["PHANTOM-0001", "written", "automatic"]
    ]
    pd.testing.assert_frame_equal(report, pd.read_csv(out / "preprocessing_report.csv"))
    subject = out / "SUBJECTS" / "PHANTOM-0001"
    assert {p.name for p in subject.glob("*.nii.gz")} == {
        "T1.nii.gz", "T1GD.nii.gz", "T2.nii.gz", "FLAIR.nii.gz", "MASK.nii.gz"
    }  # fmt: skip
    # the raw phantom's patients stay marked as the phantom's: the paper path refuses them
    marker = json.loads((out / "SUBJECTS" / PHANTOM_MARKER).read_text())
    assert marker["synthetic"] is True and marker["planted_sequences"] == ["T2", "FLAIR"]

    # what the study's report shows once it reads this cohort (cohort_path=<out>/SUBJECTS)
    record = cohort_record(out / "SUBJECTS")
    assert record["synthetic"] and record["preprocessing"]["status"] == {"written": 1}
    assert record["preprocessing"]["mask_sources"] == {"automatic": 1}
    page = html.render_report(**report_inputs(label="m"), cohort_record=record)
    section = page[page.index('<h2 id="preprocessing">') : page.index('<h2 id="segmentation">')]
    assert "1 patients,\n1 written" in section and "1 automatic" in section
    assert section.count("<tr><td>") == 4  # one registration row per sequence
    assert f"{report['T2_mi_after'].iloc[0]:.3f}" in section
    assert section.count('alt="Registration QC of PHANTOM-0001" src="data:image/png;base64,') == 1
    curated = html.render_report(**report_inputs(label="m"), cohort_record={"synthetic": False})
    assert 'id="preprocessing"' not in curated


def test_the_pipeline_without_raw_studies_says_what_to_set(kedro_project):
    with pytest.raises(ValueError, match=r"preprocessing\.raw is not set: kedro run --pipelines"):
        run_preprocessing(kedro_project, {})
