"""The node that ranks configuration 28 (all four sequences) among the paper's 28."""

from __future__ import annotations

from typing import Any

import pandas as pd

from idh_pseudocolor.paper_path import check_one_source
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.permutation_study import summarize, winner


def compare_four_channel(
    study_runs: pd.DataFrame, four_channel_runs: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Configuration 28 ranked among the paper's 28 by the same rule (sum over the models of mean
    validation AUROC).

    It is an extension: it never enters the paper's winner; this table only says where it lands.
    """
    settings = PermutationStudySettings.from_params(params)
    both = pd.concat([study_runs, four_channel_runs], ignore_index=True)
    if "best_params_id" in both:
        check_one_source(both["best_params_id"].fillna("unrecorded"))
    summary = summarize(both)
    ranking = winner(summary, models=list(settings.models))["ranking"]
    summary["rank_by_sum_mean_auroc"] = summary["config_id"].map(
        {c: i + 1 for i, c in enumerate(ranking)}
    )
    return summary.sort_values(["rank_by_sum_mean_auroc", "model_name"]).reset_index(drop=True)
