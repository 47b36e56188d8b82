"""Patients missing sequences: which configuration the study's ranking gives each set of present
sequences (pure, on hand-made rankings), and `idh-pseudocolor predict` on real NIfTI patients
with real (untrained, seeded) timm models in a winner and a fallback bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from idh_pseudocolor.cli import cli
from idh_pseudocolor.configurations import GRAY_IDS, PAPER_CONFIGURATION_IDS, configuration
from idh_pseudocolor.datasets import ModelBundleDataset
from idh_pseudocolor.models import WeightsInfo, create_model
from idh_pseudocolor.parameters import DataEngineeringSettings, FallbackSettings
from idh_pseudocolor.permutation_study import winner
from idh_pseudocolor.predict import choose_configuration
from idh_pseudocolor.pseudocolor import compose
from idh_pseudocolor.runs import bundle_entry, fallback_choices, run_name, study_ranking
from idh_pseudocolor.slices import extract_subject
from idh_pseudocolor.training import RunConfig, RunResult
from tests.conftest import REPO, conf_normalization, project_parameters, run_config

#: a study's ranking: 15 (T2-T1ce-FLAIR) wins, gray T2 is second, 1 (T1-T1ce-FLAIR) fifth
RANKING = [15, 26, 5, 0, 1, *(c for c in PAPER_CONFIGURATION_IDS if c not in {15, 26, 5, 0, 1})]


def chosen(table: pd.DataFrame) -> dict[str, tuple[int, int, bool]]:
    return {r.present_sequences: (r.config_id, r.study_rank, r.winner) for r in table.itertuples()}


def test_each_set_of_three_gets_the_best_ranked_configuration_using_only_it():
    assert chosen(fallback_choices(RANKING, 3)) == {
        "T1+T1ce+T2+FLAIR": (15, 1, True),
        "T1+T1ce+T2": (26, 2, False),  # no FLAIR: gray T2 outranks every colour left
        "T1+T1ce+FLAIR": (1, 5, False),  # no T2: 15, 26, 5 and 0 need it
        "T1+T2+FLAIR": (26, 2, False),
        "T1ce+T2+FLAIR": (15, 1, True),  # no T1: the winner does without it
    }
    assert chosen(fallback_choices(RANKING, 4)) == {"T1+T1ce+T2+FLAIR": (15, 1, True)}
    two = fallback_choices(RANKING + [28], 2)  # the extension is never a fallback
    pairs = two[two["present_sequences"].str.count(r"\+") == 1]
    assert len(two) == 11 and len(pairs) == 6 and set(pairs["config_id"]) <= set(GRAY_IDS)
    for r in pairs.itertuples():  # the best-ranked gray of the pair
        present = r.present_sequences.split("+")
        grays = [c for c in RANKING if c in GRAY_IDS and configuration(c)[0] in present]
        assert r.config_id == grays[0] and r.missing_sequences.count("+") == 1


def test_collected_fallbacks_are_ranked_and_must_match_the_settings():
    """collect_fallbacks' table: the fallback nodes' predictions best rank first whatever node
    order they come in, and refused when they trained other configurations than the settings'
    choices now name (min_sequences changed since they ran)."""
    from idh_pseudocolor.runs import TEST_PREDICTION_COLUMNS, ranked_fallback_predictions

    def rows(config_id: int, n: int = 2) -> pd.DataFrame:
        table = pd.DataFrame({c: [0] * n for c in TEST_PREDICTION_COLUMNS})
        table["config_id"] = config_id
        table["subject_id"] = [f"S{config_id}-{i}" for i in range(n)]
        return table

    three = fallback_choices(RANKING, 3)  # fallbacks 26 (rank 2) and 1 (rank 5)
    empty = pd.DataFrame(columns=TEST_PREDICTION_COLUMNS)
    merged = ranked_fallback_predictions([rows(1), empty, rows(26)], three)
    assert merged["config_id"].tolist() == [26, 26, 1, 1]
    assert merged["subject_id"].tolist() == ["S26-0", "S26-1", "S1-0", "S1-1"]
    assert ranked_fallback_predictions([empty], fallback_choices(RANKING, 4)).empty
    with pytest.raises(
        ValueError, match=r"trained configurations \[1, 26\], but .* --tags fallbacks"
    ):
        ranked_fallback_predictions([rows(1), rows(26)], fallback_choices(RANKING, 2))


def test_ties_in_the_study_go_to_the_lower_id():
    rows = [
        {"config_id": c, "model_name": m, "auroc_mean": 0.5 + (c == 15) * 0.3 + (c in (3, 13)) / 5}
        for c in PAPER_CONFIGURATION_IDS
        for m in ("a", "b")
    ]
    record = winner(pd.DataFrame(rows), models=["a", "b"])  # as aggregate_study writes it
    ranking = study_ranking(record)
    assert ranking[:3] == [15, 3, 13]  # 3 and 13 (both T1, T2, FLAIR) tie
    assert chosen(fallback_choices(ranking, 3))["T1+T2+FLAIR"] == (3, 2, False)
    with pytest.raises(ValueError, match="rerun aggregate_study"):
        study_ranking({"config_id": 15})  # a study_winner from before rankings were recorded


def test_min_sequences_is_1_to_4():
    for value in (0, 5):
        with pytest.raises(ValueError, match="fallback.min_sequences"):
            FallbackSettings(min_sequences=value)


def test_predict_chooses_among_the_trained_configurations_by_rank():
    ranks = {15: 1, 26: 2, 1: 5}
    all_four = ("T1", "T1ce", "T2", "FLAIR")
    assert choose_configuration(all_four, ranks) == 15
    assert choose_configuration(("T1ce", "T2", "FLAIR"), ranks) == 15
    assert choose_configuration(("T1", "T1ce", "T2"), ranks) == 26
    assert choose_configuration(("T1", "T1ce", "FLAIR"), ranks) == 1
    assert choose_configuration(("T1", "T1ce"), ranks) is None
    assert choose_configuration(all_four, {21: 1, 15: 1}) == 15  # equal ranks: the lower id


# ---- predict ----------------------------------------------------------------------------------
#: patient -> sequence files removed
PATIENTS = {
    "PHANTOM-0003": (),
    "PHANTOM-0004": ("T1.nii.gz",),
    "PHANTOM-0005": ("T2.nii.gz",),
    "PHANTOM-0006": ("T2.nii.gz", "FLAIR.nii.gz"),
}


def entry(config_id: int, seed: int, study_rank: int | None):
    """A bundle entry as the study writes it, with seeded untrained test_resnet weights."""
    cfg = run_config(config_id=config_id, seed=seed, pretrained=False, image_size=32)
    torch.manual_seed(seed + config_id)
    model, _ = create_model("test_resnet", pretrained=False)
    result = RunResult(
        config=cfg,
        weights=WeightsInfo("test_resnet", False, False, "none"),
        best_epoch=0,
        epochs_run=1,
        metrics={"auroc": 0.5},
        state_dict=model.state_dict(),
    )
    data = DataEngineeringSettings.from_params(project_parameters(REPO)["data_engineering"])
    return run_name(cfg), bundle_entry(result, data, study_rank)


def expected_prob(folder: Path, sid: str, bundle_entry_: dict, mask: Path | None = None) -> float:
    """The run's P(mutant) on the patient's slice with all four sequences present (and the
    expert mask, or ``mask``)."""
    files = {k: str(folder / sid / f"{n}.nii.gz") for k, n in FILES.items()}
    if mask is not None:
        files["mask"] = str(mask)
    s = extract_subject(sid, files, conf_normalization())
    cfg = RunConfig(**bundle_entry_["meta"]["config"])
    x = compose(s.image[None], s.mask[None], cfg.config_id, cfg.image_size)
    model, _ = create_model(cfg.model_name, pretrained=False)
    model.load_state_dict(bundle_entry_["state_dict"])
    with torch.no_grad():
        return float(torch.softmax(model.eval()(x), dim=1)[0, 1])


FILES = {"T1": "T1", "T1ce": "T1GD", "T2": "T2", "FLAIR": "FLAIR", "mask": "MASK"}


@pytest.fixture(scope="module")
def patients(tiny_cohort, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("missing") / "cohort"
    for sid, removed in PATIENTS.items():
        shutil.copytree(tiny_cohort / sid, folder / sid)
        for name in removed:
            (folder / sid / name).unlink()
    return folder


def test_each_patient_gets_the_best_ranked_trained_configuration_it_has_sequences_for(
    patients, tiny_cohort, tmp_path
):
    # a winner bundle from before study ranks were recorded (rank 1), and the study's fallbacks
    winner_runs = dict(entry(15, seed, None) for seed in (42, 43))
    fallbacks = dict([entry(26, 42, 2), entry(1, 42, 5)])
    models = tmp_path / "06_models"
    ModelBundleDataset(path=str(models / "winner_models")).save(winner_runs)
    ModelBundleDataset(path=str(models / "fallback_models")).save(fallbacks)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"ID": list(PATIENTS), "IDH": [0, 1, 1, 0]}).to_csv(labels, index=False)
    out = tmp_path / "out"
    args = ["predict", str(patients), "--models", str(models / "winner_models"), "--out", str(out)]
    stats = ["--bootstrap-resamples", "20", "--bootstrap-seed", "0", "--calibration-bins", "2"]
    done = CliRunner().invoke(cli, [*args, "--labels", str(labels), *stats])
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("subject_id")
    used = table[["config_id", "study_rank", "fallback", "missing_sequences"]]
    assert used.to_dict("index") == {
        "PHANTOM-0003": {
            "config_id": 15,
            "study_rank": 1,
            "fallback": False,
            "missing_sequences": "none",
        },
        "PHANTOM-0004": {
            "config_id": 15,
            "study_rank": 1,
            "fallback": False,
            "missing_sequences": "T1",
        },
        "PHANTOM-0005": {
            "config_id": 1,
            "study_rank": 5,
            "fallback": True,
            "missing_sequences": "T2",
        },
    }
    assert table.loc["PHANTOM-0005", "configuration"] == "1: T1-T1ce-FLAIR"
    # an absent T2 changes nothing for a configuration without it: the full patient's probability
    fallback_entry = next(iter(e for n, e in fallbacks.items() if n.startswith("configuration_1-")))
    expected = expected_prob(tiny_cohort, "PHANTOM-0005", fallback_entry)
    assert table.loc["PHANTOM-0005", "prob_mutant"] == pytest.approx(expected, abs=1e-6)
    assert table.loc["PHANTOM-0004", "seeds"] == 2 and table.loc["PHANTOM-0005", "seeds"] == 1
    assert "PHANTOM-0005: missing T2, predicted with configuration 1: T1-T1ce-FLAIR" in done.output
    # two missing: no trained configuration fits, a clear error; the others were predicted
    errors = pd.read_csv(out / "errors.csv")
    assert errors["subject_id"].tolist() == ["PHANTOM-0006"]
    reason = errors["reason"].iloc[0]
    assert "has T1+T1ce (missing T2+FLAIR)" in reason
    assert "15: T2-T1ce-FLAIR (study rank 1)" in reason
    assert "26: gray T2 (study rank 2)" in reason and "min_sequences <= 2" in reason
    assert "skipped PHANTOM-0006" in done.output
    pictures = sorted(p.name for p in (out / "pictures").iterdir())
    assert pictures == [f"{sid}__test_resnet__scratch.png" for sid in list(PATIENTS)[:3]]
    metrics = pd.read_csv(out / "metrics.csv")  # one arm, whichever configuration each patient had
    assert len(metrics) == 1 and metrics["patients"].iloc[0] == 3
    assert metrics["configurations"].iloc[0] == "15: T2-T1ce-FLAIR; 1: T1-T1ce-FLAIR"  # by rank
    assert metrics["fallback_patients"].iloc[0] == 1

    # without the fallback bundle, the patient missing T2 is an error naming what is trained
    alone = tmp_path / "elsewhere" / "winner_models"
    shutil.copytree(models / "winner_models", alone)
    args = ["predict", str(patients), "--models", str(alone), "--out", str(tmp_path / "alone")]
    done = CliRunner().invoke(cli, [*args, "--no-pictures"])
    assert done.exit_code == 0, done.output
    errors = pd.read_csv(tmp_path / "alone/errors.csv").set_index("subject_id")["reason"]
    assert sorted(errors.index) == ["PHANTOM-0005", "PHANTOM-0006"]
    assert "(trained: 15: T2-T1ce-FLAIR (study rank 1))" in errors["PHANTOM-0005"]
