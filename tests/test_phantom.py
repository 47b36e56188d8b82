"""The phantom cohort: EGD grid and layout, reproducibility, planted contrasts, BraTS variant."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import ndimage, stats

from idh_pseudocolor.cli import cli
from idh_pseudocolor.cohort import discover_cohort, parse_idh
from idh_pseudocolor.phantom import (
    SITES,
    Site,
    cohort_is_complete,
    draw_tumor,
    generate_cohort,
    generate_subject,
    load_template,
    render_subject,
)


def test_full_template_is_egd_grid():
    template = load_template(1.0)
    assert template.shape == (197, 233, 189)
    assert nib.aff2axcodes(template.affine) == ("R", "A", "S")
    assert np.allclose(np.diag(template.affine)[:3], 1.0)


#: sha256 of the uint8 voxels of nilearn's MNI152 T1, GM and WM files: the anatomy of generator v3
TEMPLATE_SHA256 = {
    "t1": "a42242e3dc051f80e18cf23eb12618a6f09ff951defa2d1e9687d8dcb8810bbf",
    "gm": "31aecb7be828c1bfb9ff518f94fe76c463e4ec834ac96c2de3449ec2122711f5",
    "wm": "b0a50397bf25b0f407ca29e2cfefa2f49f094d06bc0aa2722f2f0b72fcd9b645",
}


def test_anatomy_is_nilearns_template_files_unchanged():
    """The public loaders give, bit for bit, the maps generator v3 read from nilearn's files
    (uint8 / 255 in float32, same affine); the files themselves are the ones v3 was made from."""
    import hashlib

    from nilearn.datasets import GM_MNI152_FILE_PATH, MNI152_FILE_PATH, WM_MNI152_FILE_PATH

    from idh_pseudocolor.phantom import template_maps

    maps, affine = template_maps()
    for key, path in {
        "t1": MNI152_FILE_PATH,
        "gm": GM_MNI152_FILE_PATH,
        "wm": WM_MNI152_FILE_PATH,
    }.items():
        image = nib.load(path)
        voxels = np.asarray(image.dataobj)
        assert (
            voxels.dtype == np.uint8
            and hashlib.sha256(voxels.tobytes()).hexdigest() == TEMPLATE_SHA256[key]
        ), key
        assert maps[key].dtype == np.float32
        np.testing.assert_array_equal(maps[key], voxels.astype(np.float32) / 255.0, err_msg=key)
        np.testing.assert_array_equal(affine, image.affine)


def test_egd_layout_and_metadata(tiny_cohort):
    subjects = sorted(p for p in tiny_cohort.iterdir() if p.is_dir())
    assert len(subjects) == 24
    names = {p.name for p in subjects[0].iterdir()}
    assert names == {
        "T1.nii.gz",
        "T1GD.nii.gz",
        "T2.nii.gz",
        "FLAIR.nii.gz",
        "MASK.nii.gz",
        "metadata.json",
    }
    labels = []
    for folder in subjects:
        meta = json.loads((folder / "metadata.json").read_text())
        labels.append(parse_idh(meta["Genetic_and_Histological_labels"]["IDH"]))
        assert meta["Phantom"]["synthetic"] is True
        assert {"Age", "Sex"} <= set(meta["Clinical_data"]) and "Field" in meta[
            "Scan_characteristics"
        ]
        assert nib.load(folder / "MASK.nii.gz").get_fdata().any()
    assert sum(labels) == round(0.35 * 24)
    assert json.loads((tiny_cohort / "phantom_cohort.json").read_text())["synthetic"] is True
    assert discover_cohort(tiny_cohort)["phantom"].all()
    # some IDH values are written as strings, as EGD's sometimes are
    raw = [
        json.loads((f / "metadata.json").read_text())["Genetic_and_Histological_labels"]["IDH"]
        for f in subjects
    ]
    assert {type(v) for v in raw} == {int, str}


def test_reproducible_from_seed(tmp_path):
    generate_cohort(
        tmp_path / "a", n_subjects=3, seed=11, voxel_size=4.0, n_workers=1, progress=False
    )
    generate_cohort(
        tmp_path / "b", n_subjects=3, seed=11, voxel_size=4.0, n_workers=2, progress=False
    )
    generate_cohort(
        tmp_path / "c", n_subjects=3, seed=12, voxel_size=4.0, n_workers=1, progress=False
    )
    for name in ("T2.nii.gz", "MASK.nii.gz"):
        a = nib.load(tmp_path / "a" / "PHANTOM-0002" / name).get_fdata()
        b = nib.load(tmp_path / "b" / "PHANTOM-0002" / name).get_fdata()
        c = nib.load(tmp_path / "c" / "PHANTOM-0002" / name).get_fdata()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_tissue_contrast_and_planted_tumor_signal(tmp_path):
    out = tmp_path / "c"
    generate_cohort(out, n_subjects=40, seed=5, voxel_size=2.0, n_workers=2, progress=False)
    template = load_template(2.0)
    brain = template.brain
    csf = brain & (template.base["T2"] > 0.95)  # T2 base is 1.0 only in pure CSF
    wm = brain & (template.base["T1"] > 0.79)
    gm = brain & (np.abs(template.base["T1"] - 0.55) < 0.01)
    rows = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        vol = {
            s: nib.load(folder / f"{s}.nii.gz").get_fdata() for s in ("T1", "T1GD", "T2", "FLAIR")
        }
        tumor = nib.load(folder / "MASK.nii.gz").get_fdata() > 0
        healthy = ~ndilate(tumor)
        m = {
            s: {t: v[r & healthy].mean() for t, r in (("csf", csf), ("gm", gm), ("wm", wm))}
            for s, v in vol.items()
        }
        assert m["T1"]["wm"] > m["T1"]["gm"] > m["T1"]["csf"]
        assert m["T2"]["csf"] > m["T2"]["gm"] > m["T2"]["wm"]
        assert m["FLAIR"]["csf"] < min(m["FLAIR"]["gm"], m["FLAIR"]["wm"])  # CSF suppressed
        meta = json.loads((folder / "metadata.json").read_text())
        t = meta["Phantom"]["tumor"]
        core = (
            ndimage.binary_erosion(tumor, iterations=2)
            if ndimage.binary_erosion(tumor, iterations=2).any()
            else tumor
        )
        # each sequence's solid-tumor signal against its own healthy white matter (scanner scale
        # cancels)
        t2, flair = (
            vol["T2"][core].mean() / m["T2"]["wm"],
            vol["FLAIR"][core].mean() / m["FLAIR"]["wm"],
        )
        rows.append(
            {
                "mutant": t["mutant"],
                "t2": t2,
                "flair": flair,
                "t2_bright": t2 > 1.7,
                "flair_bright": flair > 1.2,
                "enhancement": np.percentile(vol["T1GD"][tumor] / m["T1GD"]["wm"], 95),
                "volume": tumor.sum(),
            }
        )
    frame = pd.DataFrame(rows)
    # the images show what the metadata says was drawn: bright or dark core per sequence
    frame["discordant"] = frame["t2_bright"] != frame["flair_bright"]
    mutant, wildtype = frame[frame.mutant], frame[~frame.mutant]
    # the planted truth needs both sequences: discordance separates the classes ...
    assert mutant["discordant"].mean() > 0.75 and wildtype["discordant"].mean() < 0.25
    # ... while T2 alone and FLAIR alone do not (bright at even odds in both classes)
    for single in ("t2_bright", "flair_bright"):
        assert abs(mutant[single].mean() - wildtype[single].mean()) < 0.3, single
    assert stats.mannwhitneyu(mutant["t2"], wildtype["t2"]).pvalue > 0.01
    assert wildtype["enhancement"].median() > mutant["enhancement"].median()
    # overlapping, not separable by one feature
    assert mutant["volume"].max() > wildtype["volume"].min()
    marker = json.loads((out / "phantom_cohort.json").read_text())
    assert marker["generator_version"] == 3 and marker["planted_sequences"] == ["T2", "FLAIR"]
    relational = [c for c in marker["cues"] if c["kind"] == "relational"]
    assert [c["sequences"] for c in relational] == [["T2", "FLAIR"]]
    assert all(c["strength"] == "weak" for c in marker["cues"] if c["kind"] == "single")


def ndilate(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=6)


def test_brats_layout_is_lps_with_ucsf_labels(tmp_path):
    out = tmp_path / "brats"
    generate_cohort(
        out, n_subjects=6, seed=2, voxel_size=4.0, layout="brats", n_workers=1, progress=False
    )
    folder = out / "BraTS2021_00001"
    assert {p.name for p in folder.iterdir()} == {
        *(f"BraTS2021_00001_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg")),
        "metadata.json",
    }
    seg = nib.load(folder / "BraTS2021_00001_seg.nii.gz")
    assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    assert labels["ID"].iloc[0] == "BraTS2021_001"  # padding differs from the folder on purpose
    assert set(labels["IDH"]) <= {"wildtype", "mutated (NOS)", "IDH1 p.R132H", "IDH2 p.R172K"}
    frame = discover_cohort(out, layout="brats", labels=out / "labels.csv")
    assert (frame["problem"] == "").all() and frame["label_raw"].map(parse_idh).sum() == 2
    # every subject's metadata.json (docs/data.md) says it is synthetic, with the label of
    # labels.csv
    for row in frame.itertuples():
        meta = json.loads((out / row.subject_id / "metadata.json").read_text())
        assert meta["Phantom"]["synthetic"] is True and meta["Phantom"]["tumor"]["mutant"] == bool(
            parse_idh(row.label_raw)
        )
        assert parse_idh(meta["Genetic_and_Histological_labels"]["IDH"]) == parse_idh(row.label_raw)


def test_cli_generates_once(tmp_path):
    out = tmp_path / "cli"
    args = [
        "phantom",
        "--subjects",
        "3",
        "--voxel-size",
        "4",
        "--out",
        str(out),
        "--workers",
        "1",
        "--if-absent",
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "Wrote 3 phantom subjects" in first.output
    assert cohort_is_complete(out, 3, 0, 4.0, "egd") and not cohort_is_complete(
        out, 4, 0, 4.0, "egd"
    )
    second = CliRunner().invoke(cli, args)
    assert "already complete" in second.output


def test_if_absent_regenerates_for_other_settings_and_drops_stale_subjects(tmp_path):
    out = tmp_path / "again"
    base = ["phantom", "--voxel-size", "4", "--out", str(out), "--workers", "1", "--if-absent"]
    assert CliRunner().invoke(cli, [*base, "--subjects", "4"]).exit_code == 0
    assert cohort_is_complete(out, 4, 0, 4.0, "egd", 0.35) and not cohort_is_complete(
        out, 4, 0, 4.0, "egd", 0.5
    )
    again = CliRunner().invoke(cli, [*base, "--subjects", "4", "--mutant-fraction", "0.5"])
    # another fraction: regenerated, not kept
    assert "Wrote 4 phantom subjects (2 IDH-mutant)" in again.output
    (out / "notes").mkdir()  # a folder the phantom did not write is left alone
    smaller = CliRunner().invoke(cli, [*base, "--subjects", "2"])
    assert smaller.exit_code == 0, smaller.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "PHANTOM-0001",
        "PHANTOM-0002",
        "notes",
    ]
    assert len(discover_cohort(out)) == 3 and cohort_is_complete(out, 2, 0, 4.0, "egd")


def test_python_m_is_the_idh_pseudocolor_command():
    """``python -m idh_pseudocolor`` runs pyproject's ``idh-pseudocolor`` entry point (cli.main)."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="idh-pseudocolor")
    assert script.value == "idh_pseudocolor.cli:main"
    done = subprocess.run(
        [sys.executable, "-m", "idh_pseudocolor", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "phantom" in done.stdout and "predict" in done.stdout


SEQUENCE_FILES = ("T1", "T1GD", "T2", "FLAIR")


def _neighbour_correlation(volume: np.ndarray, brain: np.ndarray, axis: int) -> float:
    """Correlation of brain voxels with their next neighbour along ``axis`` (2 = S-I in RAS)."""
    first = [slice(None)] * 3
    second = [slice(None)] * 3
    first[axis], second[axis] = slice(None, -1), slice(1, None)
    pair = brain[tuple(first)] & brain[tuple(second)]
    return float(np.corrcoef(volume[tuple(first)][pair], volume[tuple(second)][pair])[0, 1])


def test_site_a_is_the_default_cohort(tmp_path):
    """Site "a" is the cohort generator v3 always wrote: its parameters are the historical
    constants and an explicit site="a" writes the same voxels as the default arguments."""
    assert SITES["a"] == Site(
        name="a",
        description=SITES["a"].description,
        scale_median=800.0,
        scale_spread=0.3,
        offset=(0.0, 40.0),
        bias_sd=0.12,
        noise=(0.015, 0.04),
        slice_voxels=1,
    )
    generate_cohort(
        tmp_path / "d", n_subjects=3, seed=7, voxel_size=4.0, n_workers=1, progress=False
    )
    generate_cohort(
        tmp_path / "a", n_subjects=3, seed=7, voxel_size=4.0, n_workers=1, progress=False, site="a"
    )
    generate_cohort(
        tmp_path / "b", n_subjects=3, seed=7, voxel_size=4.0, n_workers=1, progress=False, site="b"
    )
    for i in (1, 2, 3):
        for name in (*SEQUENCE_FILES, "MASK"):
            default = nib.load(tmp_path / "d" / f"PHANTOM-{i:04d}" / f"{name}.nii.gz")
            site_a = nib.load(tmp_path / "a" / f"PHANTOM-{i:04d}" / f"{name}.nii.gz")
            np.testing.assert_array_equal(np.asarray(default.dataobj), np.asarray(site_a.dataobj))
            np.testing.assert_array_equal(default.get_fdata(), site_a.get_fdata())
            if name != "MASK":  # ... while site "b" does change the images
                site_b = nib.load(tmp_path / "b" / f"PHANTOM-{i:04d}" / f"{name}.nii.gz")
                assert not np.allclose(default.get_fdata(), site_b.get_fdata())
        meta = json.loads((tmp_path / "d" / f"PHANTOM-{i:04d}" / "metadata.json").read_text())
        assert meta["Scan_characteristics"]["Site"] == "a"
    assert json.loads((tmp_path / "d" / "phantom_cohort.json").read_text())["site"] == "a"


def test_site_b_changes_the_scanner_not_the_patients(tmp_path):
    """Same seed at site b: identical labels, tumors and clinical data; brighter, offset images
    (median about 1800 / 800 times site a's, every brain voxel above the offset's floor of 50)
    whose adjacent axial planes correlate more (thick slices)."""
    for site in ("a", "b"):
        generate_cohort(
            tmp_path / site,
            n_subjects=4,
            seed=4,
            voxel_size=4.0,
            n_workers=1,
            progress=False,
            site=site,
        )
    ratios, minima = [], {"a": [], "b": []}
    anisotropy = {"a": [], "b": []}  # z-correlation minus in-plane (x) correlation
    for i in range(1, 5):
        folders = {site: tmp_path / site / f"PHANTOM-{i:04d}" for site in ("a", "b")}
        masks = {s: nib.load(f / "MASK.nii.gz").get_fdata() for s, f in folders.items()}
        assert masks["a"].any()
        np.testing.assert_array_equal(masks["a"], masks["b"])
        meta = {s: json.loads((f / "metadata.json").read_text()) for s, f in folders.items()}
        assert [m["Scan_characteristics"].pop("Site") for m in meta.values()] == ["a", "b"]
        assert meta["a"] == meta["b"]  # IDH, grade, clinical data and the drawn tumor
        for seq in SEQUENCE_FILES:
            volumes = {s: nib.load(f / f"{seq}.nii.gz").get_fdata() for s, f in folders.items()}
            brain = volumes["a"] > 0
            np.testing.assert_array_equal(brain, volumes["b"] > 0)  # same skull stripping
            ratios.append(np.median(volumes["b"][brain]) / np.median(volumes["a"][brain]))
            z_corr = {}
            for site, volume in volumes.items():
                minima[site].append(volume[brain].min())
                z_corr[site] = _neighbour_correlation(volume, brain, axis=2)
                anisotropy[site].append(z_corr[site] - _neighbour_correlation(volume, brain, 0))
            assert z_corr["b"] > z_corr["a"] + 0.05, (i, seq, z_corr)
    assert min(ratios) > 1.4 and 1.8 < np.median(ratios) < 2.8, ratios
    assert min(minima["b"]) >= 49.9 > min(minima["a"])  # offsets: b uniform(50, 150), a (0, 40)
    # the extra smoothness is along S-I (thick axial slices), not only a smoother image
    assert np.median(anisotropy["b"]) > np.median(anisotropy["a"]) + 0.05, anisotropy


def test_site_b_tumor_is_drawn_as_at_site_a():
    """render_subject: the same rng gives the same labels at both sites, and the same rng state
    afterwards (so everything drawn later, e.g. clinical data, is the same too)."""
    template = load_template(4.0)
    results = []
    for site in ("a", "b", SITES["b"]):
        rng = np.random.default_rng([3, 2])
        tumor = draw_tumor(rng, template, mutant=True)
        volumes, labels = render_subject(rng, template, tumor, site=site)
        results.append((volumes, labels, rng.random()))
    (vol_a, lab_a, next_a), (vol_b, lab_b, next_b), (vol_obj, _, _) = results
    np.testing.assert_array_equal(lab_a, lab_b)
    assert lab_a.any() and next_a == next_b
    np.testing.assert_array_equal(vol_b["T2"], vol_obj["T2"])  # a Site or its name
    assert np.median(vol_b["T2"][template.brain]) > 1.5 * np.median(vol_a["T2"][template.brain])


def test_unknown_site_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown site 'c'; valid sites: a, b"):
        generate_cohort(tmp_path / "c", n_subjects=2, voxel_size=4.0, n_workers=1, site="c")
    assert not (tmp_path / "c").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="valid sites: a, b"):
        generate_subject(tmp_path / "s", 1, True, 0, voxel_size=4.0, site="B")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="slice_voxels must be odd"):
        Site("x", "even slices", 800.0, 0.3, (0.0, 40.0), 0.12, (0.015, 0.04), slice_voxels=2)
    result = CliRunner().invoke(cli, ["phantom", "--site", "c", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "'a', 'b'" in result.output.replace('"', "'")


def test_marker_records_site_and_if_absent_compares_it(tmp_path):
    out = tmp_path / "cohort"
    generate_cohort(
        out, n_subjects=2, seed=1, voxel_size=4.0, n_workers=1, progress=False, site="b"
    )
    marker = json.loads((out / "phantom_cohort.json").read_text())
    assert marker["site"] == "b"
    assert cohort_is_complete(out, 2, 1, 4.0, "egd", site="b")
    assert not cohort_is_complete(out, 2, 1, 4.0, "egd", site="a")
    assert not cohort_is_complete(out, 2, 1, 4.0, "egd")  # the default is site a
    base = ["phantom", "--subjects", "2", "--seed", "1", "--voxel-size", "4", "--out", str(out)]
    base += ["--workers", "1", "--if-absent"]
    kept = CliRunner().invoke(cli, [*base, "--site", "b"])
    assert kept.exit_code == 0 and "already complete" in kept.output, kept.output
    t2_b = nib.load(out / "PHANTOM-0001" / "T2.nii.gz").get_fdata()
    regenerated = CliRunner().invoke(cli, base)  # site a asked for: regenerated
    assert regenerated.exit_code == 0 and "Wrote 2 phantom subjects" in regenerated.output
    assert json.loads((out / "phantom_cohort.json").read_text())["site"] == "a"
    assert not np.allclose(t2_b, nib.load(out / "PHANTOM-0001" / "T2.nii.gz").get_fdata())
    # a marker written before sites existed is site a's cohort (which did not change)
    marker = json.loads((out / "phantom_cohort.json").read_text())
    del marker["site"]
    (out / "phantom_cohort.json").write_text(json.dumps(marker))
    assert cohort_is_complete(out, 2, 1, 4.0, "egd") and not cohort_is_complete(
        out, 2, 1, 4.0, "egd", site="b"
    )


def test_cli_site_b_writes_a_brats_cohort(tmp_path):
    out = tmp_path / "external"
    args = ["phantom", "--site", "b", "--layout", "brats", "--subjects", "6", "--seed", "3"]
    args += ["--voxel-size", "4", "--out", str(out), "--workers", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Wrote 6 phantom subjects (2 IDH-mutant) of site b" in result.output
    marker = json.loads((out / "phantom_cohort.json").read_text())
    assert (marker["site"], marker["layout"], marker["seed"]) == ("b", "brats", 3)
    frame = discover_cohort(out, layout="brats", labels=out / "labels.csv")
    assert len(frame) == 6 and (frame["problem"] == "").all()
    assert frame["label_raw"].map(parse_idh).sum() == 2
    t2 = nib.load(out / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz")
    assert nib.aff2axcodes(t2.affine) == ("L", "P", "S")
    meta = json.loads((out / "BraTS2021_00001" / "metadata.json").read_text())
    assert meta["Scan_characteristics"]["Site"] == "b"
    # the CLI wrote what the Python API writes for site b, not site a's images
    for site in ("a", "b"):
        generate_cohort(
            tmp_path / site,
            n_subjects=1,
            seed=3,
            voxel_size=4.0,
            layout="brats",
            n_workers=1,
            progress=False,
            site=site,
        )
    api = {
        s: nib.load(tmp_path / s / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").get_fdata()
        for s in ("a", "b")
    }
    np.testing.assert_array_equal(t2.get_fdata(), api["b"])
    # BraTS files are int16 scaled to their maximum (no scanner units): compare the thick slices,
    # S-I is the third axis in LPS too
    brain = api["a"] > 0
    assert _neighbour_correlation(api["b"], brain, 2) > _neighbour_correlation(api["a"], brain, 2)


def test_the_clis_site_names_are_the_generators():
    """The CLI lists the sites itself (importing it must stay cheap): the same names."""
    from idh_pseudocolor.cli import SITE_NAMES

    assert sorted(SITE_NAMES) == sorted(SITES)
