"""The permutation study's arithmetic: per-configuration summaries over seeds, the winner (the
paper's rule), seed ensembles and the final evaluation's table.

Kept free of training and Kedro so the rules the paper states can be checked by hand. "Study"
alone means this study throughout the project (``study_runs``, ``study_results``,
``study_winner``); the hyperparameter search's Optuna study is the "search study".
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from idh_pseudocolor.configurations import configuration_label
from idh_pseudocolor.metrics import METRICS, binary_metrics, invariant_violations


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every validation metric, per configuration and model.

    ``runs`` has one row per run with ``config_id``, ``model_name``, ``seed`` and the metric
    columns of :data:`METRICS`. std is the sample standard deviation (ddof=1), as error bars of
    three seeds usually are.
    """
    missing = {"config_id", "model_name", "seed", *METRICS} - set(runs.columns)
    if missing:
        raise ValueError(f"runs table lacks columns {sorted(missing)}")
    grouped = runs.groupby(["config_id", "model_name"])[list(METRICS)]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["seeds"] = runs.groupby(["config_id", "model_name"])["seed"].nunique()
    table = table.reset_index()
    table.insert(1, "configuration", table["config_id"].map(configuration_label))
    return table


def winner(summary: pd.DataFrame, models: Sequence[str] | None = None) -> dict:
    """The paper's rule: argmax over configurations of the sum over models of mean validation AUROC.

    Only configurations scored for every model compete; ties go to the lower id.
    """
    models = list(models or sorted(summary["model_name"].unique()))
    wide = summary.pivot(index="config_id", columns="model_name", values="auroc_mean")
    missing = [m for m in models if m not in wide.columns]
    if missing:
        raise ValueError(f"no results for model(s) {missing}")
    complete = wide[models].dropna()
    if complete.empty:
        raise ValueError("no configuration has results for every model")
    score = complete.sum(axis=1).sort_index()
    best = int(score.idxmax())
    return {
        "config_id": best,
        "configuration": configuration_label(best),
        "sum_mean_val_auroc": float(score.loc[best]),
        "per_model_mean_val_auroc": {m: float(complete.loc[best, m]) for m in models},
        "ranking": [int(c) for c in score.sort_values(ascending=False, kind="stable").index],
    }


def seed_ensemble(predictions: pd.DataFrame) -> pd.DataFrame:
    """Mean P(mutant) over seeds per subject (and per any other grouping column given)."""
    keys = [c for c in predictions.columns if c not in {"seed", "prob_mutant"}]
    return predictions.groupby(keys, as_index=False)["prob_mutant"].mean()


def ensemble_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Metrics of the seed-ensemble's probabilities (one prediction per subject)."""
    ens = seed_ensemble(predictions[["subject_id", "label", "seed", "prob_mutant"]])
    return binary_metrics(ens["label"].to_numpy(), ens["prob_mutant"].to_numpy())


def rank_of(summary: pd.DataFrame, config_id: int) -> tuple[int, int]:
    """(rank, number of configurations) of ``config_id`` by the winner score, 1 = best."""
    ranking = winner(summary)["ranking"]
    return ranking.index(config_id) + 1, len(ranking)


def validation_choice(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per model x pretrained, the one run the paper's "best model" can be: the final evaluation's
    seed with the highest validation AUROC (ties: the lowest seed), chosen without the test.

    ``predictions`` has one row per run and test patient with the run's ``val_auroc`` and
    ``best_epoch``; returns ``model_name``, ``pretrained``, ``seed``, ``val_auroc``,
    ``best_epoch`` and ``seeds_compared``. Arms without a recorded validation AUROC are absent.
    """
    keys = ["model_name", "pretrained", "seed"]
    if predictions.groupby(keys)["val_auroc"].nunique(dropna=False).gt(1).any():
        raise ValueError(
            "val_auroc differs within one run: expected one value per model x pretrained x seed"
        )
    runs = predictions.drop_duplicates(keys).dropna(subset=["val_auroc"])[
        [*keys, "val_auroc", "best_epoch"]
    ]
    runs = runs.assign(
        seeds_compared=runs.groupby(["model_name", "pretrained"])["seed"].transform("nunique")
    )
    ranked = runs.sort_values(["val_auroc", "seed"], ascending=[False, True], kind="stable")
    return ranked.groupby(["model_name", "pretrained"], sort=False).head(1).reset_index(drop=True)


def final_metrics_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Final-evaluation table: per model x pretrained, mean/std over seeds and the seed ensemble.

    States its averaging convention in the column names (``<metric>_mean``/``_std`` over seeds,
    ``ensemble_<metric>`` for the seed-averaged probabilities) and lists any violated invariant.
    """
    rows = []
    for (model_name, pretrained), part in predictions.groupby(
        ["model_name", "pretrained"], sort=False
    ):
        per_seed = pd.DataFrame(
            [
                binary_metrics(seed_part["label"].to_numpy(), seed_part["prob_mutant"].to_numpy())
                for _, seed_part in part.groupby("seed")
            ]
        )
        ensemble = ensemble_metrics(part)
        row = {
            "model_name": model_name,
            "pretrained": bool(pretrained),
            "seeds": int(part["seed"].nunique()),
            "subjects": int(part["subject_id"].nunique()),
            "pretrained_loaded": bool(part["pretrained_loaded"].all())
            if "pretrained_loaded" in part
            else None,
        }
        for metric in METRICS:
            row[f"{metric}_mean"] = float(per_seed[metric].mean())
            row[f"{metric}_std"] = (
                float(per_seed[metric].std(ddof=1)) if len(per_seed) > 1 else float("nan")
            )
        row.update({f"ensemble_{m}": float(ensemble[m]) for m in METRICS})
        problems = [p for _, r in per_seed.iterrows() for p in invariant_violations(r.to_dict())]
        problems += [f"ensemble: {p}" for p in invariant_violations(ensemble)]
        row["invariant_violations"] = "; ".join(problems)
        rows.append(row)
    return pd.DataFrame(rows)
