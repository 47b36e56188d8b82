"""The numbering of input configurations, exactly as the paper's Figure 2.

Ids 0-23 are the ordered (R, G, B) triples of three distinct sequences, in
``itertools.permutations`` order; 24-27 put one sequence on all three channels (gray);
28 is this project's extension: all four sequences as a 4-channel input.
"""

from __future__ import annotations

from itertools import permutations

SEQUENCES: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR")

#: one sequence on all three channels, in the order of SEQUENCES: gray T1, T1ce, T2, FLAIR
GRAY_IDS: tuple[int, ...] = (24, 25, 26, 27)
GRAY_T1_ID = 24  # the paper's finding: gray T1 ranks near the bottom
FOUR_CHANNEL_ID = 28

#: id -> channel tuple; 0-23 color, 24-27 gray, 28 four-channel (extension, not in the paper).
CONFIGURATIONS: dict[int, tuple[str, ...]] = {
    **dict(enumerate(permutations(SEQUENCES, 3))),
    **{i: (s, s, s) for i, s in zip(GRAY_IDS, SEQUENCES, strict=True)},
    FOUR_CHANNEL_ID: SEQUENCES,
}
PAPER_CONFIGURATION_IDS: tuple[int, ...] = tuple(range(28))
SEARCH_CONFIGURATION_ID = 21  # (FLAIR, T1ce, T2): the configuration the paper's search used
PAPER_WINNER_ID = 15  # (T2, T1ce, FLAIR)


def namespace(config_id: int) -> str:
    """The Kedro namespace of a configuration, zero-padded (``configuration_03``) so that
    kedro-viz, ``ls`` and every sorted listing show 0-28 in numeric order."""
    configuration(config_id)  # validates the id
    return f"configuration_{config_id:02d}"


def configuration(config_id: int) -> tuple[str, ...]:
    """Channel assignment of a configuration id (R, G, B[, 4th])."""
    try:
        return CONFIGURATIONS[config_id]
    except KeyError:
        raise ValueError(
            f"Unknown configuration id {config_id!r}: "
            "valid ids are 0-27 (paper) and 28 (four channels)"
        ) from None


def configuration_id(channels: tuple[str, ...] | list[str]) -> int:
    """Inverse of :func:`configuration`."""
    channels = tuple(channels)
    for config_id, value in CONFIGURATIONS.items():
        if value == channels:
            return config_id
    raise ValueError(f"No configuration uses channels {channels!r}; sequences are {SEQUENCES}")


def is_gray(config_id: int) -> bool:
    return config_id in GRAY_IDS


def configuration_label(config_id: int) -> str:
    """Short human label, e.g. ``'15: T2-T1ce-FLAIR'`` or ``'24: gray T1'``."""
    channels = configuration(config_id)
    if is_gray(config_id):
        return f"{config_id}: gray {channels[0]}"
    if config_id == FOUR_CHANNEL_ID:
        return f"{config_id}: all four (extension)"
    return f"{config_id}: " + "-".join(channels)
