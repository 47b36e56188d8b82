"""The GPU study benchmark runs end to end on CPU with tiny settings and reports what it
promises."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_config


def _printed_tables(stdout: str) -> dict[str, dict]:
    """gpu_study's printed tables, per model: each arm's row and the ratio lines."""
    tables: dict[str, dict] = {}
    for line in stdout.splitlines():
        if line.startswith("== "):
            model = line[3:].split(":")[0]
            tables[model] = {"arms": {}, "ratios": {}, "steady_ratios": {}}
        elif m := re.match(r"^\s{3}([ABC])\s+\|(.*)$", line):
            cols = [c.strip() for c in m.group(2).split("|")]
            tables[model]["arms"][m.group(1)] = dict(
                zip(
                    [
                        "what",
                        "per_round",
                        "seconds",
                        "images_per_s",
                        "steady_images_per_s",
                        "setup_s",
                        "paper_run_s",
                    ],
                    cols,
                    strict=True,
                )
            )
        elif m := re.match(r"^\s{3}(ratios \(img/s\)|steady ratios):\s+(.*)$", line):
            key = "ratios" if m.group(1).startswith("ratios") else "steady_ratios"
            for item in m.group(2).split(" | "):
                name, value = item.rsplit(" ", 1)
                tables[model][key][name] = value
    return tables


def _agrees(printed: str, value: float | None) -> bool:
    if value is None:
        return printed == "-"
    return math.isclose(float(printed), value, rel_tol=1e-3, abs_tol=0.051)


def test_gpu_study_tiny_interleaves_three_arms_against_the_floor(tmp_path):
    out = tmp_path / "gpu_study.json"
    stdout = _benchmark_output("gpu_study.py", "--tiny", "--out", str(out))
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["runs"]] == ["test_resnet", "test_byobnet"]
    assert result["matmul_tflops"] > 0 and result["copy_gb_per_s"] > 0
    tables = _printed_tables(stdout)
    assert list(tables) == ["test_resnet", "test_byobnet"]
    for run in result["runs"]:
        # A B C A B C A B C, every arm every round, nothing stopped by the budget
        assert run["order"] == [f"{arm}{r}" for r in (1, 2, 3) for arm in "ABC"]
        assert run["rounds_completed"] == 3 and run["stop_reason"] is None
        assert run["epochs"] == 2 and run["forward_gflops_per_image"] > 0
        for name, arm in run["arms"].items():
            assert [r["round"] for r in arm["rounds"]] == [1, 2, 3], name
            assert all(r.get("error") is None and r["seconds"] > 0 for r in arm["rounds"]), name
            assert all(r["epochs"] == 2 for r in arm["rounds"]), name
            assert arm["images_per_s"] > 0 and arm["steady_images_per_s"] > 0, name
            assert math.isfinite(arm["setup_s"]) and math.isfinite(arm["paper_run_s"]), name
        # arm C: k = 2 runs at once, in 2 worker processes (neither the script nor this test)
        assert run["concurrent_k"] == 2 and run["arms"]["C"]["k"] == 2
        for c in run["arms"]["C"]["rounds"]:
            pids = set(c["pids"])
            assert len(pids) == 2 and pids <= set(result["worker_pids"])
            assert not pids & {result["pid"], os.getpid()}
            assert len(set(c["seeds"])) == 2
            # all k were through the barrier before any started training: they ran at once
            assert max(r["entered"] for r in c["runs"]) <= min(r["started"] for r in c["runs"])
        for key in ("ratios", "steady_ratios"):
            assert set(run[key]) == {"A/B", "B/floor", "A/floor", "C/floor"}
            assert all(math.isfinite(v) and v > 0 for v in run[key].values()), run[key]
            # nothing beats the arithmetic floor
            assert all(v < 1 for name, v in run[key].items() if name.endswith("floor"))
        # lever 5's micro-benchmark: k = 2 stacked runs against 2 separate ones
        stacked = run["stacked"]
        assert stacked.get("error") is None and stacked["k"] == 2 and stacked["steps"] == 2
        assert stacked["separate_images_per_s"] > 0 and stacked["stacked_images_per_s"] > 0
        assert stacked["stacked_over_separate"] == pytest.approx(
            stacked["stacked_images_per_s"] / stacked["separate_images_per_s"]
        )
        assert f"stacked/separate {stacked['stacked_over_separate']:.3f}" in stdout
        profile = run["profile"]
        assert profile["wall_s"] > 0 and profile["ops"] > 0 and len(profile["top"]) == 5
        assert all(t["name"] and t["ms"] > 0 for t in profile["top"])
        # the printed table says what the JSON says
        table = tables[run["model"]]
        assert set(table["arms"]) == {"A", "B", "C"}
        for name, arm in run["arms"].items():
            row = table["arms"][name]
            for col in ("seconds", "images_per_s", "steady_images_per_s", "setup_s", "paper_run_s"):
                assert _agrees(row[col], arm[col]), (run["model"], name, col, row[col], arm[col])
            assert row["per_round"].split() == [f"{r['seconds']:.2f}" for r in arm["rounds"]]
        for key in ("ratios", "steady_ratios"):
            assert set(table[key]) == set(run[key])
            assert all(_agrees(table[key][n], v) for n, v in run[key].items()), key
    assert "floor" in stdout and "profile of arm A" in stdout


@pytest.fixture
def benchmarks(monkeypatch):
    """The benchmarks' modules, imported as the scripts import each other."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("bare_loop"), importlib.import_module("gpu_study")


@pytest.mark.parametrize(
    "model_name, lr_interval", [("test_resnet", "epoch"), ("test_byobnet", "step")]
)
def test_bare_loop_computes_train_runs_losses_in_float64(benchmarks, model_name, lr_interval):
    """Arm B is the same math as arm A: in float64 on the CPU, the same validation losses."""
    import numpy as np

    from idh_pseudocolor.training import train_run

    bare_loop, gpu_study = benchmarks
    arrays = gpu_study.synthetic(40, 40, 34)
    ids = arrays["subject_ids"].tolist()
    # float64, one thread, the whole schedule: both paths' arithmetic in the same order
    cfg = run_config(
        model_name=model_name,
        pretrained=False,
        weight_decay=0.01,
        learning_rate=1e-3,
        superconvergence=True,
        peak_fraction=0.3,
        lr_interval=lr_interval,
        max_epochs=2,
        mask_non_tumor=False,
        batch_size=16,
        image_size=32,
        early_stopping=False,
        weights_file=None,
        precision="64-true",
        accelerator="cpu",
        torch_threads=1,
        deterministic=True,
        device_resident=True,
        fused_optimizer=True,
        channels_last=False,
        compile=False,
        cudnn_benchmark=False,
        initial_weights_cache=0,
    )
    ours = train_run(arrays, ids[:32], ids[32:], cfg, progress=False)
    bare = bare_loop.bare_loop(arrays, np.arange(32), np.arange(32, 40), cfg)
    assert len(bare.val_losses) == len(ours.history) == 2 == len(bare.epoch_ends)
    assert bare.val_losses == pytest.approx([h["val_loss"] for h in ours.history], rel=1e-12)
    assert bare.val_losses[0] != bare.val_losses[1]  # it trained


def test_gpu_study_budget_lowers_epochs_then_stops_rounds(benchmarks):
    _, gpu_study = benchmarks
    # 3 rounds x (10 + 40 x 2) = 270 s fit in 300 s: the requested epochs stay
    assert gpu_study.fitted_epochs(40, 5, 3, 300.0, 10.0, 2.0) == (40, None)
    # in 150 s: (150 / 3 - 10) / 2 = 20 epochs, and the output says why
    epochs, why = gpu_study.fitted_epochs(40, 5, 3, 150.0, 10.0, 2.0)
    assert epochs == 20 and "budget" in why and "40 epochs" in why
    # never below the minimum: the round guard stops the rounds instead
    assert gpu_study.fitted_epochs(40, 5, 3, 30.0, 10.0, 2.0)[0] == 5
    assert gpu_study.round_guard(50.0, now=100.0, deadline=160.0) is None
    assert "for this model" in gpu_study.round_guard(50.0, now=120.0, deadline=160.0)
    assert "in the budget" in gpu_study.round_guard(50.0, 120.0, 160.0, first=True)
    assert gpu_study.process_age_s() > 0  # the budget's clock starts with the process


def _benchmark_output(script: str, *args: str) -> str:
    """What a script in benchmarks/ prints, run as a user runs it (it must succeed)."""
    done = subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _arms_and_ratio(
    out: str, arm_pattern: str, arms: tuple[str, str], ratio_pattern: str
) -> tuple[dict[str, float], float]:
    """Each arm's seconds (``arm_pattern`` with ``{arm}``) and the printed ratio; both arms
    must have taken time."""
    seconds = {
        arm: float(re.search(arm_pattern.replace("{arm}", arm), out).group(1)) for arm in arms
    }
    assert all(v > 0 for v in seconds.values()), seconds
    return seconds, float(re.search(ratio_pattern, out).group(1))


def test_input_cache_benchmark_checks_its_arms_agree_and_prints_the_ratio():
    """The plumbing of benchmarks/input_cache.py at toy size: both arms train the demo's six
    runs, the script checks they computed the same runs, and the ratio it prints is the one its
    two best times give."""
    out = _benchmark_output("input_cache.py", "--rounds", "1", "--train", "20", "--val", "8")
    assert "6 runs a configuration" in out and "results: identical" in out
    best, ratio = _arms_and_ratio(
        out, r"{arm}: best\s+([\d.]+) s", ("own", "shared"), r"ratio own/shared: ([\d.]+)"
    )
    assert abs(ratio - best["own"] / best["shared"]) < 0.01


def test_initial_weights_benchmark_checks_kept_networks_and_prints_the_ratio():
    """The plumbing of benchmarks/initial_weights.py on timm's test networks: both arms make the
    networks of two configurations' runs, the script checks the kept ones against created ones,
    and the ratio it prints is the one its totals give."""
    out = _benchmark_output("initial_weights.py", "--tiny", "--configurations", "2", "--seeds", "2")
    assert "2 configurations x 8 runs" in out and "kept ones equal created ones bitwise" in out
    total, ratio = _arms_and_ratio(
        out,
        r"{arm}: .* ([\d.]+) s in all",
        ("create", "kept"),
        r"ratio create/kept over the 2 configurations: ([\d.]+)",
    )
    assert ratio == pytest.approx(total["create"] / total["kept"], rel=0.02)


@pytest.fixture
def stacked_runs(monkeypatch):
    """benchmarks/stacked_runs.py, imported as the benchmarks import each other."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("stacked_runs")


@pytest.mark.parametrize("model_name", ["test_resnet", "test_byobnet"])
def test_stacked_runs_train_exactly_as_separate_runs_in_float64(model_name, stacked_runs):
    """Lever 5's math: k runs stacked into one vmapped model (stacked weights, batch-norm
    statistics updated per run, one AdamW over the stacked parameters) end two steps with the
    weights and buffers each run reaches on its own, in float64 to 1e-8; stacked runs whose
    batch-norm statistics are not written back are told apart."""
    assert stacked_runs.equivalence(model_name, k=3, steps=2) < 1e-8

    class StatisticsLost(stacked_runs.Stacked):
        def step(self, x, y, autocast):
            kept = {n: b.clone() for n, b in self.buffers.items()}
            super().step(x, y, autocast)
            self.buffers = kept

    assert stacked_runs.equivalence(model_name, k=3, steps=2, stacked_cls=StatisticsLost) > 1e-8


def test_stacked_batch_norm_takes_bf16_inputs(stacked_runs):
    """Under CUDA's autocast a stacked run's batch norm gets bf16 inputs from a convolution;
    vmap's batch-norm rule then fails against fp32 running statistics. A CPU stand-in: a network
    whose batch norm is fed bf16 trains stacked under autocast, its statistics stay fp32."""
    import torch

    class ToBF16(torch.nn.Module):
        def forward(self, x):
            return x.bfloat16()

    def network():
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3),
            ToBF16(),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 2),
        )

    torch.manual_seed(0)
    stacked = stacked_runs.Stacked([network(), network()])
    x, y = stacked_runs._batches(2, 4, 8, 1, torch.float32, torch.device("cpu"))[0]
    before = stacked.buffers["2.running_mean"].clone()
    stacked.step(x, y, torch.bfloat16)
    after = stacked.buffers["2.running_mean"]
    assert after.dtype == torch.float32 and not torch.equal(after, before)
