"""Raw phantom studies through `preprocess`: residual misalignment against the recorded truth,
beside the baseline of no registration (the scanner's header geometry alone, as a naive
conversion would leave it), and the seconds per patient.

    .venv/bin/python benchmarks/preprocessing.py --subjects 2 --voxel-size 1 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from idh_pseudocolor.preprocess import preprocess_cohort, residual_against_truth
from idh_pseudocolor.raw_phantom import export_raw_cohort
from idh_pseudocolor.registration import (
    physical_points,
    residual_error_mm,
    template_brain_mask,
    transform_from_ras,
)


def header_only(truth: Path, voxel_size: float) -> list[float]:
    """Median residual per sequence if the series were taken as already aligned (identity)."""
    true = json.loads((truth / "transforms.json").read_text())["sequences"]
    points = physical_points(template_brain_mask(voxel_size), max_points=20000)
    identity = transform_from_ras(np.eye(4))
    return [
        residual_error_mm(
            identity, transform_from_ras(np.asarray(v["template_to_acquired_ras"])), points
        )[0]
        for v in true.values()
        if isinstance(v, dict) and "template_to_acquired_ras" in v
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--voxel-size", type=float, default=1.0)
    parser.add_argument("--format", choices=["dicom", "nifti"], default="dicom")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw", Path(tmp) / "out"
        start = time.perf_counter()
        export_raw_cohort(
            raw, args.subjects, args.seed, args.format, args.voxel_size, args.workers, False
        )
        exported = time.perf_counter() - start
        start = time.perf_counter()
        report = preprocess_cohort(
            raw, out, voxel_size=args.voxel_size, n_workers=args.workers, progress=False
        )
        seconds = time.perf_counter() - start
        ours, baseline = [], []
        for sid in report.loc[report["status"] == "written", "subject_id"]:
            residual = residual_against_truth(out / "SUBJECTS" / sid, raw / ".truth" / sid)
            ours += [median for median, _ in residual.values()]
            baseline += header_only(raw / ".truth" / sid, args.voxel_size)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.subjects} {args.format} "
        f"studies at {args.voxel_size} mm, {args.workers} worker(s)"
    )
    print(
        f"export {exported:.0f} s; preprocess {seconds:.0f} s "
        f"({seconds / args.subjects:.0f} s per patient)"
    )
    print(
        f"median residual over patients x sequences: ours {np.median(ours):.2f} mm "
        f"(max of medians {max(ours):.2f}), header geometry alone {np.median(baseline):.2f} mm; "
        f"ratio {np.median(baseline) / np.median(ours):.0f}x"
    )


if __name__ == "__main__":
    main()
