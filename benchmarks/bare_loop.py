"""A bare PyTorch training loop with the same math as the project's ``train_run``.

The yardstick for the Lightning path's overhead (``training_overhead.py``, arm B of
``gpu_study.py``): no Lightning, no callbacks, no logging, but the same model
(:func:`~idh_pseudocolor.models.create_model`), the same composed inputs
(:func:`~idh_pseudocolor.training.prepare_inputs`), the same batches (a ``torch.randperm`` per
epoch from a generator seeded with the run's seed, drawn as a shuffling DataLoader draws it;
``drop_last`` as the project's), the same optimizer and schedule (AdamW, fused where the run's is;
OneCycle per epoch or per step), the same precision (bf16 autocast, or float64 for equivalence
tests), memory format and validation work per epoch (softmax, loss, :func:`binary_metrics`).
Because the math is the same, a float64 run of both gives the same validation losses.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from idh_pseudocolor.configurations import configuration
from idh_pseudocolor.metrics import binary_metrics
from idh_pseudocolor.models import create_model
from idh_pseudocolor.training import (
    RunConfig,
    compiled,
    prepare_inputs,
    torch_threads,
    training_device,
    weights_file_for,
)

#: Lightning's precision names this loop reproduces (16-mixed would need a GradScaler).
PRECISIONS = ("32-true", "32", "bf16-mixed", "64-true", "64")


@dataclass
class BareResult:
    """What a bare run measured: its wall seconds, when each epoch ended (``time.perf_counter``
    values, validation included) and each epoch's validation loss."""

    seconds: float
    epoch_ends: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)


def sync(device: torch.device) -> None:
    """Waits for the device's queued work (timings end there)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    arrays: dict[str, np.ndarray], train_idx: np.ndarray, val_idx: np.ndarray, cfg: RunConfig
) -> BareResult:
    """Train ``cfg``'s run by hand for ``cfg.max_epochs`` epochs (no early stopping) and return
    its timings and validation losses. Timed from the first line, as a timed ``train_run`` is."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"the bare loop reproduces precision {PRECISIONS}, not {cfg.precision!r}")
    start = time.perf_counter()
    device = training_device(cfg.accelerator)
    double = cfg.precision.startswith("64")
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16-mixed"
        else nullcontext()
    )
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    result = BareResult(seconds=0.0)
    with torch_threads(cfg.torch_threads):
        # what pl.seed_everything seeds, then the model's initialization draws from torch's RNG
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        torch.use_deterministic_algorithms(cfg.deterministic)
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        model, weights = create_model(
            cfg.model_name,
            cfg.pretrained,
            weights_file_for(cfg.weights_file, cfg.model_name),
            in_chans=len(configuration(cfg.config_id)),
        )
        x, y = prepare_inputs(arrays, train_idx, cfg, weights)
        xv, yv = prepare_inputs(arrays, val_idx, cfg, weights)
        if double:
            model, x, xv = model.double(), x.double(), xv.double()
        model = model.to(device, memory_format=fmt)
        x, xv = (t.to(device, memory_format=fmt) for t in (x, xv))
        y, yv = y.to(device), yv.to(device)
        forward = compiled(model, cfg.compile)
        opt = torch.optim.AdamW(
            model.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            fused=cfg.fused_optimizer and device.type == "cuda",
        )
        batch = cfg.batch_size
        steps = len(y) // batch if len(y) > batch else 1  # drop_last unless one batch or less
        per_step = cfg.lr_interval == "step"
        sched = (
            torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=cfg.learning_rate,
                total_steps=cfg.max_epochs * (steps if per_step else 1),
                pct_start=cfg.peak_fraction,
            )
            if cfg.superconvergence
            else None
        )
        g = torch.Generator().manual_seed(cfg.seed)
        val_batch = max(64, batch)
        for _ in range(cfg.max_epochs):
            model.train()
            torch.empty((), dtype=torch.int64).random_(generator=g)  # a DataLoader's base seed
            order = torch.randperm(len(y), generator=g).to(device)
            for i in range(steps):
                index = order[i * batch : (i + 1) * batch]
                with autocast:
                    loss = F.cross_entropy(forward(x[index]), y[index])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None and per_step:
                    sched.step()
            if sched is not None and not per_step:
                sched.step()
            model.eval()
            with torch.inference_mode(), autocast:  # as Lightning's validation
                logits = torch.cat(
                    [forward(xv[i : i + val_batch]).float() for i in range(0, len(yv), val_batch)]
                )
            result.val_losses.append(float(F.cross_entropy(logits, yv)))
            prob = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
            binary_metrics(yv.cpu().numpy(), prob)
            result.epoch_ends.append(time.perf_counter())
    sync(device)
    result.seconds = time.perf_counter() - start
    return result
