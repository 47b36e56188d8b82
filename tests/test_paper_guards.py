"""The paper path's hand-off guards, called directly: the phantom, demo weights, a foreign
best_params, a winner from another sweep and a sweep mixing two best_params are refused in a
paper run, with a sentence that says what to do."""

from __future__ import annotations

import pytest

from idh_pseudocolor.paper_path import (
    PaperPathError,
    check_best_params,
    check_cohort,
    check_one_source,
    check_parameters,
    check_weights_files,
    check_winner_source,
)
from idh_pseudocolor.parameters import EnvironmentSettings
from idh_pseudocolor.provenance import best_params_id
from tests.conftest import REPO, project_parameters, write_weights

DEMO = EnvironmentSettings(kind="demo", rehearsal=False)
PAPER = EnvironmentSettings(kind="paper", rehearsal=False)
REHEARSAL = EnvironmentSettings(kind="paper", rehearsal=True)


def test_the_phantom_is_refused_only_in_a_paper_run_that_is_no_rehearsal():
    with pytest.raises(PaperPathError, match=r"synthetic phantom.*\+rehearsal"):
        check_cohort({"phantom": True}, PAPER)
    check_cohort({"phantom": True}, REHEARSAL)
    check_cohort({"phantom": True}, DEMO)
    check_cohort({"phantom": False}, PAPER)
    check_cohort({}, PAPER)  # slices without the flag: a real cohort


def test_demo_weights_are_refused_in_a_paper_run_in_either_form(tmp_path):
    from safetensors.torch import load_file, save_file

    from idh_pseudocolor.models import DEMO_MARKER

    ordinary = write_weights(tmp_path, ["test_resnet"])["test_resnet"]
    demo = str(tmp_path / "demo.safetensors")
    save_file(load_file(ordinary), demo, metadata={DEMO_MARKER[0]: DEMO_MARKER[1]})
    for weights in (demo, {"test_resnet": ordinary, "test_byobnet": demo}):
        with pytest.raises(PaperPathError, match="demo's pretraining on photographs"):
            check_weights_files(weights, PAPER)
        check_weights_files(weights, DEMO)
    check_weights_files(ordinary, PAPER)
    check_weights_files(None, PAPER)


def test_best_params_from_another_search_is_refused_unless_accepted_by_its_id():
    best = {
        "hyperparameters": {"learning_rate": 1e-4},
        "provenance": {"search_fingerprint": "abc", "completed_trials": 297},
    }
    assert check_best_params(best, "abc", 297) is False  # its own search, finished
    with pytest.raises(PaperPathError, match="comes from search abc.*this environment's search"):
        check_best_params(best, "xyz", 297)
    with pytest.raises(PaperPathError, match="completed 297 trials, this environment asks for 300"):
        check_best_params(best, "abc", 300)
    assert check_best_params(best, "xyz", 297, accept=best_params_id(best)) is True
    with pytest.raises(PaperPathError, match="accept_best_params="):
        check_best_params(best, "xyz", 297, accept="another id")


def test_a_winner_from_a_sweep_with_other_best_params_is_refused():
    best = {"hyperparameters": {"learning_rate": 1e-4}, "provenance": {}}
    check_winner_source({"best_params_id": best_params_id(best)}, best, "the report")
    check_winner_source({}, best, "the report")  # a winner from before ids were recorded
    with pytest.raises(PaperPathError, match="rerun the sweep with this best_params before the"):
        check_winner_source({"best_params_id": "old"}, best, "the report")


def test_a_sweep_trained_with_two_best_params_is_not_comparable():
    check_one_source(["a", "a", "a"])
    with pytest.raises(PaperPathError, match="2 different best_params \\(a, b\\)"):
        check_one_source(["a", "b", "a"])


def test_parameters_cannot_claim_another_kind_of_run_than_the_env():
    demo = project_parameters(REPO)
    check_parameters(demo, None, paper=False, rehearsal=False)  # demo runs are not checked
    with pytest.raises(PaperPathError, match="environment.kind='demo'"):
        check_parameters(demo, "a4000", paper=True, rehearsal=False)
    paper = project_parameters(REPO, "a4000")
    check_parameters(paper, "a4000", paper=True, rehearsal=False)
    with pytest.raises(PaperPathError, match="rehearsal"):
        check_parameters(paper, "a4000+rehearsal", paper=True, rehearsal=True)
