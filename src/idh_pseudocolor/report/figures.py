"""The paper's figures as matplotlib figures, each drawn from the frames ``stats`` (or the study)
produced: no statistics and no markup here.

Figure 1 is one patient's sequences and composite, Figure 2 the validation scores per
configuration, Figure 3 the two models' agreement, the reliability diagram the calibration of the
winner on the test patients; beyond the paper, internal vs external validation and the test AUROC
per cross-validation fold."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # no backend forced: notebooks keep theirs, headless runs get Agg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from idh_pseudocolor.arms import ARM_KEYS, arm_label
from idh_pseudocolor.configurations import (
    CONFIGURATIONS,
    FOUR_CHANNEL_ID,
    SEQUENCES,
    configuration,
    configuration_label,
    is_gray,
)
from idh_pseudocolor.pseudocolor import composite_rgb
from idh_pseudocolor.report.stats import CalibrationCurve

#: one color per missing sequence: a color configuration uses the other three
GROUP_COLORS = {"T1": "#1b9e77", "T1ce": "#d95f02", "T2": "#7570b3", "FLAIR": "#e7298a"}


def figure_composition(
    image: np.ndarray, mask: np.ndarray, config_id: int, subject_id: str
) -> Figure:
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
    fig.suptitle(
        f"Figure 1. From four sequences to one pseudo-color image ({subject_id}, tumor outlined)"
    )
    return fig


def figure_configurations(
    results: pd.DataFrame, metrics: Sequence[str] = ("auroc", "f1")
) -> Figure:
    """Figure 2: validation score per configuration, bars = mean over seeds, error bars = std."""
    models = sorted(results["model_name"].unique())
    ids = sorted(results["config_id"].unique())
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(max(10, 0.45 * len(ids) + 3), 3.4 * len(metrics)),
        constrained_layout=True,
        squeeze=False,
    )
    width = 0.8 / len(models)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for k, model in enumerate(models):
            part = results[results["model_name"] == model].set_index("config_id").reindex(ids)
            x = np.arange(len(ids)) + (k - (len(models) - 1) / 2) * width
            ax.bar(
                x,
                part[f"{metric}_mean"],
                width,
                yerr=part[f"{metric}_std"].fillna(0),
                capsize=2,
                label=model,
            )
        for i, c in enumerate(ids):
            if is_gray(c) or c == FOUR_CHANNEL_ID:
                ax.axvspan(i - 0.5, i + 0.5, color="0.9" if is_gray(c) else "#fff3d6", zorder=0)
        if metric == "auroc":
            ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
        ax.set_ylabel(f"validation {metric.upper() if metric == 'auroc' else metric.capitalize()}")
        ax.set_xticks(
            np.arange(len(ids)),
            [configuration_label(c) for c in ids],
            rotation=70,
            ha="right",
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(ids) - 0.4)
        ax.set_ylim(0, 1.05)
    axes[0, 0].legend(loc="lower left", fontsize=8, ncol=len(models))
    axes[0, 0].set_title(
        "Figure 2. Validation scores per configuration "
        "(mean ± std over seeds; gray configurations shaded)"
    )
    return fig


def figure_model_agreement(
    results: pd.DataFrame, models: Sequence[str], metric: str = "auroc", n_labels: int = 3
) -> Figure:
    """Figure 3: model A vs. model B per configuration, error bars on both axes, colored by the
    sequence a color configuration leaves out, gray configurations as squares, outliers named."""
    a, b = models[0], models[1] if len(models) > 1 else models[0]
    wide = results.pivot(
        index="config_id", columns="model_name", values=[f"{metric}_mean", f"{metric}_std"]
    )
    fig, ax = plt.subplots(figsize=(7, 6.5), constrained_layout=True)
    for config_id in wide.index:
        x, y = (
            wide.loc[config_id, (f"{metric}_mean", a)],
            wide.loc[config_id, (f"{metric}_mean", b)],
        )
        xe, ye = (
            wide.loc[config_id, (f"{metric}_std", a)],
            wide.loc[config_id, (f"{metric}_std", b)],
        )
        if is_gray(config_id):
            color, marker = "0.35", "s"
        elif config_id == FOUR_CHANNEL_ID:
            color, marker = "black", "*"
        else:
            missing = next(s for s in SEQUENCES if s not in CONFIGURATIONS[config_id])
            color, marker = GROUP_COLORS[missing], "o"
        ax.errorbar(
            x,
            y,
            xerr=0 if np.isnan(xe) else xe,
            yerr=0 if np.isnan(ye) else ye,
            fmt=marker,
            color=color,
            ecolor=color,
            elinewidth=0.7,
            capsize=2,
            ms=7 if marker != "*" else 11,
        )
    total = wide[(f"{metric}_mean", a)] + wide[(f"{metric}_mean", b)]
    gap = (wide[(f"{metric}_mean", a)] - wide[(f"{metric}_mean", b)]).abs()
    named = (
        set(total.nlargest(n_labels).index)
        | set(total.nsmallest(n_labels).index)
        | set(gap.nlargest(2).index)
    )
    for config_id in sorted(named):
        ax.annotate(
            configuration_label(config_id),
            (
                wide.loc[config_id, (f"{metric}_mean", a)],
                wide.loc[config_id, (f"{metric}_mean", b)],
            ),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    lo = float(np.nanmin(wide[f"{metric}_mean"].to_numpy())) - 0.05
    ax.plot([lo, 1], [lo, 1], color="0.6", lw=0.8, ls="--")
    handles = [
        plt.Line2D([], [], ls="", marker="o", color=c, label=f"without {s}")
        for s, c in GROUP_COLORS.items()
    ]
    handles.append(plt.Line2D([], [], ls="", marker="s", color="0.35", label="gray (one sequence)"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xlabel(f"{a}: validation {metric} (mean ± std)")
    ax.set_ylabel(f"{b}: validation {metric} (mean ± std)")
    ax.set_title("Figure 3. Do the two models agree on which inputs work?")
    return fig


def figure_calibration(curves: Sequence[CalibrationCurve]) -> Figure:
    """Reliability diagram of the seed ensemble per model x pretrained, with Brier scores and ECE
    (``stats.calibration_curves``), and a histogram of the predicted probabilities below."""
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(6.5, 7), height_ratios=[3, 1], sharex=True, constrained_layout=True
    )
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8, label="perfectly calibrated")
    for curve in curves:
        arm = arm_label(curve.pretrained, curve.demo_pretraining)
        ax.plot(
            curve.predicted,
            curve.observed,
            marker="o",
            label=f"{curve.model_name} ({arm}), Brier {curve.brier:.3f}, ECE {curve.ece:.3f}",
        )
        hist.hist(curve.probabilities, bins=10, range=(0, 1), histtype="step", lw=1.2)
    ax.set_ylabel("observed fraction IDH mutant")
    ax.set_title("Calibration of the winner on the test patients (seed ensemble)")
    ax.legend(fontsize=8, loc="upper left")
    hist.set_xlabel("predicted P(IDH mutant)")
    hist.set_ylabel("patients")
    return fig


def figure_external(
    external: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]],
    internal: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]],
    n_bins: int,
) -> Figure:
    """ROC curves and reliability diagrams of each arm's seed ensemble: internal test patients
    dashed, the external cohort solid, the same color per model x pretrained, so a drop between
    the sites reads as the gap between a pair of lines."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, (roc, cal) = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    for diagonal in (roc, cal):
        diagonal.plot([0, 1], [0, 1], color="0.6", ls=":", lw=0.8)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, (y_ext, p_ext)) in enumerate(external.items()):
        model, pretrained = arm
        name = f"{model} ({arm_label(pretrained)})"
        color = colors[i % len(colors)]
        for site, data, style in (
            ("internal test", internal.get(arm), "--"),
            ("external", (y_ext, p_ext), "-"),
        ):
            if data is None or len(np.unique(data[0])) < 2:
                continue
            y, p = data
            fpr, tpr, _ = roc_curve(y, p)
            roc.plot(
                fpr,
                tpr,
                ls=style,
                color=color,
                label=f"{name}, {site}: AUROC {roc_auc_score(y, p):.3f}",
            )
            observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
            cal.plot(
                predicted, observed, ls=style, marker="o", color=color, label=f"{name}, {site}"
            )
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC: internal vs external")
    cal.set(
        xlabel="predicted P(IDH mutant)",
        ylabel="observed fraction IDH mutant",
        title="Calibration: internal vs external",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    roc.legend(fontsize=7, loc="lower right")
    cal.legend(fontsize=7, loc="upper left")
    return fig


def figure_placeholder(message: str) -> Figure:
    """A figure that says why there is nothing to draw (a catalog figure always gets a file)."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.axis("off")
    return fig


def fold_auroc_figure(fold_table: pd.DataFrame, single_split: pd.DataFrame | None = None) -> Figure:
    """Test AUROC of every fold per model x arm (one dot per fold, dodged so none hide each
    other), with the folds' mean ± 1 std, and optionally the single split's value as a cross.

    Built on ``matplotlib.figure.Figure`` rather than pyplot: no backend, window or global figure
    list involved, so it draws the same headless, in a worker or in a notebook.
    """
    arms = list(
        fold_table[list(ARM_KEYS)]
        .assign(pretrained=fold_table["pretrained"].astype(bool))
        .drop_duplicates()
        .sort_values(list(ARM_KEYS), ascending=[True, False])
        .itertuples(index=False, name=None)
    )
    folds = sorted(fold_table["fold"].astype(int).unique())
    fig = Figure(figsize=(max(5.0, 1.4 * len(arms) + 2), 4.2), constrained_layout=True)
    ax = fig.add_subplot()
    width = 0.5
    offsets = (np.arange(len(folds)) - (len(folds) - 1) / 2) * (width / max(len(folds) - 1, 1))
    is_arm = {
        arm: (fold_table["model_name"] == arm[0])
        & (fold_table["pretrained"].astype(bool) == arm[1])
        for arm in arms
    }
    colors = [f"C{i % 10}" for i in range(len(folds))]
    for offset, fold, color in zip(offsets, folds, colors, strict=True):
        xs, ys = [], []
        for x, arm in enumerate(arms):
            rows = fold_table[is_arm[arm] & (fold_table["fold"].astype(int) == fold)]
            xs += [x + offset] * len(rows)
            ys += rows["auroc"].astype(float).tolist()
        ax.scatter(xs, ys, s=28, color=color, zorder=3, label=f"fold {fold}")
    for x, arm in enumerate(arms):
        values = fold_table.loc[is_arm[arm], "auroc"].astype(float)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        ax.errorbar(
            [x + width / 2 + 0.15],
            [float(values.mean())],
            yerr=[std],
            fmt="D",
            color="black",
            capsize=4,
            ms=5,
            label="mean ± 1 std over folds" if x == 0 else None,
        )
    if single_split is not None:
        single = single_split.assign(pretrained=single_split["pretrained"].astype(bool))
        single = single.set_index(list(ARM_KEYS))["auroc"]
        points = [(x, float(single.loc[arm])) for x, arm in enumerate(arms) if arm in single.index]
        if points:
            ax.scatter(
                *zip(*points, strict=True),
                marker="x",
                s=60,
                color="crimson",
                zorder=4,
                label="single 70:15:15 split",
            )
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels([f"{model}\n{arm_label(pretrained)}" for model, pretrained in arms])
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel("test AUROC (seed ensemble)")
    ax.set_xlabel("model, arm")
    ax.set_title(f"Test AUROC per cross-validation fold ({len(folds)} folds)")
    ax.grid(axis="y", color="0.9", lw=0.8)
    ax.legend(fontsize=8, loc="best")
    return fig
