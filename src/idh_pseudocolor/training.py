"""One training run: a timm model finetuned (or trained from scratch) on pseudo-colored slices.

Read top to bottom: the run's settings, the Lightning module (loss, optimizer, schedule,
validation metrics), then :func:`train_run`, which builds everything and fits. Data stay in
memory as tensors (a cohort is a few hundred slices), so an epoch does no file I/O.
"""

from __future__ import annotations

import copy
import hashlib
import math
import multiprocessing
import pickle
import random
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, EarlyStopping, TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from idh_pseudocolor.arms import arm_slug
from idh_pseudocolor.configurations import configuration, configuration_label
from idh_pseudocolor.metrics import METRICS, binary_metrics
from idh_pseudocolor.models import WeightsInfo, create_model
from idh_pseudocolor.pseudocolor import compose, normalization_stats

#: Lightning warnings that do not apply here, silenced inside a run only (never at import): no
#: dataloader workers for in-memory tensors, few batches on small cohorts, a Lightning/torch
#: deprecation, and OneCycle stepped per epoch, which the paper does on purpose (Table 1).
QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*OneCycleLR. scheduler is using 'interval': 'epoch'.*",
)


@dataclass
class RunConfig:
    """Everything that defines a run: configuration x model x pretrained x seed, the
    hyperparameters (the search's best_params, Table 1) and the settings a pipeline holds fixed
    (:class:`~idh_pseudocolor.parameters.FixedSettings`). No defaults: every value comes from conf
    (``conf/base`` and the environment's layers), so nothing a run depends on is hidden here."""

    model_name: str
    config_id: int
    seed: int
    pretrained: bool
    # hyperparameters (Table 1)
    learning_rate: float
    superconvergence: bool  # OneCycleLR; else constant learning rate
    peak_fraction: float  # OneCycle pct_start
    lr_interval: str  # OneCycle steps per "step" or per "epoch"
    max_epochs: int
    mask_non_tumor: bool
    # fixed by the pipeline: the experiment's
    batch_size: int
    image_size: int
    early_stopping: bool
    early_stopping_patience: int
    weight_decay: float
    # fixed by the pipeline: the machine's (where and how fast; never the numbers, except where
    # a GPU kernel is not deterministic)
    weights_file: str | dict[str, str] | None  # one file, or {model_name: file}
    precision: str
    accelerator: str
    torch_threads: int | None  # CPU threads inside the run (None: torch's default)
    deterministic: bool
    device_resident: bool  # batches sliced from tensors that already live on the device
    fused_optimizer: bool  # one AdamW kernel for all parameters on CUDA
    # NHWC for every model, or {model: bool} (a model's full timm name or its architecture,
    # e.g. vgg16 for vgg16.tv_in1k; models not named: torch's default, NCHW); a RunConfig keeps
    # only its own model's choice
    channels_last: bool | dict[str, bool]
    compile: bool | str  # torch.compile: false, true (inductor) or a backend's name
    # cuDNN autotuning (Lightning's ``benchmark``): picks the fastest kernel per shape, which
    # matters most for grouped convolutions (ResNeXt); not deterministic
    cudnn_benchmark: bool
    # networks as created kept per process (:class:`InitialWeights`); 0: none, each run creates
    # its own
    initial_weights_cache: int

    def __post_init__(self) -> None:
        configuration(self.config_id)  # validates the id
        if (
            not isinstance(self.initial_weights_cache, int)
            or isinstance(self.initial_weights_cache, bool)
            or self.initial_weights_cache < 0
        ):
            raise ValueError(
                "initial_weights_cache is a number of networks (0: none), got "
                f"{self.initial_weights_cache!r}"
            )
        if isinstance(self.channels_last, Mapping):
            # per model: grouped convolutions (ResNeXt) can be slower in channels_last than
            # plain ones (VGG) with some cuDNN versions
            self.channels_last = per_model(self.channels_last, self.model_name, False)
        if self.lr_interval not in ("step", "epoch"):
            raise ValueError(f"lr_interval must be 'step' or 'epoch', got {self.lr_interval!r}")
        if isinstance(self.compile, str):
            if self.compile not in torch.compiler.list_backends(exclude_tags=()):
                raise ValueError(
                    f"compile = {self.compile!r} is not a torch.compile backend here: use false, "
                    f"true (inductor) or one of {', '.join(torch.compiler.list_backends())}"
                )


@dataclass
class RunResult:
    """Validation metrics at the best epoch (lowest validation loss) and provenance."""

    config: RunConfig
    weights: WeightsInfo
    best_epoch: int
    epochs_run: int
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    val_subject_ids: list[str] = field(default_factory=list)
    val_prob_mutant: list[float] = field(default_factory=list)
    # held-out subjects scored by the best epoch
    eval_subject_ids: list[str] = field(default_factory=list)
    eval_prob_mutant: list[float] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] | None = None


class DeviceBatches:
    """Mini-batches sliced from tensors resident on the training device (no collate, no copy).

    Shuffles with ``torch.randperm(generator)`` each epoch, exactly as a shuffling DataLoader
    with that generator does, so runs match the DataLoader path batch for batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.generator, self.drop_last = (
            x,
            y,
            batch_size,
            shuffle,
            generator,
            drop_last,
        )

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.y)
        order = None
        if self.shuffle:
            # a DataLoader draws its workers' base seed from the generator before shuffling
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        for i in range(len(self)):
            if order is None:
                yield (
                    self.x[i * self.batch_size : (i + 1) * self.batch_size],
                    self.y[i * self.batch_size : (i + 1) * self.batch_size],
                )
            else:
                index = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.x[index], self.y[index]
        if self.shuffle and not self.drop_last and n % self.batch_size:
            # a partial last batch runs the DataLoader's sampler dry, which draws (and discards)
            # one more permutation: the next epoch's order depends on it
            torch.randperm(n, generator=self.generator)


def show_progress(progress: bool | None) -> bool:  # pragma: no mutate block
    """Whether a run draws its epoch bar: ``progress`` when set; when None, only where a person
    watches: stderr is a terminal (not CI, not a log file) and this is the main process (the
    bars of ParallelRunner's or Dask's workers would overwrite each other; their runs' log lines
    say how far a sweep is)."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and multiprocessing.parent_process() is None


class RunProgressBar(TQDMProgressBar):  # pragma: no mutate block
    """Lightning's bar on stderr (log lines go to stdout), named after the run, with its epoch
    out of ``max_epochs``; it disappears when the run ends, leaving the run's log line. Its
    lines are the first free ones, below a bar already shown (the search's trials)."""

    def __init__(self, label: str) -> None:
        super().__init__(leave=False)
        self.label = label

    # plain tqdm bars (Lightning's own subclass is not public): on stderr, below bars already shown
    def init_train_tqdm(self) -> tqdm:
        return tqdm(
            desc=self.label,
            position=None,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def init_validation_tqdm(self) -> tqdm:
        return tqdm(
            desc="validation",
            position=None,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(
            f"{self.label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        )


class HardwareUnavailable(RuntimeError):
    """The run asks for an accelerator this machine does not have."""


def require_accelerator(accelerator: str) -> None:  # pragma: no mutate block
    """Fail with a plain sentence, before any work, when ``accelerator`` is not here."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
        raise HardwareUnavailable(
            f"torch {torch.__version__} ({build} build) sees no CUDA GPU on this machine"
        )


def per_model(mapping: Mapping[str, Any], model_name: str, default: Any = None) -> Any:
    """``model_name``'s entry of a per-model setting: under its full timm name
    (``vgg16.tv_in1k``), else under its architecture (``vgg16``), else ``default``."""
    if model_name in mapping:
        return mapping[model_name]
    return mapping.get(model_name.split(".", 1)[0], default)


def weights_file_for(weights_file: str | dict[str, str] | None, model_name: str) -> str | None:
    """The local weights file for ``model_name``: one file for every model, or a per-model
    mapping (:func:`per_model`)."""
    if isinstance(weights_file, Mapping):
        return per_model(weights_file, model_name)
    return weights_file


def software_versions() -> dict[str, str]:  # pragma: no mutate block
    """What a run's numbers depend on besides its settings and seed; recorded with every run."""
    import timm

    return {
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "lightning_version": pl.__version__,
    }


def training_device(accelerator: str) -> torch.device:  # pragma: no mutate block
    """The device Lightning will train on for ``accelerator`` with ``devices=1``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


class PseudocolorClassifier(pl.LightningModule):
    """Cross-entropy on two classes; AdamW; OneCycle or constant LR; metrics from one confusion
    matrix."""

    def __init__(
        self, model: torch.nn.Module, cfg: RunConfig, steps_per_epoch: int, keep_state: bool = False
    ) -> None:
        super().__init__()
        self.model, self.cfg, self.steps_per_epoch, self.keep_state = (
            model,
            cfg,
            steps_per_epoch,
            keep_state,
        )
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"val_loss": math.inf}
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        # the compiled graph is kept outside the module tree, so state_dict keys stay timm's
        object.__setattr__(self, "_forward", compiled(model, cfg.compile))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        # for the progress bar: accumulated on device, no per-step sync (not a number we report)
        self.log("train_loss", loss, on_step=False, on_epoch=True)  # pragma: no mutate
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self._val_logits.append(self(x).float())
        self._val_labels.append(y)

    def on_validation_epoch_end(self) -> None:
        logits, labels = torch.cat(self._val_logits), torch.cat(self._val_labels)
        self._val_logits.clear()
        self._val_labels.clear()
        loss = float(F.cross_entropy(logits, labels))
        prob = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        metrics = {
            k: v for k, v in binary_metrics(labels.cpu().numpy(), prob).items() if k in METRICS
        }
        self.log_dict(
            {
                "val_loss": loss,
                **{f"val_{k}": (0.0 if math.isnan(v) else v) for k, v in metrics.items()},
            }
        )
        row = {"epoch": int(self.current_epoch), "val_loss": loss, **metrics}
        self.history.append(row)
        if loss < self.best["val_loss"]:  # the epoch early stopping will point back to
            # a copy on the model's device, in one buffer allocated once: no host transfer per
            # improving epoch (train_run moves the best one to the host once)
            state = self.best.get("state")
            if self.keep_state and state is None:
                state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            elif self.keep_state:
                for k, v in self.model.state_dict().items():
                    state[k].copy_(v.detach())
            self.best = {**row, "prob": prob, "state": state}

    def configure_optimizers(self):
        # one kernel for all parameters, not a loop
        fused = self.cfg.fused_optimizer and self.device.type == "cuda"
        optimizer = torch.optim.AdamW(
            self.parameters(),
            lr=self.cfg.learning_rate,
            weight_decay=self.cfg.weight_decay,
            fused=fused,
        )
        if not self.cfg.superconvergence:
            return optimizer
        per_step = self.cfg.lr_interval == "step"
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.cfg.learning_rate,
            total_steps=self.cfg.max_epochs * (self.steps_per_epoch if per_step else 1),
            pct_start=self.cfg.peak_fraction,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.cfg.lr_interval},
        }


def compiled(model: torch.nn.Module, compile: bool | str) -> torch.nn.Module:
    """``model`` through ``torch.compile`` (``True``: its default backend, inductor; a string:
    that backend, e.g. ``"cudagraphs"`` on a GPU), or ``model`` itself for ``False``."""
    if compile is False:
        return model
    return torch.compile(model, backend="inductor" if compile is True else compile)


def prepare_inputs(
    arrays: Mapping[str, np.ndarray],
    index: np.ndarray,
    cfg: RunConfig,
    weights: WeightsInfo | None = None,
    cache: InputCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite images and labels for the subjects at ``index``, standardized as the run's
    ``weights`` expect (their ``mean``/``std``: timm's data config for the model); a run from
    scratch keeps the [0, 1] values. With a ``cache`` (made for these ``arrays``) the same
    inputs are composed once for all the runs that ask for them."""
    if cfg.pretrained and weights is None:
        raise ValueError(
            "a pretrained run's inputs are standardized as its weights expect: pass its WeightsInfo"
        )
    n_channels = len(configuration(cfg.config_id))
    normalize = normalization_stats(n_channels, weights.normalization if weights else None)
    if cache is not None:
        if cache.arrays is not arrays:
            raise ValueError("this InputCache was made for other slice arrays")
        key = (index.tobytes(), cfg.config_id, cfg.image_size, cfg.mask_non_tumor, normalize)
        if (kept := cache.get(key)) is not None:
            return kept
    x = compose(
        arrays["images"][index],
        arrays["masks"][index],
        cfg.config_id,
        cfg.image_size,
        mask_tumor_only=cfg.mask_non_tumor,
        normalize=normalize,
    )
    inputs = x, torch.as_tensor(arrays["labels"][index].astype(np.int64))
    if cache is not None:
        cache.put(key, inputs)
    return inputs


class RecentlyUsed:
    """The ``max_entries`` most recently used values by key, and how often one was found
    (``hits``): what :class:`InputCache` and :class:`InitialWeights` keep."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = 0

    def get(self, key: tuple) -> Any:
        """The value kept for ``key`` (now the most recently used), or None."""
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return self.entries[key]

    def put(self, key: tuple, value: Any) -> None:
        self.entries[key] = value
        self.trim()

    def trim(self) -> None:
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class InputCache(RecentlyUsed):
    """Composite inputs shared by the runs of one node: a configuration's models x seeds, the
    winner recipe's arms, a search's trials compose the same slices the same way, and composing
    (an antialiased resize of every slice) costs about a tenth of a demo run. An entry is keyed
    by everything composition depends on (subjects, configuration, image size, masking, the
    weights' standardization), so a run that differs in any of it composes anew; the
    ``max_entries`` most recently used are kept (a run asks for training, validation and
    perhaps test inputs). Runs only read their inputs; tests check they are left unchanged."""

    def __init__(self, arrays: Mapping[str, np.ndarray], max_entries: int = 3) -> None:
        super().__init__(max_entries)
        self.arrays = arrays


class InitialWeights(RecentlyUsed):
    """Networks as created, kept for the runs that start from them. Creating a network costs
    timm's random initialization and, pretrained from a file, reading it twice (the weights, then
    the check that they cover the network): about 1.3 s a run for VGG16 or ResNeXt-101 32x16d on
    two CPU cores (``benchmarks/initial_weights.py``). Every configuration of the sweep starts its
    (model, seed) runs from the same networks, so a process pays this once per (model, seed), not
    once per run.

    An entry is keyed by everything creation depends on: the model, ``pretrained``, the weights
    file (its path as given, which the run records, and its device, inode, size, modification and
    change times: a file written again is read again), the input channels and the random
    generators' state before creation (the run's seed). A hit returns a copy of the kept network
    and puts the generators where creating it left them, so the run draws the same batches as a
    run that created its network: the same run, bitwise (tests). Not kept: hub weights (the HF
    cache may change or go between runs: each run asks the hub as before) and a file modified in
    the last two seconds (coarse file times could not tell it from its next version). The
    ``max_entries`` most recently used are kept (``fixed.initial_weights_cache``; host memory:
    ~0.8 GB per ResNeXt-101 entry, ~0.5 GB per VGG16 one)."""

    def __init__(self, max_entries: int = 0) -> None:
        super().__init__(max_entries)

    def network(self, cfg: RunConfig) -> tuple[torch.nn.Module, WeightsInfo]:
        """``cfg``'s network as :func:`~idh_pseudocolor.models.create_model` makes it now (the
        random generators as the run seeded them), created or copied from a kept one. A run with
        ``cfg.initial_weights_cache`` n > 0 makes this process keep n networks from here on; one
        with 0 creates its own and leaves the kept ones alone."""
        weights_file = weights_file_for(cfg.weights_file, cfg.model_name)
        in_chans = len(configuration(cfg.config_id))
        identity = _file_identity(weights_file) if cfg.pretrained else None
        if cfg.initial_weights_cache == 0 or (cfg.pretrained and identity is None):
            return create_model(cfg.model_name, cfg.pretrained, weights_file, in_chans=in_chans)
        self.max_entries = cfg.initial_weights_cache
        self.trim()
        key = (cfg.model_name, cfg.pretrained, identity, in_chans, _digest(_random_state()))
        if (kept := self.get(key)) is not None:
            network, weights, after = kept
            _set_random_state(after)
            return copy.deepcopy(network), weights
        model, weights = create_model(
            cfg.model_name, cfg.pretrained, weights_file, in_chans=in_chans
        )
        self.put(key, (copy.deepcopy(model), weights, _random_state()))
        return model, weights


#: this process's kept networks (a ParallelRunner or Dask worker keeps its own)
INITIAL_WEIGHTS = InitialWeights()


def _random_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_random_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _digest(state: tuple) -> str:
    torch_state, *others = state
    return hashlib.sha256(torch_state.numpy().tobytes() + pickle.dumps(others)).hexdigest()


def _file_identity(weights_file: str | None) -> tuple | None:
    """What tells a weights file from another one, or from itself written again, without
    reading it; None where that cannot be told: no file (hub weights), none there (create_model
    says what is wrong), or one modified in the last two seconds."""
    if not weights_file:
        return None
    path = Path(weights_file).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return None
    if time.time_ns() - stat.st_mtime_ns < 2_000_000_000:
        return None
    return str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def split_index(arrays: dict[str, np.ndarray], split_ids: Sequence[str]) -> np.ndarray:
    """Positions in the slice arrays of the given subject ids (order of ``split_ids``)."""
    position = {sid: i for i, sid in enumerate(arrays["subject_ids"].tolist())}
    missing = [s for s in split_ids if s not in position]
    if missing:
        raise KeyError(f"{len(missing)} split subject(s) have no slice, e.g. {missing[:3]}")
    return np.array([position[s] for s in split_ids], dtype=int)


def train_run(
    arrays: dict[str, np.ndarray],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    cfg: RunConfig,
    callbacks: Sequence[Callback] = (),
    keep_state: bool = False,
    evaluate_ids: Sequence[str] = (),
    progress: bool | None = None,
    inputs: InputCache | None = None,
) -> RunResult:
    """Fit one run and return validation metrics at its best epoch.

    ``evaluate_ids`` (the final evaluation's test subjects) are scored once, after training,
    by the model of the best epoch; they play no part in training or model selection.
    ``progress``: an epoch bar (None: only where a person watches, see :func:`show_progress`).
    ``inputs``: composite inputs shared with the node's other runs (same numbers, composed once).
    """
    require_accelerator(cfg.accelerator)
    with torch_threads(cfg.torch_threads), warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        model, weights = INITIAL_WEIGHTS.network(cfg)
        train_loader, val_loader = _loaders(arrays, train_ids, val_ids, cfg, weights, inputs)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        module = PseudocolorClassifier(
            model,
            cfg,
            steps_per_epoch=len(train_loader),
            keep_state=keep_state or bool(evaluate_ids),
        )
        _trainer(cfg, callbacks, show_progress(progress)).fit(module, train_loader, val_loader)
        best = module.best
        eval_prob: list[float] = []
        if evaluate_ids:
            model.load_state_dict(best["state"])
            x_eval, _ = prepare_inputs(
                arrays, split_index(arrays, evaluate_ids), cfg, weights, inputs
            )
            # scored where the run trained (eval mode, no autocast), not after a copy to the host
            eval_prob = predict_proba(model, x_eval, device=training_device(cfg.accelerator))
            eval_prob = eval_prob.tolist()
            model.to("cpu")  # nothing of a finished run stays on the device
        # what the caller saves: host tensors; the device copy goes now, not when Python's cycle
        # collector reaches the trainer and module
        state = {k: v.to("cpu") for k, v in best["state"].items()} if keep_state else None
        best["state"] = module.best["state"] = None
    return RunResult(
        config=cfg,
        weights=weights,
        best_epoch=int(best["epoch"]),
        epochs_run=len(module.history),
        metrics={k: float(best[k]) for k in METRICS},
        history=module.history,
        val_subject_ids=list(val_ids),
        val_prob_mutant=[float(p) for p in best["prob"]],
        eval_subject_ids=list(evaluate_ids),
        eval_prob_mutant=eval_prob,
        state_dict=state,
    )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``n`` for the block (None: unchanged), then restored. The same
    thread count in any process gives the same reductions, so the same numbers on any runner."""
    threads = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _loaders(
    arrays: dict[str, np.ndarray],
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    cfg: RunConfig,
    weights: WeightsInfo,
    inputs: InputCache | None = None,
) -> tuple[Any, Any]:
    """The run's training batches (shuffled by the run's own seed) and validation batches: sliced
    from tensors already on the device, or a DataLoader's; the same batches either way."""
    x_train, y_train = prepare_inputs(arrays, split_index(arrays, train_ids), cfg, weights, inputs)
    x_val, y_val = prepare_inputs(arrays, split_index(arrays, val_ids), cfg, weights, inputs)
    generator = torch.Generator().manual_seed(cfg.seed)
    drop_last = len(y_train) > cfg.batch_size  # a last batch of one would break BatchNorm
    val_batch = max(64, cfg.batch_size)
    if not cfg.device_resident:
        return DataLoader(
            TensorDataset(x_train, y_train),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=drop_last,
        ), DataLoader(TensorDataset(x_val, y_val), batch_size=val_batch)
    # the whole split is a few hundred slices: put it on the device once
    device = training_device(cfg.accelerator)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x_train, x_val = (t.to(device, memory_format=fmt) for t in (x_train, x_val))
    y_train, y_val = y_train.to(device), y_val.to(device)
    return DeviceBatches(
        x_train, y_train, cfg.batch_size, shuffle=True, generator=generator, drop_last=drop_last
    ), DeviceBatches(x_val, y_val, val_batch)


def _trainer(cfg: RunConfig, callbacks: Sequence[Callback], progress: bool) -> pl.Trainer:
    """Lightning's trainer for one run: the run's epochs, device, precision and determinism, early
    stopping on validation loss, and nothing written to disk (the run's results are returned)."""
    all_callbacks = list(callbacks)
    if cfg.early_stopping:
        all_callbacks.append(
            EarlyStopping(monitor="val_loss", mode="min", patience=cfg.early_stopping_patience)
        )
    if progress:  # pragma: no mutate block
        label = (
            f"{configuration_label(cfg.config_id)} {cfg.model_name} "
            f"{arm_slug(cfg.pretrained)} seed {cfg.seed}"
        )
        all_callbacks.append(RunProgressBar(label))
    return pl.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        deterministic=cfg.deterministic,
        benchmark=cfg.cudnn_benchmark,
        callbacks=all_callbacks,
        # what Lightning prints and files, not what it computes: left out of make mutation
        logger=False,  # pragma: no mutate
        enable_checkpointing=False,  # pragma: no mutate
        enable_model_summary=False,  # pragma: no mutate
        enable_progress_bar=progress,  # pragma: no mutate
        num_sanity_val_steps=0,
    )


@torch.no_grad()
def predict_proba(
    model: torch.nn.Module,
    x: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """P(IDH mutant) for prepared inputs, in eval mode without autocast on ``device`` (the model
    moves there; the final evaluation passes the run's training device, where convolutions may
    use TF32 as cuDNN's default allows)."""
    model = model.to(device).eval()
    out = [
        torch.softmax(model(x[i : i + batch_size].to(device)).float(), dim=1)[:, 1]
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).cpu().numpy()
