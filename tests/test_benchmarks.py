"""The GPU study benchmark runs end to end on CPU with tiny settings and reports what it
promises."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_study_tiny_mode_reports_throughput_baseline_and_floor(tmp_path):
    out = tmp_path / "gpu_study.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks/gpu_study.py"),
            "--tiny",
            "--seeds",
            "42",
            "43",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["runs"]] == ["test_resnet", "test_byobnet"]
    assert result["matmul_tflops"] > 0
    for run in result["runs"]:
        assert len(run["seconds_per_seed"]) == 2 and all(s > 0 for s in run["seconds_per_seed"])
        assert run["images_per_s"] > 0 and run["baseline_images_per_s"] > 0
        assert run["forward_gflops_per_image"] > 0
        assert 0 < run["floor_over_actual"] < 1  # nothing beats the arithmetic floor
    assert "floor/actual" in done.stdout and "baseline" in done.stdout


def test_gpu_check_tiny_runs_the_paper_path_stages_into_one_folder(tmp_path):
    out = tmp_path / "gpu_check"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--out", str(out), "--tiny"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == [
        "phantom",
        "data_engineering",
        "configuration_15",
        "gpu_study",
    ]
    assert all(s["exit_code"] == 0 and s["seconds"] > 0 for s in summary["stages"].values())
    assert summary["versions"]["torch"] and summary["versions"]["kedro"] != "not installed"
    runs = summary["configuration_15"]
    assert sorted({(r["model_name"], r["seed"]) for r in runs}) == [
        (m, s) for m in ("test_byobnet", "test_resnet") for s in (42, 43, 44)
    ]
    assert all(r["epochs_run"] == 3 and 0 <= r["auroc"] <= 1 for r in runs)
    assert summary["gpu_study"]["runs"] and (out / "conf/local/parameters.yml").is_file()
    assert not (REPO / "data/rehearsal").exists() or not any(
        (REPO / "data/rehearsal").rglob("configuration_15/*")
    )
