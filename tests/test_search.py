"""The search's pieces without training: Optuna's private heartbeat check (one wrapper), the
sampler built from the YAML alone, best_params for both schedules."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from idh_pseudocolor.optuna_compat import heartbeat_enabled
from idh_pseudocolor.search import PAPER_OPTIMUM, SearchSettings, best_params, make_sampler
from tests.conftest import REPO, project_parameters


@pytest.fixture(scope="module")
def settings() -> SearchSettings:
    return SearchSettings.from_params(project_parameters(REPO, None)["hyperparameter_search"])


def test_optunas_private_heartbeat_check_still_answers(tmp_path):
    """Fails when a new Optuna moves or changes what idh_pseudocolor.optuna_compat relies on
    (``optuna.storages._heartbeat.is_heartbeat_enabled`` and ``Study._storage``)."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    beating = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    plain = optuna.storages.RDBStorage(url)
    assert heartbeat_enabled(optuna.create_study(study_name="beating", storage=beating)) is True
    assert heartbeat_enabled(optuna.create_study(study_name="plain", storage=plain)) is False
    assert (
        heartbeat_enabled(optuna.create_study(storage=optuna.storages.InMemoryStorage())) is False
    )


def test_a_claimed_trial_that_never_beat_is_found_and_failed_once(tmp_path):
    """What the search relies on to free a trial whose worker died before its first heartbeat
    (Optuna's heartbeat table and ``FrozenTrial._trial_id``): ``ask`` claims a trial with no
    beat, a recorded beat takes it off the list, and failing it twice is refused the second
    time."""
    from idh_pseudocolor.optuna_compat import fail_trial, grace_seconds, never_beaten

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="claims", storage=storage)
    orphan, alive = study.ask(), study.ask()
    assert [t.number for t in never_beaten(study)] == [orphan.number, alive.number]
    storage.record_heartbeat(alive._trial_id)
    (unbeaten,) = never_beaten(study)
    assert unbeaten.number == orphan.number
    assert grace_seconds(study) == 3.0
    assert (
        grace_seconds(
            optuna.create_study(
                study_name="default_grace",
                storage=optuna.storages.RDBStorage(url, heartbeat_interval=5),
            )
        )
        == 10.0
    )
    assert fail_trial(study, unbeaten) is True
    assert fail_trial(study, unbeaten) is False  # already finished: nothing to do
    assert study.trials[orphan.number].state.name == "FAIL"
    assert never_beaten(study) == [] and study.trials[alive.number].state.name == "RUNNING"
    in_memory = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    in_memory.ask()
    assert never_beaten(in_memory) == []  # no heartbeat table: nothing to find


def test_an_unbeaten_claim_is_failed_only_after_the_grace_period(tmp_path):
    """The search frees a claim that never beat once the grace period has passed, by the
    watching worker's own clock, and never before: a live worker's trial in the milliseconds
    before its first beat, and any trial that has beaten, are left alone."""
    from idh_pseudocolor.search import _UnbeatenClaims

    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1, grace_period=5
    )
    study = optuna.create_study(study_name="claims", storage=storage)
    orphan, alive = study.ask(), study.ask()
    storage.record_heartbeat(alive._trial_id)
    now = [1000.0]
    watch = _UnbeatenClaims(study, clock=lambda: now[0])

    def states() -> list[str]:
        return [study.trials[t.number].state.name for t in (orphan, alive)]

    watch.fail_expired()  # first seen now
    now[0] += 4.9
    watch.fail_expired()
    assert states() == ["RUNNING", "RUNNING"]  # within the grace period
    now[0] += 0.2
    watch.fail_expired()
    assert states() == ["FAIL", "RUNNING"]  # past it: the unbeaten claim only
    later = study.ask()  # a new claim is timed from when it is first seen
    now[0] += 100.0
    watch.fail_expired()
    assert study.trials[later.number].state.name == "RUNNING"


def test_no_other_module_reaches_into_optunas_private_api():
    import re

    # a private module of Optuna's, a study's storage
    private = re.compile(r"optuna(\.\w+)*\._\w+|study\._storage")
    users = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "src").rglob("*.py"))
        if private.search(p.read_text())
    ]
    assert users == ["src/idh_pseudocolor/optuna_compat.py"]


def test_the_sampler_takes_every_option_from_the_yaml(settings, monkeypatch):
    given = {}
    monkeypatch.setattr(optuna.samplers, "TPESampler", lambda **options: given.update(options))
    make_sampler(settings.sampler, worker=2)
    # conf/base/parameters_hyperparameter_search.yml, seed offset by the worker
    assert given == {
        "seed": 44,
        "n_startup_trials": 10,
        "n_ei_candidates": 24,
        "multivariate": False,
        "group": False,
        "constant_liar": False,
    }
    make_sampler(
        replace(settings.sampler, n_startup_trials=3, constant_liar=True, seed=None), worker=2
    )
    assert (
        given["n_startup_trials"] == 3 and given["constant_liar"] is True and given["seed"] is None
    )


def test_workers_draw_different_points_and_a_worker_repeats_its_own(settings):
    def first_points(worker: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler(settings.sampler, worker))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert first_points(0) == first_points(0)
    assert first_points(0) != first_points(1)
    unseeded = make_sampler(replace(settings.sampler, seed=None), worker=3)
    assert isinstance(unseeded, optuna.samplers.TPESampler)


@pytest.mark.parametrize("superconvergence", [True, False])
def test_best_params_in_runconfigs_vocabulary(settings, superconvergence):
    study = optuna.create_study(direction="maximize")
    params = {
        "learning_rate": 1e-4,
        "pretrained": False,
        "superconvergence": superconvergence,
        "mask_non_tumor": True,
    }
    params |= (
        {"peak_fraction": 0.2, "lr_interval": "step", "max_epochs_superconvergence": 5}
        if superconvergence
        else {"max_epochs_constant": 9}
    )
    dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.5))
    hp = best_params(study, settings)["hyperparameters"]
    if superconvergence:
        assert (hp["peak_fraction"], hp["lr_interval"], hp["max_epochs"]) == (0.2, "step", 5)
    else:  # a constant learning rate: the paper's peak and interval fill the unused fields
        assert (hp["peak_fraction"], hp["lr_interval"], hp["max_epochs"]) == (
            PAPER_OPTIMUM["peak_fraction"],
            "epoch",
            9,
        )
    assert (
        hp["learning_rate"] == 1e-4 and hp["mask_non_tumor"] is True and hp["pretrained"] is False
    )
