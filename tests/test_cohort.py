import json

import pandas as pd
import pytest

from idh_pseudocolor.cohort import LabelError, discover_cohort, id_key, match_ids, parse_idh


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0, 0),
        (1, 1),
        ("0", 0),
        ("1", 1),
        (" 1 ", 1),
        (1.0, 1),
        ("1.0", 1),
        (True, 1),
        ("wildtype", 0),
        ("Wild-type", 0),
        ("mutated (NOS)", 1),
        ("IDH1 p.R132H", 1),
        ("IDH2 p.R172K", 1),
        ("mutant", 1),
    ],
)
def test_parse_idh_accepts_egd_and_ucsf_values(value, label):
    assert parse_idh(value) == label


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "unknown"),
        ("-1", "unknown"),
        ("", "unknown"),
        (None, "missing"),
        (float("nan"), "missing"),
        ("banana", "unparseable"),
        (2, "unparseable"),
        ("IDH", "unparseable"),
    ],
)
def test_parse_idh_refuses_unknown_and_unparseable(value, message):
    with pytest.raises(LabelError, match=message):
        parse_idh(value)


def test_ids_match_across_zero_padding_and_prefixes():
    assert id_key("UCSF-PDGM-004") == id_key("UCSF-PDGM-0004")
    folders = ["BraTS2021_00012", "BraTS2021_00120", "BraTS2021_01200"]
    assert match_ids(folders, ["BraTS2021_012", "120", "BraTS2021_999"]) == {
        "BraTS2021_012": "BraTS2021_00012",
        "120": "BraTS2021_00120",
    }


def test_discover_egd_reads_metadata_and_flags_problems(tmp_path):
    for sid, meta in {
        "A": {
            "Genetic_and_Histological_labels": {"IDH": "1", "Grade": 3},
            "Clinical_data": {"Age": 40, "Sex": "F"},
        },
        "B": None,  # no metadata.json
    }.items():
        (tmp_path / sid).mkdir()
        if meta:
            (tmp_path / sid / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "C").mkdir()
    (tmp_path / "C" / "metadata.json").write_text("{not json")
    frame = discover_cohort(tmp_path).set_index("subject_id")
    assert (
        frame.loc["A", "label_raw"] == "1"
        and frame.loc["A", "grade"] == 3
        and frame.loc["A", "problem"] == ""
    )
    assert frame.loc["A", "file_T1ce"].endswith("A/T1GD.nii.gz")
    assert "no metadata.json" in frame.loc["B", "problem"]
    assert (
        "unreadable metadata.json" in frame.loc["C", "problem"]
        and "C/metadata.json" in frame.loc["C", "problem"]
    )
    assert not frame["phantom"].any()


def test_discover_brats_with_csv_labels(tmp_path):
    for sid in ("BraTS2021_00001", "BraTS2021_00002", "BraTS2021_00003"):
        (tmp_path / sid).mkdir()
    pd.DataFrame(
        {
            "ID": ["BraTS2021_001", "BraTS2021_002", "BraTS2021_777"],
            "IDH": ["wildtype", "IDH1 p.R132H", "wildtype"],
        }
    ).to_csv(tmp_path / "labels.csv", index=False)
    frame = discover_cohort(tmp_path, layout="brats", labels=tmp_path / "labels.csv").set_index(
        "subject_id"
    )
    assert frame.loc["BraTS2021_00002", "label_raw"] == "IDH1 p.R132H"
    assert frame.loc["BraTS2021_00001", "file_FLAIR"].endswith(
        "BraTS2021_00001/BraTS2021_00001_flair.nii.gz"
    )
    assert frame.loc["BraTS2021_00001", "file_mask"].endswith("_seg.nii.gz")
    assert "no label for subject BraTS2021_00003" in frame.loc["BraTS2021_00003", "problem"]
    assert "has a label but no image folder" in frame.loc["BraTS2021_777", "problem"]


def test_configuration_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*idh-pseudocolor phantom"):
        discover_cohort(tmp_path / "nowhere")
    (tmp_path / "S").mkdir()
    with pytest.raises(ValueError, match="Unknown cohort layout"):
        discover_cohort(tmp_path, layout="nifti-zoo")
    pd.DataFrame({"Subject": ["S"], "IDH": [1]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['ID'\]"):
        discover_cohort(tmp_path, labels=tmp_path / "l.csv")
    with pytest.raises(ValueError, match="needs 'files'"):
        discover_cohort(tmp_path, layout="custom")
