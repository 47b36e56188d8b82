"""The planted-truth check on rankings built by hand (the study itself:
tests/pipelines/test_planted_truth.py)."""

from __future__ import annotations

from idh_pseudocolor.configurations import configuration, configuration_id
from idh_pseudocolor.planted import holds, planted_truth_check

RECORD = {
    "synthetic": True,
    "generator_version": 3,
    "planted_sequences": ["T2", "FLAIR"],
    "cues": [{"cue": "T2-FLAIR discordance", "strength": "strong"}],
}


def recovered_ranking() -> list[int]:
    holding = [c for c in range(24) if holds(c, ["T2", "FLAIR"])]
    lacking = [c for c in range(24) if not holds(c, ["T2", "FLAIR"])]
    return holding + lacking + [27, 26, 25, 24]


def test_holds_needs_every_planted_sequence():
    assert holds(15, ["T2", "FLAIR"]) and holds(3, ["FLAIR", "T2"])
    assert not holds(0, ["T2", "FLAIR"]) and not holds(26, ["T2", "FLAIR"])
    assert sum(holds(c, ["T2", "FLAIR"]) for c in range(28)) == 12


def test_a_recovered_ranking_passes_every_criterion():
    check = planted_truth_check(recovered_ranking(), RECORD)
    assert check["applicable"] and check["passed"]
    assert check["mean_rank_holding"] == 6.5 and check["mean_rank_lacking"] == 20.5
    assert check["p_value"] < 1e-5 and check["gray_t1_rank"] == 28
    assert [c["passed"] for c in check["criteria"]] == [True, True, True, True]


def test_a_channel_swap_in_the_composition_fails_the_check():
    """Read each configuration with T1 and T2 swapped (a broken channel order): the check fails."""
    swap = {"T1": "T2", "T2": "T1", "T1ce": "T1ce", "FLAIR": "FLAIR"}
    truly_good = recovered_ranking()  # what the networks saw
    reported = [configuration_id(tuple(swap[s] for s in configuration(c))) for c in truly_good]
    check = planted_truth_check(reported, RECORD)
    assert not check["passed"]
    # half the "holding" configurations now come from the lacking block
    assert not check["criteria"][1]["passed"]
    assert check["gray_t1_rank"] < 28


def test_off_by_one_numbering_fails_the_check():
    reported = [(c + 1) % 28 for c in recovered_ranking()]
    assert not planted_truth_check(reported, RECORD)["passed"]


def test_a_gray_above_a_configuration_holding_the_pair_fails_that_criterion_only():
    ranking = recovered_ranking()
    ranking.remove(27)
    ranking.insert(11, 27)  # gray FLAIR at rank 12, above the last of the twelve
    check = planted_truth_check(ranking, RECORD)
    assert [c["passed"] for c in check["criteria"]] == [True, True, False, True]
    assert "needs all > 13" in check["criteria"][2]["criterion"]
    assert not check["passed"]


def test_a_gray_right_after_the_twelve_is_what_the_planted_truth_implies():
    """A gray's single-sequence cues are those of a configuration lacking one of the pair: it may
    rank anywhere among those 16, rank 13 included (the planted truth says nothing more)."""
    ranking = recovered_ranking()
    ranking.remove(25)
    ranking.insert(12, 25)  # gray T1ce at rank 13
    check = planted_truth_check(ranking, RECORD)
    assert check["passed"] and check["gray_ranks"]["25: gray T1ce"] == 13


def test_nothing_to_check_for_real_data_or_an_old_phantom():
    assert planted_truth_check(recovered_ranking(), {"synthetic": False}) == {
        "applicable": False,
        "reason": "real cohort: no planted truth to check",
    }
    old = planted_truth_check(recovered_ranking(), {"synthetic": True, "generator_version": 2})
    assert not old["applicable"] and "v2" in old["reason"]
    partial = planted_truth_check(list(range(20)), RECORD)
    assert not partial["applicable"] and "20 of the 28" in partial["reason"]
