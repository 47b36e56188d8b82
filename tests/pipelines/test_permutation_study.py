"""permutation_study (validation part) through real Kedro sessions with a tiny model."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import ParallelRunner
from sklearn.metrics import roc_auc_score

from tests.conftest import project_parameters, run_config, tracked, write_best_params

TINY = {
    "data_engineering": {"progress": False},
    "demo_pretraining": {"enabled": False},  # the final evaluation below has no pretrained arm
    "permutation_study": {
        "models": ["resnet10t"],
        "seeds": [42],
        "overrides": {"max_epochs": 1},
        "fixed": {"image_size": 32, "early_stopping": False},
        "final_evaluation": {"pretrained": [False]},
        "fallback": {"min_sequences": 4},  # no fallback runs (the test of all 28 asks for them)
    },
}
BEST = {
    "hyperparameters": {
        "learning_rate": 1e-3,
        "pretrained": False,
        "superconvergence": True,
        "peak_fraction": 0.3,
        "lr_interval": "epoch",
        "max_epochs": 5,
        "mask_non_tumor": False,
    }
}


def prepare(project, cohort) -> None:
    (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(TINY))
    write_best_params(project, BEST["hyperparameters"])  # as this environment's search writes it
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, runtime_params={"cohort_path": str(cohort)}
    ) as session:
        session.run(pipeline_names=["data_engineering"])


def test_one_namespace_runs_alone(kedro_project, tiny_cohort):
    prepare(kedro_project, tiny_cohort)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["permutation_study"], namespaces=["configuration_15"])
    out = kedro_project / "data/07_model_output/permutation_study"
    assert sorted(p.name for p in out.iterdir()) == ["configuration_15"]
    runs = pd.read_csv(out / "configuration_15/validation_runs.csv")
    assert runs[["config_id", "model_name", "seed"]].values.tolist() == [[15, "resnet10t", 42]]
    assert runs["epochs_run"].tolist() == [1] and not runs["pretrained_loaded"].any()
    predictions = pd.read_csv(out / "configuration_15/validation_predictions.csv")
    splits = pd.read_csv(kedro_project / "data/03_primary/development_split.csv")
    # never test
    assert set(predictions["subject_id"]) == set(splits.loc[splits["split"] == "val", "subject_id"])


def test_all_28_configurations_then_the_winner(kedro_project, tiny_cohort, tmp_path):
    tracked(kedro_project)
    prepare(kedro_project, tiny_cohort)
    local = kedro_project / "conf/local/parameters.yml"
    params = yaml.safe_load(local.read_text())
    params["permutation_study"]["fallback"] = {"min_sequences": 3}  # conf/base's: 3 of 4
    local.write_text(yaml.safe_dump(params))
    # ParallelRunner, as `make run`: the runs are tracked from its worker processes
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["permutation_study"], runner=ParallelRunner(max_workers=2))
    results = pd.read_csv(kedro_project / "data/08_reporting/study_results.csv")
    assert sorted(results["config_id"]) == list(range(28))
    winner = json.loads((kedro_project / "data/08_reporting/study_winner.json").read_text())
    best = results.set_index("config_id")["auroc_mean"]
    assert winner["sum_mean_val_auroc"] == best.max()  # one model: the sum is its mean AUROC
    assert best.loc[winner["config_id"]] == best.max() and len(winner["ranking"]) == 28
    runs = pd.read_csv(kedro_project / "data/07_model_output/study_runs.csv")
    assert len(runs) == 28
    # the final evaluation: the winner, on the test patients only
    test = pd.read_csv(kedro_project / "data/03_primary/test_split.csv")
    predictions = pd.read_csv(kedro_project / "data/07_model_output/test_predictions.csv")
    assert set(predictions["config_id"]) == {winner["config_id"]}
    assert set(predictions["subject_id"]) == set(test["subject_id"])
    metrics = pd.read_csv(kedro_project / "data/08_reporting/test_metrics.csv")
    assert metrics[["model_name", "pretrained", "seeds", "subjects"]].values.tolist() == [
        ["resnet10t", False, 1, len(test)]
    ]
    # the kept weights are the evaluated model: rebuilt from the bundle, they give the same test
    # probabilities
    from idh_pseudocolor.datasets import ModelBundleDataset, NpzDataset
    from idh_pseudocolor.models import create_model
    from idh_pseudocolor.training import RunConfig, predict_proba, prepare_inputs, split_index

    bundle = ModelBundleDataset(path=str(kedro_project / "data/06_models/winner_models")).load()
    assert list(bundle) == [f"configuration_{winner['config_id']}-resnet10t-scratch-seed42"]
    (entry,) = bundle.values()
    cfg = RunConfig(**entry["meta"]["config"])
    model, _ = create_model(cfg.model_name, pretrained=False, in_chans=3)
    model.load_state_dict(entry["state_dict"])
    arrays = NpzDataset(str(kedro_project / "data/03_primary/slice_arrays.npz")).load()
    x, _ = prepare_inputs(arrays, split_index(arrays, predictions["subject_id"].tolist()), cfg)
    assert predict_proba(model, x) == pytest.approx(predictions["prob_mutant"].to_numpy(), abs=1e-6)
    assert entry["meta"]["study_rank"] == 1
    check_fallbacks(kedro_project, winner, len(test))
    check_tracked_study(kedro_project, tiny_cohort, tmp_path)
    # checkpoints of the sweep are off by default: the bundle only marks the configuration as done
    assert (
        ModelBundleDataset(
            path=str(kedro_project / "data/06_models/permutation_study/configuration_03")
        ).load()
        == {}
    )


def check_tracked_study(project, cohort, tmp_path) -> None:
    """MLflow (the project's embedded store): the sweep's runs nested under the kedro run with the
    values of study_runs.csv; the final evaluation's and the fallbacks' runs; the reporting
    outputs as artifacts; the registered model predicts what `idh-pseudocolor predict` does."""
    import mlflow.pyfunc
    from click.testing import CliRunner

    from idh_pseudocolor.cli import cli
    from idh_pseudocolor.tracking import REGISTERED_MODEL
    from tests.tracking_store import children, parent_runs, project_client

    client = project_client(project)
    (parent,) = [r for r in parent_runs(client) if r.info.run_name == "permutation_study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["permutation_study.models"] == "['resnet10t']"
    sweep = children(client, parent.info.run_id, "sweep")
    runs = pd.read_csv(project / "data/07_model_output/study_runs.csv")
    assert len(sweep) == len(runs) == 28
    by_config = {int(r.data.params["config_id"]): r for r in sweep}
    for row in runs.to_dict("records"):
        run = by_config[row["config_id"]]
        for key in ("auroc", "f1", "best_epoch", "epochs_run"):
            assert run.data.metrics[key] == pytest.approx(row[key]), key
        for key in ("model_name", "seed", "pretrained", "weights_source", "best_params_id"):
            assert run.data.params[key] == str(row[key]), key
        assert run.data.tags["configuration_id"] == str(row["config_id"])
        assert run.data.params["arm"] == "scratch" and run.data.params["configuration"]
        assert client.get_metric_history(run.info.run_id, "epoch/val_loss"), "no per-epoch history"
    predictions = pd.read_csv(project / "data/07_model_output/test_predictions.csv")
    (final,) = children(client, parent.info.run_id, "final_evaluation")
    assert final.data.metrics["test_auroc"] == pytest.approx(
        roc_auc_score(predictions["label"], predictions["prob_mutant"])
    )
    fallbacks = pd.read_csv(project / "data/08_reporting/fallback_configurations.csv")
    tracked = children(client, parent.info.run_id, "fallback")
    assert {int(r.data.params["config_id"]) for r in tracked} == set(
        fallbacks.loc[~fallbacks["winner"], "config_id"]
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "reporting")}
    for name in ("study_results.csv", "test_metrics.csv", "fallback_configurations.csv"):
        assert f"reporting/{name}" in artifacts, artifacts
    # the registered model: four sequences in, P(mutant) out, as `predict` gives them
    assert parent.data.tags["registered_model"] == f"models:/{REGISTERED_MODEL}/1"
    model = mlflow.pyfunc.load_model(parent.data.tags["registered_model"])
    patients = tmp_path / "patients"
    for sid in sorted(p.name for p in cohort.iterdir() if p.is_dir())[:4]:
        shutil.copytree(cohort / sid, patients / sid)
    missing = sorted(p.name for p in patients.iterdir())[0]
    (patients / missing / "FLAIR.nii.gz").unlink()  # a fallback patient
    rows = [
        {
            "subject_id": p.name,
            **{k: str(p / f) for k, f in FILES.items() if (p / f).exists()},
        }
        for p in sorted(patients.iterdir())
    ]
    mlflow_out = model.predict(pd.DataFrame(rows))
    done = CliRunner().invoke(
        cli,
        ["predict", str(patients), "--models", str(project / "data/06_models/winner_models")]
        + ["--out", str(tmp_path / "predicted"), "--no-pictures"],
    )
    assert done.exit_code == 0, done.output
    cli_out = pd.read_csv(tmp_path / "predicted/predictions.csv")
    key = ["subject_id", "model_name", "pretrained"]
    merged = cli_out.merge(mlflow_out, on=key, suffixes=("_cli", "_mlflow"))
    assert len(merged) == len(cli_out) == 4
    assert merged["prob_mutant_mlflow"].to_numpy() == pytest.approx(
        merged["prob_mutant_cli"].to_numpy(), abs=1e-7
    )
    assert (merged["configuration_cli"] == merged["configuration_mlflow"]).all()
    assert merged.loc[merged["subject_id"] == missing, "missing_sequences_mlflow"].item() == "FLAIR"


FILES = {"T1": "T1.nii.gz", "T1ce": "T1GD.nii.gz", "T2": "T2.nii.gz", "FLAIR": "FLAIR.nii.gz"}
FILES["mask"] = "MASK.nii.gz"


def check_fallbacks(project, winner: dict, n_test: int) -> None:
    """Each set of 3 or 4 present sequences got the best-ranked configuration using only them;
    those other than the winner were trained once each, recording their rank, and scored on
    test."""
    from itertools import combinations

    from idh_pseudocolor.configurations import SEQUENCES, configuration
    from idh_pseudocolor.datasets import ModelBundleDataset

    ranking = winner["ranking"]
    choices = pd.read_csv(project / "data/08_reporting/fallback_configurations.csv")
    expected = {}
    for size in (4, 3):
        for present in combinations(SEQUENCES, size):
            expected["+".join(present)] = next(
                c for c in ranking if set(configuration(c)) <= set(present)
            )
    assert dict(zip(choices["present_sequences"], choices["config_id"], strict=True)) == expected
    assert choices.set_index("present_sequences").loc["+".join(SEQUENCES), "winner"]
    fallbacks = set(expected.values()) - {winner["config_id"]}
    assert choices.set_index("config_id")["winner"].to_dict() == {
        c: c == winner["config_id"] for c in expected.values()
    }
    # three nodes shared them, best rank first, one each; their bundles load as one
    ranked = sorted(fallbacks, key=ranking.index)
    for k in (1, 2, 3):
        part = ModelBundleDataset(path=str(project / f"data/06_models/fallback_models/slot_{k}"))
        assert set(part.load()) == (
            {f"configuration_{ranked[k - 1]}-resnet10t-scratch-seed42"}
            if k <= len(ranked)
            else set()
        )
    bundle = ModelBundleDataset(path=str(project / "data/06_models/fallback_models")).load()
    assert set(bundle) == {f"configuration_{c}-resnet10t-scratch-seed42" for c in fallbacks}
    for entry in bundle.values():
        config_id = entry["meta"]["config"]["config_id"]
        assert entry["meta"]["study_rank"] == ranking.index(config_id) + 1
    metrics = pd.read_csv(project / "data/08_reporting/fallback_test_metrics.csv")
    assert set(metrics["config_id"]) == fallbacks and (metrics["subjects"] == n_test).all()
    assert set(metrics["study_rank"]) == {ranking.index(c) + 1 for c in fallbacks}


def test_four_channel_switch_trains_configuration_28_and_ranks_it(kedro_project, tiny_cohort):
    prepare(kedro_project, tiny_cohort)
    from idh_pseudocolor.provenance import best_params_id

    best = yaml.safe_load((kedro_project / "data/06_models/best_params.yml").read_text())
    runs = pd.DataFrame(
        [  # a finished study of the 28 (as aggregate_study writes it)
            {
                "config_id": c,
                "model_name": "resnet10t",
                "seed": 42,
                "auroc": 0.6 + c / 100,
                "accuracy": 0.5,
                "f1": 0.5,
                "precision": 0.5,
                "recall": 0.5,
                "specificity": 0.5,
                "best_params_id": best_params_id(best),
            }
            for c in range(28)
        ]
    )
    (kedro_project / "data/07_model_output").mkdir(parents=True, exist_ok=True)
    runs.to_csv(kedro_project / "data/07_model_output/study_runs.csv", index=False)
    params = yaml.safe_load((kedro_project / "conf/local/parameters.yml").read_text())
    params["permutation_study"]["keep_checkpoints"] = True
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["four_channel"])
    table = pd.read_csv(kedro_project / "data/08_reporting/four_channel_comparison.csv")
    assert sorted(table["config_id"]) == list(range(29))
    row = table.set_index("config_id").loc[28]
    expected_rank = 1 + int((runs["auroc"] > row["auroc_mean"]).sum())  # ranked by the same rule
    assert (
        row["rank_by_sum_mean_auroc"] == expected_rank
        and row["configuration"] == "28: all four (extension)"
    )
    from idh_pseudocolor.datasets import ModelBundleDataset

    bundle = ModelBundleDataset(
        path=str(kedro_project / "data/06_models/permutation_study/configuration_28")
    ).load()
    (entry,) = bundle.values()
    from idh_pseudocolor.models import create_model

    four, _ = create_model("resnet10t", pretrained=False, in_chans=4)
    four.load_state_dict(entry["state_dict"])  # strict: a real four-channel network
    three, _ = create_model("resnet10t", pretrained=False, in_chans=3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        three.load_state_dict(entry["state_dict"])


def test_only_the_final_evaluation_and_the_fallbacks_read_the_test_split():
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from tests.conftest import REPO

    bootstrap_project(REPO)
    readers = [n.name for n in pipelines["permutation_study"].nodes if "test_split" in n.inputs]
    # the fallbacks are trained and scored exactly as the winner is (predict's runs), in three
    # nodes that share them
    assert sorted(readers) == [
        "evaluate_winner_on_test",
        *[f"fallback_slot_{k}.train_fallbacks" for k in (1, 2, 3)],
    ]
    choosing = pipelines["hyperparameter_search"].nodes + [  # nothing that chooses reads it
        n
        for n in pipelines["__default__"].nodes
        if (n.namespace or "").startswith("configuration_") or n.name == "aggregate_study"
    ]
    assert not [n.name for n in choosing if "test_split" in n.inputs]
    assert {"development_split", "test_split"} <= set(pipelines["data_engineering"].all_outputs())


def test_l4_environment_is_the_papers_sweep_as_deltas():
    from idh_pseudocolor.parameters import PermutationStudySettings
    from tests.conftest import REPO

    settings = PermutationStudySettings.from_params(
        project_parameters(REPO, "l4")["permutation_study"]
    )
    assert settings.models == ("vgg16.tv_in1k", "resnext101_32x16d.fb_swsl_ig1b_ft_in1k")
    assert settings.seeds == (42, 43, 44) and settings.final_evaluation.pretrained == (True, False)
    assert settings.fixed.image_size == 224 and settings.fixed.batch_size == 16
    assert settings.hyperparameters(BEST) == BEST["hyperparameters"]  # the demo's pins are cleared


def test_each_finished_run_logs_one_progress_line(caplog):
    import logging

    from idh_pseudocolor.models import WeightsInfo
    from idh_pseudocolor.runs import log_run
    from idh_pseudocolor.training import RunResult

    cfg = run_config(model_name="test_resnet", config_id=15, seed=43, pretrained=False)
    result = RunResult(
        config=cfg,
        weights=WeightsInfo("test_resnet", False, False, "none"),
        best_epoch=4,
        epochs_run=7,
        metrics={"auroc": 0.9125},
    )
    with caplog.at_level(logging.INFO, logger="idh_pseudocolor.pipelines.permutation_study.nodes"):
        log_run(cfg, result, 2.34, 5, 6, elapsed=50.0)  # 10 s a run so far, one run left
    assert caplog.messages == [
        "15: T2-T1ce-FLAIR: test_resnet scratch seed 43: 7 epochs, "
        "best val AUROC 0.912 (epoch 4), 2.3 s [5/6, ETA 0:00:10]"
    ]
