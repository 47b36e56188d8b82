"""Patient-level, label-stratified train/validation/test split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SPLITS = ("train", "val", "test")


def split_sizes(n: int, val: float, test: float) -> tuple[int, int, int]:
    """(train, val, test) counts; EGD's 467 labelled patients give 327 / 70 / 70."""
    n_test, n_val = int(round(test * n)), int(round(val * n))
    return n - n_val - n_test, n_val, n_test


def split_subjects(
    subject_ids: Sequence[str],
    labels: Sequence[int],
    train: float,
    val: float,
    test: float,
    seed: int,
) -> pd.DataFrame:
    """Assign each subject (= patient) to exactly one split, stratified by label.

    Returns a frame with ``subject_id``, ``label``, ``split``, sorted by subject id. Raises a
    ValueError naming the problem when the cohort is too small or too unbalanced to stratify.
    """
    if not np.isclose(train + val + test, 1.0):
        raise ValueError(
            f"split fractions must sum to 1, got train={train}, val={val}, test={test}"
        )
    ids = np.asarray(subject_ids, dtype=str)
    y = np.asarray(labels, dtype=int)
    # the split depends on the patients, not on the order they are listed in
    order = np.argsort(ids, kind="stable")
    ids, y = ids[order], y[order]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate subject ids: a patient may appear only once")
    counts = {int(c): int((y == c).sum()) for c in (0, 1)}
    if min(counts.values()) < 3:
        raise ValueError(
            "cannot stratify: need at least 3 subjects of each class, "
            f"have {counts[1]} mutant and {counts[0]} wild-type"
        )
    n_train, n_val, n_test = split_sizes(len(ids), val, test)
    if min(n_val, n_test) < 2 or n_train < 2:
        raise ValueError(
            f"cohort of {len(ids)} subjects is too small for splits {n_train}/{n_val}/{n_test}"
        )
    rest_ids, test_ids, rest_y, _ = train_test_split(
        ids, y, test_size=n_test, stratify=y, random_state=seed
    )
    train_ids, val_ids = train_test_split(
        rest_ids, test_size=n_val, stratify=rest_y, random_state=seed
    )
    split = {
        **{s: "train" for s in train_ids},
        **{s: "val" for s in val_ids},
        **{s: "test" for s in test_ids},
    }
    frame = pd.DataFrame({"subject_id": ids, "label": y, "split": [split[s] for s in ids]})
    return frame.sort_values("subject_id", kind="stable").reset_index(drop=True)


def split_ids(splits: pd.DataFrame, name: str) -> list[str]:
    """The subject ids of one split (``train``, ``val`` or ``test``) of a frame with ``subject_id``
    and ``split`` columns, in the frame's order (which the runs' predictions keep)."""
    if name not in SPLITS:
        raise ValueError(f"no split {name!r}; splits are {', '.join(SPLITS)}")
    return splits.loc[splits["split"] == name, "subject_id"].tolist()
