"""The paper's figures and Table 2, with honest uncertainty, and the self-contained HTML report.

Table 2 reports each (model, pretrained) row three ways, named in the columns: mean ± std over
seeds, the seed ensemble (mean probability per patient), and the one seed chosen on validation
AUROC (the paper's single "best model"); the latter two with a patient-level bootstrap 95%
confidence interval (stratified by IDH status, so AUROC is defined in every resample; a metric
undefined in a resample is left out of its interval and counted), plus calibration (Brier score,
ECE with equal-mass bins). Pretrained vs. scratch is compared on the same patients as the field
does: DeLong's test for correlated ROC curves (p-value and CI of the difference), beside a
paired, stratified bootstrap CI. The final evaluation's retrained runs are checked against the
sweep's runs of the same configuration, model, pretrained flag and seed. The paper's rows and
the literature rows (SPEC) are shown beside ours and marked as other data."""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt  # no backend forced: notebooks keep theirs, headless runs get Agg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from idh_pseudocolor.configurations import (
    CONFIGURATIONS,
    FOUR_CHANNEL_ID,
    SEQUENCES,
    configuration,
    configuration_label,
    is_gray,
)
from idh_pseudocolor.metrics import (
    METRICS,
    auroc_many,
    binary_metrics,
    binary_metrics_many,
    delong_test,
    expected_calibration_error,
    invariant_violations,
)
from idh_pseudocolor.pseudocolor import composite_rgb
from idh_pseudocolor.study import final_metrics_table, seed_ensemble, validation_choice

#: SPEC §1, the paper's Table 2: its four rows (EGD test) and two literature rows (other data).
PUBLISHED_ROWS: list[dict[str, Any]] = [
    {"method": "VGG16, no pretraining", "auroc": 0.756, "accuracy": 0.690, "f1": 0.592, "precision": 0.586, "recall": 0.603, "specificity": 0.742, "data": "EGD test (paper)"},
    {"method": "ResNeXt, no pretraining", "auroc": 0.718, "accuracy": 0.710, "f1": 0.526, "precision": 0.657, "recall": 0.449, "specificity": 0.864, "data": "EGD test (paper)"},
    {"method": "VGG16 finetuned", "auroc": 0.915, "accuracy": 0.867, "f1": 0.797, "precision": 0.917, "recall": 0.705, "specificity": 0.962, "data": "EGD test (paper)"},
    {"method": "ResNeXt finetuned", "auroc": 0.935, "accuracy": 0.881, "f1": 0.819, "precision": 0.939, "recall": 0.731, "specificity": 0.864, "data": "EGD test (paper)"},
    {"method": "3-D multitask network (van der Voort 2023)", "auroc": 0.90, "accuracy": 0.84, "f1": 0.79, "precision": 0.88, "recall": 0.72, "specificity": 0.93, "data": "TCGA-LGG+GBM (other data)"},
    {"method": "circulating DNA blood test (Batool 2024)", "auroc": 0.84, "accuracy": math.nan, "f1": 0.791, "precision": 0.909, "recall": 0.70, "specificity": math.nan, "data": "own cohort (other data)"},
]
#: one color per missing sequence: a color configuration uses the other three
GROUP_COLORS = {"T1": "#1b9e77", "T1ce": "#d95f02", "T2": "#7570b3", "FLAIR": "#e7298a"}


# -- figures ----------------------------------------------------------------------------------
def figure_composition(image: np.ndarray, mask: np.ndarray, config_id: int, subject_id: str) -> Figure:
    """Figure 1: one patient's four sequences and the pseudo-color composite of ``config_id``."""
    channels = configuration(config_id)
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.6), constrained_layout=True)
    for ax, (seq, plane) in zip(axes[:4], zip(SEQUENCES, image, strict=True), strict=True):
        ax.imshow(plane, cmap="gray", vmin=0, vmax=1)  # slices are stored in display orientation
        ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.6)
        role = [c for c, s in zip("RGB", channels, strict=False) if s == seq]
        ax.set_title(f"{seq}" + (f" → {'+'.join(role)}" if role else " (unused)"))
        ax.axis("off")
    axes[4].imshow(composite_rgb(image, config_id))
    axes[4].set_title(f"composite {configuration_label(config_id)}")
    axes[4].axis("off")
    fig.suptitle(f"Figure 1. From four sequences to one pseudo-color image ({subject_id}, tumor outlined)")
    return fig


def figure_configurations(results: pd.DataFrame, metrics: Sequence[str] = ("auroc", "f1")) -> Figure:
    """Figure 2: validation score per configuration, bars = mean over seeds, error bars = std."""
    models = sorted(results["model_name"].unique())
    ids = sorted(results["config_id"].unique())
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(10, 0.45 * len(ids) + 3), 3.4 * len(metrics)), constrained_layout=True, squeeze=False)
    width = 0.8 / len(models)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for k, model in enumerate(models):
            part = results[results["model_name"] == model].set_index("config_id").reindex(ids)
            x = np.arange(len(ids)) + (k - (len(models) - 1) / 2) * width
            ax.bar(x, part[f"{metric}_mean"], width, yerr=part[f"{metric}_std"].fillna(0), capsize=2, label=model)
        for i, c in enumerate(ids):
            if is_gray(c) or c == FOUR_CHANNEL_ID:
                ax.axvspan(i - 0.5, i + 0.5, color="0.9" if is_gray(c) else "#fff3d6", zorder=0)
        if metric == "auroc":
            ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
        ax.set_ylabel(f"validation {metric.upper() if metric == 'auroc' else metric.capitalize()}")
        ax.set_xticks(np.arange(len(ids)), [configuration_label(c) for c in ids], rotation=70, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(ids) - 0.4)
        ax.set_ylim(0, 1.05)
    axes[0, 0].legend(loc="lower left", fontsize=8, ncol=len(models))
    axes[0, 0].set_title("Figure 2. Validation scores per configuration (mean ± std over seeds; gray configurations shaded)")
    return fig


def figure_model_agreement(results: pd.DataFrame, models: Sequence[str], metric: str = "auroc", n_labels: int = 3) -> Figure:
    """Figure 3: model A vs. model B per configuration, error bars on both axes, colored by the
    sequence a color configuration leaves out, gray configurations as squares, outliers named."""
    a, b = models[0], models[1] if len(models) > 1 else models[0]
    wide = results.pivot(index="config_id", columns="model_name", values=[f"{metric}_mean", f"{metric}_std"])
    fig, ax = plt.subplots(figsize=(7, 6.5), constrained_layout=True)
    for config_id in wide.index:
        x, y = wide.loc[config_id, (f"{metric}_mean", a)], wide.loc[config_id, (f"{metric}_mean", b)]
        xe, ye = wide.loc[config_id, (f"{metric}_std", a)], wide.loc[config_id, (f"{metric}_std", b)]
        if is_gray(config_id):
            color, marker = "0.35", "s"
        elif config_id == FOUR_CHANNEL_ID:
            color, marker = "black", "*"
        else:
            missing = next(s for s in SEQUENCES if s not in CONFIGURATIONS[config_id])
            color, marker = GROUP_COLORS[missing], "o"
        ax.errorbar(x, y, xerr=0 if np.isnan(xe) else xe, yerr=0 if np.isnan(ye) else ye, fmt=marker, color=color,
                    ecolor=color, elinewidth=0.7, capsize=2, ms=7 if marker != "*" else 11)
    total = wide[(f"{metric}_mean", a)] + wide[(f"{metric}_mean", b)]
    gap = (wide[(f"{metric}_mean", a)] - wide[(f"{metric}_mean", b)]).abs()
    named = set(total.nlargest(n_labels).index) | set(total.nsmallest(n_labels).index) | set(gap.nlargest(2).index)
    for config_id in sorted(named):
        ax.annotate(configuration_label(config_id), (wide.loc[config_id, (f"{metric}_mean", a)], wide.loc[config_id, (f"{metric}_mean", b)]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    lo = float(np.nanmin(wide[f"{metric}_mean"].to_numpy())) - 0.05
    ax.plot([lo, 1], [lo, 1], color="0.6", lw=0.8, ls="--")
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=f"without {s}") for s, c in GROUP_COLORS.items()]
    handles.append(plt.Line2D([], [], ls="", marker="s", color="0.35", label="gray (one sequence)"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel(f"{a}: validation {metric} (mean ± std)")
    ax.set_ylabel(f"{b}: validation {metric} (mean ± std)")
    ax.set_title("Figure 3. Do the two models agree on which inputs work?")
    return fig


def figure_calibration(predictions: pd.DataFrame, n_bins: int = 5) -> Figure:
    """Reliability diagram of the seed ensemble per model x pretrained, with Brier scores and ECE
    (the same ``n_bins`` equal-mass bins as the plotted points)."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.5, 7), height_ratios=[3, 1], sharex=True, constrained_layout=True)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8, label="perfectly calibrated")
    for (model, pretrained), part in predictions.groupby(["model_name", "pretrained"], sort=False):
        ens = _patient_ensemble(part)
        y, p = ens["label"].to_numpy(), ens["prob_mutant"].to_numpy()
        observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
        arm = "demo-pretrained, not ImageNet" if _demo_arm(part, pretrained) else "pretrained" if pretrained else "scratch"
        name = (f"{model} ({arm}), Brier {brier_score_loss(y, p):.3f}, "
                f"ECE {expected_calibration_error(y, p, n_bins):.3f}")
        ax.plot(predicted, observed, marker="o", label=name)
        hist.hist(p, bins=10, range=(0, 1), histtype="step", lw=1.2)
    ax.set_ylabel("observed fraction IDH mutant")
    ax.set_title("Calibration of the winner on the test patients (seed ensemble)")
    ax.legend(fontsize=8, loc="upper left")
    hist.set_xlabel("predicted P(IDH mutant)")
    hist.set_ylabel("patients")
    return fig


# -- Table 2 ----------------------------------------------------------------------------------
class Interval(NamedTuple):
    """A percentile bootstrap interval over the resamples where the metric is defined, and how
    many of the resamples left it undefined (precision when no patient is predicted mutant)."""

    low: float
    high: float
    undefined: int


def _stratified_bootstrap(
    labels: np.ndarray, statistic: Callable[[np.ndarray], Any], n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Percentile bootstrap over patients, mutants and wild-types resampled separately (as pROC
    does), so every resample has both classes and AUROC is always defined.

    The resamples are drawn here (numpy's Generator) rather than by ``scipy.stats.bootstrap``,
    whose percentiles turn one undefined resample into an undefined interval: a component of
    ``statistic`` that is NaN in a resample is left out of that component's percentiles and
    counted. ``statistic`` takes the (resamples, patients) index matrix and returns one row per
    resample (vectorized: thousands of resamples in milliseconds). Returns (low, high, undefined)
    per component, or None when a class has fewer than two patients: nothing to resample, so no
    interval rather than a made-up one.
    """
    y = np.asarray(labels).astype(int)
    groups = (np.flatnonzero(y == 1), np.flatnonzero(y == 0))
    if min(len(g) for g in groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    index = np.concatenate([g[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups], axis=1)
    draws = np.asarray(statistic(index), dtype=float).reshape(n_resamples, -1)
    undefined = np.isnan(draws).sum(axis=0)
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # never defined: a NaN interval, and the count says why
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return low, high, undefined


def bootstrap_ci(labels: np.ndarray, prob: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Interval]:
    """Patient-level (stratified) percentile bootstrap CI of every metric over the resamples where
    it is defined, with the number where it is not (NaN interval when a class has < 2 patients)."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)

    def statistic(index: np.ndarray) -> np.ndarray:
        m = binary_metrics_many(y[index], p[index])
        return np.stack([m[k] for k in METRICS], axis=1)

    result = _stratified_bootstrap(y, statistic, n_resamples, seed, confidence)
    if result is None:
        return {k: Interval(math.nan, math.nan, 0) for k in METRICS}
    return {k: Interval(float(lo), float(hi), int(u)) for k, lo, hi, u in zip(METRICS, *result, strict=True)}


def paired_auroc_test(labels: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, n_resamples: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same patients: DeLong's test (p-value, normal CI of the
    difference) and a paired, stratified bootstrap 95% CI of the difference.

    Not a permutation test swapping a's and b's probabilities within patients: two models'
    scores live on different scales, so swapping them does not give the null distribution of
    equal AUROCs.
    """
    y = np.asarray(labels).astype(int)
    pa, pb = np.asarray(prob_a, float), np.asarray(prob_b, float)
    delong = delong_test(y, pa, pb)
    ci = _stratified_bootstrap(y, lambda i: auroc_many(y[i], pa[i]) - auroc_many(y[i], pb[i]), n_resamples, seed)
    low, high = (ci[0][0], ci[1][0]) if ci is not None else (np.nan, np.nan)  # AUROC: defined in every resample
    return {"auroc_difference": delong["difference"], "ci_low": float(low), "ci_high": float(high),
            "delong_ci_low": delong["ci_low"], "delong_ci_high": delong["ci_high"], "delong_se": delong["se"],
            "p_value": delong["p_value"]}


def table_2(predictions: pd.DataFrame, n_resamples: int = 2000, seed: int = 0, calibration_bins: int = 5) -> pd.DataFrame:
    """Our rows (model x pretrained on the test patients), then the published rows.

    Two rows per model x pretrained, named in ``estimate``. "seed ensemble": per metric
    ``<m>_mean``/``<m>_std`` over seeds and ``<m>_ensemble`` of the seed ensemble. "seed chosen on
    validation": ``<m>_best_seed`` of the one run with the highest validation AUROC
    (``chosen_seed``, ``chosen_val_auroc``, ``chosen_best_epoch``), the paper's kind of number.
    Each has the bootstrap CI of its own value ``<m>_ci_low``/``<m>_ci_high`` over the defined
    resamples, ``<m>_undefined_resamples`` of ``bootstrap_resamples``, ``brier`` and ``ece``
    (``calibration_bins`` equal-mass bins). ``invariants`` lists violated checks.
    """
    rows = []
    summary = final_metrics_table(predictions)  # mean/std over seeds, ensemble metrics, invariants
    chosen = validation_choice(predictions) if "val_auroc" in predictions else pd.DataFrame(columns=["model_name", "pretrained"])
    for (model, pretrained), part in predictions.groupby(["model_name", "pretrained"], sort=False):
        base = summary[(summary["model_name"] == model) & (summary["pretrained"] == bool(pretrained))].iloc[0]
        demo = _demo_arm(part, pretrained)
        arm = "finetuned from demo pretraining (photographs, not ImageNet)" if demo else "finetuned" if pretrained else "no pretraining"
        method = f"{model}, {arm}"
        if base["invariant_violations"]:  # computed from one confusion matrix, ours cannot fail: if they do, stop
            raise AssertionError(f"Table 2 row {method} violates metric invariants: {base['invariant_violations']}")
        ens = _patient_ensemble(part)
        common: dict[str, Any] = {
            "ours": True, "data": f"{'phantom' if _is_phantom(part) else 'cohort'} test split, {len(ens)} patients",
            "model_name": model, "pretrained": bool(pretrained), "seeds": int(base["seeds"]),
            "pretrained_loaded": base["pretrained_loaded"], "demo_pretraining": demo, "bootstrap_resamples": n_resamples,
            "invariants": "ok",
        }
        row: dict[str, Any] = {"method": method, "estimate": "seed ensemble", **common}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_ensemble"] = base[f"{m}_mean"], base[f"{m}_std"], base[f"ensemble_{m}"]
        rows.append({**row, **_uncertainty(ens["label"].to_numpy(), ens["prob_mutant"].to_numpy(), n_resamples, seed, calibration_bins)})

        row = {"method": f"{method}, seed chosen on validation", "estimate": "seed chosen on validation", **common}
        pick = chosen[(chosen["model_name"] == model) & (chosen["pretrained"].astype(bool) == bool(pretrained))]
        if pick.empty:  # test_predictions from before the runs recorded their validation AUROC
            row["method"] += ": not recorded (rerun the final evaluation)"
            rows.append(row)
            continue
        choice = pick.iloc[0]
        run = part[part["seed"] == choice["seed"]]
        y, p = run["label"].to_numpy(), run["prob_mutant"].to_numpy()
        row.update(method=f"{method}, seed {int(choice['seed'])} (chosen on validation AUROC {choice['val_auroc']:.3f}, "
                          f"best of {int(choice['seeds_compared'])} seeds)",
                   chosen_seed=int(choice["seed"]), chosen_val_auroc=float(choice["val_auroc"]),
                   chosen_best_epoch=int(choice["best_epoch"]))
        row.update({f"{m}_best_seed": v for m, v in binary_metrics(y, p).items() if m in METRICS})
        rows.append({**row, **_uncertainty(y, p, n_resamples, seed, calibration_bins)})
    for published in PUBLISHED_ROWS:
        row = {"method": published["method"], "ours": False, "data": published["data"], "estimate": "as published"}
        row.update({f"{m}_ensemble": published[m] for m in METRICS})  # one number each, as printed
        # printed to 2-3 decimals: allow for rounding, so only real contradictions are flagged
        row["invariants"] = "; ".join(invariant_violations(published, tol=0.003)) or "ok"
        rows.append(row)
    return pd.DataFrame(rows)


def _uncertainty(y: np.ndarray, p: np.ndarray, n_resamples: int, seed: int, calibration_bins: int) -> dict[str, Any]:
    """One row's bootstrap CIs (with undefined-resample counts), Brier score and ECE."""
    out: dict[str, Any] = {}
    for m, ci in bootstrap_ci(y, p, n_resamples, seed).items():
        out[f"{m}_ci_low"], out[f"{m}_ci_high"], out[f"{m}_undefined_resamples"] = ci
    out["brier"], out["ece"] = float(brier_score_loss(y, p)), expected_calibration_error(y, p, calibration_bins)
    return out


def pretrained_comparison(predictions: pd.DataFrame, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per model: finetuned vs. from scratch on the same test patients (seed ensembles)."""
    rows = []
    for model, part in predictions.groupby("model_name", sort=False):
        flags = set(part["pretrained"].astype(bool))
        if flags != {True, False}:
            rows.append({"model_name": model, "available": False,
                         "note": "needs final_evaluation.pretrained: [true, false] (this run had only "
                                 + ("pretrained" if True in flags else "from-scratch") + " runs)"})
            continue
        ens = {flag: _patient_ensemble(part[part["pretrained"].astype(bool) == flag]).set_index("subject_id")
               for flag in (True, False)}
        common = ens[True].index.intersection(ens[False].index)
        y = ens[True].loc[common, "label"].to_numpy()
        result = paired_auroc_test(y, ens[True].loc[common, "prob_mutant"].to_numpy(), ens[False].loc[common, "prob_mutant"].to_numpy(),
                                   n_resamples, seed)
        rows.append({"model_name": model, "available": True, "patients": len(common), **result,
                     "note": "AUROC finetuned - scratch; DeLong's test (p, CI) and paired stratified bootstrap CI"})
    return pd.DataFrame(rows)


RUN_KEYS = ("config_id", "model_name", "pretrained", "seed")


def retrain_agreement(test_predictions: pd.DataFrame, study_runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """The final evaluation retrains the winner's runs; each should reproduce the sweep's run of the
    same configuration, model, pretrained flag and seed on the validation patients (identical on
    CPU with fixed threads; non-deterministic GPU kernels move it a little, hence ``tolerance``).

    One row per final-evaluation run: ``final_val_auroc``/``final_best_epoch``, the sweep's
    ``sweep_val_auroc``/``sweep_best_epoch``, ``difference`` (final - sweep) and ``status``:
    "agrees" (|difference| <= tolerance), "differs", "no sweep run" (the sweep ran the other
    pretrained arm) or "not recorded" (predictions from before runs recorded val_auroc).
    """
    for name, frame in (("test_predictions", test_predictions), ("study_runs", study_runs)):
        if missing := set(RUN_KEYS) - set(frame.columns):
            raise ValueError(f"{name} lacks columns {sorted(missing)}")
    final = test_predictions.drop_duplicates(list(RUN_KEYS)).reindex(columns=[*RUN_KEYS, "val_auroc", "best_epoch"])
    final = final.rename(columns={"val_auroc": "final_val_auroc", "best_epoch": "final_best_epoch"})
    sweep = study_runs.reindex(columns=[*RUN_KEYS, "auroc", "best_epoch"])
    sweep = sweep.rename(columns={"auroc": "sweep_val_auroc", "best_epoch": "sweep_best_epoch"})
    for frame in (final, sweep):  # CSV round trips: one dtype per key on both sides
        frame["config_id"], frame["seed"] = frame["config_id"].astype(int), frame["seed"].astype(int)
        frame["pretrained"], frame["model_name"] = frame["pretrained"].astype(bool), frame["model_name"].astype(str)
    table = final.merge(sweep, on=list(RUN_KEYS), how="left", validate="one_to_one")
    table["difference"] = table["final_val_auroc"] - table["sweep_val_auroc"]
    table["tolerance"] = float(tolerance)
    table["status"] = np.select(
        [table["final_val_auroc"].isna(), table["sweep_val_auroc"].isna(), table["difference"].abs() > tolerance],
        ["not recorded", "no sweep run", "differs"], default="agrees")
    return table.reset_index(drop=True)


def _demo_arm(part: pd.DataFrame, pretrained: Any) -> bool:
    """Whether an arm's runs all started from the demo's photograph pretraining (recorded per run)."""
    return bool(pretrained) and "demo_pretraining" in part and bool(part["demo_pretraining"].astype(bool).all())


def _patient_ensemble(part: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: label and the mean P(mutant) over seeds."""
    return seed_ensemble(part[["subject_id", "label", "seed", "prob_mutant"]])


def _is_phantom(part: pd.DataFrame) -> bool:
    return bool(part["subject_id"].astype(str).str.startswith("PHANTOM-").all())


# -- the HTML report --------------------------------------------------------------------------
def png_data_uri(image: Any) -> str:
    """A PIL image or matplotlib figure as an inline PNG (the report needs no side files)."""
    buffer = io.BytesIO()
    if isinstance(image, Figure):
        image.savefig(buffer, format="png", dpi=110)
    else:
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def table_2_html(table: pd.DataFrame) -> str:
    """Table 2 as people read it: per model x pretrained the seed ensemble [95% CI] with mean ± std
    over seeds below it, then the one seed chosen on validation [95% CI]; the published rows."""
    head = "".join(f"<th>{m.upper() if m == 'auroc' else m.capitalize()}</th>" for m in METRICS)
    body = []
    for _, r in table.iterrows():
        chosen = r.get("estimate") == "seed chosen on validation"
        cells = []
        for m in METRICS:
            if chosen:
                cells.append(f"<td><b>{_fmt(r.get(f'{m}_best_seed'))}</b> [{_fmt(r[f'{m}_ci_low'])}, {_fmt(r[f'{m}_ci_high'])}]</td>")
            elif r["ours"]:
                cells.append(f"<td><b>{_fmt(r[f'{m}_ensemble'])}</b> [{_fmt(r[f'{m}_ci_low'])}, {_fmt(r[f'{m}_ci_high'])}]"
                             f"<br><small>{_fmt(r[f'{m}_mean'])} ± {_fmt(r[f'{m}_std'])}</small></td>")
            else:
                cells.append(f"<td>{_fmt(r[f'{m}_ensemble'])}</td>")
        for m in ("brier", "ece"):
            cells.append(f"<td>{_fmt(r.get(m)) if r['ours'] else '–'}</td>")
        cls = ("ours chosen" if chosen else "ours") if r["ours"] else "other"
        how = ("<br><small>one run: the seed with the highest validation AUROC, chosen before the test was read</small>" if chosen
               else "<br><small>seed ensemble; mean ± std over seeds below</small>" if r["ours"] else "")
        flag = "" if r["invariants"] == "ok" else f"<br><span class='warn'>⚠ {html.escape(str(r['invariants']))}</span>"
        body.append(f"<tr class='{cls}'><td>{html.escape(str(r['method']))}{how}{flag}</td>{''.join(cells)}"
                    f"<td>{html.escape(str(r['data']))}</td></tr>")
    return (f"<table class='t2'><thead><tr><th>method</th>{head}<th>Brier</th><th>ECE</th><th>data</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p class='note'>Our rows, two per model: the <b>seed-ensemble value</b> (mean P(mutant) over seeds) [patient-level "
            "bootstrap 95% CI, stratified by IDH status], below it mean ± std over seeds; then the <b>seed chosen on "
            "validation</b>, one run as the paper reports one number per row, with its own CI. Threshold 0.5 on "
            "P(mutant); all metrics from one confusion matrix. Brier and ECE (expected calibration error, equal-mass "
            "bins) of the row's probabilities. Gray rows are published numbers on other data or other runs, shown as "
            "printed; ⚠ marks a violated invariant (accuracy must lie between recall and specificity; F1 = 2PR/(P+R)).</p>")


#: when a metric has no value on a resample of patients
UNDEFINED_WHEN = {"auroc": "one class only", "accuracy": "no patients", "f1": "no mutant predicted or present",
                  "precision": "no patient predicted mutant", "recall": "no mutant", "specificity": "no wild-type"}


def undefined_resample_notes(table: pd.DataFrame) -> list[str]:
    """Table 2's footnotes: per row and metric with undefined resamples, how many of how many; the
    interval is over the rest (conditional on the metric being defined), not silently blank."""
    notes = []
    for _, r in table[table["ours"].astype(bool)].iterrows():
        for m in METRICS:
            undefined = r.get(f"{m}_undefined_resamples")
            if undefined is not None and not pd.isna(undefined) and undefined > 0:
                total = int(r["bootstrap_resamples"])
                notes.append(f"{r['method']}: {m} undefined in {int(undefined)} of {total} resamples ({UNDEFINED_WHEN[m]}); "
                             f"its 95% CI is over the other {total - int(undefined)}.")
    return notes


def _count(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else str(int(value))


def agreement_rows(agreement: pd.DataFrame) -> list[dict[str, str]]:
    """The retrain check as display strings (the template escapes them)."""
    return [{"model": str(r["model_name"]), "arm": "finetuned" if r["pretrained"] else "no pretraining",
             "config": configuration_label(int(r["config_id"])), "seed": _count(r["seed"]),
             "final": _fmt(r["final_val_auroc"]), "final_epoch": _count(r["final_best_epoch"]),
             "sweep": "no sweep run" if r["status"] == "no sweep run" else _fmt(r["sweep_val_auroc"]),
             "sweep_epoch": _count(r["sweep_best_epoch"]), "difference": _fmt(r["difference"]), "status": str(r["status"])}
            for _, r in agreement.iterrows()]


def comparison_html(comparison: pd.DataFrame) -> str:
    rows = []
    for _, r in comparison.iterrows():
        if not r.get("available", False):
            rows.append(f"<tr><td>{html.escape(str(r['model_name']))}</td><td colspan='5'>not available: {html.escape(str(r['note']))}</td></tr>")
        else:
            rows.append(f"<tr><td>{html.escape(str(r['model_name']))}</td><td>{_fmt(r['auroc_difference'])}</td>"
                        f"<td>[{_fmt(r['delong_ci_low'])}, {_fmt(r['delong_ci_high'])}]</td>"
                        f"<td>[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]</td><td>{_fmt(r['p_value'], 4)}</td><td>{int(r['patients'])}</td></tr>")
    return ("<table><thead><tr><th>model</th><th>ΔAUROC (finetuned − scratch)</th><th>95% CI (DeLong)</th>"
            "<th>95% CI (paired bootstrap)</th><th>p (DeLong)</th>"
            f"<th>patients</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def study_kind(environment: dict[str, Any]) -> str:
    """Which study a report belongs to, in words (the paper's, a rehearsal of it, or the CPU demo)."""
    if environment.get("kind") == "paper":
        return ("a rehearsal of the paper path at toy scale (--env …+rehearsal): not the paper's settings"
                if environment.get("rehearsal") else "the paper's study (--env a4000 / l4, conf/paper)")
    return "the CPU demo (conf/base): stand-in models and settings, not the paper's"


def render_report(
    *, figures: dict[str, Any], table: pd.DataFrame, comparison: pd.DataFrame, winner: dict[str, Any],
    study_results: pd.DataFrame, best_params: dict[str, Any], qc_summary: dict[str, Any], test_metrics: pd.DataFrame,
    search_plots: Sequence[Any], parameters: dict[str, Any], generated: str, agreement: pd.DataFrame,
    planted: dict[str, Any] | None = None, demo_pretraining: dict[str, Any] | None = None,
) -> str:
    """The self-contained HTML report: figures inline, tables, provenance, the phantom banner, and
    a warning when the final evaluation's retrained runs do not reproduce the sweep's."""
    import jinja2
    import yaml

    from idh_pseudocolor import __version__
    from idh_pseudocolor.study import rank_of

    env = jinja2.Environment(loader=jinja2.PackageLoader("idh_pseudocolor", "templates"), autoescape=True)
    ours = table[table["ours"]]
    loaded = ours["pretrained_loaded"].astype(bool)
    requested = ours["pretrained"].astype(bool)
    if not requested.any():
        weights_note = "No run in this final evaluation used pretrained weights (final_evaluation.pretrained has no true): every model was trained from scratch."
    elif (requested & ~loaded).any():
        weights_note = "Some runs asked for pretrained weights that were not loaded: see pretrained_loaded in Table 2's CSV."
    else:
        weights_note = ""
    gray_rank, n_conf = rank_of(study_results[study_results["config_id"] != FOUR_CHANNEL_ID], 24) if 24 in set(study_results["config_id"]) else ("–", 0)
    plots = [p.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False) for i, p in enumerate(search_plots)]
    best = pd.DataFrame([best_params["hyperparameters"]]).T.rename(columns={0: "value"})
    splits = pd.DataFrame(qc_summary.get("splits", {})).T
    qc = pd.DataFrame([{k: v for k, v in qc_summary.items() if not isinstance(v, dict | list)}]).T.rename(columns={0: "value"})
    template = env.get_template("report.html.j2")
    return template.render(
        title=f"winner {winner['configuration']}", generated=generated, version=__version__,
        study_kind=study_kind(parameters.get("environment") or {}), best_params_source=winner.get("best_params_id", "–"),
        phantom=bool(qc_summary.get("synthetic_phantom_cohort")), pretrained_everywhere=not weights_note, weights_note=weights_note,
        winner=winner, gray_t1_rank=gray_rank, n_configurations=n_conf,
        figure_1=png_data_uri(figures["figure_1"]), figure_2=png_data_uri(figures["figure_2"]),
        figure_3=png_data_uri(figures["figure_3"]), calibration=png_data_uri(figures["calibration"]),
        table_2=table_2_html(table), undefined_notes=undefined_resample_notes(table), comparison=comparison_html(comparison),
        agreement=agreement_rows(agreement), retrain_tolerance=float(agreement["tolerance"].iloc[0]) if len(agreement) else math.nan,
        retrain_differs=int((agreement["status"] == "differs").sum()), best_params=best_params,
        best_table=best.to_html(), search_history=plots[0] if plots else "", search_importance=plots[1] if len(plots) > 1 else "",
        qc_table=qc.to_html(), split_table=splits.to_html(), test_metrics=test_metrics.to_html(index=False, float_format="%.3f", na_rep="–"),
        parameters=yaml.safe_dump(parameters, sort_keys=False),
        planted=planted or {"applicable": False},
        # from the runs themselves: a user's own weights_file replaces the demo's, and then no banner
        demo_pretraining=demo_pretraining if "demo_pretraining" in ours and ours["demo_pretraining"].astype(bool).any() else None,
    )
