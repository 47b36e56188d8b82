"""Every pipeline's parameters as one typed, frozen settings object built from its
``params:<pipeline>`` block.

The YAML under ``conf/base`` is the only home of defaults (``conf/paper``, the hardware layers,
``conf/local`` and ``--params`` change values on top of it): these classes hold none. Building
refuses a key that the YAML does not define, a key that it lacks and a value of the wrong type,
naming the key and the file that lists the settings, so a typo in ``conf/local`` or ``--params``
stops the run instead of being ignored. Nodes build their settings in their first line
(``PermutationStudySettings.from_params(params)``) and use attributes from there; a hook builds
every block (:func:`check_settings`) before the first node.

A field marked with :data:`MACHINE` is the machine's business (hardware, speed, paths, progress):
it never changes a result, so the paper path allows any value (:func:`machine_keys`) and a
search's fingerprint leaves it out. No Kedro here, and no torch: Kedro's own project
configuration is ``settings.py``, the conf layers are ``config_loader.py``.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from idh_pseudocolor.provenance import digest

if TYPE_CHECKING:
    from idh_pseudocolor.slices import Normalization

T = TypeVar("T")

#: where each block's settings and defaults live
SOURCES: dict[str, str] = {
    "environment": "conf/base/parameters.yml",
    "data_engineering": "conf/base/parameters_data_engineering.yml",
    "demo_pretraining": "conf/base/parameters_demo_pretraining.yml",
    "hyperparameter_search": "conf/base/parameters_hyperparameter_search.yml",
    "permutation_study": "conf/base/parameters_permutation_study.yml",
    "reporting": "conf/base/parameters_reporting.yml",
    "cross_validation": "conf/base/parameters_cross_validation.yml",
    "segmentation": "conf/base/parameters_segmentation.yml",
    "preprocessing": "conf/base/parameters_preprocessing.yml",
}

#: field metadata of a machine setting (hardware, speed, paths, progress): any value is allowed on
#: the paper path, and a search's fingerprint leaves it out, so an A4000 box and an L4 cluster can
#: add trials to one study
MACHINE = {"machine": True}


def machine(**kwargs: Any) -> Any:
    """A dataclass field that is the machine's business (see :data:`MACHINE`)."""
    return field(metadata=MACHINE, **kwargs)


def is_machine(f: Any) -> bool:
    return bool(f.metadata.get("machine"))


# ---- building ------------------------------------------------------------------------------------


def _source(path: str) -> str:
    return SOURCES[path.split(".")[0]]


def check_keys(params: Any, names: tuple[str, ...] | list[str], path: str) -> None:
    """``params`` holds exactly the settings ``names`` of block ``path``, else a ValueError naming
    the key."""
    source = _source(path)
    if not isinstance(params, Mapping):
        raise ValueError(f"{path} must be a block of settings ({source}), got {params!r}")
    for key in params:
        if key not in names:
            raise ValueError(
                f"{path}.{key} is not a setting ({source} lists them: {', '.join(names)})"
            )
    for name in names:
        if name not in params:
            raise ValueError(f"{path}.{name} is missing ({source} sets it)")


def build(cls: type[T], params: Any, path: str) -> T:
    """A settings dataclass from its block: every field from the block, nested blocks typed too."""
    names = [f.name for f in fields(cls)]
    check_keys(params, names, path)
    hints = get_type_hints(cls)
    return cls(**{name: typed(params[name], hints[name], f"{path}.{name}") for name in names})


def typed(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against ``hint`` (sequences become tuples; a dataclass hint builds a
    block)."""
    if isinstance(hint, type) and is_dataclass(hint):
        return build(hint, value, path)
    if not _conforms(value, hint):
        raise ValueError(f"{path} = {value!r} is not a {_name(hint)} ({_source(path)})")
    return tuple(value) if get_origin(hint) is tuple else value


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _conforms(v, a) for v, a in zip(value, args, strict=True)
        )
    if origin is Mapping:
        return isinstance(value, Mapping) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint)


class Settings:
    """A block of settings: :meth:`from_params` builds it from ``params:<SECTION>``."""

    SECTION: ClassVar[str]

    @classmethod
    def from_params(cls: type[T], params: Mapping[str, Any]) -> T:
        return build(cls, params, cls.SECTION)


# ---- environment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentSettings(Settings):
    """What kind of run this configuration is (``params:environment``)."""

    SECTION: ClassVar[str] = "environment"
    kind: str  # demo | paper
    rehearsal: bool  # a paper run at toy scale on the phantom (set by --env <env>+rehearsal)

    def __post_init__(self) -> None:
        if self.kind not in ("demo", "paper"):
            raise ValueError(
                f"environment.kind = {self.kind!r} is not demo or paper ({SOURCES['environment']})"
            )

    @property
    def paper(self) -> bool:
        return self.kind == "paper"


# ---- data_engineering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NormalizationSettings:
    method: str  # percentile | zscore | minmax | none
    lower: float
    upper: float

    def normalization(self) -> Normalization:
        from idh_pseudocolor.slices import Normalization

        return Normalization(**asdict(self))


@dataclass(frozen=True)
class SplitSettings:
    train: float
    val: float
    test: float
    seed: int


@dataclass(frozen=True)
class DataEngineeringSettings(Settings):
    SECTION: ClassVar[str] = "data_engineering"
    n_workers: int | None = machine()  # None: all CPU cores
    progress: bool = machine()
    normalization: NormalizationSettings
    splits: SplitSettings
    qc_montage_subjects: int = machine()


# ---- training runs (the search's and the sweep's ``fixed``) ------------------------------------


def check_per_model(channels_last: Any, models: Sequence[str], path: str) -> None:
    """A per-model ``channels_last`` names only models the pipeline trains (by full timm name or
    architecture, as :func:`idh_pseudocolor.training.per_model` looks them up): a misspelt key
    would otherwise leave its model in torch's default layout without a word."""
    if not isinstance(channels_last, Mapping):
        return
    names = {*models, *(m.split(".", 1)[0] for m in models)}
    unknown = sorted(k for k in channels_last if k not in names)
    if unknown:
        raise ValueError(
            f"{path}.channels_last names {', '.join(unknown)}, which this pipeline does not train "
            f"(its models: {', '.join(models)}; a full timm name or its architecture, e.g. "
            f"{models[0].split('.', 1)[0]})"
        )


@dataclass(frozen=True)
class FixedSettings:
    """RunConfig fields a pipeline holds fixed for all its runs: the experiment's (batch, input
    size, early stopping, weight decay) and the machine's (where and how fast a run computes)."""

    batch_size: int
    image_size: int
    early_stopping: bool
    early_stopping_patience: int
    weight_decay: float  # AdamW's; the paper gives none
    weights_file: str | Mapping[str, str] | None = machine()  # one file, or {model_name: file}
    precision: str = machine()
    accelerator: str = machine()
    torch_threads: int | None = machine()
    channels_last: bool | Mapping[str, bool] = machine()  # for every model, or {model_name: …}
    deterministic: bool = machine()
    compile: bool | str = machine()  # false | true (inductor) | a torch.compile backend
    cudnn_benchmark: bool = machine()
    initial_weights_cache: int = machine()  # networks as created kept per process (0: none)
    device_resident: bool = machine()
    fused_optimizer: bool = machine()

    def run_config(self) -> dict[str, Any]:
        """As RunConfig keyword arguments."""
        return asdict(self)

    def experiment(self) -> dict[str, Any]:
        """The fields that can change a result (the machine's left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not is_machine(f)}


@dataclass(frozen=True)
class SearchFixedSettings(FixedSettings):
    seed: int  # the sweep has its seeds instead


# ---- hyperparameter_search -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """Table 1's ranges and choices (``search_space``)."""

    learning_rate: tuple[float, float]  # log scale
    pretrained: tuple[bool, ...]
    superconvergence: tuple[bool, ...]
    peak_fraction: tuple[float, float]
    lr_interval: tuple[str, ...]
    max_epochs_superconvergence: tuple[int, int]
    max_epochs_constant: tuple[int, int]
    mask_non_tumor: tuple[bool, ...]


@dataclass(frozen=True)
class SamplerSettings:
    """optuna.samplers.TPESampler's arguments, every one explicit (Optuna 5 changed the
    defaults)."""

    seed: int | None
    n_startup_trials: int
    n_ei_candidates: int
    multivariate: bool
    group: bool
    constant_liar: bool


@dataclass(frozen=True)
class PrunerSettings:
    """optuna.pruners.MedianPruner's arguments (used with ``pruning: true``)."""

    n_startup_trials: int
    n_warmup_steps: int


@dataclass(frozen=True)
class SearchSettings(Settings):
    """What the search optimizes over and with what (``params:hyperparameter_search``)."""

    SECTION: ClassVar[str] = "hyperparameter_search"
    model_name: str
    config_id: int
    n_trials: int  # COMPLETE trials wanted
    progress: bool = machine()
    worker: int = machine()  # distinct per worker sharing the study (offsets the sampler seed)
    fixed: SearchFixedSettings
    search_space: SearchSpace
    sampler: SamplerSettings
    pruning: bool
    pruner: PrunerSettings

    def __post_init__(self) -> None:
        check_per_model(self.fixed.channels_last, (self.model_name,), "hyperparameter_search.fixed")

    def fingerprint(self) -> dict[str, Any]:
        """What must not change when a study is resumed: not the hardware or speed settings, so
        an A4000 box and an L4 cluster can add trials to one study."""
        return {
            "model_name": self.model_name,
            "config_id": self.config_id,
            "search_space": jsonable(asdict(self.search_space)),
            "fixed": self.fixed.experiment(),
        }

    def fingerprint_id(self) -> str:
        """The fingerprint as a short hash: what best_params carries to the sweep, which checks
        it."""
        return digest(jsonable(self.fingerprint()))


# ---- permutation_study ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideSettings:
    """Hyperparameters that replace best_params' (null: best_params' value)."""

    max_epochs: int | None
    learning_rate: float | None
    superconvergence: bool | None
    peak_fraction: float | None
    lr_interval: str | None
    mask_non_tumor: bool | None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FinalEvaluationSettings:
    pretrained: tuple[bool, ...]  # the arms: finetuned and/or from scratch


@dataclass(frozen=True)
class FallbackSettings:
    """Which patients missing sequences get trained runs: every set of at least ``min_sequences``
    present sequences gets the best-ranked configuration that uses only them (4: none)."""

    min_sequences: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_sequences <= 4:
            raise ValueError(
                f"permutation_study.fallback.min_sequences = {self.min_sequences} must be 1 to 4 "
                "(conf/base/parameters_permutation_study.yml)"
            )


@dataclass(frozen=True)
class PermutationStudySettings(Settings):
    """The sweep and the final evaluation (``params:permutation_study``)."""

    SECTION: ClassVar[str] = "permutation_study"
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: OverrideSettings
    fixed: FixedSettings
    keep_checkpoints: bool = machine()  # keep every sweep run's best-epoch weights
    # a best_params id (hex) accepted deliberately; --params may read an all-digit id as a number
    accept_best_params: str | int | None
    final_evaluation: FinalEvaluationSettings
    fallback: FallbackSettings  # runs for patients missing sequences (predict)

    def __post_init__(self) -> None:
        check_per_model(self.fixed.channels_last, self.models, "permutation_study.fixed")

    def hyperparameters(self, best_params: Mapping[str, Any]) -> dict[str, Any]:
        """best_params' hyperparameters with the overrides applied (an override of null keeps
        best_params')."""
        return {**best_params["hyperparameters"], **self.overrides.given()}


# ---- demo_pretraining ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainSettings:
    """How one demo model is pretrained on photographs (``params:demo_pretraining``, the models
    aside; see :mod:`idh_pseudocolor.pretraining`)."""

    image_size: int  # crops are resized to this (the size the demo finetunes at)
    photo_size: int  # every photograph: centre square, resized to this side
    crop_scale: tuple[float, float]  # crop side / photo side
    holdout_fraction: float  # bottom band of every photograph, only for the held-out crops
    jitter: float  # brightness and contrast jitter (0: none)
    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    heldout_crops: int
    seed: int
    torch_threads: int | None  # not a machine key: a paper run sets it null with the rest


@dataclass(frozen=True)
class DemoPretrainingSettings:
    """The demo's photograph pretraining (``params:demo_pretraining``): ``pretraining`` holds the
    other keys as :class:`PretrainSettings`, None when disabled (the paper's environments set
    them all null)."""

    SECTION: ClassVar[str] = "demo_pretraining"
    enabled: bool
    models: tuple[str, ...]
    # its keys sit beside enabled and models in the YAML, not in a block of their own
    pretraining: PretrainSettings | None = field(metadata={"flat": True})

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DemoPretrainingSettings:
        own = ("enabled", "models")
        check_keys(params, (*own, *pretraining_keys()), cls.SECTION)
        enabled = typed(params["enabled"], bool, f"{cls.SECTION}.enabled")
        models = typed(params["models"], tuple[str, ...], f"{cls.SECTION}.models")
        if not enabled:
            return cls(enabled=enabled, models=models, pretraining=None)
        rest = {k: v for k, v in params.items() if k not in own}
        return cls(
            enabled=enabled, models=models, pretraining=build(PretrainSettings, rest, cls.SECTION)
        )


def pretraining_keys() -> tuple[str, ...]:
    """The ``demo_pretraining`` keys that configure the pretraining itself (all null in a paper
    run)."""
    return tuple(f.name for f in fields(PretrainSettings))


# ---- reporting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportingSettings(Settings):
    """``params:reporting``: the report's statistics (each value documented in the YAML)."""

    SECTION: ClassVar[str] = "reporting"
    bootstrap_resamples: int
    seed: int
    calibration_bins: int
    retrain_tolerance: float
    figure_1_subject: str | None  # None: the first training patient by id


@dataclass(frozen=True)
class CrossValidationSettings(Settings):
    """``params:cross_validation``: the outer folds. Models, arms, seeds and training settings are
    the final evaluation's (``permutation_study``), so ``--env l4`` runs the paper's."""

    SECTION: ClassVar[str] = "cross_validation"
    folds: int  # K stratified outer folds of all included patients
    seed: int  # of the fold assignment and of each fold's train/val split
    val_fraction: float  # of the patients outside the test fold that validate (early stopping)


# ---- segmentation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationTrainingSettings:
    """How the tumor-segmentation network learns (``segmentation.training``)."""

    epochs: int
    batch_size: int
    learning_rate: float  # the one-cycle schedule's peak
    slices_per_subject: int  # axial slices drawn per training patient, 3 of 4 through the tumor
    sequence_dropout: float  # probability of zeroing one sequence of a training slice
    seed: int


@dataclass(frozen=True)
class SegmentationSettings(Settings):
    """``params:segmentation``: the automatic tumor masks (idh_pseudocolor.segmentation)."""

    SECTION: ClassVar[str] = "segmentation"
    in_plane_mm: float  # slices averaged down to about this spacing in-plane
    channels: tuple[int, ...]  # U-Net feature maps per level
    lower_percentile: float  # of each sequence's brain voxels, mapped to 0 ...
    upper_percentile: float  # ... and to 1
    threshold: float  # on P(tumor)
    max_train_subjects: int | None  # of the development split's training patients; None = all
    training: SegmentationTrainingSettings
    n_workers: int | None = machine()  # processes reading volumes; None = all cores
    torch_threads: int = machine()
    progress: bool = machine()

    def architecture(self) -> Any:
        from idh_pseudocolor.segmentation import Architecture

        return Architecture(
            in_plane_mm=self.in_plane_mm,
            channels=tuple(self.channels),
            lower_percentile=self.lower_percentile,
            upper_percentile=self.upper_percentile,
            threshold=self.threshold,
        )


@dataclass(frozen=True)
class PreprocessingSettings(Settings):
    """``params:preprocessing``: raw studies -> a cohort in the EGD layout
    (idh_pseudocolor.preprocess; the ``preprocessing`` pipeline and ``idh-pseudocolor
    preprocess``)."""

    SECTION: ClassVar[str] = "preprocessing"
    voxel_size: float  # the template grid's spacing, mm (1 = EGD's)
    seed: int  # the registrations' metric sampling
    raw: str | None = machine()  # folder of raw studies, one per patient; None: nothing to do
    out: str = machine()  # where the cohort goes (OUT/SUBJECTS/<id>/...)
    labels: str | None = machine()  # CSV of IDH status; None: -1 (unknown)
    mapping: str | None = machine()  # series -> sequence overrides (YAML or CSV)
    masks: str | None = machine()  # another tool's tumor masks (a folder); None: none
    segmentation_model: str | None = machine()  # file or versioned folder; None: no masks drawn
    redo: bool = machine()  # preprocess patients already written again
    n_workers: int | None = machine()  # patients in parallel; None = all cores
    progress: bool = machine()


# ---- all of them ---------------------------------------------------------------------------------

PIPELINE_SETTINGS: dict[str, Any] = {
    cls.SECTION: cls
    for cls in (
        EnvironmentSettings,
        DataEngineeringSettings,
        DemoPretrainingSettings,
        SearchSettings,
        PermutationStudySettings,
        ReportingSettings,
        CrossValidationSettings,
        SegmentationSettings,
        PreprocessingSettings,
    )
}


def check_settings(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Every block's typed settings from the resolved parameters (what a run checks before any
    node)."""
    missing = [s for s in PIPELINE_SETTINGS if s not in parameters]
    if missing:
        raise ValueError(f"{missing[0]} is missing ({SOURCES[missing[0]]} sets it)")
    return {
        section: cls.from_params(parameters[section]) for section, cls in PIPELINE_SETTINGS.items()
    }


def setting_fields(cls: type, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf setting of a settings class as (resolved parameter key, dataclass field)."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        nested = next(
            (h for h in (hints[f.name], *get_args(hints[f.name])) if is_dataclass(h)), None
        )
        if nested is None:
            yield f"{path}.{f.name}", f
        else:
            yield from setting_fields(
                nested, path if f.metadata.get("flat") else f"{path}.{f.name}"
            )


def setting_keys() -> tuple[str, ...]:
    """Every resolved parameter key that a settings class reads, e.g.
    ``permutation_study.fixed.weight_decay``."""
    return tuple(
        k for section, cls in PIPELINE_SETTINGS.items() for k, _ in setting_fields(cls, section)
    )


def machine_keys() -> tuple[str, ...]:
    """The keys of every :data:`MACHINE` setting (a per-model mapping's entries too): what the
    paper path lets a machine set freely."""
    keys = []
    for section, cls in PIPELINE_SETTINGS.items():
        for key, f in setting_fields(cls, section):
            if is_machine(f):
                keys.append(key)
                if "Mapping" in str(f.type):  # {model_name: file}
                    keys.append(f"{key}.*")
    return tuple(keys)


def jsonable(value: Any) -> Any:
    """Dicts, lists and scalars only (tuples become lists), as JSON and Optuna's storage keep
    them."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
