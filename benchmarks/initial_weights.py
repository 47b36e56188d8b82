"""Benchmark: runs creating their networks vs. networks kept per process (InitialWeights).

The sweep's pattern: ``--configurations`` configurations, each starting the paper's two models
(VGG16, ResNeXt-101 32x16d; ``--tiny``: timm's test networks) from each of ``--seeds`` seeds,
from scratch and pretrained from a local file (random weights written by this script: nothing is
downloaded). Only the set-up is timed (the network a run starts from, on the CPU, where every run
creates it); training is the same in both arms. Arms interleaved per configuration (create, kept;
then kept, create); checks that every kept network equals the created one bitwise and leaves the
random generators where creating leaves them; prints set-up seconds per run (the first
configuration, which fills the cache, apart from the later ones) and the ratio over the sweep.

    python benchmarks/initial_weights.py [--configurations 3 --seeds 3] [--tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.search import PAPER_OPTIMUM
from idh_pseudocolor.training import InitialWeights, RunConfig

REPO = Path(__file__).resolve().parents[1]
PAPER_MODELS = ("vgg16.tv_in1k", "resnext101_32x16d.fb_swsl_ig1b_ft_in1k")
TINY_MODELS = ("test_byobnet", "test_resnet")


def network(cache: InitialWeights, cfg: RunConfig) -> tuple[float, dict, torch.Tensor]:
    """Seconds to the run's network (seeded as train_run seeds), its weights, the generator."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    model, _ = cache.network(cfg)
    took = time.perf_counter() - start
    return took, model.state_dict(), torch.get_rng_state()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configurations", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="timm's test networks (CI plumbing)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    models = TINY_MODELS if args.tiny else PAPER_MODELS
    seeds = [42 + s for s in range(args.seeds)]
    fixed = PermutationStudySettings.from_params(
        project_parameters(REPO)["permutation_study"]
    ).fixed.run_config()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for model_name in models:  # what a user's local ImageNet file holds (random here)
            files[model_name] = str(Path(tmp) / f"{model_name}.safetensors")
            weights = timm.create_model(model_name, pretrained=False).state_dict()
            save_file({k: v.contiguous() for k, v in weights.items()}, files[model_name])
            del weights
            then = time.time_ns() - 60 * 10**9  # written before the study, as a user's file is
            os.utime(files[model_name], ns=(then, then))
        seconds = {arm: {"first": [], "later": []} for arm in ("create", "kept")}
        for source in ("scratch", "file"):
            kept = InitialWeights()
            for c, config_id in enumerate(range(args.configurations)):
                arms = ("create", "kept") if c % 2 == 0 else ("kept", "create")
                for model_name in models:
                    for seed in seeds:
                        cfg = RunConfig(
                            **{
                                **fixed,
                                **PAPER_OPTIMUM,
                                "model_name": model_name,
                                "config_id": config_id,
                                "seed": seed,
                                "pretrained": source == "file",
                                "weights_file": files,
                                "initial_weights_cache": len(models) * len(seeds),
                            }
                        )
                        made = {}
                        for arm in arms:
                            arm_cfg = (
                                cfg
                                if arm == "kept"
                                else dataclasses.replace(cfg, initial_weights_cache=0)
                            )
                            cache = kept if arm == "kept" else InitialWeights()
                            made[arm] = network(cache, arm_cfg)
                            seconds[arm]["first" if c == 0 else "later"].append(made[arm][0])
                        (_, created, rng), (_, copied, kept_rng) = made["create"], made["kept"]
                        if created.keys() != copied.keys() or not all(
                            torch.equal(created[k], copied[k]) for k in created
                        ):
                            raise SystemExit(f"{cfg.model_name} seed {seed}: kept != created")
                        if not torch.equal(rng, kept_rng):
                            raise SystemExit(f"{cfg.model_name} seed {seed}: generator differs")
            expected = (args.configurations - 1) * len(models) * len(seeds)
            if kept.hits != expected:
                raise SystemExit(
                    f"{source}: {kept.hits} networks copied from kept ones, not {expected}"
                )
            kept.entries.clear()
    runs = len(models) * len(seeds) * 2
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.configurations} configurations x "
        f"{runs} runs ({', '.join(models)} x seeds {seeds} x scratch/file)"
    )
    print("networks: kept ones equal created ones bitwise, generators too")
    for arm in ("create", "kept"):
        first, later = seconds[arm]["first"], seconds[arm]["later"]
        print(
            f"{arm:>6}: {sum(first) / len(first):.3f} s a run in the first configuration, "
            f"{sum(later) / max(len(later), 1):.3f} s in later ones; "
            f"{sum(first) + sum(later):.4f} s in all"
        )
    total = {arm: sum(seconds[arm]["first"]) + sum(seconds[arm]["later"]) for arm in seconds}
    per_later = {
        arm: sum(seconds[arm]["later"]) / max(len(seconds[arm]["later"]), 1) for arm in seconds
    }
    print(
        f"ratio create/kept over the {args.configurations} configurations: "
        f"{total['create'] / total['kept']:.3f}"
    )
    if args.configurations > 1:
        print(
            f"ratio create/kept per later configuration: "
            f"{per_later['create'] / per_later['kept']:.3f}"
        )


if __name__ == "__main__":
    main()
