"""The self-contained HTML report: a plain context (numbers, strings, lists and dicts of them)
rendered by the Jinja templates in ``idh_pseudocolor/templates`` with autoescaping on.

Every piece of markup is in the templates (the tables are macros in ``macros.j2``); nothing built
here is marked safe. Numbers are formatted in the templates by the filters below. Figures travel
as PNG data URIs and plotly.js as a JavaScript data URI (attribute values, not markup); the
search's Plotly figures as JSON data, embedded by Jinja's ``tojson`` (escaped for HTML).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from idh_pseudocolor.arms import arm_label
from idh_pseudocolor.configurations import GRAY_T1_ID, configuration_label
from idh_pseudocolor.metrics import METRICS
from idh_pseudocolor.report import stats
from idh_pseudocolor.report.figures import figure_external, fold_auroc_figure

MISSING = "–"  # what a table shows for a value that does not exist (None or NaN)


# -- filters: numbers to text, in the templates -----------------------------------------------
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_number(value: Any, digits: int = 3) -> str:
    """A float to ``digits`` decimals, a missing value as "–", anything else as it prints."""
    if _missing(value):
        return MISSING
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_count(value: Any) -> str:
    """A count (seed, epoch) as an integer, also when a CSV made it a float; missing as "–"."""
    return MISSING if _missing(value) else str(int(value))


def fmt_cell(value: Any, digits: int | None = None) -> str:
    """A cell of a generic table, as pandas' ``to_html`` prints it: floats to ``digits``
    decimals, or else to six with trailing zeros dropped (one kept); missing as "–"."""
    if _missing(value):
        return MISSING
    if not isinstance(value, float):
        return str(value)
    if digits is not None:
        return f"{value:.{digits}f}"
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def environment() -> jinja2.Environment:
    """The templates' Jinja environment: autoescaping on, the number filters registered."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("idh_pseudocolor", "templates"), autoescape=True
    )
    env.filters.update(num=fmt_number, count=fmt_count, cell=fmt_cell)
    return env


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render a template of ``idh_pseudocolor/templates`` with a plain context."""
    return environment().get_template(template).render(**context)


# -- plain data from frames and figures -------------------------------------------------------
def plain(value: Any) -> Any:
    """numpy and pandas scalars as Python's (missing values as None or NaN)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def frame_data(frame: pd.DataFrame, index: bool = True) -> dict[str, Any]:
    """A frame for the ``frame_table`` macro: column names, and per row its label (the index,
    when shown) and cells."""
    return {
        "columns": [str(c) for c in frame.columns],
        "show_index": index,
        "rows": [
            {"label": plain(label), "cells": [plain(v) for v in row]}
            for label, row in zip(frame.index, frame.itertuples(index=False), strict=True)
        ],
    }


def mapping_data(values: Mapping[str, Any], column: str = "value") -> dict[str, Any]:
    """A one-column table (name, value) for the ``frame_table`` macro."""
    return {
        "columns": [column],
        "show_index": True,
        "rows": [{"label": str(k), "cells": [plain(v)]} for k, v in values.items()],
    }


def png_data_uri(image: Any) -> str:
    """A PIL image or matplotlib figure as an inline PNG (the report needs no side files)."""
    buffer = io.BytesIO()
    if isinstance(image, Figure):
        image.savefig(buffer, format="png", dpi=110)
    else:
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plotly_js_data_uri() -> str:
    """plotly.js itself (the version the installed plotly writes for), inline: works offline."""
    from plotly.offline import get_plotlyjs

    return "data:text/javascript;base64," + base64.b64encode(get_plotlyjs().encode("utf-8")).decode(
        "ascii"
    )


def plotly_data(figure: Any) -> dict[str, Any]:
    """A Plotly figure as the plain JSON data ``Plotly.newPlot`` takes (with the config that
    ``to_html`` uses: responsive)."""
    return {**json.loads(figure.to_json()), "config": {"responsive": True}}


def table_2_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Table 2 for the ``table_2`` macro. ``kind``: "ensemble" (our seed ensemble, with mean and
    std over seeds), "chosen" (our seed chosen on validation) or "published"; per metric the
    row's own value and its CI; Brier and ECE for our rows."""
    rows = []
    for _, r in table.iterrows():
        ours = bool(r["ours"])
        kind = (
            "chosen"
            if r.get("estimate") == "seed chosen on validation"
            else "ensemble"
            if ours
            else "published"
        )
        cells = [
            {
                "value": plain(
                    r.get(f"{m}_best_seed") if kind == "chosen" else r.get(f"{m}_ensemble")
                ),
                "ci_low": plain(r.get(f"{m}_ci_low")),
                "ci_high": plain(r.get(f"{m}_ci_high")),
                "mean": plain(r.get(f"{m}_mean")),
                "std": plain(r.get(f"{m}_std")),
            }
            for m in METRICS
        ]
        rows.append(
            {
                "kind": kind,
                "method": str(r["method"]),
                "invariants": str(r["invariants"]),
                "cells": cells,
                "data": str(r["data"]),
                "brier": plain(r.get("brier")) if ours else None,
                "ece": plain(r.get("ece")) if ours else None,
            }
        )
    return rows


def comparison_rows(comparison: pd.DataFrame) -> list[dict[str, Any]]:
    """The finetuned-vs-scratch comparison for the ``comparison_table`` macro."""
    keys = (
        "auroc_difference",
        "delong_ci_low",
        "delong_ci_high",
        "ci_low",
        "ci_high",
        "p_value",
        "patients",
    )
    return [
        {
            "model_name": str(r["model_name"]),
            "available": bool(r.get("available", False)),
            "note": plain(r.get("note")),
            **{k: plain(r.get(k)) for k in keys},
        }
        for _, r in comparison.iterrows()
    ]


def agreement_rows(agreement: pd.DataFrame) -> list[dict[str, Any]]:
    """The retrain check for the ``retrain_table`` macro."""
    keys = (
        "seed",
        "final_val_auroc",
        "final_best_epoch",
        "sweep_val_auroc",
        "sweep_best_epoch",
        "difference",
    )
    return [
        {
            "model_name": str(r["model_name"]),
            "pretrained": bool(r["pretrained"]),
            "arm": arm_label(bool(r["pretrained"])),
            "configuration": configuration_label(int(r["config_id"])),
            "status": str(r["status"]),
            **{k: plain(r[k]) for k in keys},
        }
        for _, r in agreement.iterrows()
    ]


EXTERNAL_METRICS = ("auroc", "f1", "accuracy")


def external_context(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The external-validation section from the pipeline's summary: whether it ran (and why not),
    the QC counts, per arm the metrics of :data:`EXTERNAL_METRICS` with their CIs, the internal
    value and the difference with its CI (``external_table`` macro), and the ROC / calibration
    figure of both cohorts' seed ensembles."""
    if not summary:
        return {"ran": False, "reason": "the external_validation pipeline has not run"}
    if summary.get("absent"):
        return {"ran": False, "reason": str(summary["absent"])}
    qc = dict(summary.get("qc") or {})
    suffixes = {
        "value": "",
        "ci_low": "_ci_low",
        "ci_high": "_ci_high",
        "internal": "_internal",
        "difference": "_difference",
        "difference_ci_low": "_difference_ci_low",
        "difference_ci_high": "_difference_ci_high",
    }
    rows = [
        {
            "model_name": str(r["model_name"]),
            "pretrained": bool(r["pretrained"]),
            "arm": arm_label(bool(r["pretrained"])),
            **{k: plain(r.get(k)) for k in ("patients", "mutant", "internal_patients")},
            "cells": [
                {"metric": m, **{k: plain(r.get(f"{m}{sfx}")) for k, sfx in suffixes.items()}}
                for m in EXTERNAL_METRICS
            ],
            **{k: plain(r.get(k)) for k in ("brier", "brier_internal", "ece", "ece_internal")},
        }
        for r in summary["metrics"]
    ]

    def ensembles(key: str) -> dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]]:
        return {
            (a["model_name"], bool(a["pretrained"])): (
                np.asarray(a["labels"]),
                np.asarray(a["prob"]),
            )
            for a in summary.get(key, [])
        }

    figure = figure_external(
        ensembles("external"), ensembles("internal"), int(summary["calibration_bins"])
    )
    return {
        "ran": True,
        "rows": rows,
        "metrics": list(EXTERNAL_METRICS),
        "found": qc.get("subjects_found"),
        "included": qc.get("included"),
        "excluded": qc.get("excluded"),
        "exclusions_by_kind": dict(qc.get("exclusions_by_kind", {})),
        "phantom": bool(qc.get("synthetic_phantom_cohort")),
        "figure": png_data_uri(figure),
    }


def segmentation_context(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The "Automatic tumor masks" section: the held-out Dice, the picture of both outlines and,
    per model x arm, the study's AUROC with expert vs automatic masks on the same patients."""
    if not summary:
        return {"ran": False}
    rows = [
        {
            "model_name": str(r["model_name"]),
            "arm": arm_label(bool(r["pretrained"])),
            **{
                k: plain(r.get(k))
                for k in (
                    "patients",
                    "auroc_expert",
                    "auroc_automatic",
                    "auroc_difference",
                    "ci_low",
                    "ci_high",
                    "p_value",
                    "same_prediction",
                )
            },
        }
        for r in summary.get("comparison", [])
    ]
    return {
        "ran": True,
        **{k: plain(v) for k, v in summary.items() if k != "comparison"},
        "rows": rows,
    }


#: QC overlays of preprocessed patients shown in the report (the rest are in the cohort's qc/)
QC_OVERLAYS_SHOWN = 4


def preprocessing_context(cohort_record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The "Preprocessing" section, for a cohort written from raw studies (its record's
    ``preprocessing``): who was written, kept or excluded and why, the registrations' QC numbers,
    where the tumor masks came from, and the first patients' QC overlays (from the cohort's
    ``qc/`` folder, beside its report)."""
    record = (cohort_record or {}).get("preprocessing")
    if not record:
        return {"ran": False}
    qc = Path(record["report"]).parent / "qc"
    excluded = {e["subject_id"] for e in record["excluded"]}
    overlays = []
    if qc.is_dir():
        for path in sorted(qc.glob("*.png")):
            if path.stem in excluded or len(overlays) == QC_OVERLAYS_SHOWN:
                continue
            encoded = base64.b64encode(path.read_bytes()).decode("ascii")
            overlays.append({"subject_id": path.stem, "uri": f"data:image/png;base64,{encoded}"})
    return {
        "ran": True,
        "report": record["report"],
        "qc_folder": str(qc),
        "patients": record["patients"],
        "status": dict(record["status"]),
        "excluded": list(record["excluded"]),
        "mask_sources": dict(record["mask_sources"]),
        "missing_sequences": dict(record.get("missing_sequences", {})),
        "registration": [{k: plain(v) for k, v in r.items()} for r in record["registration"]],
        "problems": list(record["problems"]),
        "overlays": overlays,
    }


def missing_sequences_context(
    choices: pd.DataFrame | None,
    fallback_metrics: pd.DataFrame | None,
    test_metrics: pd.DataFrame,
) -> dict[str, Any]:
    """The "Patients missing sequences" section: one row per set of missing sequences, the
    configuration ``predict`` uses for it and its test AUROC per model x arm beside the winner's
    (:func:`stats.missing_sequence_costs`)."""
    if choices is None or fallback_metrics is None or choices["winner"].astype(bool).all():
        return {"ran": False}  # not run, or min_sequences 4: only the winner
    costs = stats.missing_sequence_costs(choices, fallback_metrics, test_metrics)
    arms = list(dict.fromkeys(zip(costs["model_name"], costs["pretrained"], strict=True)))
    rows = []
    for missing, part in costs.groupby("missing_sequences", sort=False):
        by_arm = {(r.model_name, r.pretrained): r for r in part.itertuples(index=False)}
        first = part.iloc[0]
        rows.append(
            {
                "missing": "nothing" if missing == "none" else str(missing),
                "present": str(first["present_sequences"]),
                "configuration": str(first["configuration"]),
                "study_rank": int(first["study_rank"]),
                "winner": bool(first["winner"]),
                "cells": [
                    {
                        k: plain(getattr(by_arm[a], k)) if a in by_arm else None
                        for k in ("auroc_mean", "auroc_std", "auroc_difference")
                    }
                    for a in arms
                ],
            }
        )
    return {
        "ran": True,
        "arms": [{"model_name": str(m), "arm": arm_label(bool(p))} for m, p in arms],
        "rows": rows,
        "fallbacks": int((~choices["winner"].astype(bool)).sum()),
    }


def cross_validation_context(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The cross-validation section (None when the opt-in pipeline has not run): the per-fold
    AUROC figure, the pooled table and the sentences placing the single split among the folds."""
    if not summary:
        return None
    per_fold = pd.DataFrame(summary["fold_metrics"])
    single = pd.DataFrame(summary.get("single_split", []))
    figure = fold_auroc_figure(per_fold, single if len(single) else None)
    rows = [
        {
            "model_name": str(r["model_name"]),
            "arm": arm_label(bool(r["pretrained"])),
            "patients": plain(r.get("n_patients")),
            **{
                k: plain(r.get(k))
                for k in (
                    "auroc_pooled",
                    "auroc_ci_low",
                    "auroc_ci_high",
                    "auroc_fold_mean",
                    "auroc_fold_std",
                    "auroc_fold_min",
                    "auroc_fold_max",
                    "f1_pooled",
                    "f1_fold_mean",
                    "f1_fold_std",
                )
            },
        }
        for r in summary["pooled"]
    ]
    return {
        "folds": summary["folds"],
        "patients": summary["patients"],
        "rows": rows,
        "sentences": list(summary["sentences"]),
        "figure": png_data_uri(figure),
    }


# -- the report -------------------------------------------------------------------------------
def report_context(
    *,
    figures: Mapping[str, Any],
    table: pd.DataFrame,
    comparison: pd.DataFrame,
    agreement: pd.DataFrame,
    winner: Mapping[str, Any],
    study_results: pd.DataFrame,
    best_params: Mapping[str, Any],
    qc_summary: Mapping[str, Any],
    test_metrics: pd.DataFrame,
    search_plots: Sequence[Any],
    parameters: Mapping[str, Any],
    generated: str,
    planted: Mapping[str, Any] | None = None,
    demo_pretraining: Mapping[str, Any] | None = None,
    external_validation: Mapping[str, Any] | None = None,
    cross_validation: Mapping[str, Any] | None = None,
    segmentation: Mapping[str, Any] | None = None,
    fallback_configurations: pd.DataFrame | None = None,
    fallback_test_metrics: pd.DataFrame | None = None,
    cohort_record: Mapping[str, Any] | None = None,
    tracking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows, as plain data: the numbers from ``stats``, the figures
    as data URIs, the tables as rows."""
    from idh_pseudocolor import __version__

    gray_rank, n_configurations = stats.gray_t1_rank(study_results)
    tolerance, differs = stats.retrain_summary(agreement)
    scalars = {k: v for k, v in qc_summary.items() if not isinstance(v, dict | list)}
    return {
        "tracking": tracking,
        "generated": generated,
        "version": __version__,
        "study_kind": stats.study_kind(parameters["environment"]),
        "phantom": bool(qc_summary.get("synthetic_phantom_cohort")),
        "pretrained_weights": stats.pretrained_weights_status(table),
        "winner": dict(winner),
        "gray_t1": {"id": GRAY_T1_ID, "rank": gray_rank, "of": n_configurations},
        "figures": {name: png_data_uri(image) for name, image in figures.items()},
        "metrics": list(METRICS),
        "table_2": table_2_rows(table),
        "undefined_notes": stats.undefined_resample_notes(table),
        "comparison": comparison_rows(comparison),
        "agreement": agreement_rows(agreement),
        "retrain_tolerance": tolerance,
        "retrain_differs": differs,
        "best_params": dict(best_params),
        "hyperparameters": mapping_data(best_params["hyperparameters"]),
        "plotly_js": plotly_js_data_uri() if search_plots else None,
        "search_plots": [plotly_data(p) for p in search_plots],
        "qc_table": mapping_data(scalars),
        "split_table": frame_data(pd.DataFrame(qc_summary.get("splits", {})).T),
        "test_metrics": frame_data(test_metrics, index=False),
        "parameters": yaml.safe_dump(dict(parameters), sort_keys=False),
        "planted": dict(planted or {"applicable": False}),
        "demo_pretraining": dict(demo_pretraining or {}) if stats.any_demo_arm(table) else None,
        "external": external_context(external_validation),
        "cross_validation": cross_validation_context(cross_validation),
        "segmentation": segmentation_context(segmentation),
        "preprocessing": preprocessing_context(cohort_record),
        "missing_sequences": missing_sequences_context(
            fallback_configurations, fallback_test_metrics, test_metrics
        ),
    }


def render_report(**inputs: Any) -> str:
    """The self-contained HTML report (the keyword arguments of :func:`report_context`): figures
    inline, tables, provenance, the phantom banner, and a warning when the final evaluation's
    retrained runs do not reproduce the sweep's."""
    return render("report.html.j2", report_context(**inputs))
