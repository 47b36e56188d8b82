"""How the demo's training settings were chosen: validation AUROC only, never the test split.

A small grid (epochs x learning rate, OneCycle) on the search configuration (21: FLAIR-T1ce-T2),
both demo models, one seed, trained on the phantom's train split and scored on its validation
split. Baseline in the same run: the previous demo setting (6 epochs, 6e-4). Prints each
setting's mean validation AUROC, seconds per run and the ratio to the baseline.

    python benchmarks/demo_tuning.py                                     # 200-subject phantom, 2 mm
    python benchmarks/demo_tuning.py --slices data/03_primary/slice_arrays.npz
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from idh_pseudocolor.cohort import FILE_KEYS, discover_cohort, parse_idh
from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.parameters import DataEngineeringSettings, PermutationStudySettings
from idh_pseudocolor.phantom import generate_cohort
from idh_pseudocolor.search import PAPER_OPTIMUM
from idh_pseudocolor.slices import extract_many, stack_slices
from idh_pseudocolor.splits import split_ids, split_subjects
from idh_pseudocolor.training import RunConfig, train_run

REPO = Path(__file__).resolve().parents[1]
#: the demo's settings (conf/base): the slices' normalization, the split, the sweep's fixed
#: settings (48 px, batch 16, patience 5, one thread)
PARAMETERS = project_parameters(REPO)
DATA = DataEngineeringSettings.from_params(PARAMETERS["data_engineering"])
FIXED = PermutationStudySettings.from_params(PARAMETERS["permutation_study"]).fixed

BASELINE = (6, 6e-4)


def phantom_slices(n_subjects: int, voxel_size: float) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(tmp, n_subjects=n_subjects, seed=0, voxel_size=voxel_size, progress=False)
        cohort = discover_cohort(tmp)
        rows = cohort.to_dict("records")
        candidates = [(r["subject_id"], {k: r[f"file_{k}"] for k in FILE_KEYS}) for r in rows]
        slices = list(
            extract_many(candidates, DATA.normalization.normalization(), None, progress=False)
        )
        return stack_slices(slices, {r["subject_id"]: parse_idh(r["label_raw"]) for r in rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--slices", type=Path, help="slice_arrays.npz of a demo run (default: a fresh phantom)"
    )
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--voxel-size", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[6, 10, 14])
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[6e-4, 2e-3, 4e-3])
    parser.add_argument("--models", nargs="+", default=["test_resnet", "test_byobnet"])
    parser.add_argument("--config-id", type=int, default=21)
    args = parser.parse_args()

    arrays = (
        dict(np.load(args.slices))
        if args.slices
        else phantom_slices(args.subjects, args.voxel_size)
    )
    s = DATA.splits
    split = split_subjects(
        arrays["subject_ids"].tolist(), arrays["labels"].tolist(), s.train, s.val, s.test, s.seed
    )
    train, val = split_ids(split, "train"), split_ids(split, "val")
    grid = sorted(set(itertools.product(args.epochs, args.learning_rates)) | {BASELINE})
    rows = []
    for (epochs, lr), model in itertools.product(grid, args.models):
        cfg = RunConfig(
            **{
                **FIXED.run_config(),
                **PAPER_OPTIMUM,
                "model_name": model,
                "config_id": args.config_id,
                "seed": 42,
                "pretrained": False,
                "learning_rate": lr,
                "max_epochs": epochs,
                "superconvergence": True,
                "peak_fraction": 0.3,
                "lr_interval": "epoch",
            }
        )
        start = time.perf_counter()
        result = train_run(arrays, train, val, cfg)
        rows.append(
            {
                "epochs": epochs,
                "learning_rate": lr,
                "model": model,
                "val_auroc": result.metrics["auroc"],
                "seconds": time.perf_counter() - start,
            }
        )
    table = (
        pd.DataFrame(rows)
        .groupby(["epochs", "learning_rate"])
        .agg(val_auroc=("val_auroc", "mean"), seconds_per_run=("seconds", "mean"))
        .reset_index()
    )
    base = table[(table.epochs == BASELINE[0]) & (table.learning_rate == BASELINE[1])].iloc[0]
    table["auroc_vs_baseline"] = table["val_auroc"] / base["val_auroc"]
    table["time_vs_baseline"] = table["seconds_per_run"] / base["seconds_per_run"]
    print(
        f"{platform.node()} ({platform.processor() or platform.machine()}), "
        f"config {args.config_id}, {len(train)} train / {len(val)} "
        f"validation patients, models {', '.join(args.models)}"
    )
    print(table.round(3).to_string(index=False))
    best = table.sort_values(["val_auroc", "seconds_per_run"], ascending=[False, True]).iloc[0]
    print(
        f"best on validation: {int(best.epochs)} epochs, lr {best.learning_rate:g}: "
        f"AUROC {best.val_auroc:.3f} ({best.auroc_vs_baseline:.2f}x baseline), "
        f"{best.time_vs_baseline:.2f}x its time"
    )


if __name__ == "__main__":
    main()
