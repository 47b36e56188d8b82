"""One patient's MR sequences onto the MNI ICBM152 2009a 1 mm grid (EGD's 197x233x189 grid).

Raw studies come as separate series, each in its own geometry, and the patient moves between
series; EGD's volumes were brought onto the template grid by its authors, other data must be
brought there here. The steps, each a function of this module (SimpleITK's registration
framework throughout; no hand-written optimizer):

1. :func:`n4` each series in its own space (a bias field blurs the joint histogram MI needs);
2. :func:`register_rigid` every sequence onto the reference sequence (the patient moved: a
   rigid motion), :func:`register_affine` the reference onto the template (head size and shape
   differ from the template's: an affine);
3. :func:`resample` each sequence once, through the chained transforms, onto the template grid;
4. :func:`brain_mask`: the template's brain mask, where a registered patient's brain sits.

:func:`align_patient` runs the four steps. Every registration reports numbers that say how well
it worked (:class:`RegistrationResult`) and raises :class:`RegistrationFailed` when they say it
did not, so a preprocessing run reports that patient and goes on with the others.

Conventions (the usual source of silent errors):

* SimpleITK's physical space is LPS (x to the patient's left, y to posterior); nibabel's
  affines map voxel indices to RAS. ``lps = F @ ras`` with ``F = diag(-1, -1, 1)``.
* A NumPy array in nibabel's order ``data[i, j, k]`` is ``GetArrayFromImage(image)[k, j, i]``.
* A registration transform maps *fixed* physical points to *moving* physical points (ITK's
  convention): resampling the moving image through it puts the moving image on the fixed grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

#: EGD's grid: the MNI ICBM152 2009a template at 1 mm
TEMPLATE_SHAPE = (197, 233, 189)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

Kind = Literal["scan", "mask", "label"]
Initializer = Literal["moments", "geometry"]


# --- NIfTI (RAS) <-> SimpleITK (LPS) -----------------------------------------------------------


def image_from_array(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image from a nibabel-ordered array ``data[i, j, k]`` and its RAS affine.

    Origin, spacing and direction come from ``diag(-1, -1, 1) @ affine`` (RAS -> LPS), the way
    ITK's own NIfTI reader builds them; an affine with shear has no ITK geometry (ValueError).
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=float)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("the affine has shear: no orthonormal ITK direction matches it")
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    image.SetDirection(tuple(float(d) for d in direction.ravel()))
    return image


def image_to_array(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`image_from_array`: ``(data[i, j, k], RAS affine)``."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return data, ras_affine(image)


def from_nifti(img: nib.spatialimages.SpatialImage) -> sitk.Image:
    """A nibabel image as a float32 SimpleITK image (scaling applied, geometry from its affine)."""
    return image_from_array(np.asarray(img.dataobj, dtype=np.float32), img.affine)


def to_nifti(image: sitk.Image) -> nib.Nifti1Image:
    """A SimpleITK image as a NIfTI image with the equivalent RAS affine."""
    data, affine = image_to_array(image)
    return nib.Nifti1Image(data, affine)


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The image's voxel -> RAS world matrix, as nibabel writes it."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    lps[:3, 3] = image.GetOrigin()
    return _RAS_TO_LPS @ lps


def same_grid(
    shape_a: tuple[int, ...],
    affine_a: np.ndarray,
    shape_b: tuple[int, ...],
    affine_b: np.ndarray,
    atol_mm: float = 0.01,
) -> bool:
    """Whether two grids hold the same voxel centres in the world, whatever their axis order and
    flips (a converter may store a series' volume flipped or permuted): compared in nibabel's
    closest-canonical (RAS) form."""
    import nibabel as nib

    def canonical(shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
        ornt = nib.orientations.io_orientation(affine)
        to_canonical = nib.orientations.inv_ornt_aff(ornt, shape)
        order = np.argsort(ornt[:, 0].astype(int))
        return tuple(int(shape[i]) for i in order), np.asarray(affine, float) @ to_canonical

    (sa, aa), (sb, ab) = (
        canonical(tuple(shape_a)[:3], affine_a),
        canonical(tuple(shape_b)[:3], affine_b),
    )
    return sa == sb and np.allclose(aa, ab, atol=atol_mm)


def transform_from_ras(matrix: np.ndarray) -> sitk.AffineTransform:
    """A 4x4 matrix acting on RAS points (nibabel's convention) as an LPS AffineTransform.

    The same motion in LPS is ``F @ matrix @ F`` with ``F = diag(-1, -1, 1, 1)``.
    """
    lps = _RAS_TO_LPS @ np.asarray(matrix, dtype=float) @ _RAS_TO_LPS
    return _affine_transform(lps)


def transform_to_ras(transform: sitk.Transform) -> np.ndarray:
    """The inverse of :func:`transform_from_ras`, for any linear transform (composites too)."""
    return _RAS_TO_LPS @ transform_matrix(transform) @ _RAS_TO_LPS


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 homogeneous LPS matrix of a linear transform (ValueError if it is not linear).

    Read off by transforming the origin and the unit points, which works for every SimpleITK
    transform type and for composites, then checked on other points.
    """
    probes = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in probes])
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    checks = np.array([[80.0, -60.0, 40.0], [-100.0, 120.0, -90.0]])
    for point in checks:
        expected = matrix[:3, :3] @ point + matrix[:3, 3]
        if not np.allclose(transform.TransformPoint(tuple(point)), expected, atol=1e-6):
            raise ValueError(f"{transform.GetName()} is not linear: it has no 4x4 matrix")
    return matrix


def _affine_transform(lps: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in lps[:3, :3].ravel()))
    transform.SetTranslation(tuple(float(v) for v in lps[:3, 3]))
    return transform


def chain(*transforms: sitk.Transform) -> sitk.CompositeTransform:
    """The transform that applies ``transforms[0]`` first, then ``transforms[1]``, ...

    ``chain(template_to_reference, reference_to_sequence)`` maps template points to points of
    the sequence: resampling the sequence through it puts the sequence on the template grid.
    (A SimpleITK composite applies the transform added *last* first, hence the reversal.)
    """
    return sitk.CompositeTransform([sitk.Transform(t) for t in reversed(transforms)])


# --- the template --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _template_1mm() -> tuple[sitk.Image, sitk.Image]:
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    t1 = load_mni152_template(resolution=1)  # float32 in [0, 1] (the uint8 file / 255)
    mask = load_mni152_brain_mask(resolution=1)  # t1 > 0.2: brain and its CSF, no skull
    image = from_nifti(t1)
    brain = sitk.Cast(from_nifti(mask), sitk.sitkUInt8)
    return image, brain


def template_grid(voxel_size: float = 1.0) -> sitk.Image:
    """An empty (zero) image on the template grid at ``voxel_size`` mm.

    1 mm is EGD's 197x233x189 grid. Coarser grids (fast tests) keep the first voxel's centre
    and the direction, with ``round(n / voxel_size)`` voxels per axis: the grid (shape and
    affine) of :func:`idh_pseudocolor.phantom.load_template` at that voxel size.
    """
    reference, _ = _template_1mm()
    if voxel_size == 1.0:
        return _geometry_of(reference)
    size = [int(round(n / voxel_size)) for n in reference.GetSize()]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetOrigin(reference.GetOrigin())
    grid.SetDirection(reference.GetDirection())
    grid.SetSpacing([float(voxel_size)] * 3)
    return grid


def _geometry_of(reference: sitk.Image) -> sitk.Image:
    empty = sitk.Image(reference.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(reference)
    return empty


@lru_cache(maxsize=4)
def _template_at(voxel_size: float) -> tuple[sitk.Image, sitk.Image]:
    image, brain = _template_1mm()
    if voxel_size == 1.0:
        return image, brain
    grid = template_grid(voxel_size)
    # Gaussian anti-aliasing before the linear resampling, as for a pyramid level
    sigma = 0.5 * math.sqrt(max(voxel_size**2 - 1.0, 0.0))
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma) if sigma > 0 else image
    coarse = sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    fraction = sitk.Resample(
        sitk.Cast(brain, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0
    )
    return coarse, sitk.Cast(fraction >= 0.5, sitk.sitkUInt8)


def template_image(voxel_size: float = 1.0) -> sitk.Image:
    """nilearn's MNI ICBM152 2009a T1 template (float32 in [0, 1]) on :func:`template_grid`.

    Geometry from the NIfTI's RAS affine (LPS origin (98, 134, -72) at 1 mm). Cached; the
    returned image is a copy-on-write copy, so a caller may change it.
    """
    return sitk.Image(_template_at(float(voxel_size))[0])


def template_brain_mask(voxel_size: float = 1.0) -> sitk.Image:
    """nilearn's MNI152 brain mask (template > 0.2: brain and CSF, no skull), uint8 {0, 1}.

    Coarser grids take voxels at least half inside the 1 mm mask. Cached, copy-on-write.
    """
    return sitk.Image(_template_at(float(voxel_size))[1])


#: margin added around the template's brain mask for registration (see :func:`dilate`)
REGISTRATION_MARGIN_MM = 10.0


def dilate(mask: sitk.Image, mm: float = REGISTRATION_MARGIN_MM) -> sitk.Image:
    """``mask`` grown by ``mm`` (a ball, in voxels per axis): the registration mask.

    Sample the brain *and its outline*: with samples only inside the template's brain mask, the
    template's dim edge voxels are best matched by the patient's background, and an affine
    shrinks the patient into the mask (measured: scales 1.01-1.02 on a 3 mm grid, 0.4 % at
    2 mm); with a 10 mm margin the scales stay within 0.2 % of the truth.
    """
    radius = [max(1, int(round(mm / s))) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(sitk.Cast(mask > 0, sitk.sitkUInt8), radius)


# --- registration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationSettings:
    """What a registration does; defaults chosen for brain MR at 1-3 mm (see the report)."""

    #: pyramid: each level's voxels are ``shrink`` fixed voxels, smoothed by ``sigma`` of them
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)
    #: Mattes mutual information: joint histogram bins, and random samples per level
    histogram_bins: int = 32
    samples_per_level: int = 40_000
    #: regular step gradient descent: first step (mm, through physical-shift scales), last step
    learning_rate: float = 2.0
    min_step: float = 1e-3
    iterations: int = 200
    relaxation: float = 0.5
    #: threads of the registration (0: ITK's default, every core). The same seed and thread
    #: count give the same transform; another thread count sums the histogram in another order
    #: (measured: points move by 1e-10 mm)
    threads: int = 0
    #: failure criteria (see :func:`check_result`)
    min_mutual_information: float = 0.05
    max_mi_loss: float = 0.05
    #: voxels of the fixed mask on which metric_before and metric_after are evaluated
    judge_voxels: int = 100_000
    max_rotation_deg: float = 30.0
    max_shift_mm: float = 60.0
    scale_range: tuple[float, float] = (0.7, 1.4)


DEFAULT_SETTINGS = RegistrationSettings()


@dataclass(frozen=True)
class RegistrationResult:
    """A registration's transform (fixed -> moving points) and how well it worked.

    The metric is Mattes MI as ITK reports it (negative mutual information: lower is better),
    evaluated at full resolution on the same voxels (a seeded subset of the fixed mask) before
    and after.
    ``rotation_deg``, ``shift_mm`` and ``scales`` describe the motion the optimizer found on
    top of the centering initializer: its rotation angle, how far it moved the fixed image's
    centre, and the principal scales of the linear part (all 1 for a rigid transform).
    """

    transform: sitk.Transform
    metric_before: float
    metric_after: float
    iterations: int
    stop_reason: str
    initial_transform: sitk.Transform = field(repr=False)
    rotation_deg: float = 0.0
    shift_mm: float = 0.0
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)


class RegistrationFailed(RuntimeError):
    """A registration whose numbers say it did not work; ``result`` holds them."""

    def __init__(self, reason: str, result: RegistrationResult | None = None, where: str = ""):
        self.reason = reason
        self.result = result
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


def _float(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32)


def _mask_fraction(mask: sitk.Image | None) -> float:
    if mask is None:
        return 1.0
    return max(float(sitk.GetArrayViewFromImage(mask).astype(bool).mean()), 1e-6)


def _percentages(fixed: sitk.Image, mask: sitk.Image | None, settings: RegistrationSettings):
    """Sampling percentage per level, so each level draws ``samples_per_level`` points.

    ITK draws a percentage of the level's voxels and drops those outside the fixed mask.
    """
    fraction = _mask_fraction(mask)
    out = []
    for shrink in settings.shrink_factors:
        voxels = math.prod(math.ceil(n / shrink) for n in fixed.GetSize()) * fraction
        out.append(min(1.0, settings.samples_per_level / voxels))
    return out


def _method(
    fixed: sitk.Image,
    mask: sitk.Image | None,
    settings: RegistrationSettings,
    seed: int,
    percentages: Sequence[float],
) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads a seed of 0 as "seed from the wall clock": shift ours by one
    method.SetMetricSamplingPercentagePerLevel(list(percentages), seed + 1)
    if mask is not None:
        method.SetMetricFixedMask(sitk.Cast(mask > 0, sitk.sitkUInt8))
    method.SetInterpolator(sitk.sitkLinear)
    if settings.threads:
        method.SetNumberOfThreads(settings.threads)
    return method


def _judge_mask(
    fixed: sitk.Image, mask: sitk.Image | None, settings: RegistrationSettings, seed: int
) -> sitk.Image:
    """A seeded random subset of the fixed mask's voxels (at most ``judge_voxels``).

    SimpleITK's ``MetricEvaluate`` ignores the sampling strategy and visits every voxel of the
    mask; a sparse mask keeps that dense, on-grid evaluation fast at 1 mm (1.9 M brain voxels).
    """
    inside = (
        np.ones(fixed.GetSize()[::-1], dtype=bool)
        if mask is None
        else sitk.GetArrayViewFromImage(mask) > 0
    )
    flat = np.flatnonzero(inside)
    if len(flat) > settings.judge_voxels:
        flat = np.random.default_rng(seed).choice(flat, settings.judge_voxels, replace=False)
    chosen = np.zeros(inside.size, dtype=np.uint8)
    chosen[flat] = 1
    sparse = sitk.GetImageFromArray(chosen.reshape(inside.shape))
    sparse.CopyInformation(fixed)
    return sparse


def _metric(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, judge: sitk.Image, bins: int
) -> float:
    """Mattes MI on the judge's voxels, at their centres: the same points before and after.

    Not the optimizer's own value: ITK jitters its random samples within their voxels and
    draws them per pyramid level, so its values at two transforms are not comparable.
    The metric's gradient images are not built: only its value is asked for, and building them
    over the whole volume was three quarters of the time (the same value, to the last bit).
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.MetricUseFixedImageGradientFilterOff()
    method.MetricUseMovingImageGradientFilterOff()
    method.SetMetricFixedMask(judge)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _centre(fixed: sitk.Image, mask: sitk.Image | None) -> np.ndarray:
    """The fixed image's centre: its mask's centroid, else the middle of its grid."""
    if mask is not None:
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
        if stats.HasLabel(1):
            return np.array(stats.GetCentroid(1))
    middle = [(n - 1) / 2.0 for n in fixed.GetSize()]
    return np.array(fixed.TransformContinuousIndexToPhysicalPoint(middle))


def _motion(
    transform: sitk.Transform, initial: sitk.Transform, centre: np.ndarray
) -> tuple[float, float, tuple[float, float, float]]:
    """Rotation angle (deg), shift of ``centre`` (mm) and principal scales of
    ``transform`` relative to ``initial`` (polar decomposition of the linear part)."""
    relative = np.linalg.solve(transform_matrix(initial), transform_matrix(transform))
    u, s, vt = np.linalg.svd(relative[:3, :3])
    rotation = u @ vt
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.degrees(math.acos(cosine)) if np.linalg.det(rotation) > 0 else 180.0
    point = tuple(float(c) for c in centre)
    shift = np.linalg.norm(
        np.array(transform.TransformPoint(point)) - np.array(initial.TransformPoint(point))
    )
    scales = tuple(float(v) for v in sorted(s))
    return angle, float(shift), scales  # type: ignore[return-value]


def check_result(
    result: RegistrationResult, settings: RegistrationSettings = DEFAULT_SETTINGS
) -> str | None:
    """Why ``result`` failed, or None. The criteria, in order:

    * the final mutual information is below the initial one by more than ``max_mi_loss`` of
      it (a diverged optimizer loses far more; a small loss is the optimizer's jittered
      samples disagreeing with the judge's voxel centres, seen for affines on coarse grids);
    * the final mutual information is below ``min_mutual_information`` (nats): the images
      share no information at the best alignment found (noise, an empty or a wrong series).
      An absolute floor rather than a required improvement: an already aligned pair (EGD is
      on the template grid) starts at its optimum and must pass;
    * an implausible motion on top of the centering: rotation over ``max_rotation_deg``, a
      shift of the fixed centre over ``max_shift_mm``, a scale outside ``scale_range``.
    """
    if -result.metric_after < -result.metric_before * (1.0 - settings.max_mi_loss):
        return f"the metric got worse: {result.metric_before:.4f} -> {result.metric_after:.4f}"
    if -result.metric_after < settings.min_mutual_information:
        return (
            f"mutual information {-result.metric_after:.4f} is below "
            f"{settings.min_mutual_information}: the images do not match"
        )
    if result.rotation_deg > settings.max_rotation_deg:
        return f"rotation {result.rotation_deg:.1f} deg exceeds {settings.max_rotation_deg}"
    if result.shift_mm > settings.max_shift_mm:
        return f"shift {result.shift_mm:.1f} mm exceeds {settings.max_shift_mm}"
    low, high = settings.scale_range
    if not all(low <= s <= high for s in result.scales):
        scales = ", ".join(f"{s:.3f}" for s in result.scales)
        return f"scales ({scales}) outside [{low}, {high}]"
    return None


def _run(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    centering: sitk.Transform,
    fixed_mask: sitk.Image | None,
    settings: RegistrationSettings,
    seed: int,
    check: bool,
) -> RegistrationResult:
    fixed, moving = _float(fixed), _float(moving)
    method = _method(fixed, fixed_mask, settings, seed, _percentages(fixed, fixed_mask, settings))
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.learning_rate,
        minStep=settings.min_step,
        numberOfIterations=settings.iterations,
        relaxationFactor=settings.relaxation,
        gradientMagnitudeTolerance=1e-8,
    )
    # one unit of every parameter moves a voxel by about the same distance: rotations in
    # radians and translations in mm become comparable
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    # sigmas in the fixed image's voxels, handed to ITK in mm: both images are blurred alike
    # even when their voxels differ (a blur in each one's own voxels biases the scale)
    voxel = max(fixed.GetSpacing())
    method.SetSmoothingSigmasPerLevel([s * voxel for s in settings.smoothing_sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    count = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    found = method.Execute(fixed, moving)
    transform = _downcast(found)
    judge = _judge_mask(fixed, fixed_mask, settings, seed)
    before = _metric(fixed, moving, initial, judge, settings.histogram_bins)
    after = _metric(fixed, moving, transform, judge, settings.histogram_bins)
    angle, shift, scales = _motion(transform, centering, _centre(fixed, fixed_mask))
    result = RegistrationResult(
        transform=transform,
        metric_before=before,
        metric_after=after,
        iterations=count[0],
        stop_reason=method.GetOptimizerStopConditionDescription(),
        initial_transform=centering,
        rotation_deg=angle,
        shift_mm=shift,
        scales=scales,
    )
    if check:
        reason = check_result(result, settings)
        if reason is not None:
            raise RegistrationFailed(reason, result)
    return result


def _downcast(transform: sitk.Transform) -> sitk.Transform:
    """The registration's output as its own type (a composite of one transform unwrapped)."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    return transform.Downcast()


def centering(
    fixed: sitk.Image, moving: sitk.Image, initializer: Initializer = "moments"
) -> sitk.Euler3DTransform:
    """The starting point: an Euler3DTransform that overlays the images' centres.

    ``"moments"``: centres of mass (robust to a field of view placed off the head);
    ``"geometry"``: centres of the grids (robust to a contrast whose mass sits elsewhere).
    """
    mode = {
        "moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
        "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
    }[initializer]
    found = sitk.CenteredTransformInitializer(
        _float(fixed), _float(moving), sitk.Euler3DTransform(), mode
    )
    return sitk.Euler3DTransform(found)


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    seed: int = 0,
    initializer: Initializer = "moments",
    settings: RegistrationSettings = DEFAULT_SETTINGS,
    check: bool = True,
) -> RegistrationResult:
    """Rigid (Euler3D) registration of ``moving`` onto ``fixed`` by Mattes MI.

    MI, not correlation: two MR sequences of one head have different, even non-monotonic,
    contrasts. A multi-resolution pyramid avoids local optima; random sampling with a fixed
    ``seed`` keeps it fast and reproducible. ``fixed_mask`` restricts sampling (onto the
    template: :func:`dilate` of its brain mask; between sequences: none).
    Raises :class:`RegistrationFailed` when :func:`check_result` says so (``check=False``:
    return the result anyway).
    """
    start = centering(fixed, moving, initializer)
    return _run(fixed, moving, start, start, fixed_mask, settings, seed, check)


def register_affine(
    fixed_template: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    initial: RegistrationResult | None = None,
    seed: int = 0,
    initializer: Initializer = "moments",
    settings: RegistrationSettings = DEFAULT_SETTINGS,
    check: bool = True,
) -> RegistrationResult:
    """Affine registration of a patient's reference sequence onto the template (Mattes MI).

    Starts from a rigid result (``initial``, else :func:`register_rigid` runs first): twelve
    parameters from a centred start are prone to shear into a local optimum, six are not.
    ``fixed_mask``: the template's brain mask grown by :func:`dilate`, not the bare mask.
    """
    if initial is None:
        initial = register_rigid(
            fixed_template,
            moving,
            fixed_mask=fixed_mask,
            seed=seed,
            initializer=initializer,
            settings=settings,
            check=False,
        )
    # the same motion as an AffineTransform about the centering's centre (rotations about the
    # head's centre keep the optimizer's parameters well scaled)
    matrix = transform_matrix(initial.transform)
    centre = np.array(sitk.Euler3DTransform(initial.initial_transform).GetCenter())
    start = sitk.AffineTransform(3)
    start.SetCenter(tuple(centre))
    start.SetMatrix(tuple(matrix[:3, :3].ravel()))
    start.SetTranslation(tuple(matrix[:3, 3] + matrix[:3, :3] @ centre - centre))
    return _run(
        fixed_template,
        moving,
        start,
        initial.initial_transform,
        fixed_mask,
        settings,
        seed,
        check,
    )


# --- resampling, bias field, brain mask ---------------------------------------------------------


def resample(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    kind: Kind = "scan",
) -> sitk.Image:
    """``image`` on ``reference``'s grid through ``transform`` (reference -> image points).

    ``"scan"``: linear interpolation, float32 (no B-spline overshoot below zero at edges);
    ``"mask"`` and ``"label"``: nearest neighbour, pixel type kept, so no value appears that the
    input did not hold. Outside the image: 0.
    """
    if kind not in ("scan", "mask", "label"):
        raise ValueError(f"kind must be 'scan', 'mask' or 'label', not {kind!r}")
    transform = transform if transform is not None else sitk.Transform()
    if kind == "scan":
        return sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.Resample(
        image, reference, transform, sitk.sitkNearestNeighbor, 0, image.GetPixelID()
    )


def n4(
    image: sitk.Image,
    mask: sitk.Image | None = None,
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
) -> sitk.Image:
    """N4 bias-field correction, fitted on a shrunk image, applied at full resolution.

    The field is smooth (B-splines), so fitting it on ``shrink``-times fewer voxels per axis
    loses nothing and is the difference between seconds and minutes; SimpleITK evaluates the
    fitted field on the full grid (``GetLogBiasFieldAsImage``) and the image is divided by it.
    ``mask`` (default: Otsu's foreground) is where the field is fitted; non-positive voxels are
    left out (N4 works on log intensities). Returns float32.
    """
    image = _float(image)
    positive = image > 0
    if mask is None:
        mask = sitk.OtsuThreshold(image, 0, 1)
    mask = sitk.Cast((mask > 0) & positive, sitk.sitkUInt8)
    factors = [max(1, min(shrink, n // 8)) for n in image.GetSize()]
    small = sitk.Shrink(image, factors)
    small_mask = sitk.Shrink(mask, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    return _float(image / sitk.Exp(log_field))


def brain_mask(
    image_on_template_grid: sitk.Image,
    template_mask: sitk.Image,
    *,
    refine: bool = False,
    threshold_fraction: float = 0.05,
) -> sitk.Image:
    """The brain mask of a patient registered to the template: the template's brain mask.

    After the affine registration the patient's brain lies in the template's mask up to the
    anatomy an affine cannot match (a few mm at the cortex). No skull-stripping model is
    downloaded (the project reads such a model only as an option from a local checksummed
    file), so this is the default. ``refine=True`` also drops voxels of the mask darker than
    ``threshold_fraction`` of the image's 99th percentile inside it (background where the
    patient's head is smaller than the template), then keeps the largest connected component
    with its holes filled (ventricles, dark tumor cores stay in). uint8 {0, 1}.
    """
    if (
        image_on_template_grid.GetSize() != template_mask.GetSize()
        or not np.allclose(image_on_template_grid.GetOrigin(), template_mask.GetOrigin())
        or not np.allclose(image_on_template_grid.GetSpacing(), template_mask.GetSpacing())
    ):
        raise ValueError("the image is not on the template mask's grid: resample it first")
    mask = sitk.Cast(template_mask > 0, sitk.sitkUInt8)
    if not refine:
        return mask
    values = sitk.GetArrayViewFromImage(image_on_template_grid)
    inside = values[sitk.GetArrayViewFromImage(mask).astype(bool)]
    if inside.size == 0:
        return mask
    threshold = threshold_fraction * float(np.percentile(inside, 99))
    bright = sitk.Cast(_float(image_on_template_grid) > threshold, sitk.sitkUInt8) & mask
    components = sitk.RelabelComponent(sitk.ConnectedComponent(bright), sortByObjectSize=True)
    largest = sitk.Cast(components == 1, sitk.sitkUInt8)
    filled = sitk.BinaryFillhole(largest, fullyConnected=False, foregroundValue=1)
    return sitk.Cast(filled & mask, sitk.sitkUInt8)


# --- accuracy against a known truth --------------------------------------------------------------


def physical_points(
    mask: sitk.Image, *, max_points: int | None = None, seed: int = 0
) -> np.ndarray:
    """LPS centres (mm) of the mask's non-zero voxels, shape (n, 3); a random subset if
    ``max_points`` is given."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if max_points is not None and len(zyx) > max_points:
        chosen = np.random.default_rng(seed).choice(len(zyx), size=max_points, replace=False)
        zyx = zyx[np.sort(chosen)]
    index = zyx[:, ::-1].astype(float)
    direction = np.array(mask.GetDirection(), dtype=float).reshape(3, 3)
    scaled = index * np.array(mask.GetSpacing(), dtype=float)
    return scaled @ direction.T + np.array(mask.GetOrigin(), dtype=float)


def _apply(transform: sitk.Transform | np.ndarray, points: np.ndarray) -> np.ndarray:
    if isinstance(transform, np.ndarray):
        matrix = transform
    else:
        try:
            matrix = transform_matrix(transform)
        except ValueError:  # a deformable transform: point by point
            return np.array([transform.TransformPoint(tuple(map(float, p))) for p in points])
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def residual_error_mm(
    estimated: sitk.Transform,
    true: sitk.Transform | np.ndarray,
    points: np.ndarray,
) -> tuple[float, float]:
    """(median, max) distance in mm between where two transforms send the same points.

    ``points``: (n, 3) LPS, e.g. :func:`physical_points` of the fixed image's brain mask.
    ``true`` may be a 4x4 homogeneous matrix acting on LPS points (use
    :func:`transform_from_ras` for a nibabel RAS matrix).
    """
    points = np.asarray(points, dtype=float).reshape(-1, 3)
    distance = np.linalg.norm(_apply(estimated, points) - _apply(true, points), axis=1)
    return float(np.median(distance)), float(distance.max())


# --- one patient ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignedPatient:
    """A patient's sequences on the template grid, its brain mask and every registration."""

    images: dict[str, sitk.Image]
    brain: sitk.Image
    to_template: RegistrationResult  # template -> reference sequence (affine)
    to_reference: dict[str, RegistrationResult]  # reference -> each other sequence (rigid)


def align_patient(
    sequences: Mapping[str, sitk.Image],
    reference: str,
    *,
    voxel_size: float = 1.0,
    bias_correction: bool = True,
    seed: int = 0,
    settings: RegistrationSettings = DEFAULT_SETTINGS,
) -> AlignedPatient:
    """Every sequence of one patient, bias-corrected, on the template grid at ``voxel_size``.

    ``reference`` (e.g. ``"T1"``: the contrast of the template) goes to the template by an
    affine, sampled in the template's brain and its outline (:func:`dilate`); every other
    sequence to the reference by a rigid motion, sampled over the reference's whole field of
    view, so that the head's outline counts there too. Each sequence is resampled once, through
    the chained transforms.
    A failed registration raises :class:`RegistrationFailed` naming the sequence.
    """
    if reference not in sequences:
        raise ValueError(f"reference {reference!r} is not among {sorted(sequences)}")
    corrected = {
        name: n4(image) if bias_correction else _float(image) for name, image in sequences.items()
    }
    template = template_image(voxel_size)
    template_mask = template_brain_mask(voxel_size)
    try:
        to_template = register_affine(
            template,
            corrected[reference],
            fixed_mask=dilate(template_mask),
            seed=seed,
            settings=settings,
        )
    except RegistrationFailed as failure:
        raise RegistrationFailed(failure.reason, failure.result, reference) from failure
    to_reference: dict[str, RegistrationResult] = {}
    images: dict[str, sitk.Image] = {}
    for name, image in corrected.items():
        if name == reference:
            transform: sitk.Transform = to_template.transform
        else:
            try:
                to_reference[name] = register_rigid(
                    corrected[reference], image, seed=seed, settings=settings
                )
            except RegistrationFailed as failure:
                raise RegistrationFailed(failure.reason, failure.result, name) from failure
            transform = chain(to_template.transform, to_reference[name].transform)
        images[name] = resample(image, template, transform, "scan")
    brain = brain_mask(images[reference], template_mask)
    return AlignedPatient(images, brain, to_template, to_reference)
