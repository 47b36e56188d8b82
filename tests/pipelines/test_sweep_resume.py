"""Killing the permutation study midway and rerunning recomputes nothing finished and loses
nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from tests.pipelines.test_permutation_study import prepare


def test_killed_sweep_resumes_without_recomputing(kedro_project, tiny_cohort):
    prepare(kedro_project, tiny_cohort)
    out = kedro_project / "data/07_model_output/permutation_study"
    bundles = kedro_project / "data/06_models/permutation_study"

    def finished() -> dict[str, int]:
        """Configurations whose node saved every output: the checkpoint bundle's manifest is written
        last (after validation_runs and validation_predictions), so it marks a finished node."""
        done = {p.parent.name for p in bundles.glob("*/manifest.json")}
        return {
            name: (out / name / "validation_predictions.csv").stat().st_mtime_ns
            for name in sorted(done)
        }

    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", "permutation_study"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=kedro_project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    try:
        while len(finished()) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.2)
    finally:  # killed mid-sweep, or, the test failing, not left running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = finished()
    assert 3 <= len(before) < 28

    rerun = subprocess.run(
        [*cmd, "--only-missing-outputs"],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = finished()
    assert len(after) == 28 and len(list(out.glob("*/validation_runs.csv"))) == 28
    # finished work was not redone
    assert all(after[name] == mtime for name, mtime in before.items())
    winner = yaml.safe_load((kedro_project / "data/08_reporting/study_winner.json").read_text())
    assert 0 <= winner["config_id"] < 28
