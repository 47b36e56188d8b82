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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from idh_pseudocolor.arms import ARM_KEYS, arm_label, method_label
from idh_pseudocolor.configurations import FOUR_CHANNEL_ID, GRAY_T1_ID
from idh_pseudocolor.metrics import (
    METRICS,
    arm_metrics,
    binary_metrics,
    expected_calibration_error,
    invariant_violations,
    paired_auroc_test,
)
from idh_pseudocolor.permutation_study import (
    final_metrics_table,
    rank_of,
    seed_ensemble,
    validation_choice,
)

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
def table_2(
    predictions: pd.DataFrame, n_resamples: int, seed: int, calibration_bins: int
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
    uncertainty = _Uncertainty(n_resamples, seed, calibration_bins)
    summary = final_metrics_table(predictions)  # mean/std over seeds, ensemble metrics, invariants
    chosen = (
        validation_choice(predictions)
        if "val_auroc" in predictions
        else pd.DataFrame(columns=list(ARM_KEYS))
    )
    rows = []
    for (model, pretrained), part in predictions.groupby(list(ARM_KEYS), sort=False):
        base = summary[
            (summary["model_name"] == model) & (summary["pretrained"] == bool(pretrained))
        ].iloc[0]
        pick = chosen[
            (chosen["model_name"] == model)
            & (chosen["pretrained"].astype(bool) == bool(pretrained))
        ]
        common = _common_columns(part, base, model, pretrained, n_resamples)
        rows.append(_ensemble_row(part, base, common, uncertainty))
        rows.append(_chosen_seed_row(part, pick, common, uncertainty))
    return pd.DataFrame(rows + [_published_row(published) for published in PUBLISHED_ROWS])


@dataclass(frozen=True)
class _Uncertainty:
    """A row's bootstrap CIs (with undefined-resample counts), Brier score and ECE: the interval
    part of :func:`idh_pseudocolor.metrics.arm_metrics`, whose values Table 2 names per estimate."""

    n_resamples: int
    seed: int
    calibration_bins: int

    def __call__(self, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
        full = arm_metrics(y, p, self.n_resamples, self.seed, self.calibration_bins)
        keys = [f"{m}_{s}" for m in METRICS for s in ("ci_low", "ci_high", "undefined_resamples")]
        return {k: full[k] for k in (*keys, "brier", "ece")}


def _common_columns(
    part: pd.DataFrame, base: pd.Series, model: str, pretrained: Any, n_resamples: int
) -> dict[str, Any]:
    """What both of an arm's rows say: the arm, its data, seeds and weights; refuses an arm whose
    metrics break an invariant (one confusion matrix cannot, so it would be a bug)."""
    demo = _demo_arm(part, pretrained)
    method = method_label(model, bool(pretrained), demo)
    if base["invariant_violations"]:
        raise AssertionError(
            f"Table 2 row {method} violates metric invariants: {base['invariant_violations']}"
        )
    patients = len(_patient_ensemble(part))
    return {
        "method": method,
        "ours": True,
        "data": f"{'phantom' if _is_phantom(part) else 'cohort'} test split, {patients} patients",
        "model_name": model,
        "pretrained": bool(pretrained),
        "seeds": int(base["seeds"]),
        "pretrained_loaded": base["pretrained_loaded"],
        "demo_pretraining": demo,
        "bootstrap_resamples": n_resamples,
        "invariants": "ok",
    }


def _ensemble_row(
    part: pd.DataFrame, base: pd.Series, common: dict[str, Any], uncertainty: _Uncertainty
) -> dict[str, Any]:
    """The seed ensemble's row: mean and std over seeds and the ensemble's value per metric."""
    row: dict[str, Any] = {
        "method": common["method"],
        "estimate": "seed ensemble",
        **{k: v for k, v in common.items() if k != "method"},
    }
    for m in METRICS:
        row[f"{m}_mean"], row[f"{m}_std"] = base[f"{m}_mean"], base[f"{m}_std"]
        row[f"{m}_ensemble"] = base[f"ensemble_{m}"]
    ens = _patient_ensemble(part)
    return {**row, **uncertainty(ens["label"].to_numpy(), ens["prob_mutant"].to_numpy())}


def _chosen_seed_row(
    part: pd.DataFrame, pick: pd.DataFrame, common: dict[str, Any], uncertainty: _Uncertainty
) -> dict[str, Any]:
    """The one seed with the highest validation AUROC, as the paper reports a single model."""
    method = common["method"]
    row: dict[str, Any] = {
        "method": f"{method}, seed chosen on validation",
        "estimate": "seed chosen on validation",
        **{k: v for k, v in common.items() if k != "method"},
    }
    if pick.empty:  # test_predictions from before the runs recorded their validation AUROC
        row["method"] += ": not recorded (rerun the final evaluation)"
        return row
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
    return {**row, **uncertainty(y, p)}


def _published_row(published: Mapping[str, Any]) -> dict[str, Any]:
    """A row as printed (one number per metric); printed to 2-3 decimals, so the invariants allow
    for rounding and flag only real contradictions."""
    row = {
        "method": published["method"],
        "ours": False,
        "data": published["data"],
        "estimate": "as published",
    }
    row.update({f"{m}_ensemble": published[m] for m in METRICS})
    row["invariants"] = "; ".join(invariant_violations(published, tol=0.003)) or "ok"
    return row


def pretrained_comparison(predictions: pd.DataFrame, n_resamples: int, seed: int) -> pd.DataFrame:
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
                    f"{arm_label(True in flags)} runs)",
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
    for (model, pretrained), part in predictions.groupby(list(ARM_KEYS), sort=False):
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


# -- patients missing sequences --------------------------------------------------------------------
#: missing_sequence_costs' columns
MISSING_SEQUENCE_COLUMNS = [
    "missing_sequences",
    "present_sequences",
    "config_id",
    "configuration",
    "study_rank",
    "winner",
    "model_name",
    "pretrained",
    "auroc_mean",
    "auroc_std",
    "auroc_winner",
    "auroc_difference",
]


def missing_sequence_costs(
    choices: pd.DataFrame, fallback_metrics: pd.DataFrame, test_metrics: pd.DataFrame
) -> pd.DataFrame:
    """What each missing sequence costs: per set of present sequences (fallback_configurations)
    and model x arm of the final evaluation, the test AUROC (mean ± std over seeds) of the
    configuration such a patient gets beside the winner's, on the same test patients (every
    fallback is trained on the winner's splits and seeds). A set the winner serves costs 0. A
    fallback without a row for that model x arm (not trained) is left out, never filled in."""
    winner = test_metrics.set_index(["model_name", "pretrained"])
    fallbacks = fallback_metrics.set_index(["config_id", "model_name", "pretrained"])
    rows = []
    for choice in choices.itertuples(index=False):
        for (model, pretrained), own in winner.iterrows():
            if bool(choice.winner):
                served = own
            elif (int(choice.config_id), model, pretrained) in fallbacks.index:
                served = fallbacks.loc[(int(choice.config_id), model, pretrained)]
            else:
                continue
            rows.append(
                {
                    "missing_sequences": choice.missing_sequences,
                    "present_sequences": choice.present_sequences,
                    "config_id": int(choice.config_id),
                    "configuration": choice.configuration,
                    "study_rank": int(choice.study_rank),
                    "winner": bool(choice.winner),
                    "model_name": model,
                    "pretrained": bool(pretrained),
                    "auroc_mean": float(served["auroc_mean"]),
                    "auroc_std": float(served["auroc_std"]),
                    "auroc_winner": float(own["auroc_mean"]),
                    "auroc_difference": float(served["auroc_mean"]) - float(own["auroc_mean"]),
                }
            )
    return pd.DataFrame(rows, columns=MISSING_SEQUENCE_COLUMNS)
