"""external_validation through real Kedro sessions: a second phantom site (BraTS layout, other
scanners) with broken subjects goes through data_engineering's own extraction node, is scored by
a real trained bundle, and its metrics agree with scikit-learn on the saved predictions and with
`idh-pseudocolor predict --labels` on the same patients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, roc_auc_score

from idh_pseudocolor.datasets import ModelBundleDataset
from idh_pseudocolor.external import score_runs
from idh_pseudocolor.phantom import generate_cohort
from idh_pseudocolor.report.html import render_report
from idh_pseudocolor.runs import load_runs
from tests.conftest import tracked
from tests.report_inputs import report_inputs
from tests.test_predict import run_predict, trained  # noqa: F401  (a module fixture)
from tests.tracking_store import children, parent_runs, project_client

QUIET = {"data_engineering": {"progress": False, "n_workers": 1}}


@pytest.fixture(scope="module")
def broken_site_b(tmp_path_factory) -> Path:
    """14 phantom patients of the second site in BraTS layout with UCSF-style labels; one has no
    FLAIR file, one an unreadable label."""
    cohort = tmp_path_factory.mktemp("site_b") / "external"
    generate_cohort(
        cohort,
        n_subjects=14,
        seed=7,
        voxel_size=4.0,
        layout="brats",
        site="b",
        n_workers=1,
        progress=False,
    )
    (cohort / "BraTS2021_00003" / "BraTS2021_00003_flair.nii.gz").unlink()
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    labels.loc[labels["ID"] == "BraTS2021_005", "IDH"] = "not tested"
    labels.to_csv(cohort / "labels.csv", index=False)
    return cohort


@pytest.fixture()
def project_with_bundle(kedro_project, trained):  # noqa: F811
    """The project with the final evaluation's outputs the pipeline reads: a real trained bundle
    and its predictions on 8 'internal test' patients of the tiny cohort."""
    _, arrays, bundle = trained
    ModelBundleDataset(path=str(kedro_project / "data/06_models/winner_models")).save(bundle)
    test = {k: v[-8:] for k, v in arrays.items() if k not in {"sequences"}}
    test["labels"] = np.array([0, 1] * 4)  # both classes among the internal test patients
    internal = score_runs(load_runs(bundle), test)
    (kedro_project / "data/07_model_output").mkdir(parents=True)
    internal.to_csv(kedro_project / "data/07_model_output/test_predictions.csv", index=False)
    return kedro_project, internal


def run(project: Path, pipeline: str, env: str | None = None, **runtime_params) -> None:
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, env=env, runtime_params={**QUIET, **runtime_params}
    ) as session:
        session.run(pipeline_names=[pipeline])


def latest(folder: Path) -> Path:
    """A versioned dataset's newest file."""
    return sorted(folder.glob("*/*"))[-1]


def ensemble(predictions: pd.DataFrame, model: str, pretrained: bool) -> pd.DataFrame:
    part = predictions[
        (predictions["model_name"] == model)
        & (predictions["pretrained"].astype(bool) == pretrained)
    ]
    return part.groupby(["subject_id", "label"], as_index=False)["prob_mutant"].mean()


def test_external_cohort_is_extracted_scored_and_compared(
    project_with_bundle, broken_site_b, tmp_path
):
    project, internal = project_with_bundle
    tracked(project)
    run(project, "external_validation", external_cohort_path=str(broken_site_b))

    manifest = pd.read_csv(project / "data/02_intermediate/external/subject_manifest.csv")
    excluded = manifest.set_index("subject_id").query("status == 'excluded'")["reason"]
    assert sorted(excluded.index) == ["BraTS2021_00003", "BraTS2021_00005"]
    assert "BraTS2021_00003_flair.nii.gz" in excluded["BraTS2021_00003"]
    assert (
        "labels.csv" in excluded["BraTS2021_00005"]
        and "not tested" in (excluded["BraTS2021_00005"])
    )

    # the same node as the development cohort's: the same cohort there gives the same reasons
    run(project, "data_engineering", cohort_path=str(broken_site_b), cohort_layout="brats",
        cohort_labels="labels.csv")  # fmt: skip
    development = pd.read_csv(project / "data/02_intermediate/subject_manifest.csv")
    pd.testing.assert_frame_equal(
        development[["subject_id", "status", "reason", "label", "slice_index"]],
        manifest[["subject_id", "status", "reason", "label", "slice_index"]],
    )
    qc = json.loads((project / "data/08_reporting/external/qc_summary.json").read_text())
    assert (qc["subjects_found"], qc["included"], qc["excluded"]) == (14, 12, 2)

    predictions = pd.read_csv(project / "data/07_model_output/external_predictions.csv")
    assert len(predictions) == 12 * 2 and set(predictions["seed"]) == {42, 43}
    metrics = pd.read_csv(latest(project / "data/08_reporting/external_metrics.csv"))
    assert len(metrics) == 1
    row = metrics.iloc[0]
    ens = ensemble(predictions, "test_resnet", False)
    y, p = ens["label"].to_numpy(), ens["prob_mutant"].to_numpy()
    assert row["patients"] == 12 and row["mutant"] == y.sum()
    assert row["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert row["f1"] == pytest.approx(f1_score(y, p >= 0.5, zero_division=np.nan), nan_ok=True)
    assert row["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert row["brier"] == pytest.approx(brier_score_loss(y, p))
    assert row["auroc_ci_low"] <= row["auroc"] <= row["auroc_ci_high"]
    inside = ensemble(internal, "test_resnet", False)
    internal_auroc = roc_auc_score(inside["label"], inside["prob_mutant"])
    assert row["auroc_internal"] == pytest.approx(internal_auroc)
    assert row["auroc_difference"] == pytest.approx(roc_auc_score(y, p) - internal_auroc)
    assert row["auroc_difference_ci_low"] < row["auroc_difference_ci_high"]
    assert (project / "data/08_reporting/figures/external_validation.png").exists()
    # MLflow: the arm's external run, nested under the kedro run, with the table's numbers
    client = project_client(project)
    (parent,) = [r for r in parent_runs(client) if r.info.run_name == "external_validation"]
    (external,) = children(client, parent.info.run_id, "external")
    assert external.info.run_name == "external-test_resnet-scratch"
    assert external.data.params["model_name"] == "test_resnet"
    for key in ("auroc", "auroc_ci_low", "auroc_difference", "patients"):
        assert external.data.metrics[key] == pytest.approx(row[key]), key

    # the report's section is drawn from the summary the pipeline wrote
    summary = json.loads(
        (project / "data/08_reporting/external_validation_summary.json").read_text()
    )
    page = render_report(**report_inputs(), external_validation=summary)
    section = page[page.index('<h2 id="external">') : page.index('<h2 id="segmentation">')]
    assert "14 subjects found" in section and "12 included, 2 excluded" in section
    assert f"<b>{row['auroc']:.3f}</b> [{row['auroc_ci_low']:.3f}, {row['auroc_ci_high']:.3f}]" in (
        section
    )
    assert f"{row['auroc_difference']:.3f} [{row['auroc_difference_ci_low']:.3f}," in section
    assert "data:image/png;base64," in section and "Not run" not in section

    # a site checks the model on its own patients without code: the same numbers
    done = run_predict(
        broken_site_b,
        "--models",
        project / "data/06_models/winner_models",
        "--out",
        tmp_path,
        "--no-pictures",
        "--labels",
        broken_site_b / "labels.csv",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BraTS2021_00005" in done.stderr and "not tested" in done.stderr
    by_predict = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    for column in ("patients", "auroc", "auroc_ci_low", "auroc_ci_high", "f1", "f1_ci_low",
                   "accuracy", "specificity_ci_high", "brier", "ece"):  # fmt: skip
        # predict scores one patient per batch, the pipeline all at once: float32 kernels may
        # differ in the 8th decimal, nothing a metric or interval shows
        assert by_predict[column] == pytest.approx(row[column], abs=1e-6, nan_ok=True), column


def test_without_an_external_cohort_the_run_says_so(project_with_bundle, tmp_path):
    project, _ = project_with_bundle
    missing = tmp_path / "no_such_cohort"
    run(project, "external_validation", external_cohort_path=str(missing))
    metrics = pd.read_csv(latest(project / "data/08_reporting/external_metrics.csv"))
    assert metrics.columns.tolist() == ["absent"] and str(missing) in metrics["absent"].iloc[0]
    predictions = pd.read_csv(project / "data/07_model_output/external_predictions.csv")
    assert predictions.empty and "prob_mutant" in predictions.columns
    summary = json.loads(
        (project / "data/08_reporting/external_validation_summary.json").read_text()
    )
    page = render_report(**report_inputs(), external_validation=summary)
    assert f"Not run: no cohort folder at {missing}" in page
    assert 'id="external-table"' not in page


def test_the_paper_environments_have_no_default_external_cohort(kedro_project):
    """The demo's phantom site must never stand in for an external cohort on the paper path."""
    bootstrap_project(kedro_project)
    (kedro_project / "data/01_raw/external_cohort").mkdir(parents=True)  # the demo's default
    for env, absent in ((None, False), ("a4000", True), ("l4", True)):
        with KedroSession.create(project_path=kedro_project, env=env) as session:
            cohort = session.load_context().catalog.get("external.cohort")
            assert (cohort._path is None) is absent, env
