from itertools import permutations

import pytest

from idh_pseudocolor.configurations import (
    CONFIGURATIONS,
    PAPER_WINNER_ID,
    SEARCH_CONFIGURATION_ID,
    configuration,
    configuration_id,
    configuration_label,
    is_gray,
)


def test_paper_numbering_matches_spec():
    assert configuration(21) == ("FLAIR", "T1ce", "T2") and SEARCH_CONFIGURATION_ID == 21
    assert configuration(15) == ("T2", "T1ce", "FLAIR") and PAPER_WINNER_ID == 15
    assert [configuration(i) for i in range(24)] == list(
        permutations(("T1", "T1ce", "T2", "FLAIR"), 3)
    )
    assert [configuration(i) for i in range(24, 28)] == [
        (s, s, s) for s in ("T1", "T1ce", "T2", "FLAIR")
    ]
    assert configuration(28) == ("T1", "T1ce", "T2", "FLAIR")
    assert len(CONFIGURATIONS) == 29


def test_inverse_and_labels():
    for config_id in CONFIGURATIONS:
        assert configuration_id(configuration(config_id)) == config_id
    assert [i for i in CONFIGURATIONS if is_gray(i)] == [24, 25, 26, 27]
    assert configuration_label(15) == "15: T2-T1ce-FLAIR"
    assert configuration_label(24) == "24: gray T1"
    assert "extension" in configuration_label(28)


def test_unknown_configuration_is_refused():
    with pytest.raises(ValueError, match="Unknown configuration id 29"):
        configuration(29)
    with pytest.raises(ValueError, match="No configuration"):
        configuration_id(("T1", "T1", "T2"))


def test_namespaces_sort_in_numeric_order_and_name_their_id():
    from idh_pseudocolor.configurations import CONFIGURATIONS, namespace

    names = [namespace(c) for c in CONFIGURATIONS]
    assert names[3] == "configuration_03" and names[28] == "configuration_28"
    assert sorted(names) == names  # kedro-viz and ls list them alphabetically
    assert [int(n.removeprefix("configuration_")) for n in names] == list(CONFIGURATIONS)
    with pytest.raises(ValueError, match="Unknown configuration id 29"):
        namespace(29)
