import numpy as np
import pandas as pd
import pytest

from idh_pseudocolor.splits import split_sizes, split_subjects

#: the paper's fractions (SPEC: 70:15:15); the project's live in conf only
PAPER = {"train": 0.70, "val": 0.15, "test": 0.15}


def cohort(n: int, mutant_fraction: float = 0.35):
    ids = [f"S{i:04d}" for i in range(n)]
    labels = (np.arange(n) < round(mutant_fraction * n)).astype(int)
    return ids, np.random.default_rng(0).permutation(labels)


def test_egd_sizes():
    assert split_sizes(467, 0.15, 0.15) == (327, 70, 70)


def test_splits_are_disjoint_complete_and_stratified():
    ids, labels = cohort(467)
    frame = split_subjects(ids, labels, **PAPER, seed=42)
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
    a = split_subjects(ids, labels, **PAPER, seed=7)
    b = split_subjects(list(reversed(ids)), list(reversed(labels)), **PAPER, seed=7)
    c = split_subjects(ids, labels, **PAPER, seed=8)
    assert a.equals(split_subjects(ids, labels, **PAPER, seed=7))
    assert not a["split"].equals(c["split"])
    assert set(b.columns) == {"subject_id", "label", "split"}
    # the same patients listed in another order land in the same splits (ids are sorted first)
    pd.testing.assert_frame_equal(a, b)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    pd.testing.assert_frame_equal(
        a,
        split_subjects([ids[i] for i in shuffled], [labels[i] for i in shuffled], **PAPER, seed=7),
    )


def test_too_small_or_unbalanced_cohorts_fail_clearly():
    with pytest.raises(ValueError, match="at least 3 subjects of each class"):
        split_subjects(["a", "b", "c", "d"], [0, 0, 0, 1], **PAPER, seed=0)
    with pytest.raises(ValueError, match="sum to 1"):
        split_subjects(*cohort(50), train=0.8, val=0.15, test=0.15, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        split_subjects(["a", "a", "b", "c", "d", "e", "f"], [0, 0, 0, 1, 1, 1, 0], **PAPER, seed=0)


def test_the_smallest_cohorts_that_stratify_are_accepted_and_one_less_is_not():
    """Exactly 3 of a class is enough; splits of 2 validation or test patients and 2 training
    patients are the smallest allowed."""
    ids = [f"S{i}" for i in range(14)]
    labels = [1, 1, 1] + [0] * 11
    frame = split_subjects(ids, labels, **PAPER, seed=42)
    assert frame["split"].value_counts().to_dict() == {"train": 10, "val": 2, "test": 2}
    assert frame["label"].sum() == 3 and sorted(frame["subject_id"]) == sorted(ids)
    with pytest.raises(ValueError, match="have 2 mutant and 12 wild-type"):
        split_subjects(ids, [1, 1] + [0] * 12, **PAPER, seed=42)
    with pytest.raises(ValueError, match="too small for splits 11/1/2"):
        split_subjects(ids, labels, train=0.75, val=0.10, test=0.15, seed=42)
    # two training patients are enough, one is not
    assert (split_subjects(ids[:6] + ids[6:8], [1, 1, 1, 0, 0, 0, 1, 0], 0.25, 0.375, 0.375, 42)[
        "split"
    ].value_counts()["train"]) == 2  # fmt: skip
    with pytest.raises(ValueError, match="too small for splits 1/"):
        split_subjects(ids[:7], [1, 1, 1, 0, 0, 0, 1], 0.1, 0.45, 0.45, 42)


def test_numeric_looking_ids_stay_strings_in_id_order():
    frame = split_subjects(
        [10, 9, 100, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13], [1, 0] * 7, **PAPER, seed=42
    )
    assert frame["subject_id"].tolist() == sorted(str(i) for i in frame["subject_id"])
    assert frame["subject_id"].map(type).eq(str).all()
