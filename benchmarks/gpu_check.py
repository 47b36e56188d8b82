"""The paper path's GPU check: one script a GPU box (its own torch, no internet) runs after the
offline install, writing everything into one folder.

1. versions and the device;
2. a 60-subject phantom cohort at EGD's grid;
3. ``kedro run --env l4+rehearsal`` (the documented rehearsal mechanism) with the paper's real
   models, 224 px, bf16, channels_last, 3 seeds and 3 epochs: data_engineering, then the
   permutation study's configuration 15. The phantom needs the rehearsal layer; the scale knobs
   bring back everything but the epochs. Hyperparameters are the paper's published optimum with
   pretrained off (no ImageNet weights offline), accepted explicitly (``accept_best_params``);
4. ``benchmarks/gpu_study.py``: the paper models' project path, a bare loop and k concurrent
   runs against the arithmetic floor (its own 480 s budget).

    python benchmarks/gpu_check.py --out gpu_check       # on the GPU box (about 6 min on an H100)
    python benchmarks/gpu_check.py --out /tmp/gc --tiny  # CPU smoke test: tiny nets, 4 mm grid

The conf of the run is written to ``OUT/conf`` (a copy of the project's with a ``local`` layer),
so nothing in the project's own ``conf/local`` or ``data/`` is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "gpus": str(torch.cuda.device_count()),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU, {os.cpu_count()} cores",
    }
    for name in (
        "timm",
        "pytorch-lightning",
        "kedro",
        "kedro-datasets",
        "optuna",
        "numpy",
        "pandas",
        "idh_pseudocolor",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def stage(name: str, command: list[str], log: Path, summary: dict) -> bool:
    """Run one step, its output to ``log`` and the console; record seconds and exit code."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            print(line, end="", flush=True)
        code = proc.wait()
    summary["stages"][name] = {
        "seconds": round(time.perf_counter() - start, 1),
        "exit_code": code,
        "log": log.name,
    }
    # written after every stage: a check cut off by the box's time limit still leaves what it
    # measured
    (log.parent / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return code == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the output folder (created)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CPU smoke test: tiny nets, 12 subjects at 4 mm, 1 epoch",
    )
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run of configuration 15")
    parser.add_argument(
        "--skip-study", action="store_true", help="leave out benchmarks/gpu_study.py"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    from idh_pseudocolor.paper_path import PAPER_SWEEP_MODELS
    from idh_pseudocolor.provenance import best_params_id
    from idh_pseudocolor.search import PAPER_OPTIMUM

    summary: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiny": args.tiny, "stages": {}}
    summary["versions"] = versions()
    print(json.dumps(summary["versions"], indent=1), flush=True)
    gpu = not args.tiny
    subjects = args.subjects or (12 if args.tiny else 60)

    cohort = out / "cohort"
    phantom = [
        python,
        "-m",
        "idh_pseudocolor.cli",
        "phantom",
        "--subjects",
        str(subjects),
        "--seed",
        "0",
        "--out",
        str(cohort),
        "--if-absent",
        *(["--voxel-size", "4", "--workers", "1"] if args.tiny else []),
    ]
    ok = stage("phantom", phantom, out / "phantom.log", summary)

    # the run's configuration: the project's layers + a machine layer for this check
    conf = out / "conf"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(REPO / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    data = out / "data"
    (conf / "local/globals.yml").write_text(yaml.safe_dump({"data_root": str(data)}))
    hp = {**{k: v for k, v in PAPER_OPTIMUM.items()}, "pretrained": False}
    best = {
        "hyperparameters": hp,
        "provenance": {
            "source": (
                "the paper's published optimum (Table 1), "
                "pretrained off: no ImageNet weights offline"
            ),
            "search_fingerprint": None,
            "completed_trials": None,
        },
    }
    hardware = (
        {
            "accelerator": "gpu",
            "precision": "bf16-mixed",
            "channels_last": True,
            "deterministic": False,
        }
        if gpu
        else {"accelerator": "cpu", "precision": "32-true"}
    )
    local = {
        "data_engineering": {"progress": False},
        "permutation_study": {
            "models": list(PAPER_SWEEP_MODELS) if gpu else ["test_resnet", "test_byobnet"],
            "seeds": [42, 43, 44],
            "overrides": {"max_epochs": args.epochs},
            "fixed": {"image_size": 224 if gpu else 32, **hardware},
            "accept_best_params": best_params_id(best),
        },
    }
    (conf / "local/parameters.yml").write_text(yaml.safe_dump(local))
    best_file = data / "rehearsal/06_models/best_params.yml"
    best_file.parent.mkdir(parents=True, exist_ok=True)
    best_file.write_text(yaml.safe_dump(best))
    kedro = [python, "-m", "kedro", "run", "--conf-source", str(conf), "--env", "l4+rehearsal"]
    if ok:
        ok = stage(
            "data_engineering",
            [*kedro, "--pipelines", "data_engineering", "--params", f"cohort_path={cohort}"],
            out / "data_engineering.log",
            summary,
        )
    if ok:
        ok = stage(
            "configuration_15",
            [*kedro, "--pipelines", "permutation_study", "--namespaces", "configuration_15"],
            out / "configuration_15.log",
            summary,
        )
    runs_file = (
        data / "rehearsal/07_model_output/permutation_study/configuration_15/validation_runs.csv"
    )
    if ok and runs_file.is_file():
        import pandas as pd

        runs = pd.read_csv(runs_file)
        shutil.copy(runs_file, out / "configuration_15_runs.csv")
        runs["seconds"] = runs["finished_at"] - runs["started_at"]
        cols = [
            "model_name",
            "seed",
            "auroc",
            "f1",
            "best_epoch",
            "epochs_run",
            "device",
            "seconds",
        ]
        print(runs[cols].to_string(index=False), flush=True)
        summary["configuration_15"] = runs[cols].to_dict("records")

    if not args.skip_study:
        study = [
            python,
            str(REPO / "benchmarks/gpu_study.py"),
            "--out",
            str(out / "gpu_study.json"),
            *(["--tiny", "--seeds", "42", "43"] if args.tiny else []),
        ]
        stage("gpu_study", study, out / "gpu_study.log", summary)
        if (out / "gpu_study.json").is_file():
            summary["gpu_study"] = json.loads((out / "gpu_study.json").read_text())
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    failed = [name for name, s in summary["stages"].items() if s["exit_code"] != 0]
    print(
        f"gpu_check: {len(summary['stages'])} stages, "
        f"failed: {failed or 'none'}; see {out / 'summary.json'}",
        flush=True,
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
