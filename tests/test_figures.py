"""The report's figures checked by what they draw (bar heights, error bars, point positions,
colors, markers, titles, image data), from hand-made frames: not by the size of a PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from idh_pseudocolor.report.figures import (  # noqa: E402
    GROUP_COLORS,
    figure_calibration,
    figure_composition,
    figure_configurations,
    figure_model_agreement,
    fold_auroc_figure,
)
from idh_pseudocolor.report.stats import CalibrationCurve  # noqa: E402

# three configurations x two models: 0 = T1-T1ce-T2 (leaves out FLAIR), 15 = T2-T1ce-FLAIR
# (leaves out T1), 24 = gray T1
RESULTS = pd.DataFrame(
    [
        {
            "config_id": c,
            "model_name": m,
            "auroc_mean": am,
            "auroc_std": sd,
            "f1_mean": fm,
            "f1_std": sd,
        }
        for c, m, am, fm, sd in [
            (0, "A", 0.70, 0.60, 0.01),
            (0, "B", 0.65, 0.55, 0.02),
            (15, "A", 0.90, 0.80, 0.03),
            (15, "B", 0.95, 0.85, 0.04),
            (24, "A", 0.55, 0.40, 0.05),
            (24, "B", 0.50, 0.35, 0.06),
        ]
    ]
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_figure_2_bars_are_the_means_with_std_error_bars_in_configuration_order():
    fig = figure_configurations(RESULTS)
    auroc, f1 = fig.axes[:2]
    for ax, metric in ((auroc, "auroc"), (f1, "f1")):
        bars = [p for p in ax.patches if type(p).__name__ == "Rectangle" and p.get_width() < 0.5]
        heights = sorted(round(b.get_height(), 6) for b in bars)
        assert heights == sorted(RESULTS[f"{metric}_mean"].round(6))
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == ["0: T1-T1ce-T2", "15: T2-T1ce-FLAIR", "24: gray T1"]
        # model A's bar for configuration 15 sits left of the tick, B's right of it
        a15 = next(
            b for b in bars if b.get_height() == pytest.approx(RESULTS.iloc[2][f"{metric}_mean"])
        )
        assert a15.get_x() + a15.get_width() / 2 < 1 < a15.get_x() + a15.get_width() + 0.2
    # error bars: one vertical segment per bar, as long as 2 x std
    segments = [s for c in auroc.collections for s in getattr(c, "get_segments", list)()]
    lengths = sorted(round(float(abs(s[1][1] - s[0][1])), 6) for s in segments if len(s) == 2)
    assert lengths == sorted(round(2 * v, 6) for v in RESULTS["auroc_std"])
    # the chance line on AUROC only, and the gray configuration (third tick) shaded
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in auroc.lines)
    assert not any(list(line.get_ydata()) == [0.5, 0.5] for line in f1.lines)
    spans = [
        p
        for p in auroc.patches
        if type(p).__name__ == "Rectangle" and p.get_width() == pytest.approx(1.0)
    ]
    assert len(spans) == 1 and spans[0].get_x() == pytest.approx(1.5)


def test_figure_3_points_are_model_a_against_model_b_colored_by_the_missing_sequence():
    fig = figure_model_agreement(RESULTS, ["A", "B"])
    ax = fig.axes[0]
    points = {}
    for line in ax.lines:
        x, y = line.get_xdata(), line.get_ydata()
        if len(x) == 1 and line.get_marker() in ("o", "s", "*"):  # not the error bars' caps
            points[(round(float(x[0]), 6), round(float(y[0]), 6))] = (
                to_hex(line.get_color()),
                line.get_marker(),
            )
    assert points == {
        (0.70, 0.65): (GROUP_COLORS["FLAIR"], "o"),  # 0 leaves out FLAIR
        (0.90, 0.95): (GROUP_COLORS["T1"], "o"),  # 15 leaves out T1
        (0.55, 0.50): (to_hex("0.35"), "s"),  # gray T1: a gray square
    }
    assert ax.get_xlabel().startswith("A: validation auroc") and ax.get_ylabel().startswith("B:")
    named = {t.get_text() for t in ax.texts}
    assert "15: T2-T1ce-FLAIR" in named and "24: gray T1" in named  # the best and the worst


def test_figure_1_shows_each_sequences_role_and_the_composite():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (4, 12, 10)).astype(np.float32)
    mask = np.zeros((12, 10), np.uint8)
    mask[4:8, 3:7] = 1
    fig = figure_composition(image, mask, 15, "PHANTOM-0001")
    titles = [ax.get_title() for ax in fig.axes]
    # configuration 15 = (T2, T1ce, FLAIR) on (R, G, B); T1 is left out
    assert titles[:4] == ["T1 (unused)", "T1ce → G", "T2 → R", "FLAIR → B"]
    composite = fig.axes[4].images[0].get_array()
    np.testing.assert_allclose(composite[..., 0], image[2])
    np.testing.assert_allclose(composite[..., 1], image[1])
    np.testing.assert_allclose(composite[..., 2], image[3])
    for ax, plane in zip(fig.axes[:4], image, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), plane)
    assert "PHANTOM-0001" in fig._suptitle.get_text()


def test_calibration_lines_are_the_curves_and_the_legend_gives_brier_and_ece():
    curves = [
        CalibrationCurve(
            "A",
            False,
            False,
            np.array([0.1, 0.5, 0.9]),
            np.array([0.0, 0.4, 1.0]),
            probabilities=np.array([0.1, 0.2, 0.8]),
            brier=0.123,
            ece=0.045,
        ),
        CalibrationCurve(
            "B",
            True,
            True,
            np.array([0.2, 0.7]),
            np.array([0.1, 0.9]),
            probabilities=np.array([0.3, 0.6]),
            brier=0.2,
            ece=0.1,
        ),
    ]
    fig = figure_calibration(curves)
    ax, hist = fig.axes
    drawn = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines[1:]]
    assert drawn == [([0.1, 0.5, 0.9], [0.0, 0.4, 1.0]), ([0.2, 0.7], [0.1, 0.9])]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1] == "A (no pretraining), Brier 0.123, ECE 0.045"
    assert labels[2] == (
        "B (finetuned from demo pretraining (photographs, not ImageNet)), Brier 0.200, ECE 0.100"
    )
    assert len(hist.patches) == 2  # one step histogram per curve


# -- cross-validation's fold figure ----------------------------------------------------------------
def test_figure_draws_one_point_per_fold_and_arm_with_mean_and_std():
    fold_auroc = {
        ("vgg16", True): [0.90, 0.84, 0.87],
        ("vgg16", False): [0.70, 0.78, 0.74],
        ("resnet18", True): [0.88, 0.91, 0.80],
    }
    fold_table = pd.DataFrame(
        [
            {"fold": f, "model_name": m, "pretrained": a, "auroc": v}
            for (m, a), values in fold_auroc.items()
            for f, v in enumerate(values)
        ]
    )
    single = pd.DataFrame({"model_name": ["vgg16"], "pretrained": [True], "auroc": [0.93]})
    fig = fold_auroc_figure(fold_table, single)
    (ax,) = fig.axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    x_of = {
        arm: ticks.index(f"{arm[0]}\n{'finetuned' if arm[1] else 'no pretraining'}")
        for arm in fold_auroc
    }
    points = {
        c.get_label(): c.get_offsets()
        for c in ax.collections
        if isinstance(c, PathCollection) and c.get_label().startswith("fold")
    }
    assert sorted(points) == ["fold 0", "fold 1", "fold 2"]
    for arm, values in fold_auroc.items():
        for f, value in enumerate(values):
            near = [(x, y) for x, y in points[f"fold {f}"] if abs(x - x_of[arm]) < 0.45]
            assert len(near) == 1 and near[0][1] == pytest.approx(value), (arm, f)
    assert sum(len(p) for p in points.values()) == 9  # 3 folds x 3 arms, nothing else
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    for arm, values in fold_auroc.items():
        (bar,) = [b for b in bars if abs(b.lines[0].get_xdata()[0] - x_of[arm]) < 0.45]
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert bar.lines[0].get_ydata()[0] == pytest.approx(mean)
        (segment,) = bar.lines[2][0].get_segments()
        assert sorted(segment[:, 1]) == pytest.approx([mean - std, mean + std])
    (cross,) = [c for c in ax.collections if c.get_label() == "single 70:15:15 split"]
    assert cross.get_offsets().tolist() == [[x_of[("vgg16", True)], 0.93]]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"fold 0", "mean ± 1 std over folds", "single 70:15:15 split"} <= set(legend)
    assert "AUROC" in ax.get_ylabel() and ax.get_xlabel()


def test_figure_without_a_single_split_draws_only_the_folds():
    table = pd.DataFrame(
        {"fold": [0, 1], "model_name": ["m", "m"], "pretrained": [True, True], "auroc": [0.6, 0.8]}
    )
    (ax,) = fold_auroc_figure(table).axes
    offsets = np.concatenate(
        [c.get_offsets() for c in ax.collections if c.get_label()[:4] == "fold"]
    )
    assert sorted(offsets[:, 1].tolist()) == pytest.approx([0.6, 0.8])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["fold 0", "fold 1", "mean ± 1 std over folds"]
