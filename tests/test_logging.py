"""conf/logging.yml as Kedro applies it: one line per record when the output is a pipe or a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_a_long_log_line_stays_on_one_line_when_piped():
    """What `kedro run > run.log` does: Kedro finds conf/logging.yml in the project folder when
    it is imported; a record longer than 80 columns arrives as one line, words unbroken."""
    message = "15: T2-T1ce-FLAIR: test_resnet pretrained seed 44: " + " ".join(
        f"word{i}" for i in range(60)
    )
    code = (
        "import logging, kedro.framework.project\n"
        f"logging.getLogger('idh_pseudocolor.pipelines.permutation_study.nodes').info({message!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KEDRO_LOGGING_CONFIG", "COLUMNS")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "word0" in line]
    assert len(lines) == 1 and lines[0].endswith(message), done.stdout
    assert " INFO " in lines[0] and "idh_pseudocolor.pipelines.permutation_study.nodes" in lines[0]


def test_workers_get_the_levels_without_the_handlers():
    from idh_pseudocolor.worker_logging import worker_logging

    config = yaml.safe_load((REPO / "conf/logging.yml").read_text())
    config["loggers"]["kedro"]["handlers"] = ["console"]
    worker = worker_logging(config, "idh_pseudocolor")
    assert (
        worker["handlers"] == {}
        and worker["root"]["handlers"] == []
        and not worker["disable_existing_loggers"]
    )
    assert {name: settings["level"] for name, settings in worker["loggers"].items()} == {
        name: settings["level"] for name, settings in config["loggers"].items()
    }
    assert all("handlers" not in settings for settings in worker["loggers"].values())
    assert worker_logging({"version": 1}, "idh_pseudocolor")["loggers"] == {
        "idh_pseudocolor": {"level": "INFO"}
    }
    # the driver's configuration is left as it was
    assert config["loggers"]["kedro"]["handlers"] == ["console"]
