"""The reporting pipeline after a whole (tiny) study in a real Kedro session, and the report in
a real headless Chromium."""

from __future__ import annotations

import pandas as pd
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.browser import visit
from tests.conftest import tracked
from tests.pipelines.test_hyperparameter_search import FAST_SEARCH
from tests.pipelines.test_permutation_study import TINY


def test_whole_study_then_report_opens_in_chromium(kedro_project, report_cohort, tmp_path):
    params = {
        **TINY,
        "hyperparameter_search": {**FAST_SEARCH["hyperparameter_search"], "n_trials": 2},
        "reporting": {"bootstrap_resamples": 200},
        # the automatic masks, end to end at toy size (tests/test_segmentation.py measures Dice)
        "segmentation": {
            "max_train_subjects": 12,
            "training": {"epochs": 3, "slices_per_subject": 8},
            "n_workers": 1,
            "progress": False,
        },
    }
    # the demo's pretrained arm, end to end: photograph pretraining (a few steps) -> weights files
    # -> finetuned rows
    params["permutation_study"] = {
        **TINY["permutation_study"],
        "models": ["resnet10t", "test_resnet"],
        "final_evaluation": {"pretrained": [True, False]},
    }
    params["demo_pretraining"] = {
        "enabled": True,
        "models": ["resnet10t", "test_resnet"],
        "steps": 3,
        "batch_size": 8,
        "heldout_crops": 16,
    }
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    tracked(kedro_project)
    bootstrap_project(kedro_project)
    with KedroSession.create(
        project_path=kedro_project, runtime_params={"cohort_path": str(report_cohort)}
    ) as session:
        session.run()  # the default: data_engineering, search, permutation_study, reporting

    reports = kedro_project / "data/08_reporting"
    for figure in ("figure_1", "figure_2", "figure_3", "calibration_plot"):
        (version,) = (reports / f"figures/{figure}.png").iterdir()  # versioned: one folder per run
        assert (version / f"{figure}.png").stat().st_size > 10_000
    (version,) = (reports / "table_2.csv").iterdir()
    table = pd.read_csv(version / "table_2.csv")
    ours = table[table["estimate"] == "seed ensemble"]
    assert sorted(ours["model_name"]) == ["resnet10t", "resnet10t", "test_resnet", "test_resnet"]
    demo_rows = ours[ours["pretrained"].astype(bool)]
    assert (
        len(demo_rows) == 2
        and demo_rows["method"]
        .str.contains("demo pretraining (photographs, not ImageNet)", regex=False)
        .all()
    )
    assert demo_rows["pretrained_loaded"].astype(bool).all()
    (version,) = (reports / "pretrained_comparison.csv").iterdir()
    comparison = pd.read_csv(version / "pretrained_comparison.csv")
    # filled in the demo
    assert comparison["available"].all() and comparison["p_value"].between(0, 1).all()
    assert (ours["auroc_ci_low"] <= ours["auroc_ensemble"]).all() and (
        ours["auroc_ensemble"] <= ours["auroc_ci_high"]
    ).all()
    # the paper's one number per row: one seed here
    chosen = table[table["estimate"] == "seed chosen on validation"]
    assert sorted(chosen["model_name"]) == ["resnet10t", "resnet10t", "test_resnet", "test_resnet"]
    assert (chosen["chosen_seed"] == 42).all()
    assert (chosen["auroc_ci_low"] <= chosen["auroc_best_seed"]).all() and (
        chosen["auroc_best_seed"] <= chosen["auroc_ci_high"]
    ).all()
    assert (~table["ours"]).sum() == 6  # the paper's four rows and two literature rows, marked
    # the retrained runs reproduce the sweep's: same configuration, model, pretrained flag and seed,
    # on CPU
    (version,) = (reports / "retrain_agreement.csv").iterdir()
    agreement = pd.read_csv(version / "retrain_agreement.csv")
    scratch = agreement[~agreement["pretrained"].astype(bool)]
    assert (
        sorted(scratch["model_name"]) == ["resnet10t", "test_resnet"]
        and (scratch["status"] == "agrees").all()
    )
    assert (scratch["difference"] == 0).all() and (
        scratch["final_best_epoch"] == scratch["sweep_best_epoch"]
    ).all()
    assert (
        agreement.loc[agreement["pretrained"].astype(bool), "status"] == "no sweep run"
    ).all()  # the sweep trained scratch only
    html = (reports / "report.html").read_text()
    # segmentation: trained on training patients only, measured and compared on the test ones
    test_ids = set(pd.read_csv(kedro_project / "data/03_primary/test_split.csv")["subject_id"])
    development = pd.read_csv(kedro_project / "data/03_primary/development_split.csv")
    dice = pd.read_csv(reports / "segmentation_dice.csv")
    assert set(dice["subject_id"]) == test_ids and dice["dice"].between(0, 1).all()
    training = yaml.safe_load(
        (kedro_project / "data/06_models/segmentation_training.json").read_text()
    )
    assert set(training["trained_on"]) <= set(development.query("split == 'train'")["subject_id"])
    masks = kedro_project / "data/06_models/automatic_masks"
    assert {p.name for p in masks.iterdir()} == test_ids
    (model,) = (kedro_project / "data/06_models/segmentation_model.safetensors").iterdir()
    comparison = pd.read_csv(reports / "mask_comparison.csv")
    assert len(comparison) == 4 and (comparison["patients"] == len(test_ids)).all()
    section = html[html.index('<h2 id="segmentation">') :]
    assert f'median Dice <b id="segmentation-dice">{dice["dice"].median():.3f}</b>' in section
    assert 'id="mask-comparison-table"' in section and "data:image/png;base64," in section
    assert (
        html
        == next((reports / "report_history/report.html").iterdir())
        .joinpath("report.html")
        .read_text()
    )
    assert (
        'id="retrain-table"' in html
        and 'id="retrain-flag"' not in html
        and "chosen on validation AUROC" in html
    )
    # the demo arm, named plainly
    assert 'id="demo-pretraining"' in html and "15 photographs, not ImageNet" in html
    # the filled branch
    assert "not available" not in html.split("Finetuned vs. from scratch")[1].split("</table>")[0]
    # TINY trains no fallbacks (min_sequences 4): the section says so; a curated cohort, no
    # preprocessing section
    assert 'id="missing-sequences-not-run"' in html and 'id="preprocessing"' not in html
    # the phantom's planted-truth check is stated (tiny training: pass or not)
    assert 'id="planted-criteria"' in html
    check_tracked_default_run(kedro_project, html)

    shot = tmp_path / "report.png"
    page = visit(
        (reports / "report.html").as_uri(),
        shot,
        evaluate={
            "banner": "document.querySelector('#phantom-banner') !== null",
            "images": "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)",
            "plotly": "document.querySelectorAll('.js-plotly-plot').length",
            "table2_rows": "document.querySelectorAll('table.t2 tbody tr').length",
            "retrain_rows": "document.querySelectorAll('#retrain-table tbody tr').length",
        },
    )
    assert page.errors == [] and page.failed_requests == []
    assert page.checks["banner"] is True  # phantom data: said at the top
    # figures 1-3, calibration and the automatic masks' outlines, each decoded by Chromium
    assert len(page.checks["images"]) == 5 and all(page.checks["images"])
    assert page.checks["plotly"] == 2  # the search's history and importance, interactive
    # two models x two arms x (seed ensemble, seed chosen on validation) + 6 published
    assert page.checks["table2_rows"] == 14
    assert page.checks["retrain_rows"] == 4
    assert "IDH Pseudocolor report" in page.title and shot.stat().st_size > 50_000

    # the walkthrough notebook reads the same catalog through Kedro's Jupyter integration
    import shutil

    import nbclient
    import nbformat

    from tests.conftest import REPO

    (kedro_project / "notebooks").mkdir()
    notebook = kedro_project / "notebooks/walkthrough.ipynb"
    shutil.copy(REPO / "notebooks/walkthrough.ipynb", notebook)
    nb = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    ).execute()
    printed = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "stream"
    )
    assert "phantom cohort" in printed and "winner:" in printed and "gray T1 ranks" in printed
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # the composites and Figure 2

    # kedro-viz previews on the real outputs: the slice montage as an image, tables as tables
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    previews = {}
    for path in (kedro_project / "build/api/nodes").iterdir():
        node = json.loads(path.read_text())
        if node.get("preview"):
            previews[str(node.get("filepath", "")).rsplit("/", 1)[-1]] = node["preview_type"]
    assert previews.get("qc_montage.png") == "ImagePreview"
    assert (
        previews.get("study_results.csv") == "TablePreview"
        and previews.get("search_history.json") == "PlotlyPreview"
    )


def check_tracked_default_run(project, html: str) -> None:
    """MLflow: the default pipeline is one parent run (the report names it), with the search's
    trials, the sweep's runs, the final evaluation's runs nested under it; the report, Table 2
    and the figures are its artifacts; the final evaluation's runs a registered model."""
    from tests.tracking_store import children, parent_runs, project_client

    client = project_client(project)
    (parent,) = parent_runs(client)
    assert parent.info.run_name == "__default__" and parent.info.status == "FINISHED"
    assert f"run <code>{parent.info.run_id}</code>" in html.split('id="mlflow-run"')[1]
    (study_run,) = children(client, parent.info.run_id, "search")
    assert len(children(client, study_run.info.run_id, "trial")) == 2
    runs = pd.read_csv(project / "data/07_model_output/study_runs.csv")
    assert len(children(client, parent.info.run_id, "sweep")) == len(runs)
    predictions = pd.read_csv(project / "data/07_model_output/test_predictions.csv")
    arms = predictions[["model_name", "pretrained", "seed"]].drop_duplicates()
    assert len(children(client, parent.info.run_id, "final_evaluation")) == len(arms)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "reporting")}
    for name in ("report.html", "table_2.csv", "figure_1.png", "calibration_plot.png"):
        assert f"reporting/{name}" in artifacts, artifacts
    assert parent.data.tags["registered_model"].startswith("models:/idh-pseudocolor-winner/")
