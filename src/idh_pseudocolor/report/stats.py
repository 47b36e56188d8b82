"""The report's numbers: Table 2 with honest uncertainty, the paired comparison, calibration, the
retrain check and the values the report states. Plain pandas/numpy/scipy/scikit-learn; no
figures, no markup (``figures`` draws these frames, ``html`` renders them).

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

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from idh_pseudocolor.configurations import FOUR_CHANNEL_ID, GRAY_T1_ID
from idh_pseudocolor.metrics import (
    METRICS,
    auroc_many,
    binary_metrics,
    binary_metrics_many,
    delong_test,
    expected_calibration_error,
    invariant_violations,
)
from idh_pseudocolor.study import final_metrics_table, rank_of, seed_ensemble, validation_choice

#: SPEC §1, the paper's Table 2: its four rows (EGD test) and two literature rows (other data).
PUBLISHED_ROWS: list[dict[str, Any]] = [
    {
        "method": "VGG16, no pretraining",
        "auroc": 0.756,
        "accuracy": 0.690,
        "f1": 0.592,
        "precision": 0.586,
        "recall": 0.603,
        "specificity": 0.742,
        "data": "EGD test (paper)",
    },
    {
        "method": "ResNeXt, no pretraining",
        "auroc": 0.718,
        "accuracy": 0.710,
        "f1": 0.526,
        "precision": 0.657,
        "recall": 0.449,
        "specificity": 0.864,
        "data": "EGD test (paper)",
    },
    {
        "method": "VGG16 finetuned",
        "auroc": 0.915,
        "accuracy": 0.867,
        "f1": 0.797,
        "precision": 0.917,
        "recall": 0.705,
        "specificity": 0.962,
        "data": "EGD test (paper)",
    },
    {
        "method": "ResNeXt finetuned",
        "auroc": 0.935,
        "accuracy": 0.881,
        "f1": 0.819,
        "precision": 0.939,
        "recall": 0.731,
        "specificity": 0.864,
        "data": "EGD test (paper)",
    },
    {
        "method": "3-D multitask network (van der Voort 2023)",
        "auroc": 0.90,
        "accuracy": 0.84,
        "f1": 0.79,
        "precision": 0.88,
        "recall": 0.72,
        "specificity": 0.93,
        "data": "TCGA-LGG+GBM (other data)",
    },
    {
        "method": "circulating DNA blood test (Batool 2024)",
        "auroc": 0.84,
        "accuracy": math.nan,
        "f1": 0.791,
        "precision": 0.909,
        "recall": 0.70,
        "specificity": math.nan,
        "data": "own cohort (other data)",
    },
]


# -- Table 2 ----------------------------------------------------------------------------------
class Interval(NamedTuple):
    """A percentile bootstrap interval over the resamples where the metric is defined, and how
    many of the resamples left it undefined (precision when no patient is predicted mutant)."""

    low: float
    high: float
    undefined: int


def stratified_resample_index(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray | None:
    """(resamples, patients) positions: mutants and wild-types drawn with replacement separately,
    so every resample keeps the class counts; None when a class has fewer than two patients."""
    y = np.asarray(labels).astype(int)
    groups = (np.flatnonzero(y == 1), np.flatnonzero(y == 0))
    if min(len(g) for g in groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [g[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups], axis=1
    )


def resampled_metrics(
    labels: np.ndarray, prob: np.ndarray, n_resamples: int, seed: int
) -> dict[str, np.ndarray] | None:
    """Every metric on each stratified resample of patients (NaN where undefined), for intervals
    of differences between independent cohorts; None when a class has fewer than two patients."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)
    index = stratified_resample_index(y, n_resamples, seed)
    if index is None:
        return None
    return {m: v for m, v in binary_metrics_many(y[index], p[index]).items() if m in METRICS}


def _stratified_bootstrap(
    labels: np.ndarray,
    statistic: Callable[[np.ndarray], Any],
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
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
    index = stratified_resample_index(labels, n_resamples, seed)
    if index is None:
        return None
    draws = np.asarray(statistic(index), dtype=float).reshape(n_resamples, -1)
    undefined = np.isnan(draws).sum(axis=0)
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # never defined: a NaN interval, and the count says why
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return low, high, undefined


def bootstrap_ci(
    labels: np.ndarray,
    prob: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Patient-level (stratified) percentile bootstrap CI of every metric over the resamples where
    it is defined, with the number where it is not (NaN interval when a class has < 2 patients)."""
    y, p = np.asarray(labels).astype(int), np.asarray(prob, dtype=float)

    def statistic(index: np.ndarray) -> np.ndarray:
        m = binary_metrics_many(y[index], p[index])
        return np.stack([m[k] for k in METRICS], axis=1)

    result = _stratified_bootstrap(y, statistic, n_resamples, seed, confidence)
    if result is None:
        return {k: Interval(math.nan, math.nan, 0) for k in METRICS}
    return {
        k: Interval(float(lo), float(hi), int(u))
        for k, lo, hi, u in zip(METRICS, *result, strict=True)
    }


def paired_auroc_test(
    labels: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same patients: DeLong's test (p-value, normal CI of the
    difference) and a paired, stratified bootstrap 95% CI of the difference.

    Not a permutation test swapping a's and b's probabilities within patients: two models'
    scores live on different scales, so swapping them does not give the null distribution of
    equal AUROCs.
    """
    y = np.asarray(labels).astype(int)
    pa, pb = np.asarray(prob_a, float), np.asarray(prob_b, float)
    delong = delong_test(y, pa, pb)
    ci = _stratified_bootstrap(
        y, lambda i: auroc_many(y[i], pa[i]) - auroc_many(y[i], pb[i]), n_resamples, seed
    )
    low, high = (
        (ci[0][0], ci[1][0]) if ci is not None else (np.nan, np.nan)
    )  # AUROC: defined in every resample
    return {
        "auroc_difference": delong["difference"],
        "ci_low": float(low),
        "ci_high": float(high),
        "delong_ci_low": delong["ci_low"],
        "delong_ci_high": delong["ci_high"],
        "delong_se": delong["se"],
        "p_value": delong["p_value"],
    }


def table_2(
    predictions: pd.DataFrame, n_resamples: int = 2000, seed: int = 0, calibration_bins: int = 5
) -> pd.DataFrame:
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
    chosen = (
        validation_choice(predictions)
        if "val_auroc" in predictions
        else pd.DataFrame(columns=["model_name", "pretrained"])
    )
    for (model, pretrained), part in predictions.groupby(["model_name", "pretrained"], sort=False):
        base = summary[
            (summary["model_name"] == model) & (summary["pretrained"] == bool(pretrained))
        ].iloc[0]
        demo = _demo_arm(part, pretrained)
        arm = (
            "finetuned from demo pretraining (photographs, not ImageNet)"
            if demo
            else "finetuned"
            if pretrained
            else "no pretraining"
        )
        method = f"{model}, {arm}"
        if base[
            "invariant_violations"
        ]:  # computed from one confusion matrix, ours cannot fail: if they do, stop
            raise AssertionError(
                f"Table 2 row {method} violates metric invariants: {base['invariant_violations']}"
            )
        ens = _patient_ensemble(part)
        common: dict[str, Any] = {
            "ours": True,
            "data": (
                f"{'phantom' if _is_phantom(part) else 'cohort'} test split, {len(ens)} patients"
            ),
            "model_name": model,
            "pretrained": bool(pretrained),
            "seeds": int(base["seeds"]),
            "pretrained_loaded": base["pretrained_loaded"],
            "demo_pretraining": demo,
            "bootstrap_resamples": n_resamples,
            "invariants": "ok",
        }
        row: dict[str, Any] = {"method": method, "estimate": "seed ensemble", **common}
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_ensemble"] = (
                base[f"{m}_mean"],
                base[f"{m}_std"],
                base[f"ensemble_{m}"],
            )
        rows.append(
            {
                **row,
                **_uncertainty(
                    ens["label"].to_numpy(),
                    ens["prob_mutant"].to_numpy(),
                    n_resamples,
                    seed,
                    calibration_bins,
                ),
            }
        )

        row = {
            "method": f"{method}, seed chosen on validation",
            "estimate": "seed chosen on validation",
            **common,
        }
        pick = chosen[
            (chosen["model_name"] == model)
            & (chosen["pretrained"].astype(bool) == bool(pretrained))
        ]
        if pick.empty:  # test_predictions from before the runs recorded their validation AUROC
            row["method"] += ": not recorded (rerun the final evaluation)"
            rows.append(row)
            continue
        choice = pick.iloc[0]
        run = part[part["seed"] == choice["seed"]]
        y, p = run["label"].to_numpy(), run["prob_mutant"].to_numpy()
        row.update(
            method=f"{method}, seed {int(choice['seed'])} (chosen on validation "
            f"AUROC {choice['val_auroc']:.3f}, best of {int(choice['seeds_compared'])} seeds)",
            chosen_seed=int(choice["seed"]),
            chosen_val_auroc=float(choice["val_auroc"]),
            chosen_best_epoch=int(choice["best_epoch"]),
        )
        row.update({f"{m}_best_seed": v for m, v in binary_metrics(y, p).items() if m in METRICS})
        rows.append({**row, **_uncertainty(y, p, n_resamples, seed, calibration_bins)})
    for published in PUBLISHED_ROWS:
        row = {
            "method": published["method"],
            "ours": False,
            "data": published["data"],
            "estimate": "as published",
        }
        row.update({f"{m}_ensemble": published[m] for m in METRICS})  # one number each, as printed
        # printed to 2-3 decimals: allow for rounding, so only real contradictions are flagged
        row["invariants"] = "; ".join(invariant_violations(published, tol=0.003)) or "ok"
        rows.append(row)
    return pd.DataFrame(rows)


def _uncertainty(
    y: np.ndarray, p: np.ndarray, n_resamples: int, seed: int, calibration_bins: int
) -> dict[str, Any]:
    """One row's bootstrap CIs (with undefined-resample counts), Brier score and ECE."""
    out: dict[str, Any] = {}
    for m, ci in bootstrap_ci(y, p, n_resamples, seed).items():
        out[f"{m}_ci_low"], out[f"{m}_ci_high"], out[f"{m}_undefined_resamples"] = ci
    out["brier"], out["ece"] = (
        float(brier_score_loss(y, p)),
        expected_calibration_error(y, p, calibration_bins),
    )
    return out


def pretrained_comparison(
    predictions: pd.DataFrame, n_resamples: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Per model: finetuned vs. from scratch on the same test patients (seed ensembles)."""
    rows = []
    for model, part in predictions.groupby("model_name", sort=False):
        flags = set(part["pretrained"].astype(bool))
        if flags != {True, False}:
            rows.append(
                {
                    "model_name": model,
                    "available": False,
                    "note": "needs final_evaluation.pretrained: [true, false] (this run had only "
                    + ("pretrained" if True in flags else "from-scratch")
                    + " runs)",
                }
            )
            continue
        ens = {
            flag: _patient_ensemble(part[part["pretrained"].astype(bool) == flag]).set_index(
                "subject_id"
            )
            for flag in (True, False)
        }
        common = ens[True].index.intersection(ens[False].index)
        y = ens[True].loc[common, "label"].to_numpy()
        result = paired_auroc_test(
            y,
            ens[True].loc[common, "prob_mutant"].to_numpy(),
            ens[False].loc[common, "prob_mutant"].to_numpy(),
            n_resamples,
            seed,
        )
        rows.append(
            {
                "model_name": model,
                "available": True,
                "patients": len(common),
                **result,
                "note": (
                    "AUROC finetuned - scratch; "
                    "DeLong's test (p, CI) and paired stratified bootstrap CI"
                ),
            }
        )
    return pd.DataFrame(rows)


RUN_KEYS = ("config_id", "model_name", "pretrained", "seed")


def retrain_agreement(
    test_predictions: pd.DataFrame, study_runs: pd.DataFrame, tolerance: float
) -> pd.DataFrame:
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
    final = test_predictions.drop_duplicates(list(RUN_KEYS)).reindex(
        columns=[*RUN_KEYS, "val_auroc", "best_epoch"]
    )
    final = final.rename(columns={"val_auroc": "final_val_auroc", "best_epoch": "final_best_epoch"})
    sweep = study_runs.reindex(columns=[*RUN_KEYS, "auroc", "best_epoch"])
    sweep = sweep.rename(columns={"auroc": "sweep_val_auroc", "best_epoch": "sweep_best_epoch"})
    for frame in (final, sweep):  # CSV round trips: one dtype per key on both sides
        frame["config_id"], frame["seed"] = (
            frame["config_id"].astype(int),
            frame["seed"].astype(int),
        )
        frame["pretrained"], frame["model_name"] = (
            frame["pretrained"].astype(bool),
            frame["model_name"].astype(str),
        )
    table = final.merge(sweep, on=list(RUN_KEYS), how="left", validate="one_to_one")
    table["difference"] = table["final_val_auroc"] - table["sweep_val_auroc"]
    table["tolerance"] = float(tolerance)
    table["status"] = np.select(
        [
            table["final_val_auroc"].isna(),
            table["sweep_val_auroc"].isna(),
            table["difference"].abs() > tolerance,
        ],
        ["not recorded", "no sweep run", "differs"],
        default="agrees",
    )
    return table.reset_index(drop=True)


def _demo_arm(part: pd.DataFrame, pretrained: Any) -> bool:
    """Whether an arm's runs all started from the demo's photograph pretraining (recorded per
    run)."""
    return (
        bool(pretrained)
        and "demo_pretraining" in part
        and bool(part["demo_pretraining"].astype(bool).all())
    )


def _patient_ensemble(part: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: label and the mean P(mutant) over seeds."""
    return seed_ensemble(part[["subject_id", "label", "seed", "prob_mutant"]])


def _is_phantom(part: pd.DataFrame) -> bool:
    return bool(part["subject_id"].astype(str).str.startswith("PHANTOM-").all())


#: when a metric has no value on a resample of patients
UNDEFINED_WHEN = {
    "auroc": "one class only",
    "accuracy": "no patients",
    "f1": "no mutant predicted or present",
    "precision": "no patient predicted mutant",
    "recall": "no mutant",
    "specificity": "no wild-type",
}


def undefined_resample_notes(table: pd.DataFrame) -> list[str]:
    """Table 2's footnotes: per row and metric with undefined resamples, how many of how many; the
    interval is over the rest (conditional on the metric being defined), not silently blank."""
    notes = []
    for _, r in table[table["ours"].astype(bool)].iterrows():
        for m in METRICS:
            undefined = r.get(f"{m}_undefined_resamples")
            if undefined is not None and not pd.isna(undefined) and undefined > 0:
                total = int(r["bootstrap_resamples"])
                notes.append(
                    f"{r['method']}: {m} undefined in {int(undefined)} of {total} resamples "
                    f"({UNDEFINED_WHEN[m]}); its 95% CI is over the other {total - int(undefined)}."
                )
    return notes


# -- calibration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationCurve:
    """One arm's seed ensemble on the test patients: the reliability diagram's points
    (``n_bins`` equal-mass bins), its Brier score and ECE, and the probabilities themselves."""

    model_name: str
    pretrained: bool
    demo_pretraining: bool
    predicted: np.ndarray
    observed: np.ndarray
    probabilities: np.ndarray
    brier: float
    ece: float


def calibration_curves(predictions: pd.DataFrame, n_bins: int) -> list[CalibrationCurve]:
    """Per model x pretrained (in the order of ``predictions``), the seed ensemble's calibration:
    the same ``n_bins`` equal-mass bins for the plotted points and the ECE."""
    curves = []
    for (model, pretrained), part in predictions.groupby(["model_name", "pretrained"], sort=False):
        ens = _patient_ensemble(part)
        y, p = ens["label"].to_numpy(), ens["prob_mutant"].to_numpy()
        observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
        curves.append(
            CalibrationCurve(
                model_name=str(model),
                pretrained=bool(pretrained),
                demo_pretraining=_demo_arm(part, pretrained),
                predicted=predicted,
                observed=observed,
                probabilities=p,
                brier=float(brier_score_loss(y, p)),
                ece=expected_calibration_error(y, p, n_bins),
            )
        )
    return curves


# -- what the report says ---------------------------------------------------------------------
def study_kind(environment: Mapping[str, Any]) -> Literal["paper", "rehearsal", "demo"]:
    """Which study a report belongs to: the paper's, a rehearsal of it, or the CPU demo."""
    if environment["kind"] == "paper":
        return "rehearsal" if environment["rehearsal"] else "paper"
    return "demo"


def pretrained_weights_status(
    table: pd.DataFrame,
) -> Literal["loaded", "none requested", "not loaded"]:
    """Whether Table 2's runs that asked for pretrained weights got them ("none requested" when
    every run was trained from scratch)."""
    ours = table[table["ours"].astype(bool)]
    requested, loaded = ours["pretrained"].astype(bool), ours["pretrained_loaded"].astype(bool)
    if not requested.any():
        return "none requested"
    return "not loaded" if (requested & ~loaded).any() else "loaded"


def any_demo_arm(table: pd.DataFrame) -> bool:
    """Whether any of Table 2's rows started from the demo's photograph pretraining (recorded per
    run: a user's own weights_file replaces the demo's, and then the report names no demo)."""
    ours = table[table["ours"].astype(bool)]
    return "demo_pretraining" in ours and bool(ours["demo_pretraining"].astype(bool).any())


def gray_t1_rank(study_results: pd.DataFrame) -> tuple[int | None, int]:
    """(rank, number of configurations) of gray T1 by the winner rule among the paper's
    configurations (the four-channel extension left out); (None, 0) when it was not run."""
    if GRAY_T1_ID not in set(study_results["config_id"]):
        return None, 0
    return rank_of(study_results[study_results["config_id"] != FOUR_CHANNEL_ID], GRAY_T1_ID)


def retrain_summary(agreement: pd.DataFrame) -> tuple[float, int]:
    """The retrain check's tolerance (NaN without runs) and how many runs differ beyond it."""
    tolerance = float(agreement["tolerance"].iloc[0]) if len(agreement) else math.nan
    return tolerance, int((agreement["status"] == "differs").sum())
