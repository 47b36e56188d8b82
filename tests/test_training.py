"""Composition, metrics, model factory, and real (tiny) training runs on CPU."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from idh_pseudocolor import training
from idh_pseudocolor.metrics import binary_metrics, invariant_violations
from idh_pseudocolor.models import PretrainedWeightsUnavailable, create_model
from idh_pseudocolor.pseudocolor import (
    compose,
    composite_rgb,
    normalization_stats,
    pad_to_square,
)
from idh_pseudocolor.training import train_run
from tests.conftest import run_config


def synthetic_arrays(n: int = 24, size: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Slices whose T2 channel carries the label: enough for a model to learn something."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0, 0.3, (n, 4, size, size + 4)).astype(np.float32)
    images[labels == 1, 2, 5:12, 5:12] += 0.6
    masks = np.zeros((n, size, size + 4), np.uint8)
    masks[:, 5:12, 5:12] = 1
    return {
        "images": images,
        "masks": masks,
        "labels": labels.astype(np.int8),
        "subject_ids": np.array([f"S{i:03d}" for i in range(n)]),
        "sequences": np.array(["T1", "T1ce", "T2", "FLAIR"]),
    }


def test_compose_selects_channels_masks_and_resizes():
    arrays = synthetic_arrays(4)
    x = compose(arrays["images"], arrays["masks"], 21, image_size=32)  # (FLAIR, T1ce, T2)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    # square of the 20x24 slice: no resize
    native = compose(arrays["images"], arrays["masks"], 21, image_size=24)
    # R = FLAIR, padded rows
    np.testing.assert_allclose(native[:, 0, 2:22, :].numpy(), arrays["images"][:, 3])
    assert float(native[:, :, :2].abs().max()) == 0.0
    # gray T1
    masked = compose(arrays["images"], arrays["masks"], 24, image_size=24, mask_tumor_only=True)
    assert float(masked[:, :, 2:7].abs().max()) == 0.0 and float(masked[:, :, 8:13, 6:12].min()) > 0
    assert torch.equal(masked[:, 0], masked[:, 1])
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    four = compose(
        arrays["images"],
        arrays["masks"],
        28,
        image_size=16,
        normalize=normalization_stats(4, imagenet),
    )
    assert four.shape == (4, 4, 16, 16)
    assert normalization_stats(3, imagenet) == imagenet and normalization_stats(3, None) is None
    # 4th: the average
    assert normalization_stats(4, imagenet)[0] == (
        *imagenet[0],
        float(np.mean(imagenet[0])),
    )
    assert pad_to_square(torch.zeros(1, 3, 5, 9)).shape == (1, 3, 9, 9)
    rgb = composite_rgb(arrays["images"][0], 15)
    assert rgb.shape == (20, 24, 3)
    np.testing.assert_allclose(rgb[..., 0], arrays["images"][0, 2])  # red = T2 in configuration 15


def test_metrics_match_scikit_learn_and_invariants_hold():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.uniform(0, 0.7, 200), 0, 1)
    m = binary_metrics(y, p)
    predicted = p >= 0.5
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert m["f1"] == pytest.approx(f1_score(y, predicted))
    assert m["precision"] == pytest.approx(precision_score(y, predicted))
    assert m["recall"] == pytest.approx(recall_score(y, predicted))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, ~predicted))
    assert invariant_violations(m) == []
    # the paper's ResNeXt finetuned row: accuracy 0.881 outside [recall 0.731, specificity 0.864]
    paper = {
        "accuracy": 0.881,
        "f1": 0.819,
        "precision": 0.939,
        "recall": 0.731,
        "specificity": 0.864,
    }
    assert any("not between" in v for v in invariant_violations(paper))
    none_predicted = binary_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(none_predicted["precision"]) and none_predicted["f1"] == 0.0


def test_pretrained_weights_from_a_local_file_are_really_used(tmp_path):
    source = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        for i, param in enumerate(source.parameters()):
            param.copy_(torch.full_like(param, 0.001 * (i + 1)))
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(source.state_dict(), path)
    model, info = create_model("resnet18", pretrained=True, weights_file=str(path))
    assert info.pretrained_loaded and info.source == f"file:{path}"
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.layer4[1].bn2.weight, source.layer4[1].bn2.weight)
    assert model.fc.out_features == 2  # classifier replaced for the two IDH classes
    four, _ = create_model("resnet18", pretrained=True, weights_file=str(path), in_chans=4)
    assert four.conv1.weight.shape[1] == 4  # first convolution adapted by timm
    scratch, info = create_model("resnet18", pretrained=False)
    assert not info.pretrained_loaded and not torch.equal(scratch.conv1.weight, source.conv1.weight)


def test_requested_but_unavailable_weights_fail_fast_with_instructions(tmp_path):
    with pytest.raises(
        PretrainedWeightsUnavailable,
        match=r"does not exist[\s\S]*weights_file[\s\S]*pretrained: false",
    ):
        create_model("resnet18", pretrained=True, weights_file=str(tmp_path / "absent.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsUnavailable, match="could not load"):
        create_model("resnet18", pretrained=True, weights_file=str(garbage))
    # the hub path, offline: no silent fallback to random weights
    code = (
        "from idh_pseudocolor.models import create_model; create_model('resnet18', pretrained=True)"
    )
    # an empty cache, whatever this machine holds
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "PretrainedWeightsUnavailable" in proc.stderr and "HF cache" in proc.stderr


def tiny_run(**overrides):
    base = {
        "model_name": "test_resnet",  # timm's tiny ResNet: 6x faster than resnet18 at 32 px
        "config_id": 15,
        "pretrained": False,
        "learning_rate": 3e-3,
        "max_epochs": 3,
        "image_size": 32,
        "batch_size": 8,
        "early_stopping_patience": 5,
        "seed": 7,
    }
    return run_config(**{**base, **overrides})


def test_same_seed_gives_identical_validation_metrics(monkeypatch):
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    # no seed left behind by an earlier run in this process: the run must seed itself
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    a = train_run(arrays, ids[:16], ids[16:], tiny_run())
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    b = train_run(arrays, ids[:16], ids[16:], tiny_run())
    c = train_run(arrays, ids[:16], ids[16:], tiny_run(seed=8))
    assert a.history == b.history and a.val_prob_mutant == b.val_prob_mutant
    assert a.val_prob_mutant != c.val_prob_mutant
    assert a.epochs_run == 3 and 0 <= a.best_epoch < 3
    assert set(a.metrics) == {"auroc", "accuracy", "f1", "precision", "recall", "specificity"}


def test_device_resident_batches_equal_the_dataloader_path():
    """The GPU-efficiency path (tensors on the device, sliced batches, channels_last) changes speed,
    not results."""
    # 19 training slices: the last partial batch is dropped in both paths
    arrays = synthetic_arrays(27)
    ids = arrays["subject_ids"].tolist()
    resident = train_run(arrays, ids[:19], ids[19:], tiny_run(device_resident=True))
    loader = train_run(arrays, ids[:19], ids[19:], tiny_run(device_resident=False))
    assert resident.history == loader.history and resident.val_prob_mutant == loader.val_prob_mutant
    channels_last = train_run(arrays, ids[:19], ids[19:], tiny_run(channels_last=True))
    np.testing.assert_allclose(channels_last.val_prob_mutant, loader.val_prob_mutant, atol=1e-4)


def test_memory_format_can_be_chosen_per_model():
    """``channels_last: {model: bool}`` (grouped convolutions can be slower in NHWC): each run keeps
    its own model's choice, named by full timm name or architecture; models not named keep torch's
    default; conf is type-checked and a key naming no trained model is refused."""
    from typing import get_type_hints

    from idh_pseudocolor.config_loader import project_parameters
    from idh_pseudocolor.parameters import FixedSettings, PermutationStudySettings, typed
    from tests.conftest import REPO

    per_model = {"test_resnet": True, "vgg16": True, "resnext101_32x16d": False}
    assert tiny_run(channels_last=per_model).channels_last is True
    assert tiny_run(model_name="test_byobnet", channels_last=per_model).channels_last is False
    # the paper's models by their full timm names
    assert tiny_run(model_name="vgg16.tv_in1k", channels_last=per_model).channels_last is True
    full = "resnext101_32x16d.fb_swsl_ig1b_ft_in1k"
    assert tiny_run(model_name=full, channels_last={full: True}).channels_last is True
    assert tiny_run(model_name=full, channels_last=per_model).channels_last is False
    hint = get_type_hints(FixedSettings)["channels_last"]
    assert typed(per_model, hint, "permutation_study.fixed.channels_last") == per_model
    with pytest.raises(ValueError, match=r"permutation_study\.fixed\.channels_last = "):
        typed({"vgg16": "yes"}, hint, "permutation_study.fixed.channels_last")
    sweep = project_parameters(REPO, "l4")["permutation_study"]
    sweep["fixed"]["channels_last"] = {"vgg16": True, "resnext101_32x16d": False}
    assert PermutationStudySettings.from_params(sweep).fixed.channels_last["vgg16"] is True
    sweep["fixed"]["channels_last"] = {"vgg19": True}  # a model the sweep does not train
    with pytest.raises(ValueError, match=r"channels_last names vgg19, which this pipeline"):
        PermutationStudySettings.from_params(sweep)


def test_torch_compile_is_optional_and_keeps_timm_weight_names():
    """torch.compile trains the same model; saved weights load into plain timm. The backend is
    aot_eager: the graphs Dynamo captures and AOTAutograd splits, without inductor's C++ build
    (53 s on two cores, its cache cold, for a model this size; ``compile: true`` is inductor)."""
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    cfg = {"model_name": "test_resnet", "max_epochs": 1}
    compiled = train_run(
        arrays, ids[:16], ids[16:], tiny_run(**cfg, compile="aot_eager"), keep_state=True
    )
    eager = train_run(arrays, ids[:16], ids[16:], tiny_run(**cfg), keep_state=True)
    model, _ = create_model("test_resnet", pretrained=False)
    model.load_state_dict(compiled.state_dict)  # strict: no "_orig_mod." prefixes
    np.testing.assert_allclose(compiled.val_prob_mutant, eager.val_prob_mutant, atol=1e-3)


def test_a_compiled_network_is_compiled_once_per_process_not_once_per_run():
    """torch.compile's graphs are Dynamo's, cached by the network's code, not its instance: the
    later runs of a model in a process (other seeds, networks copied from a kept one) reuse the
    graphs of its first run (training and evaluation mode) and compile none of their own."""
    from torch._dynamo.utils import counters

    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    graphs = []
    for seed in (1, 2, 3):
        cfg = tiny_run(seed=seed, max_epochs=2, compile="aot_eager")
        train_run(arrays, ids[:16], ids[16:], cfg)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 2  # this process compiled the network (now or in an earlier test)
    assert graphs[1] == graphs[0] == graphs[2]


def test_compile_names_a_backend_or_is_refused():
    assert training.compiled(model := torch.nn.Linear(2, 2), False) is model
    assert training.compiled(model, True) is not model
    with pytest.raises(ValueError, match="'inductr' is not a torch.compile backend.*inductor"):
        tiny_run(compile="inductr")


def test_onecycle_per_step_and_constant_lr_run():
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    step = train_run(arrays, ids[:16], ids[16:], tiny_run(lr_interval="step", peak_fraction=0.3))
    constant = train_run(
        arrays, ids[:16], ids[16:], tiny_run(superconvergence=False, mask_non_tumor=True)
    )
    assert step.epochs_run == 3 and constant.epochs_run == 3
    with pytest.raises(ValueError, match="lr_interval"):
        tiny_run(lr_interval="batch")
    with pytest.raises(ValueError, match="Unknown configuration"):
        tiny_run(config_id=99)


@pytest.mark.parametrize("model_name", ["vgg16.tv_in1k", "resnext101_32x16d.fb_swsl_ig1b_ft_in1k"])
def test_one_training_step_of_the_paper_architectures(model_name):
    arrays = synthetic_arrays(6, size=28)
    ids = arrays["subject_ids"].tolist()
    cfg = tiny_run(
        model_name=model_name,
        max_epochs=1,
        batch_size=2,
        image_size=64,
        early_stopping=False,
        initial_weights_cache=0,  # not kept in this test process: 0.5-0.8 GB each
    )
    result = train_run(arrays, ids[:2], ids[2:4], cfg)  # one step of batch 2, then validation
    assert result.epochs_run == 1 and not result.weights.pretrained_loaded
    assert all(0.0 <= p <= 1.0 for p in result.val_prob_mutant) and len(result.val_prob_mutant) == 2


def test_pruning_callback_stops_a_hopeless_trial():
    import optuna

    from idh_pseudocolor.search import PruningCallback

    # F1 < 1.1: prune
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1)
    )
    trial = study.ask()
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        train_run(
            arrays, ids[:16], ids[16:], tiny_run(max_epochs=3), callbacks=[PruningCallback(trial)]
        )
    assert study.trials[0].intermediate_values.keys() == {0}  # reported once, then stopped


def test_the_best_epoch_is_the_lowest_validation_loss_and_its_weights_score_the_test_patients():
    """Table 2 and winner_models rest on this: metrics, probabilities and the kept weights are those
    of the epoch with the lowest validation loss, not the last epoch's, and the weights are reloaded
    before the held-out patients are scored."""
    arrays = synthetic_arrays(32, seed=3)
    # validation labels against the signal: the more it learns, the worse
    arrays["labels"][20:] = 1 - arrays["labels"][20:]
    ids = arrays["subject_ids"].tolist()
    cfg = tiny_run(
        model_name="test_resnet",
        learning_rate=0.01,
        superconvergence=False,
        max_epochs=8,
        early_stopping=False,
    )
    result = train_run(arrays, ids[:20], ids[20:], cfg, evaluate_ids=ids[20:], keep_state=True)
    losses = [row["val_loss"] for row in result.history]
    assert result.epochs_run == 8 and len(losses) == 8
    best = int(np.argmin(losses))
    assert best != 7, (
        "precondition: the loss must not be lowest at the last epoch, or this test proves nothing"
    )
    assert result.best_epoch == best
    assert result.metrics == {k: result.history[best][k] for k in result.metrics}
    # the held-out patients (here the validation ones again) are scored by the best epoch's weights:
    # the same probabilities the validation saw at that epoch, and those of the kept state dict
    np.testing.assert_allclose(result.eval_prob_mutant, result.val_prob_mutant, atol=1e-6)
    model, _ = create_model("test_resnet", pretrained=False, in_chans=3)
    model.load_state_dict(result.state_dict)
    from idh_pseudocolor.training import predict_proba, prepare_inputs, split_index

    x, _ = prepare_inputs(arrays, split_index(arrays, ids[20:]), cfg)
    np.testing.assert_allclose(predict_proba(model, x), result.eval_prob_mutant, atol=1e-6)


def test_a_run_starts_from_the_weights_its_seed_draws_and_records_what_it_saw():
    """A run's seed decides its initial weights (the seed axis of the 28 x 2 x 3 study): with a
    vanishing learning rate the trained convolutions are those timm draws under that seed. The
    result names its configuration and validation subjects, and scores no held-out patients and
    keeps no weights unless asked."""
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    frozen = {"learning_rate": 1e-12, "superconvergence": False, "max_epochs": 1}
    results = {}
    for seed in (7, 8):
        torch.manual_seed(0)  # whatever the process drew before, the run seeds itself
        cfg = tiny_run(seed=seed, **frozen)
        results[seed] = train_run(arrays, ids[:16], ids[16:], cfg, keep_state=True)
        torch.manual_seed(seed)
        drawn, _ = create_model("test_resnet", pretrained=False, in_chans=3)
        convolutions = [k for k, v in drawn.state_dict().items() if v.dim() == 4]
        assert convolutions
        for key in convolutions:
            torch.testing.assert_close(
                results[seed].state_dict[key], drawn.state_dict()[key], atol=1e-8, rtol=0
            )
    assert not torch.equal(
        results[7].state_dict[convolutions[0]], results[8].state_dict[convolutions[0]]
    )
    plain = train_run(arrays, ids[:16], ids[16:], tiny_run(max_epochs=1))
    assert plain.config == tiny_run(max_epochs=1)
    assert plain.val_subject_ids == ids[16:] and len(plain.val_prob_mutant) == 8
    assert plain.eval_subject_ids == [] and plain.eval_prob_mutant == []
    assert plain.state_dict is None


def test_held_out_patients_are_scored_by_the_best_epoch_without_keeping_its_weights():
    """The final evaluation asks for test-patient probabilities, not weights: the best epoch's
    weights are still reloaded for them, and not returned."""
    arrays = synthetic_arrays(32, seed=3)
    arrays["labels"][20:] = 1 - arrays["labels"][20:]  # the best epoch is not the last
    ids = arrays["subject_ids"].tolist()
    cfg = tiny_run(learning_rate=0.01, superconvergence=False, max_epochs=6, early_stopping=False)
    result = train_run(arrays, ids[:20], ids[20:], cfg, evaluate_ids=ids[20:])
    assert result.best_epoch != 5 and result.state_dict is None
    assert result.eval_subject_ids == ids[20:]
    np.testing.assert_allclose(result.eval_prob_mutant, result.val_prob_mutant, atol=1e-6)


def _expected_epochs(losses: list[float], patience: int) -> int:
    """Epochs an early stop with this patience runs on this validation-loss curve (min mode,
    strict improvement), by hand."""
    best, waited = math.inf, 0
    for epoch, loss in enumerate(losses):
        if loss < best:
            best, waited = loss, 0
        else:
            waited += 1
            if waited >= patience:
                return epoch + 1
    return len(losses)


def test_early_stopping_waits_patience_epochs_after_the_lowest_validation_loss():
    arrays = synthetic_arrays(32, seed=3)
    arrays["labels"][20:] = 1 - arrays["labels"][20:]  # learning makes validation worse
    ids = arrays["subject_ids"].tolist()
    free = train_run(
        arrays,
        ids[:20],
        ids[20:],
        tiny_run(learning_rate=0.01, superconvergence=False, max_epochs=10, early_stopping=False),
    )
    losses = [row["val_loss"] for row in free.history]
    stops = []
    for patience in (1, 2):
        cfg = tiny_run(
            learning_rate=0.01,
            superconvergence=False,
            max_epochs=10,
            early_stopping_patience=patience,
        )
        stopped = train_run(arrays, ids[:20], ids[20:], cfg)
        assert [r["val_loss"] for r in stopped.history] == losses[: stopped.epochs_run]
        assert stopped.epochs_run == _expected_epochs(losses, patience)
        stops.append(stopped.epochs_run)
    assert stops[0] < stops[1] < 10, "precondition: both stop early, at different epochs"


def test_the_run_trains_at_the_precision_it_is_given():
    """conf/l4 trains in bf16-mixed: the setting reaches Lightning (on CPU too) and changes the
    numbers a little, not the run."""
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    full = train_run(arrays, ids[:16], ids[16:], tiny_run(max_epochs=2))
    half = train_run(arrays, ids[:16], ids[16:], tiny_run(max_epochs=2, precision="bf16-mixed"))
    assert half.val_prob_mutant != full.val_prob_mutant
    np.testing.assert_allclose(half.val_prob_mutant, full.val_prob_mutant, atol=0.05)


def test_masking_non_tumor_tissue_hides_everything_outside_the_mask():
    """Table 1's mask option: with it, a change outside the tumor cannot reach the network."""
    from idh_pseudocolor.training import prepare_inputs

    arrays = synthetic_arrays(4)
    changed = {**arrays, "images": arrays["images"].copy()}
    changed["images"][:, :, 15:, 15:] += 0.5  # outside the tumor (rows/cols 5..11)
    index = np.arange(4)
    for mask, reaches in ((True, False), (False, True)):
        cfg = tiny_run(mask_non_tumor=mask, image_size=24)
        a, _ = prepare_inputs(arrays, index, cfg)
        b, _ = prepare_inputs(changed, index, cfg)
        assert (not torch.equal(a, b)) is reaches
        if mask:
            assert float(a[:, :, :2].abs().max()) == 0.0 and float(a[:, :, 7:14, 5:12].min()) > 0


def test_optuna_sees_each_epochs_validation_f1():
    """The pruner judges a trial by the F1 the run logs each epoch: it must be the F1 of that
    epoch's validation predictions (0 when nothing is predicted mutant), not a placeholder."""
    import optuna

    from idh_pseudocolor.search import PruningCallback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    result = train_run(
        arrays, ids[:16], ids[16:], tiny_run(max_epochs=3), callbacks=[PruningCallback(trial)]
    )
    reported = study.trials[0].intermediate_values
    assert reported == pytest.approx({row["epoch"]: row["f1"] for row in result.history})
    assert any(v > 0 for v in reported.values()), "precondition: some epoch predicts a mutant"


def test_onecycle_peaks_at_peak_fraction_per_step_or_per_epoch_and_constant_stays_constant():
    """Table 1's schedule: OneCycle over all steps (or all epochs) with its peak at peak_fraction,
    starting at max_lr / 25 (torch's default); without superconvergence, one constant rate."""
    from idh_pseudocolor.training import PseudocolorClassifier

    net = timm.create_model("test_resnet", num_classes=2)
    for interval, expected_steps in (("step", 10 * 12), ("epoch", 10)):
        cfg = run_config(
            model_name="test_resnet",
            config_id=15,
            learning_rate=1e-3,
            superconvergence=True,
            peak_fraction=0.3,
            lr_interval=interval,
            max_epochs=10,
        )
        setup = PseudocolorClassifier(net, cfg, steps_per_epoch=12).configure_optimizers()
        assert setup["lr_scheduler"]["interval"] == interval
        scheduler = setup["lr_scheduler"]["scheduler"]
        rates = []
        for _ in range(expected_steps):
            rates.append(setup["optimizer"].param_groups[0]["lr"])
            setup["optimizer"].step()
            scheduler.step()
        assert rates[0] == pytest.approx(1e-3 / 25)
        assert max(rates) == pytest.approx(1e-3, rel=1e-3)
        # the peak where peak_fraction puts it
        assert abs(int(np.argmax(rates)) - 0.3 * expected_steps) <= 1
        assert rates[-1] < rates[0]  # annealed below the start by the end of training
    constant = PseudocolorClassifier(
        net,
        tiny_run(superconvergence=False, learning_rate=2e-4, weight_decay=0.3),
        steps_per_epoch=12,
    )
    optimizer = constant.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 2e-4
    # Table 1's weight decay reaches AdamW (AdamW's own default is 0.01, the setting's default)
    assert optimizer.param_groups[0]["weight_decay"] == 0.3


def test_importing_the_training_module_changes_no_logging_or_warnings_state():
    """Levels live in conf/logging.yml and warning filters inside a run: an import has no side
    effects."""
    code = (
        # the libraries' own imports may add filters: what counts is what our module adds
        "import logging, warnings, numpy, torch, timm, pytorch_lightning, torch.utils.data; "
        "import idh_pseudocolor.models, idh_pseudocolor.pseudocolor, idh_pseudocolor.metrics; "
        "before = list(warnings.filters); import idh_pseudocolor.training; "
        "assert warnings.filters == before, 'warning filters changed'; "
        "assert logging.getLogger('pytorch_lightning.utilities.rank_zero').level "
        "== logging.NOTSET, 'logger level set'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_project_logging_config_quiets_lightning_and_keeps_run_lines():
    import logging.config

    import yaml

    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "conf/logging.yml").read_text())
    assert config["loggers"]["idh_pseudocolor"]["level"] == "INFO"
    assert config["loggers"]["pytorch_lightning.utilities.rank_zero"]["level"] == "WARNING"
    # valid for logging itself
    logging.config.dictConfig({**config, "handlers": {}, "root": {"handlers": []}})


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize(
    ("model_name", "expected"),
    [("test_resnet", ((0.5,) * 3, (0.5,) * 3)), ("test_byobnet", IMAGENET)],
)
def test_pretrained_inputs_are_standardized_as_timms_data_config_for_the_model(
    model_name, expected, tmp_path
):
    """Not fixed ImageNet values: timm's ``resolve_model_data_config`` for the model in use
    (test_resnet's pretrained_cfg says mean = std = 0.5); a 4th channel gets the average."""
    from safetensors.torch import save_file

    from idh_pseudocolor.configurations import configuration
    from idh_pseudocolor.training import prepare_inputs

    config = timm.data.resolve_model_data_config(timm.create_model(model_name, pretrained=False))
    assert (tuple(config["mean"]), tuple(config["std"])) == expected
    # weights from a file, as the paper's runs may get them
    path = tmp_path / f"{model_name}.safetensors"
    save_file(
        {
            k: v.contiguous()
            for k, v in timm.create_model(model_name, pretrained=False).state_dict().items()
        },
        path,
    )
    arrays = synthetic_arrays(6)
    for config_id in (15, 28):
        n = len(configuration(config_id))
        _, info = create_model(model_name, pretrained=True, weights_file=str(path), in_chans=n)
        assert (info.mean, info.std) == expected
        cfg = run_config(model_name=model_name, config_id=config_id, image_size=16, pretrained=True)
        x, _ = prepare_inputs(arrays, np.arange(6), cfg, info)
        raw = compose(arrays["images"], arrays["masks"], config_id, image_size=16)
        mean, std = ([*v, float(np.mean(v))][:n] for v in expected)
        torch.testing.assert_close(
            x, (raw - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        )
        with pytest.raises(ValueError, match="WeightsInfo"):  # never silently unstandardized
            prepare_inputs(arrays, np.arange(6), cfg)
    scratch = run_config(model_name=model_name, config_id=15, image_size=16, pretrained=False)
    _, info = create_model(model_name, pretrained=False)
    assert info.normalization is None
    torch.testing.assert_close(
        prepare_inputs(arrays, np.arange(6), scratch, info)[0],
        compose(arrays["images"], arrays["masks"], 15, image_size=16),
    )


def test_a_training_run_feeds_the_network_what_its_weights_expect(tmp_path):
    """train_run standardizes with the weights' data config (test_resnet: 0.5, not ImageNet's):
    the held-out probabilities it reports are the kept model's on inputs standardized that way."""
    from safetensors.torch import save_file

    from idh_pseudocolor.training import predict_proba

    path = tmp_path / "test_resnet.safetensors"
    save_file(
        {
            k: v.contiguous()
            for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()
        },
        path,
    )
    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    cfg = run_config(
        model_name="test_resnet",
        config_id=15,
        pretrained=True,
        # one file per model, as conf/paper gives them: the run must pick its own model's
        weights_file={"resnet18": str(tmp_path / "absent.pth"), "test_resnet": str(path)},
        learning_rate=3e-3,
        max_epochs=2,
        batch_size=8,
        image_size=24,
        early_stopping=False,
        torch_threads=1,
    )
    result = train_run(arrays, ids[:16], ids[16:], cfg, keep_state=True, evaluate_ids=ids[16:])
    assert result.weights.normalization == ((0.5,) * 3, (0.5,) * 3)
    model, _ = create_model("test_resnet", pretrained=False, in_chans=3)
    model.load_state_dict(result.state_dict)
    raw = compose(arrays["images"][16:], arrays["masks"][16:], 15, image_size=24)
    np.testing.assert_allclose(
        predict_proba(model, (raw - 0.5) / 0.5), result.eval_prob_mutant, atol=1e-6
    )
    imagenet = compose(
        arrays["images"][16:], arrays["masks"][16:], 15, image_size=24, normalize=IMAGENET
    )
    # the test can tell
    assert not np.allclose(predict_proba(model, imagenet), result.eval_prob_mutant, atol=1e-4)


class _Terminal:
    """A stream that says it is a terminal (what sys.stderr is in an interactive shell)."""

    def __init__(self) -> None:
        import io

        self.buffer = io.StringIO()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def flush(self) -> None:
        pass


def test_the_epoch_bar_is_drawn_where_a_person_watches_and_nowhere_else(monkeypatch, capsys):
    """progress None: a bar naming the run and its epoch on stderr when stderr is a terminal,
    in the main process only; nothing in CI or log files (stderr not a terminal) nor in workers."""
    import multiprocessing

    from idh_pseudocolor.training import show_progress

    arrays = synthetic_arrays(24)
    ids = arrays["subject_ids"].tolist()
    cfg = tiny_run(model_name="test_resnet", max_epochs=2)
    assert show_progress(True) and not show_progress(False)

    assert not show_progress(None)  # pytest's captured stderr is no terminal
    quiet = train_run(arrays, ids[:16], ids[16:], cfg, progress=None)
    assert "epoch 1/2" not in "".join(capsys.readouterr())

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert show_progress(None)
    shown = train_run(arrays, ids[:16], ids[16:], cfg, progress=None)
    drawn = terminal.buffer.getvalue()
    assert "15: T2-T1ce-FLAIR test_resnet scratch seed 7: epoch 2/2" in drawn and "100%" in drawn
    # the bar stays off stdout, where log lines go
    assert "epoch 1/2" not in capsys.readouterr().out
    assert shown.val_prob_mutant == quiet.val_prob_mutant  # a bar changes nothing in the run
    with monkeypatch.context() as worker:
        # a ParallelRunner or Dask worker
        worker.setattr(multiprocessing, "parent_process", lambda: object())
        assert not show_progress(None)


def test_device_batches_slice_in_order_or_as_a_shuffling_dataloader_does():
    from torch.utils.data import DataLoader, TensorDataset

    from idh_pseudocolor.training import DeviceBatches

    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    plain = [(bx[:, 0].tolist(), by.tolist()) for bx, by in DeviceBatches(x, y, 4)]
    assert plain == [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 7], [4, 5, 6, 7]), ([8, 9], [8, 9])]
    assert len(DeviceBatches(x, y, 4)) == 3 and len(DeviceBatches(x, y, 4, drop_last=True)) == 2
    assert len(DeviceBatches(x, y, 5, drop_last=True)) == 2
    dropped = [by.tolist() for _, by in DeviceBatches(x, y, 4, drop_last=True)]
    assert dropped == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # a partial last batch (3 of 10), none (5 of 10), or dropped: the DataLoader's order, epoch
    # after epoch
    for size, drop in ((3, False), (5, False), (3, True)):
        ours = DeviceBatches(x, y, size, True, torch.Generator().manual_seed(size), drop)
        loader = DataLoader(
            TensorDataset(x, y),
            batch_size=size,
            shuffle=True,
            generator=torch.Generator().manual_seed(size),
            drop_last=drop,
        )
        for _ in range(3):  # three epochs: the generator moves on identically
            # Lightning takes len(loader) batches and never exhausts the sampler (which would draw
            # one more permutation); the same here
            expected = [b.tolist() for _, b in itertools.islice(iter(loader), len(loader))]
            assert [b.tolist() for _, b in ours] == expected
    shuffled = [b.tolist() for _, b in DeviceBatches(x, y, 3, True, torch.Generator())]
    assert sorted(sum(shuffled, [])) == list(range(10)) and sum(shuffled, []) != list(range(10))


def test_weights_file_for_one_file_or_one_per_model():
    from idh_pseudocolor.training import weights_file_for

    assert weights_file_for("/w/all.safetensors", "resnet18") == "/w/all.safetensors"
    assert weights_file_for(None, "resnet18") is None
    per_model = {"resnet18": "/w/r.safetensors", "vgg16": "/w/v.safetensors"}
    assert weights_file_for(per_model, "vgg16") == "/w/v.safetensors"
    assert weights_file_for(per_model, "resnext") is None


def test_a_four_channel_run_builds_a_four_channel_network():
    arrays = synthetic_arrays(12)
    ids = arrays["subject_ids"].tolist()
    result = train_run(
        arrays, ids[:8], ids[8:], tiny_run(config_id=28, max_epochs=1), keep_state=True
    )
    first_conv = next(v for k, v in result.state_dict.items() if v.ndim == 4)
    assert first_conv.shape[1] == 4  # T1, T1ce, T2, FLAIR in


def test_weights_are_kept_only_when_asked_and_unknown_subjects_are_named():
    from idh_pseudocolor.training import split_index

    arrays = synthetic_arrays(12)
    ids = arrays["subject_ids"].tolist()
    assert train_run(arrays, ids[:8], ids[8:], tiny_run(max_epochs=1)).state_dict is None
    assert split_index(arrays, [ids[3], ids[0]]).tolist() == [3, 0]
    with pytest.raises(KeyError, match=r"1 split subject\(s\) have no slice, e.g. \['NOPE'\]"):
        split_index(arrays, [ids[0], "NOPE"])


def test_a_gpu_run_on_a_machine_without_one_stops_before_any_work():
    from idh_pseudocolor.training import HardwareUnavailable

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: nothing to refuse")
    arrays = synthetic_arrays(12)
    ids = arrays["subject_ids"].tolist()
    with pytest.raises(HardwareUnavailable, match="sees no CUDA GPU"):
        train_run(arrays, ids[:8], ids[8:], tiny_run(accelerator="gpu"))


def test_composed_inputs_are_made_once_per_key_and_equal_fresh_ones():
    """InputCache: a second request for the same inputs returns the tensors already made (no new
    composition), equal bitwise to composing afresh; anything composition depends on
    (subjects, configuration, size, masking, the weights' standardization) makes a new entry;
    only the most recent ``max_entries`` are kept; a cache for other arrays is refused."""
    from dataclasses import replace

    from idh_pseudocolor.models import WeightsInfo
    from idh_pseudocolor.training import InputCache, prepare_inputs, split_index

    arrays = synthetic_arrays(12)
    ids = arrays["subject_ids"].tolist()
    index = split_index(arrays, ids[:8])
    cfg = tiny_run()
    imagenet = WeightsInfo(
        "test_resnet", True, True, "file:w", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    cache = InputCache(arrays, max_entries=3)
    first = prepare_inputs(arrays, index, cfg, cache=cache)
    again = prepare_inputs(arrays, index, cfg, cache=cache)
    assert again[0] is first[0] and again[1] is first[1] and cache.hits == 1
    fresh = prepare_inputs(arrays, index, cfg)
    assert torch.equal(first[0], fresh[0]) and torch.equal(first[1], fresh[1])
    variants = [
        (split_index(arrays, ids[:7]), cfg, None),
        (index, replace(cfg, config_id=3), None),
        (index, replace(cfg, image_size=24), None),
        (index, replace(cfg, mask_non_tumor=not cfg.mask_non_tumor), None),
        (index, replace(cfg, pretrained=True), imagenet),
    ]
    for variant_index, variant_cfg, weights in variants:
        # each variant beside the plain inputs in a cache with room for both: neither may be
        # served for the other
        both = InputCache(arrays, max_entries=8)
        plain = prepare_inputs(arrays, index, cfg, cache=both)
        made = prepare_inputs(arrays, variant_index, variant_cfg, weights, cache=both)
        alone = prepare_inputs(arrays, variant_index, variant_cfg, weights)
        assert made[0] is not plain[0] and torch.equal(made[0], alone[0])
        assert not (made[0].shape == plain[0].shape and torch.equal(made[0], plain[0]))
        assert prepare_inputs(arrays, index, cfg, cache=both)[0] is plain[0]
        again = prepare_inputs(arrays, variant_index, variant_cfg, weights, cache=both)
        assert again[0] is made[0] and both.hits == 2 and len(both.entries) == 2
    # only the most recent max_entries stay
    for variant_index, variant_cfg, weights in variants[:3]:
        prepare_inputs(arrays, variant_index, variant_cfg, weights, cache=cache)
    assert cache.hits == 1 and len(cache.entries) == 3  # the oldest, the first, went
    remade = prepare_inputs(arrays, index, cfg, cache=cache)
    assert remade[0] is not first[0] and torch.equal(remade[0], fresh[0])
    with pytest.raises(ValueError, match="other slice arrays"):
        prepare_inputs(synthetic_arrays(12), index, cfg, cache=cache)


def test_runs_sharing_composed_inputs_equal_runs_composing_their_own():
    """A node's runs (two models x two seeds, and a run scoring held-out patients) with one
    InputCache compute exactly what they compute composing their own inputs, and leave the shared
    inputs as they were made."""
    from idh_pseudocolor.training import InputCache, prepare_inputs

    arrays = synthetic_arrays(28, seed=2)
    ids = arrays["subject_ids"].tolist()
    train, val, test = ids[:16], ids[16:22], ids[22:]
    cache = InputCache(arrays)
    for model_name in ("test_resnet", "test_byobnet"):
        for seed in (1, 2):
            cfg = tiny_run(model_name=model_name, seed=seed, max_epochs=2)
            shared = train_run(arrays, train, val, cfg, evaluate_ids=test, inputs=cache)
            own = train_run(arrays, train, val, cfg, evaluate_ids=test)
            assert shared.history == own.history
            assert shared.val_prob_mutant == own.val_prob_mutant
            assert shared.eval_prob_mutant == own.eval_prob_mutant
    assert cache.hits == 3 * 3  # train, val and test inputs composed once for the four runs
    for (subjects, *_), (x, y) in cache.entries.items():
        index = np.frombuffer(subjects, dtype=int)
        fresh_x, fresh_y = prepare_inputs(arrays, index, tiny_run())
        assert torch.equal(x, fresh_x) and torch.equal(y, fresh_y)  # untouched by the runs


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _written_earlier(path, seconds: float = 60.0) -> None:
    """Dates a weights file back, as any file written before a run starts is."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


def test_kept_initial_weights_equal_freshly_created_ones_bitwise(tmp_path):
    """InitialWeights: a second request after the same seed returns a copy of the network made the
    first time, equal bitwise to a network created anew, and leaves the random generators where
    creating it leaves them."""
    from idh_pseudocolor.training import InitialWeights

    weights_file = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), weights_file)
    _written_earlier(weights_file)
    kept = InitialWeights()
    for cfg in (
        tiny_run(initial_weights_cache=4),
        tiny_run(initial_weights_cache=4, pretrained=True, weights_file=str(weights_file)),
        tiny_run(initial_weights_cache=4, config_id=28),  # four input channels
    ):
        fresh = []
        for cache in (InitialWeights(), None, kept, kept):  # made, created, made, copied
            torch.manual_seed(cfg.seed)
            if cache is None:
                model, weights = create_model(
                    cfg.model_name,
                    cfg.pretrained,
                    cfg.weights_file,
                    in_chans=len(training.configuration(cfg.config_id)),
                )
            else:
                model, weights = cache.network(cfg)
            fresh.append((_state(model), weights, torch.get_rng_state(), torch.rand(1)))
        made, created, first, copied = fresh
        for state, weights, rng, draw in (made, first, copied):
            assert state.keys() == created[0].keys()
            assert all(torch.equal(state[k], created[0][k]) for k in state)
            assert weights == created[1] and torch.equal(rng, created[2])
            assert torch.equal(draw, created[3])  # the run's next draws are the same too
        assert weights.pretrained_loaded is cfg.pretrained
    assert kept.hits == 3 and len(kept.entries) == 3


def test_a_kept_network_is_never_handed_out_and_a_changed_file_is_read_again(tmp_path):
    """Runs change their networks in place: neither the network a run creates nor one it is
    handed from a kept one may be the kept one. A weights file is read again when it is another
    file (written again in place, even with its old modification time put back), when it was
    modified a moment ago, and under each spelling of its path (which the run records)."""
    from idh_pseudocolor.training import InitialWeights, _file_identity

    kept = InitialWeights()
    cfg = tiny_run(initial_weights_cache=4)
    for _ in range(3):  # created (kept a copy), copied, copied
        torch.manual_seed(7)
        network, _ = kept.network(cfg)
        before = _state(network)
        with torch.no_grad():
            for param in network.parameters():
                param.add_(1.0)  # what training does to it
        torch.manual_seed(7)
        again, _ = kept.network(cfg)
        assert all(torch.equal(v, before[k]) for k, v in again.state_dict().items())
    assert kept.hits == 5

    source = timm.create_model("test_resnet", pretrained=False)
    weights_file = tmp_path / "weights.pth"
    torch.save(source.state_dict(), weights_file)
    soon = time.time_ns() + 60 * 10**9  # modified "now" however long this test takes to get on
    os.utime(weights_file, ns=(soon, soon))
    pretrained = tiny_run(initial_weights_cache=4, pretrained=True, weights_file=str(weights_file))
    torch.manual_seed(7)
    kept.network(pretrained)  # modified a moment ago: not kept
    assert kept.hits == 5 and len(kept.entries) == 1
    _written_earlier(weights_file)
    for _ in range(2):
        torch.manual_seed(7)
        kept.network(pretrained)
    assert kept.hits == 6 and len(kept.entries) == 2
    old = weights_file.stat()
    with torch.no_grad():
        for param in source.parameters():
            param.mul_(2.0)
    torch.save(source.state_dict(), weights_file)  # the same file, in place
    time.sleep(0.05)  # the change time moves on (coarse clocks)
    os.utime(weights_file, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert weights_file.stat().st_ino == old.st_ino and weights_file.stat().st_size == old.st_size
    torch.manual_seed(7)
    reread, weights = kept.network(pretrained)
    assert kept.hits == 6 and len(kept.entries) == 3
    assert torch.equal(next(reread.parameters()), next(source.parameters()))
    (tmp_path / "sub").mkdir()
    spelt = str(tmp_path / "sub" / ".." / "weights.pth")
    torch.manual_seed(7)
    _, other = kept.network(dataclasses.replace(pretrained, weights_file=spelt))
    assert kept.hits == 6 and len(kept.entries) == 4
    assert weights.source == f"file:{weights_file}" and other.source == f"file:{spelt}"
    assert _file_identity(None) is None  # hub weights: each run asks the hub, nothing kept


def test_kept_networks_go_least_recently_used_first_and_a_run_without_them_leaves_them():
    from idh_pseudocolor.training import InitialWeights

    kept = InitialWeights()
    for seed in (1, 2, 3, 1):  # 1 used again: 2 is now the least recently used
        torch.manual_seed(seed)
        kept.network(tiny_run(initial_weights_cache=3))
    assert kept.hits == 1
    order = list(kept.entries)
    torch.manual_seed(4)
    kept.network(tiny_run(initial_weights_cache=0))  # creates its own
    assert list(kept.entries) == order and kept.max_entries == 3
    torch.manual_seed(4)
    kept.network(tiny_run(initial_weights_cache=2))  # 4 added, 2 and 3 go
    assert list(kept.entries)[0] == order[-1] and len(kept.entries) == 2
    torch.manual_seed(1)
    kept.network(tiny_run(initial_weights_cache=2))
    assert kept.hits == 2  # seed 1 was kept
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="initial_weights_cache"):
            tiny_run(initial_weights_cache=bad)


def test_runs_from_kept_initial_weights_equal_runs_that_create_their_own(tmp_path):
    """Runs of two models x two seeds x two arms (pretrained from a file and not) in two
    configurations, starting from networks this process kept, compute exactly what runs creating
    their networks compute."""
    from idh_pseudocolor.training import INITIAL_WEIGHTS

    arrays = synthetic_arrays(28, seed=3)
    ids = arrays["subject_ids"].tolist()
    train, val, test = ids[:16], ids[16:22], ids[22:]
    files = {}
    for model_name in ("test_resnet", "test_byobnet"):
        files[model_name] = str(tmp_path / f"{model_name}.pth")
        torch.save(timm.create_model(model_name, num_classes=5).state_dict(), files[model_name])
    configs = [
        tiny_run(
            model_name=model_name,
            seed=seed,
            pretrained=pretrained,
            weights_file=files,
            max_epochs=2,
            config_id=config_id,
            initial_weights_cache=8,
        )
        for config_id in (15, 3)
        for model_name in files
        for pretrained in (True, False)
        for seed in (1, 2)
    ]
    for path in files.values():
        _written_earlier(path)
    INITIAL_WEIGHTS.entries.clear()
    hits = INITIAL_WEIGHTS.hits
    kept = [train_run(arrays, train, val, cfg, evaluate_ids=test) for cfg in configs]
    assert INITIAL_WEIGHTS.hits - hits == 8  # the second configuration's eight runs
    for cfg, run in list(zip(configs, kept, strict=True))[8:]:  # those eight
        own = train_run(
            arrays, train, val, dataclasses.replace(cfg, initial_weights_cache=0), evaluate_ids=test
        )
        assert run.weights == own.weights and run.weights.pretrained_loaded is cfg.pretrained
        assert run.history == own.history
        assert run.val_prob_mutant == own.val_prob_mutant
        assert run.eval_prob_mutant == own.eval_prob_mutant
