"""Project commands that are not Kedro pipelines.

Available both as ``idh-pseudocolor <command>`` and, because Kedro merges a project's ``cli``
group into its own, as ``kedro <command>`` inside the project.
"""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.group()
def cli() -> None:
    """IDH Pseudocolor command line (pipelines run with `kedro run --pipelines ...`)."""


@cli.command()
@click.option("--subjects", "n_subjects", default=200, show_default=True, help="Number of subjects.")
@click.option("--seed", default=0, show_default=True, help="Seed; the cohort is reproducible from it.")
@click.option("--out", default="data/01_raw/cohort", show_default=True, type=click.Path(file_okay=False), help="Cohort folder.")
@click.option("--voxel-size", default=1.0, show_default=True, help="Grid spacing in mm: 1 = EGD's 197x233x189 grid; 2 or 4 for fast tests.")
@click.option("--layout", type=click.Choice(["egd", "brats"]), default="egd", show_default=True, help="File layout to write.")
@click.option("--mutant-fraction", default=0.35, show_default=True, help="Fraction of IDH-mutant subjects.")
@click.option("--workers", default=None, type=int, help="Parallel processes (default: all cores).")
@click.option("--if-absent", is_flag=True, help="Do nothing when OUT already holds a complete cohort with these settings.")
def phantom(
    n_subjects: int, seed: int, out: str, voxel_size: float, layout: str, mutant_fraction: float, workers: int | None, if_absent: bool
) -> None:
    """Generate the synthetic (phantom) glioma cohort: not patient data."""
    from idh_pseudocolor.phantom import cohort_is_complete, generate_cohort

    if if_absent and cohort_is_complete(out, n_subjects, seed, voxel_size, layout):
        click.echo(f"Phantom cohort already complete in {out}; nothing to do.")
        return
    start = time.perf_counter()
    rows = generate_cohort(
        Path(out), n_subjects=n_subjects, seed=seed, voxel_size=voxel_size, layout=layout,
        mutant_fraction=mutant_fraction, n_workers=workers,
    )
    mutants = sum(r["IDH"] for r in rows)
    click.echo(
        f"Wrote {len(rows)} phantom subjects ({mutants} IDH-mutant) to {out} in {time.perf_counter() - start:.0f} s"
    )


main = cli

if __name__ == "__main__":
    main()
