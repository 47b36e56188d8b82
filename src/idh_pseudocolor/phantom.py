"""A synthetic glioma cohort: honest about being synthetic, realistic enough to exercise the study.

Anatomy is the MNI ICBM152 2009a 1 mm template and its GM/WM maps that nilearn ships (its
``load_mni152_*_template`` loaders; the EGD grid, 197x233x189 RAS). Each subject gets per-sequence
tissue contrast, a tumor whose look depends on IDH status through *overlapping* distributions, and
scanner effects (scale, offset, smooth bias field, Rician noise). Written in the EGD layout (or
BraTS layout, stored LPS with a UCSF-style labels CSV, so those readers are exercised too).

The scanner effects belong to an imaging :class:`Site` (:data:`SITES`): site ``"a"`` is the
development cohort, site ``"b"`` another hospital for external validation (brighter, offset,
stronger bias field, noisier, thick slices). The site changes only the scanner: the same seed
gives the same patients, tumors and labels at every site.

The planted truth (generator v3), recorded in ``phantom_cohort.json`` under ``cues`` so the
report can check that a study recovered it:
- Strongest, and relational: **T2-FLAIR discordance** of the solid tumor. Its T2 signal and its
  FLAIR signal are each bright or dark with the same odds in both classes, so neither sequence
  alone tells the classes apart; in mutants they mostly disagree (bright on one, dark on the
  other: the T2-FLAIR mismatch and its converse), in wild-type they mostly agree. Only an input
  holding both T2 and FLAIR can see it.
- Weak, single-sequence: enhancing rim on T1ce and necrotic core (more often wild-type), edema
  width on T2 and FLAIR, size, margin and frontal location on every sequence.
- T1: the tumor is faint and alike for both classes: the least IDH signal.
Distributions overlap (7 % of each class has the other's T2-FLAIR pattern): no perfect scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip
from scipy import ndimage

from idh_pseudocolor.configurations import SEQUENCES

GENERATOR_VERSION = 3  # bump when the cohort's content changes: --if-absent then regenerates
# Base tissue intensities (CSF, GM, WM) per sequence, arbitrary units before the scanner.
TISSUE = {
    "T1": (0.25, 0.55, 0.80),
    "T1ce": (0.25, 0.55, 0.80),
    "T2": (1.00, 0.60, 0.42),
    "FLAIR": (0.08, 0.62, 0.45),
}

#: P(T2 and FLAIR disagree in the solid tumor) per class: the planted, relational cue.
DISCORDANCE = {"mutant": 0.93, "wild-type": 0.07}
#: Which sequences carry which IDH cue (written to phantom_cohort.json; read by the report).
CUES: list[dict[str, Any]] = [
    {
        "cue": "T2-FLAIR discordance of the solid tumor",
        "sequences": ["T2", "FLAIR"],
        "kind": "relational",
        "strength": "strong",
        "mutant": DISCORDANCE["mutant"],
        "wild-type": DISCORDANCE["wild-type"],
        "note": (
            "each of T2 and FLAIR is bright or dark with "
            "equal odds in both classes; only the pair differs"
        ),
    },
    {
        "cue": "enhancing rim",
        "sequences": ["T1ce"],
        "kind": "single",
        "strength": "weak",
        "mutant": 0.3,
        "wild-type": 0.6,
    },
    {
        "cue": "necrotic core",
        "sequences": ["T1ce", "T2", "FLAIR"],
        "kind": "single",
        "strength": "weak",
        "mutant": 0.25,
        "wild-type": 0.45,
    },
    {"cue": "edema width", "sequences": ["T2", "FLAIR"], "kind": "single", "strength": "weak"},
    {
        "cue": "size, margin and frontal location",
        "sequences": ["T1", "T1ce", "T2", "FLAIR"],
        "kind": "single",
        "strength": "weak",
        "mutant": 0.6,
        "wild-type": 0.45,
    },
]
_CUE_BY_NAME = {c["cue"]: c for c in CUES}
#: The sequences a configuration must hold to see the strongest cue.
PLANTED_SEQUENCES: tuple[str, ...] = ("T2", "FLAIR")


@dataclass(frozen=True)
class Site:
    """The scanner effects of one imaging site; anatomy, tumors and labels do not depend on it.

    Per subject and sequence: an intensity scale (lognormal), an additive offset (uniform), Rician
    noise (sd a uniform fraction of the scale); per subject, one smooth multiplicative bias field
    (a quadratic polynomial in x, y, z whose 9 coefficients are normal with sd ``bias_sd``).
    ``slice_voxels`` is the through-plane resolution: each axial plane averages that many grid
    voxels along the superior-inferior axis, tissue and noise alike (a thick slice's partial
    volume, and its noise correlated along S-I, as when thick slices are resampled onto the same
    grid); 1 = isotropic ``voxel_size``. Slice thickness = ``slice_voxels * voxel_size`` mm. The
    noise sd is that of the written image at every site (averaged noise is rescaled to it).
    """

    name: str
    description: str
    scale_median: float  # median of the lognormal intensity scale
    scale_spread: float  # sigma of log(scale)
    offset: tuple[float, float]  # additive offset, uniform in [low, high)
    bias_sd: float  # sd of the bias field's polynomial coefficients
    noise: tuple[float, float]  # Rician noise sd as a fraction of the scale, uniform in [low, high)
    slice_voxels: int = 1  # grid voxels averaged along S-I (odd, so the plane stays centered)

    def __post_init__(self) -> None:
        if self.slice_voxels < 1 or self.slice_voxels % 2 == 0:
            raise ValueError(f"slice_voxels must be odd and positive, got {self.slice_voxels}")


#: The imaging sites. "a" is the cohort generator v3 has always written (keep it unchanged: the
#: default cohort must stay the same for a seed); "b" is another hospital for external validation.
SITES: dict[str, Site] = {
    "a": Site(
        name="a",
        description="the development site",
        scale_median=800.0,
        scale_spread=0.3,
        offset=(0.0, 40.0),
        bias_sd=0.12,
        noise=(0.015, 0.04),
        slice_voxels=1,
    ),
    "b": Site(
        name="b",
        description=(
            "another hospital for external validation: brighter (scale ~1800) with a larger "
            "offset, a stronger bias field, more noise and 3-voxel-thick axial slices"
        ),
        scale_median=1800.0,
        scale_spread=0.2,
        offset=(50.0, 150.0),
        bias_sd=0.25,
        noise=(0.03, 0.06),
        slice_voxels=3,
    ),
}


def get_site(site: str | Site) -> Site:
    """The :class:`Site` named ``site`` (a ``Site`` passes through); ValueError naming the valid
    ones otherwise."""
    if isinstance(site, Site):
        return site
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; valid sites: {', '.join(sorted(SITES))}")
    return SITES[site]


@dataclass(frozen=True)
class Template:
    """Tissue maps on the chosen grid; one per process (cached)."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    brain: np.ndarray  # bool brain mask on the grid
    brain_index: np.ndarray  # flat indices of brain voxels
    brain_coords: np.ndarray  # (3, n_brain) world mm of brain voxels, float32
    base: dict[str, np.ndarray]  # sequence -> full-grid tissue intensity, float32
    wm_centers: np.ndarray  # (n, 3) voxel indices of deep white matter: tumor seeds
    wm_frontal: np.ndarray  # bool (n,): seed lies in the frontal lobe (MNI y > 10 mm)


def template_maps() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """nilearn's 1 mm MNI152 T1, GM and WM templates (float32 in [0, 1]) and their affine.

    The public loaders at ``resolution=1`` neither resample nor change the grid; they divide
    the uint8 files by their maximum (255) in float32, bit for bit the phantom's maps of
    generator v3 (tests/test_phantom.py checks both against the files).
    """
    from nilearn.datasets import (
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    images = {
        "t1": load_mni152_template(resolution=1),
        "gm": load_mni152_gm_template(resolution=1),
        "wm": load_mni152_wm_template(resolution=1),
    }
    maps = {k: np.asarray(img.dataobj, dtype=np.float32) for k, img in images.items()}
    return maps, np.array(images["t1"].affine, dtype=float)


@lru_cache(maxsize=4)
def load_template(voxel_size: float = 1.0) -> Template:
    """The MNI template at ``voxel_size`` mm (1.0 = EGD's grid; 2 or 4 for fast tests)."""
    maps, affine = template_maps()
    if voxel_size != 1.0:
        factor = 1.0 / voxel_size
        maps = {k: ndimage.zoom(v, factor, order=1) for k, v in maps.items()}
        affine[:3, :3] *= voxel_size
    brain = maps["t1"] > 0.02
    gm = np.where(brain, maps["gm"], 0)
    wm = np.where(brain, maps["wm"], 0)
    csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0)
    base = {
        seq: (c * csf + g * gm + w * wm).astype(np.float32) for seq, (c, g, w) in TISSUE.items()
    }
    brain_index = np.flatnonzero(brain)
    ijk = np.stack(np.unravel_index(brain_index, brain.shape)).astype(np.float32)
    coords = (affine[:3, :3] @ ijk + affine[:3, 3:4]).astype(np.float32)
    deep_wm = ndimage.binary_erosion(wm > 0.7, iterations=max(1, int(round(8 / voxel_size))))
    centers = np.argwhere(deep_wm)
    world_y = affine[1, 1] * centers[:, 1] + affine[1, 3]
    return Template(
        affine=affine,
        shape=brain.shape,
        brain=brain,
        brain_index=brain_index,
        brain_coords=coords,
        base=base,
        wm_centers=centers,
        wm_frontal=world_y > 10.0,
    )


@dataclass(frozen=True)
class Tumor:
    """Drawn tumor parameters; stored in each subject's metadata so the truth is inspectable."""

    mutant: bool
    center: tuple[int, int, int]
    radius_mm: float
    axes: tuple[float, float, float]
    irregularity: float
    softness: float
    edema_width: float
    necrosis: float  # relative radius of the necrotic core, 0 = none
    enhancement: float
    heterogeneity: float
    discordant: bool  # T2 and FLAIR disagree in the solid tumor (the planted, relational cue)
    t2_core: float  # solid tumor signal on T2 (tissue units: WM 0.42, GM 0.60, CSF 1.0)
    flair_core: float  # solid tumor signal on FLAIR (CSF 0.08, WM 0.45, GM 0.62)


def draw_tumor(rng: np.random.Generator, template: Template, mutant: bool) -> Tumor:
    """Tumor parameters from IDH-dependent, deliberately overlapping distributions.

    Single-sequence features differ only weakly between the classes; the strong cue is the
    pairing of the T2 and FLAIR core signals (see the module docstring and :data:`CUES`).
    """
    cls = "mutant" if mutant else "wild-type"
    weak = _CUE_BY_NAME
    frontal = rng.random() < weak["size, margin and frontal location"][cls]
    pool = template.wm_centers[template.wm_frontal == frontal]
    if len(pool) == 0:
        pool = template.wm_centers
    center = tuple(int(v) for v in pool[rng.integers(len(pool))])
    radius = rng.normal(22.0 if mutant else 23.5, 4.5)
    necrosis = rng.uniform(0.2, 0.5) if rng.random() < weak["necrotic core"][cls] else 0.0
    enhancement = (
        rng.uniform(0.3, 0.9)
        if rng.random() < weak["enhancing rim"][cls]
        else rng.uniform(0.0, 0.1)
    )
    irregularity = rng.uniform(0.04, 0.2) if mutant else rng.uniform(0.07, 0.24)
    softness = rng.uniform(0.04, 0.12)
    edema = rng.uniform(0.12, 0.5) if mutant else rng.uniform(0.16, 0.54)
    heterogeneity = rng.uniform(0.03, 0.1)
    # the planted truth: T2 bright or dark at even odds in both classes; FLAIR follows or opposes it
    discordant = bool(rng.random() < DISCORDANCE[cls])
    t2_bright = bool(rng.random() < 0.5)
    flair_bright = t2_bright != discordant
    t2_core = rng.uniform(0.86, 0.98) if t2_bright else rng.uniform(0.50, 0.62)
    flair_core = rng.uniform(0.76, 0.88) if flair_bright else rng.uniform(0.20, 0.32)
    return Tumor(
        mutant=mutant,
        center=center,  # type: ignore[arg-type]
        radius_mm=float(np.clip(radius, 12.0, 32.0)),
        axes=tuple(float(a) for a in np.clip(rng.normal(1.0, 0.15, 3), 0.7, 1.3)),  # type: ignore[arg-type]
        irregularity=float(irregularity),
        softness=float(softness),
        edema_width=float(edema),
        necrosis=float(necrosis),
        enhancement=float(enhancement),
        heterogeneity=float(heterogeneity),
        discordant=discordant,
        t2_core=float(t2_core),
        flair_core=float(flair_core),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field / (field.std() + 1e-6)


def _thick_slices(values: np.ndarray, template: Template, voxels: int) -> np.ndarray:
    """Brain-voxel ``values`` averaged over ``voxels`` grid planes along S-I (RAS axis 2), scaled
    back to their sd (i.i.d. noise keeps its sd and becomes correlated between planes)."""
    full = np.zeros(template.brain.size, dtype=np.float32)
    full[template.brain_index] = values
    full = ndimage.uniform_filter1d(full.reshape(template.shape), voxels, axis=2, mode="constant")
    return full.ravel()[template.brain_index] * np.float32(np.sqrt(voxels))


#: Necrosis signal per sequence; it agrees on T2 and FLAIR, so it does not mimic the planted
#: discordance.
_NECROSIS_SIGNAL = {"T1": 0.66, "T1ce": 0.62, "T2": 0.95, "FLAIR": 0.80}
#: Edema signal on the sequences that show it (it is invisible on T1 and T1ce).
_EDEMA_SIGNAL = {"T2": 0.74, "FLAIR": 0.86}


@dataclass(frozen=True)
class _Lesion:
    """A tumor's tissue fractions in the box around it (arrays of the box's shape)."""

    box: tuple[slice, ...]  # where the box lies on the template grid
    in_brain: np.ndarray  # bool: the box's voxels inside the brain mask
    core: np.ndarray
    edema: np.ndarray
    necrosis: np.ndarray
    solid: np.ndarray  # core minus necrosis
    rim: np.ndarray  # enhancing rim strength (T1ce)
    het: np.ndarray  # multiplicative texture of the solid tumor


def render_subject(
    rng: np.random.Generator, template: Template, tumor: Tumor, site: str | Site = "a"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four sequences (float32, scanner units) and a BraTS-style label map (0, 1, 2, 4).

    The tumor is rendered in a box around its center; the ``site``'s scanner effects are applied
    on brain voxels only (the volumes are skull-stripped, like EGD's), which keeps generation
    fast. Every site draws the same numbers from ``rng`` in the same order, so the labels (and
    whatever is drawn after) do not depend on the site.
    """
    volumes, labels, _ = _render(rng, template, tumor, get_site(site))
    return volumes, labels


@dataclass(frozen=True)
class ScannerEffects:
    """The scanner effects drawn for one subject, kept so that tissue the phantom does not render
    (a head around the brain: :mod:`idh_pseudocolor.raw_phantom`) gets the same scanner."""

    bias_coef: np.ndarray  # the bias field's 9 polynomial coefficients (see :func:`bias_at`)
    scale: dict[str, float]  # per sequence: intensity scale
    noise_sd: dict[str, float]  # per sequence: Rician noise sd (scanner units)
    offset: dict[str, float]  # per sequence: additive offset


def _render(
    rng: np.random.Generator, template: Template, tumor: Tumor, scanner: Site
) -> tuple[dict[str, np.ndarray], np.ndarray, ScannerEffects]:
    """:func:`render_subject`, also returning the scanner effects it drew."""
    lesion = _draw_lesion(rng, template, tumor)
    core_signal = _core_signal(tumor, lesion)
    coef = rng.normal(0, scanner.bias_sd, 9).astype(np.float32)
    bias = bias_at(coef, template.brain_coords)
    volumes: dict[str, np.ndarray] = {}
    scale: dict[str, float] = {}
    noise_sd: dict[str, float] = {}
    offset: dict[str, float] = {}
    for seq in SEQUENCES:
        vol = _mix_tissue(template, lesion, seq, core_signal[seq])
        volumes[seq], (scale[seq], noise_sd[seq], offset[seq]) = _scan(
            rng, vol, template, scanner, bias
        )
    effects = ScannerEffects(coef, scale, noise_sd, offset)
    return volumes, _lesion_labels(template, tumor, lesion), effects


def _tumor_box(template: Template, tumor: Tumor, voxel: float) -> tuple[slice, ...]:
    """The grid box that can hold the tumor and its edema: rendering only there keeps a subject
    fast, and the reach covers the largest axis, edema and irregularity plus a margin."""
    reach = (
        tumor.radius_mm * max(tumor.axes) * (1 + tumor.edema_width) * (1 + 2 * tumor.irregularity)
        + 4 * voxel
    )
    half = int(np.ceil(reach / voxel))
    lo = [max(0, c - half) for c in tumor.center]
    hi = [min(n, c + half + 1) for c, n in zip(tumor.center, template.shape, strict=True)]
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def _draw_lesion(rng: np.random.Generator, template: Template, tumor: Tumor) -> _Lesion:
    """Tissue fractions shared by all four sequences, so the compartments line up across them;
    draws the shape's noise, texture and rim from ``rng`` before any scanner effect."""
    voxel = float(abs(template.affine[0, 0]))
    box = _tumor_box(template, tumor, voxel)
    grids = np.ogrid[box]
    d2 = sum(
        ((g - c) * voxel / (tumor.radius_mm * a)) ** 2
        for g, c, a in zip(grids, tumor.center, tumor.axes, strict=True)
    )
    box_shape = tuple(s.stop - s.start for s in box)
    sigma = max(1.0, tumor.radius_mm / voxel / 3)
    d = np.sqrt(d2).astype(np.float32) * (
        1 + tumor.irregularity * _smooth_noise(rng, box_shape, sigma)
    )
    texture = _smooth_noise(rng, box_shape, max(0.7, 1.5 / voxel))

    core = _sigmoid((1 - d) / tumor.softness)
    edema = np.clip(_sigmoid((1 + tumor.edema_width - d) / (2 * tumor.softness)) - core, 0, 1)
    necrosis = (
        _sigmoid((tumor.necrosis - d) / 0.05) * core if tumor.necrosis > 0 else np.zeros_like(core)
    )
    solid = core - necrosis
    rim = (
        solid
        * np.clip(1 + 0.5 * _smooth_noise(rng, box_shape, sigma / 2), 0, 2)
        * tumor.enhancement
    )
    het = 1 + tumor.heterogeneity * texture
    in_brain = template.brain[box]
    return _Lesion(box, in_brain, core, edema, necrosis, solid, rim, het)


def _core_signal(tumor: Tumor, lesion: _Lesion) -> dict[str, np.ndarray]:
    """The solid tumor's signal per sequence: where the IDH cues are planted (T1 carries none,
    T1ce the rim, T2 and FLAIR the drawn discordant or concordant pair)."""
    return {
        # faint and uniform on T1 for both classes: least signal
        "T1": np.full_like(lesion.het, 0.68),
        "T1ce": 0.68 + 0.9 * lesion.rim,
        "T2": tumor.t2_core * lesion.het,
        "FLAIR": tumor.flair_core * lesion.het,
    }


def bias_at(coef: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The smooth multiplicative bias field at world points ``coords`` ((3, n) float32, mm).

    One field per subject (its 9 ``coef`` drawn once, normal with sd ``Site.bias_sd``): every
    sequence shares the same receive coil, so the field is not drawn per sequence.
    """
    x, y, z = coords / 80.0  # roughly [-1, 1] over the head
    return np.exp(
        coef[0] * x
        + coef[1] * y
        + coef[2] * z
        + coef[3] * x * y
        + coef[4] * y * z
        + coef[5] * x * z
        + coef[6] * x * x
        + coef[7] * y * y
        + coef[8] * z * z
    )


def _mix_tissue(template: Template, lesion: _Lesion, seq: str, core: np.ndarray) -> np.ndarray:
    """The noiseless volume of one sequence: the tumor's compartments replace the healthy tissue
    in proportion to their fractions, inside the brain only (the volumes are skull-stripped)."""
    vol = template.base[seq].copy()
    local = vol[lesion.box]
    solid, necrosis, edema = lesion.solid, lesion.necrosis, lesion.edema
    if seq in ("T1", "T1ce"):  # edema is invisible on T1: the tissue shows through
        mixed = local * (1 - solid - necrosis) + core * solid + _NECROSIS_SIGNAL[seq] * necrosis
    else:
        mixed = local * (1 - solid - necrosis - edema) + core * solid
        mixed = mixed + _NECROSIS_SIGNAL[seq] * necrosis + _EDEMA_SIGNAL[seq] * edema
    local[lesion.in_brain] = mixed[lesion.in_brain]
    return vol


def _scan(
    rng: np.random.Generator, vol: np.ndarray, template: Template, scanner: Site, bias: np.ndarray
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The site's scanner applied to one sequence (slices, scale, bias, Rician noise, offset),
    on brain voxels only: the draws per sequence keep their order at every site. Also returns
    the (scale, noise sd, offset) drawn."""
    if scanner.slice_voxels > 1:  # thick axial slices: partial volume along S-I (RAS axis 2)
        vol = ndimage.uniform_filter1d(vol, scanner.slice_voxels, axis=2, mode="constant")
    scale = float(rng.lognormal(np.log(scanner.scale_median), scanner.scale_spread))
    signal = vol.ravel()[template.brain_index] * scale * bias
    noise_sd = float(rng.uniform(*scanner.noise)) * scale
    n1 = rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd
    n2 = rng.standard_normal(signal.shape, dtype=np.float32) * noise_sd
    if scanner.slice_voxels > 1:  # a thick slice's noise is shared along S-I
        n1, n2 = (_thick_slices(n, template, scanner.slice_voxels) for n in (n1, n2))
    offset = float(rng.uniform(*scanner.offset))
    out = np.zeros(vol.size, dtype=np.float32)
    out[template.brain_index] = np.sqrt((signal + n1) ** 2 + n2**2) + offset
    return out.reshape(template.shape), (scale, noise_sd, offset)


def _lesion_labels(template: Template, tumor: Tumor, lesion: _Lesion) -> np.ndarray:
    """BraTS labels from the same fractions that drew the images, so the mask matches what the
    sequences show; one connected lesion, never empty (a slice must always hold tumor)."""
    labels = np.zeros(template.shape, dtype=np.uint8)
    lab = np.zeros(lesion.core.shape, dtype=np.uint8)
    lab[(lesion.core + lesion.edema) > 0.5] = 2
    lab[lesion.core > 0.5] = 1
    lab[(lesion.rim > 0.25) & (lesion.core > 0.5)] = 4
    lab[~lesion.in_brain] = 0
    components, n = ndimage.label(lab > 0)
    if n > 1:  # one lesion: keep the largest connected part, so the mid-slice holds tumor
        sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, n + 1))
        lab[components != 1 + int(np.argmax(sizes))] = 0
    labels[lesion.box] = lab
    if not labels.any():  # a tiny tumor at a coarse grid: keep at least its centre voxel
        labels[tumor.center] = 1
    return labels


def _metadata(
    rng: np.random.Generator, tumor: Tumor, seed: int, as_string: bool, site: str = "a"
) -> dict[str, Any]:
    idh: int | str = int(tumor.mutant)
    if as_string:
        idh = str(idh)  # EGD's values arrive as int or string; the reader must take both
    grade = (
        int(rng.choice([2, 3, 4], p=[0.45, 0.4, 0.15]))
        if tumor.mutant
        else int(rng.choice([2, 3, 4], p=[0.05, 0.1, 0.85]))
    )
    age = rng.normal(40, 11) if tumor.mutant else rng.normal(62, 11)
    manufacturer = str(rng.choice(["Siemens", "GE", "Philips"]))
    return {
        "Genetic_and_Histological_labels": {
            "IDH": idh,
            "1p19q": int(rng.random() < 0.4) if tumor.mutant else 0,
            "Grade": grade,
        },
        "Clinical_data": {
            "Age": round(float(np.clip(age, 18, 90)), 1),
            "Sex": str(rng.choice(["M", "F"])),
        },
        "Scan_characteristics": {
            "Manufacturer": manufacturer,
            "System": {"Siemens": "Avanto", "GE": "Signa HDxt", "Philips": "Achieva"}[manufacturer],
            "Field": float(rng.choice([1.5, 3.0])),
            "Site": site,
        },
        "Phantom": {
            "synthetic": True,
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "tumor": asdict(tumor),
        },
    }


def _save(data: np.ndarray, affine: np.ndarray, path: Path, dtype: type, orientation: str) -> None:
    """Write a .nii.gz; compressed with ISA-L (standard gzip, several times faster than zlib)."""
    if dtype is np.int16:  # scale to int16 here: cheaper than nibabel's generic float scaling
        slope = max(float(data.max()), 1e-6) / 32000.0
        img = nib.Nifti1Image(np.rint(data / slope).astype(np.int16), affine)
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(data.astype(dtype), affine)
    if orientation != "RAS":
        ras, target = (
            nib.orientations.axcodes2ornt("RAS"),
            nib.orientations.axcodes2ornt(tuple(orientation)),
        )
        img = img.as_reoriented(nib.orientations.ornt_transform(ras, target))
    path.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1))


def subject_id_for(index: int, layout: str) -> str:
    return f"BraTS2021_{index:05d}" if layout == "brats" else f"PHANTOM-{index:04d}"


@dataclass(frozen=True)
class PhantomSubject:
    """One phantom patient rendered in memory, before any file is written.

    Whatever writes it (the EGD or BraTS layout here, raw scanner studies in
    :mod:`idh_pseudocolor.raw_phantom`) starts from this, so every export of a (seed, index)
    shows the same patient, tumor and label.
    """

    index: int
    volumes: dict[str, np.ndarray]  # sequence -> template grid, float32, scanner units, brain only
    labels: np.ndarray  # BraTS-style labels (0, 1, 2, 4) on the template grid, uint8
    metadata: dict[str, Any]  # the subject's metadata.json (IDH label, clinical, drawn tumor)
    affine: np.ndarray  # the template grid's RAS affine (MNI world, mm)
    tumor: Tumor
    effects: ScannerEffects  # the scanner effects drawn (to extend them beyond the brain)

    @property
    def mask(self) -> np.ndarray:
        """The tumor mask (EGD's MASK.nii.gz): every labelled voxel, uint8 0/1."""
        return (self.labels > 0).astype(np.uint8)


def render_phantom_subject(
    index: int, mutant: bool, seed: int, voxel_size: float = 1.0, site: str = "a"
) -> PhantomSubject:
    """Render subject ``index`` of the cohort seeded ``seed`` in memory; reproducible from
    (seed, index, site) whatever the worker order. The same (seed, index) at another site is the
    same patient on another scanner. ``mutant`` comes from :func:`cohort_labels`."""
    scanner = get_site(site)  # an unknown site fails before anything is drawn
    rng = np.random.default_rng([seed, index])
    template = load_template(voxel_size)
    tumor = draw_tumor(rng, template, mutant)
    volumes, labels, effects = _render(rng, template, tumor, scanner)
    meta = _metadata(rng, tumor, seed, as_string=index % 5 == 3, site=site)
    return PhantomSubject(index, volumes, labels, meta, template.affine, tumor, effects)


def generate_subject(
    out: Path,
    index: int,
    mutant: bool,
    seed: int,
    voxel_size: float = 1.0,
    layout: str = "egd",
    site: str = "a",
) -> dict[str, Any]:
    """Render (:func:`render_phantom_subject`) and write one subject in ``layout``."""
    subject = render_phantom_subject(index, mutant, seed, voxel_size, site)
    volumes, labels, meta = subject.volumes, subject.labels, subject.metadata
    template = load_template(voxel_size)
    subject_id = subject_id_for(index, layout)
    folder = out / subject_id
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "brats":
        names = {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"}
        for seq, name in names.items():
            _save(
                volumes[seq],
                template.affine,
                folder / f"{subject_id}_{name}.nii.gz",
                np.int16,
                "LPS",
            )
        _save(labels, template.affine, folder / f"{subject_id}_seg.nii.gz", np.uint8, "LPS")
    else:
        names = {"T1": "T1", "T1ce": "T1GD", "T2": "T2", "FLAIR": "FLAIR"}
        for seq, name in names.items():
            _save(volumes[seq], template.affine, folder / f"{name}.nii.gz", np.int16, "RAS")
        _save(
            (labels > 0).astype(np.uint8), template.affine, folder / "MASK.nii.gz", np.uint8, "RAS"
        )
    # every layout: the label, clinical data and the drawn tumor ("Phantom"); a BraTS-layout run
    # reads its labels from labels.csv (as for real BraTS), the truth stays inspectable here
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return {
        "subject_id": subject_id,
        "IDH": int(mutant),
        "grade": meta["Genetic_and_Histological_labels"]["Grade"],
    }


_UCSF_MUTANT_WORDS = ("mutated (NOS)", "IDH1 p.R132H", "IDH2 p.R172K")


def cohort_labels(n_subjects: int, seed: int, mutant_fraction: float = 0.35) -> np.ndarray:
    """IDH status (True = mutant) of subjects 1..n of a cohort: exactly
    ``round(mutant_fraction * n)`` mutants, shuffled by ``seed``. Every export of a cohort
    (EGD, BraTS, raw studies) takes its labels from here."""
    n_mutant = int(round(mutant_fraction * n_subjects))
    return np.random.default_rng(seed).permutation(
        np.r_[np.ones(n_mutant, bool), np.zeros(n_subjects - n_mutant, bool)]
    )


def generate_cohort(
    out: str | Path,
    n_subjects: int = 200,
    seed: int = 0,
    voxel_size: float = 1.0,
    layout: str = "egd",
    mutant_fraction: float = 0.35,
    n_workers: int | None = None,
    progress: bool = True,
    site: str = "a",
) -> list[dict[str, Any]]:
    """Write a phantom cohort to ``out`` and return one summary row per subject.

    ``site`` (a key of :data:`SITES`) sets the scanner effects only: ``"b"`` with the seed of an
    ``"a"`` cohort holds the same patients and labels, scanned at another hospital; with another
    seed, other patients (an external validation cohort).

    Labels are assigned exactly (``round(mutant_fraction * n)`` mutants, shuffled by ``seed``).
    A ``phantom_cohort.json`` marker at the root records the settings, so every later step can
    say that the data are synthetic. BraTS layout also writes ``labels.csv`` with UCSF-PDGM
    style values and ids whose zero padding differs from the folder names.
    """
    if layout not in {"egd", "brats"}:
        raise ValueError(f"layout must be 'egd' or 'brats', got {layout!r}")
    if n_subjects < 1:
        raise ValueError("n_subjects must be positive")
    get_site(site)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _forget_earlier_phantom(out, n_subjects, layout)
    labels = cohort_labels(n_subjects, seed, mutant_fraction)
    rows = _generate_subjects(out, labels, seed, voxel_size, layout, site, n_workers, progress)
    if layout == "brats":
        _write_ucsf_labels(out, rows)
    marker = {
        "synthetic": True,
        "note": "Phantom cohort generated by idh_pseudocolor.phantom: not patient data.",
        "generator_version": GENERATOR_VERSION,
        "n_subjects": n_subjects,
        "seed": seed,
        "voxel_size_mm": voxel_size,
        "layout": layout,
        "site": site,
        "mutant_fraction": mutant_fraction,
        "cues": CUES,
        "planted_sequences": list(PLANTED_SEQUENCES),
    }
    (out / "phantom_cohort.json").write_text(json.dumps(marker, indent=2))
    return rows


def _generate_subjects(
    out: Path,
    labels: np.ndarray,
    seed: int,
    voxel_size: float,
    layout: str,
    site: str,
    n_workers: int | None,
    progress: bool,
) -> list[dict[str, Any]]:
    """One summary row per subject, in index order: each subject seeds its own generator, so a
    serial run and any number of workers write the same files."""
    from idh_pseudocolor.parallel import in_order

    tasks = [
        (out, i, bool(m), seed, voxel_size, layout, site) for i, m in enumerate(labels, start=1)
    ]
    return list(
        in_order(
            generate_subject,
            tasks,
            n_workers,
            desc="phantom cohort",
            unit="subject",
            progress=progress,
        )
    )


def _write_ucsf_labels(out: Path, rows: list[dict[str, Any]]) -> None:
    """A BraTS-layout cohort gets its labels the way real BraTS does, from a UCSF-PDGM style CSV
    (varied mutant wordings, ids padded unlike the folders), so that reader is exercised."""
    lines = ["ID,IDH"]
    for i, row in enumerate(rows):
        number = int(row["subject_id"].split("_")[1])
        value = _UCSF_MUTANT_WORDS[i % 3] if row["IDH"] else "wildtype"
        lines.append(f"BraTS2021_{number:03d},{value}")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")


def _forget_earlier_phantom(out: Path, n_subjects: int, layout: str) -> None:
    """Regenerating over an earlier phantom: drop its marker first (an interrupted run is then
    incomplete) and the subject folders the new cohort will not write (a smaller cohort would
    otherwise keep them). Only in a folder a phantom marked, and only phantom-named folders."""
    import shutil

    marker = out / "phantom_cohort.json"
    if not marker.is_file():
        return
    marker.unlink()
    keep = {subject_id_for(i, layout) for i in range(1, n_subjects + 1)}
    for folder in out.iterdir():
        phantom_named = folder.name.startswith(("PHANTOM-", "BraTS2021_"))
        if folder.is_dir() and phantom_named and folder.name not in keep:
            shutil.rmtree(folder)


def cohort_is_complete(
    out: str | Path,
    n_subjects: int,
    seed: int,
    voxel_size: float,
    layout: str,
    mutant_fraction: float = 0.35,
    site: str = "a",
) -> bool:
    """True when ``out`` already holds a finished phantom cohort made with these settings (site
    included, and this generator version): anything else is regenerated. A marker without a site
    predates sites: its cohort is site ``"a"``'s, which did not change."""
    marker = Path(out) / "phantom_cohort.json"
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    wanted = {
        "n_subjects": n_subjects,
        "seed": seed,
        "voxel_size_mm": voxel_size,
        "layout": layout,
        "mutant_fraction": mutant_fraction,
        "generator_version": GENERATOR_VERSION,
    }
    return all(info.get(k) == v for k, v in wanted.items()) and info.get("site", "a") == site
