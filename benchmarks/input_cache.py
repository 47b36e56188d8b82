"""Benchmark: a configuration's runs composing their inputs once (InputCache) vs. each its own.

The demo sweep's node: the demo's two models x three seeds with conf/base's fixed settings and
overrides (48 px, 10 epochs, early stopping, one thread), on slices the shape of the phantom's
(233 x 197, four sequences; 136 training / 34 validation subjects as the demo's development split).
Arms interleaved (own, shared) for ``--rounds`` rounds; the faster round of each counts. Checks
that both arms compute the same runs, then prints seconds per configuration and the ratio.

    python benchmarks/input_cache.py [--rounds 3 --train 136 --val 34]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from training_overhead import synthetic

from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.search import PAPER_OPTIMUM
from idh_pseudocolor.training import InputCache, RunConfig, train_run

REPO = Path(__file__).resolve().parents[1]


def configuration(arrays, train_ids, val_ids, settings, shared: bool) -> tuple[float, list]:
    """One configuration's runs (models x seeds), as ``runs.configuration_runs`` trains them."""
    cache = InputCache(arrays) if shared else None
    start, results = time.perf_counter(), []
    for model_name in settings.models:
        for seed in settings.seeds:
            cfg = RunConfig(
                **{
                    **settings.fixed.run_config(),
                    **PAPER_OPTIMUM,
                    **settings.overrides.given(),
                    "model_name": model_name,
                    "config_id": 3,
                    "seed": seed,
                    "pretrained": False,
                }
            )
            result = train_run(arrays, train_ids, val_ids, cfg, inputs=cache, progress=False)
            results.append((result.history, result.val_prob_mutant))
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train", type=int, default=136)
    parser.add_argument("--val", type=int, default=34)
    args = parser.parse_args()

    arrays = synthetic(args.train + args.val)
    ids = arrays["subject_ids"].tolist()
    train_ids, val_ids = ids[: args.train], ids[args.train :]
    settings = PermutationStudySettings.from_params(project_parameters(REPO)["permutation_study"])
    seconds: dict[str, list[float]] = {"own": [], "shared": []}
    reference = None
    for _ in range(args.rounds):
        for arm in ("own", "shared"):
            took, results = configuration(arrays, train_ids, val_ids, settings, arm == "shared")
            seconds[arm].append(took)
            reference = reference or results
            if results != reference:
                raise SystemExit(f"arm {arm} computed other runs than the first round's")
    own, shared = min(seconds["own"]), min(seconds["shared"])
    runs = len(settings.models) * len(settings.seeds)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"{runs} runs a configuration ({', '.join(settings.models)} x seeds {settings.seeds}), "
        f"{args.train} train / {args.val} val subjects, {settings.fixed.image_size} px"
    )
    print("results: identical in both arms and every round")
    for arm in ("own", "shared"):
        rounds = ", ".join(f"{s:.2f}" for s in seconds[arm])
        print(f"{arm:>6}: best {min(seconds[arm]):6.2f} s a configuration (rounds: {rounds})")
    print(f"ratio own/shared: {own / shared:.3f} (speed-up of composing once)")


if __name__ == "__main__":
    main()
