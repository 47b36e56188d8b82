"""Benchmark: our training path (composition + Lightning + metrics) vs. a bare PyTorch loop.

Same model (resnet18, random init), batch 16, data, epochs and validation work in both: the
bare loop is ``benchmarks/bare_loop.py`` (the same math as ``train_run``, shared with
``gpu_study.py``'s arm B). Each side runs twice and the faster run counts.
Prints training images/s and the ratio ours/bare (target >= 0.9 on CPU).

    python benchmarks/training_overhead.py [--subjects 160 --epochs 3 --image-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from bare_loop import bare_loop

from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.search import PAPER_OPTIMUM
from idh_pseudocolor.training import RunConfig, train_run

REPO = Path(__file__).resolve().parents[1]


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0, 1, (n, 4, 233, 197)).astype(np.float32)
    images[labels == 1, 2, 80:140, 60:120] += 0.5
    masks = np.zeros((n, 233, 197), np.uint8)
    masks[:, 80:140, 60:120] = 1
    return {
        "images": images,
        "masks": masks,
        "labels": labels.astype(np.int8),
        "subject_ids": np.array([f"S{i}" for i in range(n)]),
    }


def bare(arrays, train_idx, val_idx, cfg: RunConfig) -> float:
    return bare_loop(arrays, train_idx, val_idx, cfg).seconds


def ours(arrays, train_ids, val_ids, cfg: RunConfig) -> float:
    start = time.perf_counter()
    train_run(arrays, train_ids, val_ids, cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subjects", type=int, default=160, help="training subjects (validation: a quarter more)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()

    n_val = args.subjects // 4
    arrays = synthetic(args.subjects + n_val)
    ids = arrays["subject_ids"].tolist()
    train_ids, val_ids = ids[: args.subjects], ids[args.subjects :]
    train_idx, val_idx = np.arange(args.subjects), np.arange(args.subjects, args.subjects + n_val)
    # the demo sweep's fixed settings (conf/base) with the paper's optimum
    fixed = PermutationStudySettings.from_params(
        project_parameters(REPO)["permutation_study"]
    ).fixed
    cfg = RunConfig(
        **{
            **fixed.run_config(),
            **PAPER_OPTIMUM,
            "model_name": args.model,
            "config_id": 15,
            "seed": 42,
            "pretrained": False,
            "learning_rate": 1e-3,
            "max_epochs": args.epochs,
            "image_size": args.image_size,
            "early_stopping": False,
            "torch_threads": None,
            "initial_weights_cache": 0,  # the bare loop creates its network every time too
        }
    )
    images = (args.subjects // cfg.batch_size) * cfg.batch_size * args.epochs
    bare_s = min(bare(arrays, train_idx, val_idx, cfg) for _ in range(2))
    ours_s = min(ours(arrays, train_ids, val_ids, cfg) for _ in range(2))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.model} at {args.image_size} px, batch {cfg.batch_size}, "
        f"{args.subjects} train / {n_val} val subjects, {args.epochs} epochs"
    )
    print(f"bare PyTorch loop: {bare_s:6.2f} s  {images / bare_s:7.1f} train images/s")
    print(f"ours (Lightning):  {ours_s:6.2f} s  {images / ours_s:7.1f} train images/s")
    print(f"ratio ours/bare: {bare_s / ours_s:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
