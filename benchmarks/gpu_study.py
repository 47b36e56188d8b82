"""Benchmark (issue 24): the project's training path against a bare loop, concurrent runs and
the arithmetic floor, per model, in one process and one device run.

Three arms per model, interleaved A B C A B C ... for ``--rounds`` rounds (medians reported):

* A: the project's path, one :func:`~idh_pseudocolor.training.train_run` (seed ``--seeds[0]``)
  with the efficient GPU settings (batches resident on the device, bf16 autocast on CUDA,
  fused AdamW, conf/l4's channels_last and cuDNN autotuning on CUDA; ``--contiguous MODEL``,
  ``--no-cudnn-benchmark`` and ``--compile`` vary them), a fixed number of epochs, no early
  stopping.
* B: ``benchmarks/bare_loop.py``, a hand-written PyTorch loop with the same math: the same model,
  composed inputs, batches (16, drop_last), AdamW (fused where A's is), schedule, autocast dtype,
  memory format and validation work per epoch. A/B is the Lightning path's overhead.
* C: k runs of arm A at once on the same device, in k worker processes (a "spawn"
  ProcessPoolExecutor started once; each run with its own seed and ``cpu_count // k`` torch
  threads; a barrier starts the k runs together and puts them in k distinct processes). Its
  images/s is the k runs' together. Every k of ``--concurrent`` runs a short pilot
  (``--pilot-epochs``, which also warms the workers up for the model); the k with the best
  steady-state aggregate images/s is arm C.

After each model's warm-up, lever 5's micro-benchmark (``benchmarks/stacked_runs.py``,
``--stacked K``): the training steps of K runs stacked into one vmapped model against the same K
runs stepping one after another (in arm A's memory format; bf16 autocast), images/s of each and
their ratio; stacking is worth building into the runs only where it beats the runs as the project
runs them (the separate arm, and arm C's k processes).

Images/s counts training and validation images (``epochs x (train + val) / seconds``). Set-up
seconds apart from the steady state: every run records when each epoch ended (after validation,
the device synchronized; a Lightning callback for A and C, the loop itself for B). The steady
epoch is the median of the intervals between consecutive epoch ends (epochs 2..N, so it excludes
the first epoch's kernel selection, allocator growth and compilation); the run's set-up seconds
are its wall seconds minus epochs x steady epoch: model creation, composing and moving the data,
the trainer, the first epoch's extra cost and tear-down. ``run s @40`` projects a paper-length
run from the two: set-up + 40 x steady epoch.

The floor: forward FLOPs per image (torch's FlopCounterMode) x 3 per training image + x 1 per
validation image, at this device's measured dense matmul rate (bf16 on CUDA); its images/s is
what a run would reach if every FLOP ran at that rate. X/floor = X's images/s / the floor's
(C's floor counts its k runs' work). The same run measures matmul TFLOP/s and copy bandwidth
(a device-to-device ``copy_`` of a large tensor, read + write bytes). One ``torch.profiler``
epoch of arm A per model (in its warm-up run): on CUDA the GPU-busy fraction (union of kernel and
memcpy time / the epoch's wall; a lower bound, the profiler slows the CPU side) and the top
kernels; on CPU the top ops by self CPU time.

Budget: ``--budget-s`` (default 480 s) of wall clock from the start of the process (Linux).
Each model gets a share of what is left, by its forward FLOPs. After its warm-up and pilot, if
``--rounds`` rounds of ``--epochs`` epochs are projected (from the warm-up's and the pilot's
set-up and steady epochs) to overrun the share, the model's epochs are lowered to fit (not below
``--min-epochs``; ``--no-fit-epochs`` keeps them), and the output says so. Before each round, if
it is projected (the first from those estimates, later ones as long as the last) to end past the
share (for the first round: past the whole budget), the model stops there and records how many
rounds ran and why.

    python benchmarks/gpu_study.py --out results.json   # device: vgg16 + resnext101, 224 px
    python benchmarks/gpu_study.py --tiny               # CPU smoke test: tiny nets, 32 px, k=2
    python benchmarks/gpu_study.py --concurrent 4 8 --budget-s 900 --no-cudnn-benchmark
    python benchmarks/gpu_study.py --models resnext101_32x16d --contiguous resnext101_32x16d

Data: synthetic slices at EGD's split sizes (327 train / 70 validation) and slice grid (233 x
197).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bare_loop import bare_loop, sync
from pytorch_lightning.callbacks import Callback
from stacked_runs import measure as measure_stacked

from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.configurations import PAPER_WINNER_ID
from idh_pseudocolor.models import create_model
from idh_pseudocolor.paper_path import PAPER_SWEEP_MODELS
from idh_pseudocolor.parameters import PermutationStudySettings
from idh_pseudocolor.search import PAPER_OPTIMUM
from idh_pseudocolor.training import RunConfig, train_run

REPO = Path(__file__).resolve().parents[1]

GOAL_SECONDS = 180  # issue 5: one configuration of the paper on an H100 in under 3 minutes
PAPER_EPOCHS = 40  # Table 1's fixed epochs: what "run s @40" projects to
PAPER_SEEDS = 3
ARMS = {"A": "train_run (project)", "B": "bare loop (same math)", "C": "concurrent train_run"}
RESERVE_S = 10.0  # kept back from the budget for tear-down and writing the results


def synthetic(n: int, height: int = 233, width: int = 197, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int8)  # about EGD's share of mutants
    images = rng.uniform(0, 1, (n, 4, height, width)).astype(np.float32)
    images[labels == 1, 1, height // 3 : height // 2, width // 3 : width // 2] += 0.5
    masks = np.zeros((n, height, width), np.uint8)
    masks[:, height // 3 : height // 2, width // 3 : width // 2] = 1
    return {
        "images": images,
        "masks": masks,
        "labels": labels,
        "subject_ids": np.array([f"S{i:04d}" for i in range(n)]),
        "sequences": np.array(["T1", "T1ce", "T2", "FLAIR"]),
    }


def _free(device: torch.device) -> None:
    """Drop the last run's tensors so the next arm starts from the same allocator state."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def matmul_flops_per_second(
    device: torch.device, dtype: torch.dtype, size: int, repeats: int, trials: int = 5
) -> float:
    """Measured dense matmul throughput: the floor's yardstick (not the datasheet's peak); the
    best of ``trials`` timings, so a moment of contention does not lower the floor."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def copy_bytes_per_second(
    device: torch.device, nbytes: int, repeats: int, trials: int = 5
) -> float:
    """Measured copy bandwidth: ``dst.copy_(src)`` on the device, read + write bytes per second
    (device memory on CUDA, main memory on CPU): the yardstick for memory-bound kernels; the
    best of ``trials`` timings."""
    src = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    sync(device)
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes * repeats / best


def forward_flops(model_name: str, image_size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = create_model(model_name, pretrained=False)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


class EpochClock(Callback):
    """When each training epoch ended (validation included; device synchronized), for set-up
    seconds apart from the steady state. Timing only: it changes nothing a run computes."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.ends = device, []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())


class ProfileEpoch(Callback):
    """``torch.profiler`` over one whole epoch (training and validation) of a run."""

    def __init__(self, epoch: int, device: torch.device) -> None:
        self.epoch, self.device, self.wall_s = epoch, device, 0.0
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            sync(self.device)
            self.profiler.start()
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            sync(self.device)
            self.wall_s = time.perf_counter() - self.start
            self.profiler.stop()


def _device_work(event: Any) -> bool:
    """A kernel, memcpy or memset on the GPU's timeline (not a range annotation mirrored there)."""
    kind = getattr(event, "activity_type", None)
    if kind is not None:
        return kind in ("kernel", "gpu_memcpy", "gpu_memset")
    return not getattr(event, "is_user_annotation", False)


def profile_summary(profiler: Any, wall_s: float, device: torch.device, top: int = 5) -> dict:
    """The profiled epoch in a few numbers: on CUDA the GPU-busy fraction (union of the kernels'
    and copies' intervals over the wall) and the top kernels by summed time; on CPU the top ops
    by self CPU time."""
    from torch.autograd import DeviceType

    gpu = [e for e in profiler.events() if e.device_type == DeviceType.CUDA and _device_work(e)]
    if device.type == "cuda" and gpu:
        busy_us, reach = 0.0, -math.inf
        for start, end in sorted((e.time_range.start, e.time_range.end) for e in gpu):
            busy_us += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for e in gpu:
            by_name[e.name][0] += e.time_range.elapsed_us()
            by_name[e.name][1] += 1
        ranked = sorted(by_name.items(), key=lambda kv: kv[1][0], reverse=True)
        return {
            "device": "cuda",
            "wall_s": wall_s,
            "gpu_busy_fraction": busy_us / 1e6 / wall_s,
            "kernels": len(gpu),
            "what": "top kernels by summed GPU time",
            "top": [
                {"name": n[:200], "ms": us / 1e3, "share": us / 1e6 / wall_s, "calls": c}
                for n, (us, c) in ranked[:top]
            ],
        }
    averages = profiler.key_averages()
    ranked = sorted(averages, key=lambda a: a.self_cpu_time_total, reverse=True)
    return {
        "device": device.type,
        "wall_s": wall_s,
        "gpu_busy_fraction": None,  # no GPU (or no kernel events recorded)
        "ops": len(averages),
        "what": "top ops by self CPU time",
        "top": [
            {
                "name": a.key[:200],
                "ms": a.self_cpu_time_total / 1e3,
                "share": a.self_cpu_time_total / 1e6 / wall_s,
                "calls": a.count,
            }
            for a in ranked[:top]
        ],
    }


def steady_split(seconds: float, epoch_ends: list[float], images_per_epoch: int) -> dict:
    """A run's wall seconds split into set-up and steady state (see the module's docstring);
    ``epoch_ends`` are seconds since the run's start. One epoch has no steady interval: None."""
    epochs = len(epoch_ends)
    intervals = [b - a for a, b in zip(epoch_ends, epoch_ends[1:], strict=False)]
    steady = statistics.median(intervals) if intervals else None
    return {
        "seconds": seconds,
        "epochs": epochs,
        "images_per_s": epochs * images_per_epoch / seconds,
        "steady_epoch_s": steady,
        "steady_images_per_s": images_per_epoch / steady if steady else None,
        "setup_s": seconds - epochs * steady if steady else None,
        "epoch_ends": epoch_ends,
    }


def fitted_epochs(
    requested: int, minimum: int, rounds: int, seconds_left: float, setup_s: float, epoch_s: float
) -> tuple[int, str | None]:
    """The most epochs (up to ``requested``, not below ``minimum``) for which ``rounds`` rounds
    of ``setup_s + epochs x epoch_s`` seconds each fit in ``seconds_left``, and why if fewer."""
    planned = rounds * (setup_s + requested * epoch_s)
    if planned <= seconds_left:
        return requested, None
    fit = math.floor((seconds_left / rounds - setup_s) / epoch_s) if epoch_s > 0 else requested
    epochs = max(minimum, min(requested, fit))
    return epochs, (
        f"budget: {rounds} rounds of {requested} epochs projected {planned:.0f} s, "
        f"{max(seconds_left, 0):.0f} s left for this model -> {epochs} epochs"
    )


def round_guard(projected_s: float, now: float, deadline: float, first: bool = False) -> str | None:
    """Why not to start the next round (projected: the last round's seconds, or the warm-up's and
    pilot's estimate for the first) because it would end past ``deadline``; None to go on."""
    if now + projected_s <= deadline:
        return None
    return (
        f"budget: the next round is projected at {projected_s:.0f} s, "
        f"{max(deadline - now, 0):.0f} s left " + ("in the budget" if first else "for this model")
    )


def process_age_s() -> float:
    """Seconds since this process started (Linux; else 0), so the budget counts the imports."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(stat[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time since boot
        return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


# ---------------------------------------------------------------- arm C's worker processes
_WORKER: dict[str, Any] = {}


def _init_worker(data: tuple, n_train: int, barriers: dict, threads: int, cuda: bool) -> None:
    """Each worker builds the same synthetic data once (not pickled per task)."""
    torch.set_num_threads(threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    arrays = synthetic(*data)
    ids = arrays["subject_ids"].tolist()
    _WORKER.update(
        arrays=arrays,
        train_ids=ids[:n_train],
        val_ids=ids[n_train:],
        barriers=barriers,
        device=torch.device("cuda" if cuda else "cpu"),
    )


def _ready(k: int) -> int:
    """Start-up: a CUDA context now rather than inside the first timed run; the barrier makes
    the pool start all its processes."""
    if _WORKER["device"].type == "cuda":
        torch.zeros(1, device=_WORKER["device"])
    _WORKER["barriers"][k].wait(timeout=600)
    return os.getpid()


def _concurrent_run(cfg: dict, k: int) -> dict:
    """One of arm C's k runs: wait for the other k - 1 (so they run at once, in k distinct
    processes), then one ``train_run`` timed as arm A's."""
    device = _WORKER["device"]
    entered = time.time()
    _WORKER["barriers"][k].wait(timeout=600)
    clock = EpochClock(device)
    started, start = time.time(), time.perf_counter()
    error = None
    try:
        train_run(
            _WORKER["arrays"],
            _WORKER["train_ids"],
            _WORKER["val_ids"],
            RunConfig(**cfg),
            callbacks=[clock],
            progress=False,
        )
        sync(device)
    except Exception as exc:  # an OOM at large k is a result, not a crash
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    seconds = time.perf_counter() - start
    _free(device)
    return {
        "pid": os.getpid(),
        "seed": cfg["seed"],
        "entered": entered,
        "started": started,
        "seconds": seconds,
        "epoch_ends": [t - start for t in clock.ends],
        "error": error,
    }


# ---------------------------------------------------------------- the arms
def arm_a(arrays, train_ids, val_ids, cfg: RunConfig, device, ipe: int, callbacks=()) -> dict:
    clock = EpochClock(device)
    sync(device)
    start = time.perf_counter()
    train_run(arrays, train_ids, val_ids, cfg, callbacks=[clock, *callbacks], progress=False)
    sync(device)
    seconds = time.perf_counter() - start
    return steady_split(seconds, [t - start for t in clock.ends], ipe)


def arm_b(arrays, train_idx, val_idx, cfg: RunConfig, device, ipe: int) -> dict:
    sync(device)
    start = time.perf_counter()
    result = bare_loop(arrays, train_idx, val_idx, cfg)
    seconds = time.perf_counter() - start
    return steady_split(seconds, [t - start for t in result.epoch_ends], ipe)


def arm_c(pool: ProcessPoolExecutor, cfgs: list[RunConfig], ipe: int) -> dict:
    """k runs at once. images/s: the k runs' images over their span (the first start to the last
    end, wall clock across the processes); steady images/s: the sum of the runs' steady rates
    (they overlap: one barrier starts them). ``submit_to_result_s`` adds the pool's dispatch."""
    k = len(cfgs)
    submitted, start = time.time(), time.perf_counter()
    try:
        futures = [pool.submit(_concurrent_run, asdict(cfg), k) for cfg in cfgs]
        runs = [f.result() for f in futures]
    except Exception as exc:  # a worker died (killed for memory): the pool is gone
        return {"k": k, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    submit_to_result = time.perf_counter() - start
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        return {"k": k, "error": errors[0], "pids": [r["pid"] for r in runs]}
    splits = [steady_split(r["seconds"], r["epoch_ends"], ipe) for r in runs]
    epochs = splits[0]["epochs"]
    steady = [s["steady_epoch_s"] for s in splits]
    steady_epoch = statistics.median(steady) if all(steady) else None
    wall = max(r["started"] + r["seconds"] for r in runs) - min(r["started"] for r in runs)
    return {
        "k": k,
        "seconds": wall,
        "submit_to_result_s": submit_to_result,
        "first_start_after_submit_s": min(r["started"] for r in runs) - submitted,
        "epochs": epochs,
        "images_per_s": k * epochs * ipe / wall,
        "steady_epoch_s": steady_epoch,
        "steady_images_per_s": sum(ipe / s for s in steady) if steady_epoch else None,
        "setup_s": statistics.median(s["setup_s"] for s in splits) if steady_epoch else None,
        "wall_setup_s": wall - epochs * steady_epoch if steady_epoch else None,
        "pids": [r["pid"] for r in runs],
        "seeds": [r["seed"] for r in runs],
        "runs": [{**r, **s} for r, s in zip(runs, splits, strict=True)],
        "error": None,
    }


def _median(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize_arm(rounds: list[dict], wall_setup_key: str = "setup_s") -> dict:
    """Per-arm medians over the rounds, and the projected paper-length (40-epoch) run."""
    ok = [r for r in rounds if not r.get("error")]
    out = {
        key: _median(ok, key)
        for key in ("seconds", "images_per_s", "steady_images_per_s", "steady_epoch_s", "setup_s")
    }
    setup, steady = _median(ok, wall_setup_key), out["steady_epoch_s"]
    out["paper_run_s"] = setup + PAPER_EPOCHS * steady if setup is not None and steady else None
    return {**out, "rounds": rounds}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _paired(rounds_a: list[dict], rounds_b: list[dict], key: str) -> float | None:
    """Median of the per-round ratios (each round's A against the same round's B: drift in the
    machine's speed between rounds cancels)."""
    ratios = [
        _ratio(a.get(key), b.get(key))
        for a, b in zip(rounds_a, rounds_b, strict=False)
        if not a.get("error") and not b.get("error")
    ]
    ratios = [r for r in ratios if r is not None]
    return statistics.median(ratios) if ratios else None


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        width = spec.split(".")[0]
        return format("-", f">{width}") if width.isdigit() else "-"
    return format(value, spec)


def memory_format_of(channels_last: Any, model_name: str) -> bool:
    """conf's ``fixed.channels_last`` for one model: a bool for every model or a mapping."""
    if isinstance(channels_last, Mapping):
        return bool(channels_last.get(model_name, False))
    return bool(channels_last)


# ---------------------------------------------------------------- main
def main() -> None:
    clock0 = time.perf_counter() - process_age_s()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke test: tiny timm nets, 32 px, few subjects"
    )
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"fixed epochs per run (paper: {PAPER_EPOCHS})"
    )
    parser.add_argument(
        "--min-epochs", type=int, default=None, help="the budget lowers epochs no further"
    )
    parser.add_argument(
        "--fit-epochs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower a model's epochs so its rounds fit the budget (else only stop rounds early)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds A B C")
    parser.add_argument(
        "--concurrent",
        type=int,
        nargs="+",
        default=None,
        help="arm C's k values (the best after a pilot is arm C); GPU default 2 4, --tiny 2",
    )
    parser.add_argument(
        "--pilot-epochs", type=int, default=2, help="epochs of each k's pilot (>= 2)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42],
        help="the first is arms A and B's; arm C's k runs take these, then the next integers",
    )
    parser.add_argument(
        "--budget-s", type=float, default=480.0, help="wall-clock budget of the whole benchmark"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the models (arms A, B, C)"
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cuDNN autotuning on/off (default: conf/l4's fixed.cudnn_benchmark on CUDA)",
    )
    parser.add_argument(
        "--contiguous",
        nargs="+",
        default=(),
        metavar="MODEL",
        help="models to run in NCHW on CUDA (the others: conf/l4's fixed.channels_last), e.g. "
        "to compare ResNeXt's grouped convolutions in both memory formats",
    )
    parser.add_argument(
        "--stacked",
        type=int,
        default=None,
        metavar="K",
        help="lever 5's micro-benchmark: K runs stacked by vmap against K separate runs' training "
        "steps (in arm A's memory format), after each model's warm-up "
        "(benchmarks/stacked_runs.py; default 4, --tiny 2, 0: not run)",
    )
    parser.add_argument(
        "--stacked-steps", type=int, default=None, help="timed steps of it (GPU 10, --tiny 2)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the results as JSON here"
    )
    args = parser.parse_args()
    if args.pilot_epochs < 2:
        parser.error("--pilot-epochs must be >= 2 (a steady epoch needs a second epoch)")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    if args.tiny:
        models, image_size, n_train, n_val, epochs, ks = (
            ["test_resnet", "test_byobnet"],
            32,
            48,
            16,
            2,
            [2],
        )
        height, width = 40, 34
    else:
        models, image_size, n_train, n_val, epochs, ks = (
            list(PAPER_SWEEP_MODELS),
            224,
            327,
            70,
            PAPER_EPOCHS,
            [2, 4] if cuda else [2],
        )
        height, width = 233, 197
    models = args.models or models
    stacked_k = (2 if args.tiny else 4) if args.stacked is None else args.stacked
    stacked_steps = args.stacked_steps or (2 if args.tiny else 10)
    requested_epochs = args.epochs or epochs
    min_epochs = min(args.min_epochs or (2 if args.tiny else 5), requested_epochs)
    ks = sorted(set(args.concurrent or ks))
    seed = args.seeds[0]
    c_seeds = [*args.seeds, *range(max(args.seeds) + 1, max(args.seeds) + 1 + max(ks))]

    arrays = synthetic(n_train + n_val, height, width)
    ids = arrays["subject_ids"].tolist()
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    train_idx, val_idx = np.arange(n_train), np.arange(n_train, n_train + n_val)
    # the sweep's settings on the L4 cluster (conf/paper + conf/l4) and the paper's optimum
    sweep = project_parameters(REPO, "l4")["permutation_study"]
    paper = {
        **PermutationStudySettings.from_params(sweep).fixed.run_config(),
        **{k: v for k, v in PAPER_OPTIMUM.items() if k != "max_epochs"},  # epochs: fixed below
    }
    efficient = dict(
        paper,
        config_id=PAPER_WINNER_ID,
        pretrained=False,
        learning_rate=1e-4,
        torch_threads=None,
        # arms A and B both create their networks (benchmarks/initial_weights.py measures
        # keeping them)
        initial_weights_cache=0,
        image_size=image_size,
        early_stopping=False,
        deterministic=False,
        accelerator="gpu" if cuda else "cpu",
        precision="bf16-mixed" if cuda else "32-true",
        device_resident=True,
        fused_optimizer=True,
        # conf/l4's memory format per model (a bool or {model: bool}) unless --contiguous
        channels_last={
            m: cuda and m not in args.contiguous and memory_format_of(paper["channels_last"], m)
            for m in models
        },
        compile=args.compile,
        cudnn_benchmark=cuda
        and (paper["cudnn_benchmark"] if args.cudnn_benchmark is None else args.cudnn_benchmark),
    )
    batch = efficient["batch_size"]
    steps = n_train // batch  # drop_last: full batches only
    ipe = steps * batch + n_val  # images per epoch: training + validation

    dtype = torch.bfloat16 if cuda else torch.float32
    throughput = matmul_flops_per_second(device, dtype, 8192 if cuda else 1024, 50 if cuda else 5)
    copy_bytes = 2**30 if cuda else 2**26
    bandwidth = copy_bytes_per_second(device, copy_bytes, 20 if cuda else 10)
    name = (
        torch.cuda.get_device_name(device)
        if cuda
        else f"CPU {platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"device: {name}, torch {torch.__version__}, pid {os.getpid()}", flush=True)
    print(
        f"measured: matmul {throughput / 1e12:.3f} TFLOP/s ({dtype}), copy "
        f"{bandwidth / 1e9:.1f} GB/s (read + write, {copy_bytes >> 20} MiB tensor)",
        flush=True,
    )

    # arm C's workers: started once, before the models, while the FLOPs are counted
    cpus = os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    barriers = {k: ctx.Barrier(k) for k in ks}
    pool = ProcessPoolExecutor(
        max_workers=max(ks),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(
            (n_train + n_val, height, width),
            n_train,
            barriers,
            max(1, cpus // max(ks)),
            cuda,
        ),
    )
    ready = [pool.submit(_ready, max(ks)) for _ in range(max(ks))]
    flops = {m: forward_flops(m, image_size) for m in models}
    worker_pids = sorted(f.result() for f in ready)
    start_up_s = time.perf_counter() - clock0
    deadline = clock0 + args.budget_s - RESERVE_S
    print(
        f"budget {args.budget_s:.0f} s ({start_up_s:.1f} s used by start-up); {args.rounds} "
        f"rounds A B C; k in {ks}; {requested_epochs} epochs requested; batch {batch}, "
        f"{image_size} px, {steps * batch} train + {n_val} val images per epoch; "
        f"{len(worker_pids)} worker processes",
        flush=True,
    )

    rows = []
    for position, model_name in enumerate(models):
        model_start = time.perf_counter()
        if model_start >= deadline:  # not even a warm-up: leave the device's time alone
            rows.append({"model": model_name, "skipped": "budget spent before this model"})
            print(f"\n== {model_name}: skipped, the budget was spent before it", flush=True)
            continue
        weights = [flops[m] for m in models[position:]]
        share = max(deadline - model_start, 0.0) * flops[model_name] / sum(weights)
        model_deadline = model_start + share
        per_epoch_flops = 3 * flops[model_name] * steps * batch + flops[model_name] * n_val
        floor_ips = ipe / (per_epoch_flops / throughput)

        # warm-up (kernels, caches, compile) with the profiler on its last epoch; its second
        # epoch and set-up estimate arms A and B for the budget
        profiler = ProfileEpoch(2, device)
        warm_cfg = RunConfig(model_name=model_name, seed=0, max_epochs=3, **efficient)
        warm = arm_a(arrays, train_ids, val_ids, warm_cfg, device, ipe, callbacks=[profiler])
        profile = profile_summary(profiler.profiler, profiler.wall_s, device)
        del profiler
        _free(device)

        # lever 5: k runs stacked into one vmapped model against k separate runs' steps
        stacked = None
        if stacked_k and time.perf_counter() < model_deadline:
            try:
                stacked = measure_stacked(
                    model_name,
                    stacked_k,
                    device,
                    image_size=image_size,
                    batch=batch,
                    steps=stacked_steps,
                    channels_last=efficient["channels_last"][model_name],
                )
            except Exception as exc:  # e.g. out of memory: the rest of the benchmark goes on
                stacked = {"k": stacked_k, "error": f"{type(exc).__name__}: {exc}"[:300]}
            _free(device)

        # pilot: every k once for a few epochs (also warms the workers up for this model)
        pilot = []
        for k in ks:
            cfgs = [
                RunConfig(
                    model_name=model_name,
                    seed=s,
                    max_epochs=args.pilot_epochs,
                    **{**efficient, "torch_threads": max(1, cpus // k)},
                )
                for s in c_seeds[:k]
            ]
            pilot.append(arm_c(pool, cfgs, ipe))
        usable = [p for p in pilot if not p.get("error") and p.get("steady_images_per_s")]
        best = max(usable, key=lambda p: p["steady_images_per_s"]) if usable else None
        k = best["k"] if best else None

        # epochs that fit this model's share, from the warm-up's and the pilot's steady epochs
        ends = warm["epoch_ends"]
        a_epoch = ends[1] - ends[0]  # the third epoch was profiled: slower
        a_setup = ends[0] - a_epoch
        c_epoch = best["steady_epoch_s"] if best else 0.0
        c_setup = best["wall_setup_s"] if best else 0.0
        round_setup, round_epoch = 2 * max(a_setup, 0.0) + max(c_setup, 0.0), 2 * a_epoch + c_epoch
        epochs, epochs_reason = (
            fitted_epochs(
                requested_epochs,
                min_epochs,
                args.rounds,
                model_deadline - time.perf_counter(),
                round_setup,
                round_epoch,
            )
            if args.fit_epochs
            else (requested_epochs, None)
        )
        if epochs_reason is None and epochs != PAPER_EPOCHS and not args.tiny:
            epochs_reason = "set by --epochs"

        arms: dict[str, list[dict]] = {"A": [], "B": [], "C": []}
        order, stop_reason = [], None
        projected = round_setup + epochs * round_epoch  # the first round's, then the last's
        for r in range(1, args.rounds + 1):
            # the first round may take what is left of the whole budget, later ones this model's
            round_start = time.perf_counter()
            stop_reason = round_guard(
                projected, round_start, deadline if r == 1 else model_deadline, r == 1
            )
            if stop_reason:
                break
            cfg = RunConfig(model_name=model_name, seed=seed, max_epochs=epochs, **efficient)
            arms["A"].append(arm_a(arrays, train_ids, val_ids, cfg, device, ipe))
            order.append(f"A{r}")
            _free(device)
            arms["B"].append(arm_b(arrays, train_idx, val_idx, cfg, device, ipe))
            order.append(f"B{r}")
            _free(device)
            if k is not None:
                cfgs = [
                    RunConfig(
                        model_name=model_name,
                        seed=s,
                        max_epochs=epochs,
                        **{**efficient, "torch_threads": max(1, cpus // k)},
                    )
                    for s in c_seeds[:k]
                ]
                arms["C"].append(arm_c(pool, cfgs, ipe))
                order.append(f"C{r}")
            for arm in arms.values():
                if len(arm) == r:
                    arm[-1]["round"] = r
            projected = time.perf_counter() - round_start

        summary = {
            "A": summarize_arm(arms["A"]),
            "B": summarize_arm(arms["B"]),
            "C": {"k": k, **summarize_arm(arms["C"], "wall_setup_s")},
        }
        ratios = {
            "A/B": _paired(arms["A"], arms["B"], "images_per_s"),
            "B/floor": _ratio(summary["B"]["images_per_s"], floor_ips),
            "A/floor": _ratio(summary["A"]["images_per_s"], floor_ips),
            "C/floor": _ratio(summary["C"]["images_per_s"], floor_ips),
        }
        steady_ratios = {
            "A/B": _paired(arms["A"], arms["B"], "steady_images_per_s"),
            "B/floor": _ratio(summary["B"]["steady_images_per_s"], floor_ips),
            "A/floor": _ratio(summary["A"]["steady_images_per_s"], floor_ips),
            "C/floor": _ratio(summary["C"]["steady_images_per_s"], floor_ips),
        }
        row = {
            "model": model_name,
            "forward_gflops_per_image": flops[model_name] / 1e9,
            "epochs": epochs,
            "epochs_requested": requested_epochs,
            "epochs_reason": epochs_reason,
            "rounds_planned": args.rounds,
            "rounds_completed": len(arms["A"]),
            "stop_reason": stop_reason,
            "order": order,
            "share_s": share,
            "seconds": time.perf_counter() - model_start,
            "images_per_epoch": ipe,
            "floor_images_per_s": floor_ips,
            "floor_seconds_per_run": epochs * ipe / floor_ips,
            "warm_up": warm,
            "profile": profile,
            "stacked": stacked,
            "pilot": pilot,
            "concurrent_k": k,
            "arms": summary,
            "ratios": ratios,
            "steady_ratios": steady_ratios,
        }
        rows.append(row)
        print_model(row)

    pool.shutdown(wait=True, cancel_futures=True)
    serial = [r["arms"]["A"]["paper_run_s"] if "arms" in r else None for r in rows]
    projection = PAPER_SEEDS * sum(serial) if all(s is not None for s in serial) else None
    result = {
        "device": name,
        "torch": torch.__version__,
        "pid": os.getpid(),
        "worker_pids": worker_pids,
        "matmul_tflops": throughput / 1e12,
        "dtype": str(dtype),
        "copy_gb_per_s": bandwidth / 1e9,
        "copy_bytes": copy_bytes,
        "image_size": image_size,
        "batch_size": batch,
        "train_images": steps * batch,
        "val_images": n_val,
        "compile": args.compile,
        "cudnn_benchmark": efficient["cudnn_benchmark"],
        "channels_last": efficient["channels_last"],
        "concurrent": ks,
        "budget_s": args.budget_s,
        "start_up_s": start_up_s,
        "runs": rows,
        "configuration_projection_s": projection,
        "goal_seconds": None if args.tiny else GOAL_SECONDS,
        "elapsed_s": time.perf_counter() - clock0,
    }
    print(
        f"one configuration ({len(models)} models x {PAPER_SEEDS} seeds x {PAPER_EPOCHS} epochs) "
        f"with arm A in series, projected from set-up + steady epochs: "
        f"{_fmt(projection, '.1f')} s"
        + ("" if args.tiny else f" (goal < {GOAL_SECONDS} s)")
        + f"; benchmark wall {result['elapsed_s']:.1f} s of budget {args.budget_s:.0f} s",
        flush=True,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


def print_model(row: dict) -> None:
    """The model's table: one row per arm (medians over rounds), ratios, profile and pilot."""
    arms, k = row["arms"], row["concurrent_k"]
    print(
        f"\n== {row['model']}: {row['forward_gflops_per_image']:.4g} GFLOP/img forward; "
        f"{row['epochs']} epochs (requested {row['epochs_requested']}); rounds "
        f"{row['rounds_completed']}/{row['rounds_planned']}; order {' '.join(row['order']) or '-'}"
    )
    if row["epochs_reason"]:
        print(f"   epochs: {row['epochs_reason']}")
    if row["stop_reason"]:
        print(f"   stopped: {row['stop_reason']}")
    print(
        f"   floor {row['floor_images_per_s']:.1f} img/s (3 x forward FLOPs per training image "
        f"+ 1 x per validation image, at the measured matmul rate)"
    )
    pilot = ", ".join(
        f"k={p['k']} "
        + (
            f"failed ({p['error'][:80]})"
            if p.get("error")
            else f"{_fmt(p['steady_images_per_s'], '.1f')} img/s steady"
        )
        for p in row["pilot"]
    )
    print(f"   pilot ({row['pilot'][0].get('epochs', '-')} epochs): {pilot} -> arm C: k={k}")
    prof = row["profile"]
    busy = prof["gpu_busy_fraction"]
    tops = "; ".join(f"{t['name'][:60]} {t['ms']:.1f} ms ({t['share']:.0%})" for t in prof["top"])
    print(
        f"   profile of arm A (one epoch, {prof['device']}, {prof['wall_s']:.2f} s"
        + (f", GPU busy {busy:.1%}" if busy is not None else "")
        + f"), {prof['what']}: {tops}"
    )
    stacked = row.get("stacked")
    if stacked and stacked.get("error"):
        print(f"   stacked k={stacked['k']}: failed ({stacked['error'][:120]})")
    elif stacked:
        print(
            f"   stacked k={stacked['k']} (training steps, {stacked['steps']} timed): separate "
            f"{stacked['separate_images_per_s']:.1f} img/s, stacked "
            f"{stacked['stacked_images_per_s']:.1f} img/s, stacked/separate "
            f"{stacked['stacked_over_separate']:.3f}"
        )
    what = {**ARMS, "C": f"{k} x train_run, {k} processes" if k else "not run"}
    print(
        f"   {'arm':3} | {'what':28} | {'seconds per round':24} | {'median s':>8} | "
        f"{'img/s':>9} | {'steady img/s':>12} | {'setup s':>7} | {'run s @' + str(PAPER_EPOCHS):>9}"
    )
    for arm, s in arms.items():
        per_round = " ".join(
            "err" if r.get("error") else f"{r['seconds']:.2f}" for r in s["rounds"]
        )
        print(
            f"   {arm:3} | {what[arm]:28} | {per_round:24} | {_fmt(s['seconds'], '8.2f')} | "
            f"{_fmt(s['images_per_s'], '9.1f')} | {_fmt(s['steady_images_per_s'], '12.1f')} | "
            f"{_fmt(s['setup_s'], '7.2f')} | {_fmt(s['paper_run_s'], '9.1f')}"
        )
    for label, key in (("ratios (img/s):", "ratios"), ("steady ratios: ", "steady_ratios")):
        print(
            f"   {label} " + " | ".join(f"{name} {_fmt(v, '.4g')}" for name, v in row[key].items())
        )
    errors = [r["error"] for r in arms["C"]["rounds"] if r.get("error")]
    if errors:
        print(f"   arm C failed in {len(errors)} round(s): {errors[0][:200]}")
    print(flush=True)


if __name__ == "__main__":
    main()
