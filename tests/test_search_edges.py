"""The search loop's edges with real training (timm's test_resnet, 32 px, 1-2 epochs) on the
phantom: pruned trials do not count toward ``n_trials``, and a search whose trials are all
pruned stops with the "no progress" error instead of asking forever. Expectations are read
from the SQLite file itself (sqlite3, not Optuna) and counted by hand."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from idh_pseudocolor.datasets import CohortDataset, OptunaStorageDataset
from idh_pseudocolor.pipelines.data_engineering.nodes import extract_slices, split_cohort
from idh_pseudocolor.search import SearchSettings, best_params, run_search
from tests.conftest import REPO, project_parameters


@pytest.fixture(scope="module")
def phantom(tiny_cohort) -> tuple[dict, list[str], list[str]]:
    """The tiny phantom's slices and its train / validation subjects, as data_engineering makes
    them."""
    params = project_parameters(REPO)
    engineering = {**params["data_engineering"], "progress": False, "n_workers": 1}
    manifest, arrays, _ = extract_slices(
        CohortDataset(path=str(tiny_cohort)).load(), engineering, params["environment"]
    )
    development, _, _ = split_cohort(manifest, engineering)
    ids = {
        s: development.loc[development["split"] == s, "subject_id"].tolist()
        for s in ("train", "val")
    }
    return arrays, ids["train"], ids["val"]


def fast_settings(n_trials: int) -> SearchSettings:
    """The demo search with pruning on, tiny images and one or two epochs per trial."""
    search = project_parameters(REPO)["hyperparameter_search"]
    return SearchSettings.from_params(
        {
            **search,
            "n_trials": n_trials,
            "progress": False,
            "pruning": True,
            "fixed": {**search["fixed"], "image_size": 32, "early_stopping_patience": 2},
            "search_space": {
                **search["search_space"],
                "max_epochs_superconvergence": [1, 2],
                "max_epochs_constant": [1, 2],
            },
        }
    )


class PruneTrialNumbers(optuna.pruners.BasePruner):
    """Prunes the given trials at their first report (epoch 0), lets every other one finish."""

    def __init__(self, numbers: set[int]) -> None:
        self.numbers = numbers

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number in self.numbers


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """A search that loops forever (the behaviour under test broken) fails the test instead of
    hanging it."""

    def expire(*_) -> None:
        raise TimeoutError(f"the search was still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def stored_trials(db: Path) -> list[tuple[int, str, int]]:
    """(number, state, epochs reported) of every trial, straight from Optuna's SQLite tables."""
    with sqlite3.connect(db) as con:
        return con.execute(
            "select t.number, t.state, count(v.step) from trials t"
            " left join trial_intermediate_values v on v.trial_id = t.trial_id"
            " group by t.trial_id order by t.number"
        ).fetchall()


@pytest.mark.parametrize("heartbeat", [False, True], ids=["single_worker", "shared_storage"])
def test_pruned_trials_do_not_count_toward_n_trials(phantom, tmp_path, heartbeat):
    """Trials 0 and 2 are pruned at epoch 0: two COMPLETE trials are wanted, so the search must ask
    four (0 pruned, 1 complete, 2 pruned, 3 complete) and stop there. With a heartbeat the search
    takes its multi-worker path (claimed = complete + running), which must not count them either."""
    db = tmp_path / "search.db"
    if heartbeat:
        storage = OptunaStorageDataset("s", filepath=str(db), heartbeat_interval=60).load().storage
    else:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study = optuna.create_study(
        study_name="s", storage=storage, direction="maximize", pruner=PruneTrialNumbers({0, 2})
    )
    with deadline(300):
        run_search(study, *phantom, fast_settings(n_trials=2), poll_seconds=0.1)
    trials = stored_trials(db)
    assert [(number, state) for number, state, _ in trials] == [
        (0, "PRUNED"),
        (1, "COMPLETE"),
        (2, "PRUNED"),
        (3, "COMPLETE"),
    ]
    # stopped at their first epoch
    assert [reported for number, _, reported in trials if number in (0, 2)] == [
        1,
        1,
    ]
    assert all(reported >= 1 for _, _, reported in trials)  # every epoch's F1 went to the pruner
    provenance = best_params(study, fast_settings(n_trials=2))["provenance"]
    assert provenance["completed_trials"] == 2 and provenance["trial"] in (1, 3)


def test_a_search_whose_trials_are_all_pruned_stops_with_no_progress_error(phantom, tmp_path):
    """Every trial is pruned (an F1 below 1.01 always is): instead of asking forever, the search
    gives up after 3 rounds, each asking for the 2 trials still missing, so 6 pruned trials."""
    db = tmp_path / "search.db"
    study = optuna.create_study(
        study_name="hopeless",
        storage=f"sqlite:///{db}",
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=1.01, n_warmup_steps=0),
    )
    with (
        deadline(300),
        pytest.raises(
            RuntimeError,
            match=r"^Search hopeless: no trial completed in 3 rounds; check the pruner settings$",
        ),
    ):
        run_search(study, *phantom, fast_settings(n_trials=2))
    trials = stored_trials(db)
    assert [state for _, state, _ in trials] == ["PRUNED"] * 6
    assert [reported for _, _, reported in trials] == [1] * 6  # each pruned at its first epoch


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_redone(phantom, tmp_path):
    """A worker killed between claiming a trial and its first heartbeat leaves it RUNNING with no
    beat, which Optuna's stale check never fails; the search fails it once the grace period has
    passed and trains the trial it stood for, instead of waiting for it for ever."""
    db = tmp_path / "search.db"
    storage = (
        OptunaStorageDataset("s", filepath=str(db), heartbeat_interval=1, grace_period=1)
        .load()
        .storage
    )
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.ask()  # the dead worker's claim: RUNNING, no heartbeat
    with deadline(300):
        run_search(study, *phantom, fast_settings(n_trials=1), poll_seconds=0.1)
    assert [(number, state) for number, state, _ in stored_trials(db)] == [
        (0, "FAIL"),
        (1, "COMPLETE"),
    ]
