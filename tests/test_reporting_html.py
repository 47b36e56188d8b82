"""The report's markup: tables rendered by the Jinja macros from plain data, text from the data
escaped (no ``| safe`` on anything built in Python), the reporting settings, the named ids."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import yaml

from idh_pseudocolor.configurations import GRAY_IDS, GRAY_T1_ID, configuration, is_gray
from idh_pseudocolor.metrics import METRICS
from idh_pseudocolor.parameters import ReportingSettings
from idh_pseudocolor.report import html, stats
from tests.report_inputs import (
    ATTACK,
    fixed_predictions,
    render_macro,
    report_inputs,
    sweep_and_final,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "src/idh_pseudocolor/templates"


class Tables(HTMLParser):
    """Every table of a page: per row its attributes and the text of its cells (whitespace
    collapsed, ``<br>`` as a space); the tags met inside cells; every script element's text."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[list[dict]] = []
        self.scripts: list[str] = []
        self._cell: list[str] | None = None
        self._script: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append({"attrs": dict(attrs), "cells": [], "tags": []})
        elif tag in ("td", "th"):
            self._cell = []
            self.tables[-1][-1]["attrs"].setdefault("cell_attrs", []).append(dict(attrs))
        elif tag == "script":
            self._script = []
        elif self._cell is not None:
            self.tables[-1][-1]["tags"].append(tag)
            if tag == "br":
                self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1]["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
        elif self._cell is not None:
            self._cell.append(data)


def cells(page: str, table: int = 0) -> list[list[str]]:
    return [row["cells"] for row in Tables(page).tables[table]]


def metric_cell(value, ci_low=None, ci_high=None, mean=None, std=None) -> dict:
    return {"value": value, "ci_low": ci_low, "ci_high": ci_high, "mean": mean, "std": std}


def test_table_2_macro_renders_the_cells_from_plain_data():
    ensemble = {
        "kind": "ensemble",
        "method": "m, no pretraining",
        "invariants": "ok",
        "data": "phantom test split, 30 patients",
        "cells": [metric_cell(0.95231, 0.8521, 1.0, 0.9517, 0.0172)]
        + [metric_cell(0.5, 0.4, 0.6, 0.5, 0.01)] * 5,
        "brier": 0.0771,
        "ece": 0.04666,
    }
    chosen = {
        **ensemble,
        "kind": "chosen",
        "method": "m, no pretraining, seed 43",
        "cells": [metric_cell(None, float("nan"), float("nan"))] * 6,
        "brier": 0.07,
        "ece": 0.045,
    }
    published = {
        "kind": "published",
        "method": "ResNeXt finetuned",
        "invariants": "accuracy 0.881 is not between",
        "data": "EGD test (paper)",
        "cells": [metric_cell(0.935)] + [metric_cell(float("nan"))] * 5,
        "brier": None,
        "ece": None,
    }
    page = render_macro("table_2", [ensemble, chosen, published], list(METRICS))
    table = Tables(page).tables[0]
    assert table[0]["cells"] == [
        "method",
        "AUROC",
        "Accuracy",
        "F1",
        "Precision",
        "Recall",
        "Specificity",
        "Brier",
        "ECE",
        "data",
    ]
    assert [row["attrs"]["class"] for row in table[1:]] == ["ours", "ours chosen", "other"]
    ours, picked, paper = (row["cells"] for row in table[1:])
    assert ours[0] == "m, no pretraining seed ensemble; mean ± std over seeds below"
    assert (
        ours[1] == "0.952 [0.852, 1.000] 0.952 ± 0.017"
        and ours[2] == "0.500 [0.400, 0.600] 0.500 ± 0.010"
    )
    assert ours[7:] == ["0.077", "0.047", "phantom test split, 30 patients"]
    # not recorded: said, not blank
    assert picked[0].endswith("chosen before the test was read") and picked[1] == "– [–, –]"
    assert paper == [
        "ResNeXt finetuned ⚠ accuracy 0.881 is not between",
        "0.935",
        "–",
        "–",
        "–",
        "–",
        "–",
        "–",
        "–",
        "EGD test (paper)",
    ]
    # the footnote travels with the table
    assert 'class="warn"' in page and "Our rows, two per model" in page


def test_table_2_rows_from_a_real_table_render_as_table_2_says():
    predictions = fixed_predictions()
    table = stats.table_2(predictions, n_resamples=100, seed=0, calibration_bins=5)
    rows = Tables(render_macro("table_2", html.table_2_rows(table), list(METRICS))).tables[0][1:]
    assert len(rows) == len(table) == 2 + 6
    ours = table.iloc[0]
    assert rows[0]["cells"][1] == (
        f"{ours['auroc_ensemble']:.3f} [{ours['auroc_ci_low']:.3f}, {ours['auroc_ci_high']:.3f}] "
        f"{ours['auroc_mean']:.3f} ± {ours['auroc_std']:.3f}"
    )
    circulating = rows[-1]["cells"]  # the blood test printed no accuracy or specificity
    assert (
        circulating[0] == "circulating DNA blood test (Batool 2024)"
        and circulating[2] == "–"
        and circulating[6] == "–"
    )


def test_comparison_and_retrain_macros():
    comparison = pd.DataFrame(
        [
            {
                "model_name": "a",
                "available": True,
                "patients": 30.0,
                "auroc_difference": 0.0383,
                "ci_low": 0.0,
                "ci_high": 0.115,
                "delong_ci_low": -0.0231,
                "delong_ci_high": 0.1,
                "delong_se": 0.03,
                "p_value": 0.22391,
                "note": "AUROC finetuned - scratch",
            },
            {
                "model_name": "b",
                "available": False,
                "note": "needs final_evaluation.pretrained: [true, false]",
            },
        ]
    )
    page = render_macro("comparison_table", html.comparison_rows(comparison))
    assert cells(page)[1:] == [
        ["a", "0.038", "[-0.023, 0.100]", "[0.000, 0.115]", "0.2239", "30"],
        ["b", "not available: needs final_evaluation.pretrained: [true, false]"],
    ]
    assert Tables(page).tables[0][2]["attrs"]["cell_attrs"][1] == {"colspan": "5"}

    final, sweep = sweep_and_final()
    agreement = stats.retrain_agreement(final, sweep, tolerance=0.02)
    table = Tables(render_macro("retrain_table", html.agreement_rows(agreement))).tables[0]
    body = {(row["cells"][1], row["cells"][3]): row for row in table[1:]}
    assert body[("no pretraining", "43")]["cells"] == [
        "m",
        "no pretraining",
        "15: T2-T1ce-FLAIR",
        "43",
        "0.900",
        "9",
        "0.850",
        "7",
        "0.050",
        "⚠ differs",
    ]
    assert body[("no pretraining", "43")]["attrs"] == {"class": "differs", "cell_attrs": [{}] * 10}
    assert body[("finetuned", "42")]["cells"][6:] == ["no sweep run", "–", "–", "no sweep run"]
    assert "class" not in body[("no pretraining", "42")]["attrs"]


def test_generic_tables_print_cells_as_pandas_does():
    """frame_table's cells are the text of pandas' to_html, which the report used before."""
    values = {
        "learning_rate": 0.0047783,
        "lr_interval": "epoch",
        "mask_non_tumor": True,
        "max_epochs": 12,
        "peak_fraction": 0.437,
        "tiny": 1e-7,
        "whole": 2.0,
    }
    ours = cells(render_macro("frame_table", html.mapping_data(values)))
    frame = pd.DataFrame([values]).T.rename(columns={0: "value"})
    assert ours == cells(frame.to_html())
    metrics = pd.DataFrame(
        {
            "model_name": ["a", "b"],
            "pretrained": [True, False],
            "seeds": [3, 3],
            "auroc_mean": [0.95231, 0.5],
            "invariant_violations": [np.nan, "x"],
        }
    )
    assert cells(
        render_macro("frame_table", html.frame_data(metrics, index=False), digits=3)
    ) == cells(metrics.to_html(index=False, float_format="%.3f", na_rep="–"))
    splits = pd.DataFrame(
        {"test": {"subjects": 30, "mutant": 11}, "train": {"subjects": 140, "mutant": 49}}
    ).T
    assert cells(render_macro("frame_table", html.frame_data(splits))) == cells(splits.to_html())


def test_markup_in_the_data_is_escaped_everywhere_in_the_report():
    page = html.render_report(**report_inputs())
    assert "<script" not in page  # no search plots: the page has no script element at all
    # every place a label reaches, as text
    assert "alert" in page and page.count("&lt;script&gt;alert(") >= 15
    parsed = Tables(page)
    assert parsed.scripts == []
    t2 = parsed.tables[0]
    assert t2[1]["cells"][0].startswith(f"{ATTACK}, ") and t2[1]["tags"].count("script") == 0
    # a Plotly figure's text is data: tojson escapes it inside the script that draws it
    plot = go.Figure(
        go.Bar(x=[ATTACK], y=[1]), layout={"title": {"text": "</script><script>alert(1)</script>"}}
    )
    page = html.render_report(**report_inputs(search_plots=[plot]))
    scripts = Tables(page).scripts
    # PlotlyConfig, plotly.js (src), the figure
    assert len(scripts) == 3 and page.count("<script") == 3
    assert (
        "</script><script>alert(1)" not in page
        and "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in page
    )
    assert re.search(r'<script src="data:text/javascript;base64,[A-Za-z0-9+/=]+"></script>', page)


def test_report_plain_label_renders_without_escapes():
    page = html.render_report(**report_inputs(label="test_resnet"))
    # the tables carry text only; markup comes from the templates
    assert "&lt;" not in page.split("<pre>")[0]


def test_templates_mark_nothing_safe():
    """All markup is in the templates; nothing Python builds is marked safe."""
    for template in TEMPLATES.glob("*.j2"):
        text = template.read_text()
        assert not re.search(r"\|\s*safe\b", text), template.name
        # never switched off
        assert not re.search(r"{%-?\s*autoescape\s+false", text), template.name
    for module in (REPO / "src/idh_pseudocolor/report").glob("*.py"):
        text = module.read_text()
        assert (
            "Markup" not in text and "markupsafe" not in text and "autoescape=False" not in text
        ), module.name
    assert html.environment().autoescape is True


def test_reporting_settings_come_from_the_yaml_only():
    params = yaml.safe_load((REPO / "conf/base/parameters_reporting.yml").read_text())["reporting"]
    settings = ReportingSettings.from_params(params)
    assert settings == ReportingSettings(
        bootstrap_resamples=2000,
        seed=0,
        calibration_bins=5,
        retrain_tolerance=0.02,
        figure_1_subject=None,
    )
    with pytest.raises(
        ValueError,
        match=r"reporting\.bootstrap_resample is not a "
        r"setting \(conf/base/parameters_reporting\.yml",
    ):
        ReportingSettings.from_params({**params, "bootstrap_resample": 10})
    with pytest.raises(ValueError, match=r"reporting\.seed is missing"):
        ReportingSettings.from_params({k: v for k, v in params.items() if k != "seed"})
    assert (
        ReportingSettings.from_params(
            {**params, "figure_1_subject": "PHANTOM-0007"}
        ).figure_1_subject
        == "PHANTOM-0007"
    )


def test_report_states_the_phantom_banner_only_for_phantom_data():
    inputs = report_inputs(label="m")
    phantom = html.render_report(
        **{**inputs, "qc_summary": {"synthetic_phantom_cohort": True, "included": 10}}
    )
    real = html.render_report(
        **{**inputs, "qc_summary": {"synthetic_phantom_cohort": False, "included": 10}}
    )
    assert 'id="phantom-banner"' in phantom and "not patient data" in phantom
    assert 'id="phantom-banner"' not in real
    assert "ranks 4 of 28" in real  # gray T1 (24) by the winner rule: only 25, 26, 27 score higher
    assert "Some runs asked for pretrained weights that were not loaded" in real  # said, not hidden
    # Table 2: per arm the seed ensemble, then the seed chosen on validation (43: val AUROC 0.900)
    assert real.count('<tr class="ours">') == 2 and real.count('<tr class="ours chosen">') == 2
    assert "m, no pretraining, seed 43 (chosen on validation AUROC 0.900, best of 2 seeds)" in real
    # the retrain check: seed 43 of the scratch arm differs from the sweep by 0.05 > 0.02, flagged
    assert 'id="retrain-flag"' in real and "1 of 4 retrained runs differ" in real
    # sweep and status cells
    assert real.count('<tr class="differs">') == 1 and real.count("<td>no sweep run</td>") == 2 * 2
    predictions, sweep = sweep_and_final()
    agrees = {
        **inputs,
        "qc_summary": {"included": 10},
        "agreement": stats.retrain_agreement(predictions, sweep, 0.06),
    }
    assert 'id="retrain-flag"' not in html.render_report(**agrees)


def test_the_report_states_values_from_stats():
    assert stats.study_kind({"kind": "paper", "rehearsal": True}) == "rehearsal"
    assert stats.study_kind({"kind": "paper", "rehearsal": False}) == "paper"
    assert stats.study_kind({"kind": "demo", "rehearsal": False}) == "demo"
    inputs = report_inputs(label="m")
    assert stats.gray_t1_rank(inputs["study_results"]) == (4, 28)
    assert stats.gray_t1_rank(inputs["study_results"].query("config_id != @GRAY_T1_ID")) == (
        None,
        0,
    )
    assert stats.pretrained_weights_status(inputs["table"]) == "not loaded"
    assert stats.retrain_summary(inputs["agreement"]) == (0.02, 1)
    paper = {**inputs, "parameters": {"environment": {"kind": "paper", "rehearsal": True}}}
    assert "Study: a rehearsal of the paper path" in html.render_report(**paper)


def test_named_configuration_ids():
    assert configuration(GRAY_T1_ID) == ("T1", "T1", "T1")
    assert [configuration(i)[0] for i in GRAY_IDS] == ["T1", "T1ce", "T2", "FLAIR"] and all(
        map(is_gray, GRAY_IDS)
    )
    from idh_pseudocolor import planted

    assert planted.GRAY_T1_ID is GRAY_T1_ID


def _fallback_study():
    """The winner (configuration 3) and its fallbacks trained on the same patients and seeds:
    each fallback's predictions shifted less (a missing sequence costs signal)."""
    from idh_pseudocolor.permutation_study import final_metrics_table
    from idh_pseudocolor.runs import fallback_choices, fallback_metrics_table

    ranking = [3, 21, 7, *[c for c in range(1, 28) if c not in (3, 21, 7)]]
    choices = fallback_choices(ranking, 3)
    winner = pd.concat(
        [fixed_predictions(shift=0.4).assign(pretrained=p) for p in (False, True)],
        ignore_index=True,
    ).assign(config_id=3)
    fallback_ids = sorted(set(choices.loc[~choices["winner"], "config_id"]))
    fallback = pd.concat(
        [
            fixed_predictions(shift=0.1, seed=c).assign(pretrained=p, config_id=c)
            for c in fallback_ids
            for p in (False, True)
        ],
        ignore_index=True,
    )
    # the last fallback trained for the scratch arm only
    fallback = fallback[~((fallback["config_id"] == fallback_ids[-1]) & fallback["pretrained"])]
    return choices, fallback_metrics_table(fallback, choices), final_metrics_table(winner), fallback


def test_missing_sequence_costs_set_each_fallback_beside_the_winner():
    from sklearn.metrics import roc_auc_score

    choices, fallback_metrics, test_metrics, fallback = _fallback_study()
    costs = stats.missing_sequence_costs(choices, fallback_metrics, test_metrics)
    assert set(costs["missing_sequences"]) == set(choices["missing_sequences"])
    served_by_winner = costs[costs["winner"]]
    assert (served_by_winner["auroc_difference"] == 0).all() and len(served_by_winner) == 2 * len(
        choices[choices["winner"]]
    )
    # one fallback x arm recomputed from its predictions: mean over seeds of per-seed AUROC
    row = costs[~costs["winner"] & ~costs["pretrained"]].iloc[0]
    part = fallback[(fallback["config_id"] == row["config_id"]) & ~fallback["pretrained"]]
    expected = np.mean(
        [roc_auc_score(s["label"], s["prob_mutant"]) for _, s in part.groupby("seed")]
    )
    assert row["auroc_mean"] == pytest.approx(expected)
    assert row["auroc_difference"] == pytest.approx(expected - row["auroc_winner"])
    assert row["auroc_difference"] < 0  # less signal in the fallback's predictions
    # the arm that was not trained is left out, not filled in
    last = max(set(choices.loc[~choices["winner"], "config_id"]))
    assert not costs[(costs["config_id"] == last) & costs["pretrained"]].shape[0]


def test_report_shows_what_each_missing_sequence_costs():
    choices, fallback_metrics, test_metrics, _ = _fallback_study()
    inputs = {**report_inputs(label="m"), "test_metrics": test_metrics}
    page = html.render_report(
        **inputs, fallback_configurations=choices, fallback_test_metrics=fallback_metrics
    )
    section = page[page.index('<h2 id="missing-sequences">') :]
    section = section[: section.index("<h2", 5)]
    table = section[section.index('<table id="missing-sequences-table">') :]
    assert table.count("<tr><td>") == choices["missing_sequences"].nunique()
    for choice in choices.itertuples():
        missing = "nothing" if choice.missing_sequences == "none" else choice.missing_sequences
        assert f"<tr><td>{missing}</td><td>{choice.configuration} ({choice.study_rank})" in table
    assert "not trained" in table and "— the winner" in table
    absent = html.render_report(**inputs)
    assert 'id="missing-sequences-not-run"' in absent and "missing-sequences-table" not in absent
    only_winner = html.render_report(  # fallback.min_sequences: 4
        **inputs,
        fallback_configurations=choices[choices["winner"]].head(1),
        fallback_test_metrics=fallback_metrics.head(0),
    )
    assert 'id="missing-sequences-not-run"' in only_winner
