"""Benchmark: our slice extraction vs. a naive baseline, same cohort, same run.

Baseline: one process, every volume loaded fully with ``get_fdata()`` (after reorienting to
RAS), then the mid-tumor slice taken. Ours: :func:`idh_pseudocolor.slices.extract_many`
(mask read whole, each sequence read only up to its slice, parallel across subjects).
Both produce the same slices (checked). Prints the speed ratio and peak memory (RSS of the
whole process tree, sampled every 20 ms).

    python benchmarks/data_engineering.py --subjects 50            # makes a phantom cohort
    python benchmarks/data_engineering.py --cohort data/01_raw/cohort --subjects 200
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

from idh_pseudocolor.cohort import FILE_KEYS, discover_cohort
from idh_pseudocolor.config_loader import project_parameters
from idh_pseudocolor.configurations import SEQUENCES
from idh_pseudocolor.parameters import DataEngineeringSettings
from idh_pseudocolor.phantom import cohort_is_complete, generate_cohort
from idh_pseudocolor.slices import (
    Normalization,
    extract_many,
    midpoint_slice,
    normalize_plane,
    to_display,
    tumor_z_range,
)


class PeakRSS:
    """Peak resident memory of this process plus all its children while the block runs."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def naive_extract(files: dict[str, str], normalization: Normalization) -> np.ndarray:
    volumes = {k: nib.as_closest_canonical(nib.load(files[k])).get_fdata() for k in FILE_KEYS}
    z = midpoint_slice(*tumor_z_range(volumes["mask"] > 0))
    return np.stack(
        [
            to_display(normalize_plane(volumes[s][:, :, z].astype(np.float32), normalization))
            for s in SEQUENCES
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument(
        "--cohort",
        type=Path,
        default=None,
        help="existing EGD-layout cohort (else a phantom is made)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    cohort = args.cohort
    if cohort is None:
        cohort = Path(tempfile.gettempdir()) / f"idh_bench_cohort_{args.subjects}"
        if not cohort_is_complete(cohort, args.subjects, 0, 1.0, "egd"):
            generate_cohort(cohort, n_subjects=args.subjects, seed=0, voxel_size=1.0)
    frame = discover_cohort(cohort).head(args.subjects)
    subjects = [
        (r["subject_id"], {k: r[f"file_{k}"] for k in FILE_KEYS}) for r in frame.to_dict("records")
    ]
    normalization = DataEngineeringSettings.from_params(
        project_parameters(Path(__file__).resolve().parents[1])["data_engineering"]
    ).normalization.normalization()
    shape = nib.load(subjects[0][1]["T1"]).shape

    with PeakRSS() as ours_mem:
        start = time.perf_counter()
        ours = list(extract_many(subjects, normalization, n_workers=args.workers, progress=False))
        ours_s = time.perf_counter() - start
    with PeakRSS() as naive_mem:
        start = time.perf_counter()
        for (sid, files), mine in zip(subjects, ours, strict=True):
            naive = naive_extract(files, normalization)
            assert not isinstance(mine, Exception), mine
            np.testing.assert_allclose(naive, mine.image, atol=1e-5, err_msg=sid)  # same slices
        naive_s = time.perf_counter() - start

    n = len(subjects)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"cohort {cohort} ({n} subjects, grid {shape})"
    )
    print(
        f"ours (partial reads, {args.workers} workers):     {ours_s:7.2f} s  "
        f"{n / ours_s:6.1f} subjects/s  peak RSS {ours_mem.peak / 2**20:7.0f} MiB"
    )
    print(
        f"naive baseline (get_fdata, 1 process): {naive_s:7.2f} s  {n / naive_s:6.1f} "
        f"subjects/s  peak RSS {naive_mem.peak / 2**20:7.0f} MiB (holds our results too)"
    )
    slice_mb = sum(r.image.nbytes + r.mask.nbytes for r in ours) / n / 2**20
    print(
        f"extracted slice data kept in memory: {slice_mb:.2f} MiB per subject (the output itself)"
    )
    print(
        f"speed ratio ours/naive: {naive_s / ours_s:.2f}x (target >= 4x); "
        "peak RSS target < 1536 MiB"
    )


if __name__ == "__main__":
    main()
