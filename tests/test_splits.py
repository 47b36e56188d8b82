import numpy as np
import pandas as pd
import pytest

from idh_pseudocolor.splits import split_sizes, split_subjects


def cohort(n: int, mutant_fraction: float = 0.35):
    ids = [f"S{i:04d}" for i in range(n)]
    labels = (np.arange(n) < round(mutant_fraction * n)).astype(int)
    return ids, np.random.default_rng(0).permutation(labels)


def test_egd_sizes():
    assert split_sizes(467, 0.15, 0.15) == (327, 70, 70)


def test_splits_are_disjoint_complete_and_stratified():
    ids, labels = cohort(467)
    frame = split_subjects(ids, labels, seed=42)
    assert sorted(frame["subject_id"]) == sorted(ids)  # every patient exactly once
    assert frame["subject_id"].is_unique
    assert frame["split"].value_counts().to_dict() == {"train": 327, "val": 70, "test": 70}
    overall = labels.mean()
    for _, part in frame.groupby("split"):
        assert abs(part["label"].mean() - overall) < 0.02
    by_id = dict(zip(ids, labels, strict=True))
    assert all(by_id[s] == lab for s, lab in zip(frame["subject_id"], frame["label"], strict=True))


def test_splits_are_reproducible_and_seed_dependent():
    ids, labels = cohort(200)
    a = split_subjects(ids, labels, seed=7)
    b = split_subjects(list(reversed(ids)), list(reversed(labels)), seed=7)
    c = split_subjects(ids, labels, seed=8)
    assert a.equals(split_subjects(ids, labels, seed=7))
    assert not a["split"].equals(c["split"])
    assert set(b.columns) == {"subject_id", "label", "split"}
    # the same patients listed in another order land in the same splits (ids are sorted first)
    pd.testing.assert_frame_equal(a, b)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    pd.testing.assert_frame_equal(
        a, split_subjects([ids[i] for i in shuffled], [labels[i] for i in shuffled], seed=7)
    )


def test_too_small_or_unbalanced_cohorts_fail_clearly():
    with pytest.raises(ValueError, match="at least 3 subjects of each class"):
        split_subjects(["a", "b", "c", "d"], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        split_subjects(*cohort(50), train=0.8, val=0.15, test=0.15)
    with pytest.raises(ValueError, match="duplicate"):
        split_subjects(["a", "a", "b", "c", "d", "e", "f"], [0, 0, 0, 1, 1, 1, 0])
