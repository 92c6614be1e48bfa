"""The study file's schema: typed, validated, immutable config objects, one per section.

Nothing past :func:`bstune.config._loading.load_study` sees a raw dict. Every problem found in
a file is reported at once (:mod:`bstune.config._errors`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from math import log2
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bstune.config._errors import ConfigError, did_you_mean, validated
from bstune.config._secrets import mask_value

__all__ = [
    "FLOAT_PARAMS",
    "OPTIMIZERS",
    "SCHEDULES",
    "STORAGE_VARIABLES",
    "BatchScheduleSpace",
    "BatchSizeRange",
    "BudgetConfig",
    "DatasetConfig",
    "FloatRange",
    "LrRange",
    "ModelConfig",
    "PrunerConfig",
    "SamplerConfig",
    "SearchSpace",
    "SearchSpaceConfig",
    "StudyConfig",
    "StudySection",
    "TrainingConfig",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "grow_batch", "decay_lr", "seesaw")
BUILTIN_MODELS = ("mlp", "cnn", "resnet")
# Where a storage URL may come from besides --storage and the study file, first match wins.
STORAGE_VARIABLES = ("BSTUNE_STORAGE", "OPTUNA_STORAGE")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# The search space's float parameters: each a range, or one number that pins it.
FLOAT_PARAMS = (
    "lr", "momentum", "beta1", "beta2", "weight_decay", "dropout", "label_smoothing",
    "warmup_epochs",
)  # fmt: skip

Objective = Literal["val_accuracy", "val_loss", "train_time", "peak_memory", "throughput"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"]
_PosInt = Annotated[int, Field(ge=1)]


def _opts(*names: OptimizerName) -> list[OptimizerName]:
    return list(names)


def _objs(*names: Objective) -> list[Objective]:
    return list(names)


_NonNegInt = Annotated[int, Field(ge=0)]


class _Config(BaseModel):
    # strict: "5" is not an integer and "yes" is not a boolean in a study file; and .nan or .inf
    # is no number any setting can use (a NaN learning rate would fail every trial).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- sections


class StudySection(_Config):
    """``study:`` — the study's name, where it is stored, and how workers that die are noticed.

    With a database storage each worker's running trial sends a heartbeat every
    ``heartbeat_interval`` seconds; a trial silent for ``grace_period`` seconds (default twice
    the interval) is marked FAIL by the next worker to start a trial, and retried ``retries``
    times with the same parameters. ``heartbeat_interval: null`` turns this off.
    """

    name: str | None = None
    storage: str | None = None
    heartbeat_interval: _PosInt | None = 60
    grace_period: _PosInt | None = None
    retries: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> StudySection:
        if self.grace_period is not None:
            if self.heartbeat_interval is None:
                raise ValueError("grace_period needs a heartbeat_interval")
            if self.grace_period <= self.heartbeat_interval:
                raise ValueError(
                    f"grace_period ({self.grace_period}) must be longer than heartbeat_interval "
                    f"({self.heartbeat_interval}), or a live worker's trial could be failed"
                )
        return self

    @field_validator("name")
    @classmethod
    def _name_fits(cls, v: str | None) -> str | None:
        if v is not None and not 0 < len(v) <= 512:
            raise ValueError(
                f"expected a name of 1 to 512 characters (what Optuna's storages hold), got "
                f"{len(v)} characters"
            )
        return v

    @field_validator("storage")
    @classmethod
    def _storage_is_url(cls, v: str | None) -> str | None:
        if v is not None and not _URL.match(v):
            raise ValueError(
                f"expected a database URL such as sqlite:///study.db or "
                f"postgresql://user@host/db, got {mask_value(v)!r}"
            )
        return v


class DatasetConfig(_Config):
    """``dataset:`` — which data, where its files are, and how it is split."""

    name: Literal["mnist", "fashion_mnist", "digits", "synthetic"]
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 0
    data_dir: str | None = None
    download: bool = True
    normalize: bool = True
    # synthetic only
    n_train: _PosInt = 4000
    n_test: _PosInt = 1000
    shape: list[_PosInt] = Field(default_factory=lambda: [32], min_length=1, max_length=3)
    n_classes: int = Field(10, ge=2)
    noise: float = Field(1.0, ge=0.0)
    structure: Literal["clusters", "images"] = "clusters"
    """``clusters``: Gaussian clusters, one per class; ``images``: images of shapes, one shape
    per class (at most 10), at random places and sizes (``shape`` [channels, height, width],
    default [3, 32, 32])."""

    @model_validator(mode="before")
    @classmethod
    def _image_shape_by_default(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("name") == "synthetic"
            and data.get("structure") == "images"
            and "shape" not in data
        ):
            return {**data, "shape": [3, 32, 32]}
        return data

    @model_validator(mode="after")
    def _synthetic_keys_only_for_synthetic(self) -> DatasetConfig:
        keys = {"n_train", "n_test", "shape", "n_classes", "noise", "structure"}
        if self.name != "synthetic":
            given = self.model_fields_set & keys
            if given:
                raise ValueError(
                    f"{', '.join(sorted(given))} only apply to dataset 'synthetic', "
                    f"not {self.name!r}"
                )
        if self.structure == "images" and len(self.shape) != 3:
            raise ValueError(
                f"structure 'images' needs shape [channels, height, width], got {self.shape}"
            )
        if self.structure == "images" and self.n_classes > 10:
            raise ValueError(
                f"structure 'images' draws 10 shapes; expected n_classes of at most 10, got "
                f"{self.n_classes}"
            )
        return self


class ModelConfig(_Config):
    """``model:`` — a built-in model (``mlp``, ``cnn``, ``resnet``) or a user's
    ``package.module:factory``."""

    name: str
    hidden: list[_PosInt] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    channels: list[_PosInt] = Field(default_factory=lambda: [32, 64], min_length=1)
    batch_norm: bool = False
    blocks: _PosInt = 2
    """``resnet``: basic blocks per stage (each entry of ``channels`` is a stage's width)."""
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v in BUILTIN_MODELS or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            return v
        raise ValueError(
            f"unknown model {v!r}{did_you_mean(v, BUILTIN_MODELS)}; expected mlp, cnn, resnet "
            f"or 'package.module:factory'"
        )


class TrainingConfig(_Config):
    """``training:`` — how every trial trains."""

    epochs: _PosInt = 5
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    drop_last: bool = False
    eval_batch_size: _PosInt = 4096
    noise_scale_every: _NonNegInt = 16
    """Estimate the gradient noise scale on every this-many-th step (0: never)."""
    threads: int | Literal["auto"] = "auto"
    """CPU threads: ``auto`` chooses per run from the cores free and a calibration (see
    :mod:`bstune.training._threads`); a number fixes it."""
    data_on_device: Literal["auto", "always", "never"] = "auto"
    """``never``: read the data through a DataLoader each epoch, batch by batch to the device,
    instead of holding it there as tensors (``auto`` and ``always`` hold built-in data sets as
    tensors; for your own ``Dataset`` see :func:`bstune.data.as_dataset`)."""

    @field_validator("threads", mode="before")
    @classmethod
    def _thread_count(cls, v: Any) -> int | str:
        """The form only; whether this machine has that many cores is the training layer's
        question (``bstune.training._threads.check_threads``, asked by every command and by
        the engine before a run)."""
        if v == "auto":
            return "auto"
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            return v
        raise ValueError(
            f"expected auto or a whole number of threads from 1 to the cores this process may "
            f"use, got {v!r}"
        )

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            return v
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {v!r}")


class FloatRange(_Config):
    """A float search range; ``log`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.log and self.low <= 0 and self.low != self.high:  # one value: nothing sampled
            raise ValueError(f"a log range needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        return self


class LogFloatRange(FloatRange):
    log: bool = True


class LrRange(LogFloatRange):
    """The learning-rate range, optionally tied to batch size by a scaling rule.

    Under a rule the sampled value is the base rate at ``reference_batch_size``; with
    κ = B / B_ref the rate that trains is base × κ (``linear``, Goyal et al. 2017 for SGD),
    base × √κ (``sqrt``), or under ``adam_sde`` (Malladi et al. 2022) for Adam and AdamW
    base × √κ with 1 − β → κ(1 − β) for both betas and ε → ε / √κ (the linear rule for the
    other optimizers, SGD's own SDE rule). See :func:`bstune.tune._space.scale_hparams`.
    """

    scaling: Literal["none", "linear", "sqrt", "adam_sde"] = "none"
    reference_batch_size: _PosInt = 128

    @model_validator(mode="after")
    def _positive(self) -> LrRange:
        if self.low <= 0:
            raise ValueError(f"a learning rate must be > 0, got low={self.low}")
        return self


class WeightDecayRange(LogFloatRange):
    """The weight-decay range, optionally tied to batch size and learning rate.

    Under ``scaling: timescale`` (Bergsma et al. 2025, "Power Lines": AdamW's best weight decay
    keeps the timescale τ = B / (η · λ · N) fixed) the sampled value is the decay at
    ``lr.reference_batch_size`` and the sampled base rate; with κ = B / B_ref the decay that
    trains is base × κ × base_lr / lr, so B / (η · λ) — τ in epochs times N — is the same at
    every batch size whatever the learning-rate rule. Derived for decoupled decay (AdamW); SGD's
    L2 decay also shrinks the weights by η · λ a step, Adam's goes through its adaptive step.
    """

    scaling: Literal["none", "timescale"] = "none"


class BatchSizeRange(_Config):
    """The batch-size range: powers of two by default, every ``step`` with ``log: false``."""

    low: _PosInt
    high: _PosInt
    log: bool = True
    step: _PosInt | None = None

    @model_validator(mode="after")
    def _valid(self) -> BatchSizeRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.powers_of_two:
            bad = [v for v in (self.low, self.high) if v & (v - 1)]
            if bad:
                raise ValueError(
                    f"{bad[0]} is not a power of two; batch sizes are powers of two unless "
                    f"`step` or `log: false` is given"
                )
        return self

    @property
    def powers_of_two(self) -> bool:
        return self.log and self.step is None

    def choices(self) -> list[int]:
        """Every batch size this range allows, in increasing order."""
        if self.powers_of_two:
            return [2**e for e in range(int(log2(self.low)), int(log2(self.high)) + 1)]
        return list(range(self.low, self.high + 1, self.step or 1))


ScheduleName = Literal["none", "grow_batch", "decay_lr", "seesaw"]


def _modes(*names: ScheduleName) -> list[ScheduleName]:
    return list(names)


class BatchScheduleSpace(_Config):
    """``search_space.batch_schedule:`` — grow the batch instead of decaying the rate (Smith et
    al. 2018, "Don't decay the learning rate, increase the batch size").

    Every ``grow_every_epochs`` epochs ``grow_batch`` multiplies the batch size by ``factor``
    up to ``max_batch_size``, then decays the rate by it; ``decay_lr`` is the step decay it
    replaces; ``seesaw`` (Meterez et al. 2025, for Adam-type optimizers) multiplies the batch by
    ``factor`` and the rate by 1/√factor where the step decay would divide the rate by
    ``factor``, up to ``max_batch_size`` and then the rate decays; ``none`` keeps both.
    ``mode`` and ``factor`` may each be a list, to search.
    """

    mode: list[ScheduleName] = Field(default_factory=lambda: _modes("grow_batch"), min_length=1)
    grow_every_epochs: _PosInt = 1
    factor: list[Annotated[int, Field(ge=2)]] = Field(default_factory=lambda: [2], min_length=1)
    max_batch_size: _PosInt

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("mode", "factor"):
                if isinstance(data.get(key), (str, int)) and not isinstance(data[key], bool):
                    data[key] = [data[key]]
        return data


def _single_value(v: Any) -> Any:
    """A bare number pins a parameter: ``dropout: 0.1`` is the range [0.1, 0.1]."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"low": v, "high": v}
    return v


class SearchSpaceConfig(_Config):
    """``search_space:`` — what each trial samples. Absent entries keep the training defaults."""

    batch_size: BatchSizeRange = Field(default_factory=lambda: BatchSizeRange(low=16, high=1024))
    lr: LrRange = Field(default_factory=lambda: LrRange(low=1e-4, high=1e-1))
    optimizer: list[OptimizerName] = Field(
        default_factory=lambda: _opts("sgd", "adam"), min_length=1
    )
    momentum: FloatRange | None = None
    beta1: FloatRange | None = None
    beta2: FloatRange | None = None
    weight_decay: WeightDecayRange | None = None
    dropout: FloatRange | None = None
    label_smoothing: FloatRange | None = None
    warmup_epochs: FloatRange | None = None
    batch_schedule: BatchScheduleSpace | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for key in ("batch_size", *FLOAT_PARAMS):  # (low, high) from Python: a range
            v = data.get(key)
            if isinstance(v, (tuple, list)) and len(v) == 2:
                data[key] = {"low": v[0], "high": v[1]}
        for key in FLOAT_PARAMS:
            if key in data:
                data[key] = _single_value(data[key])
        bs = data.get("batch_size")
        if isinstance(bs, int) and not isinstance(bs, bool):
            data["batch_size"] = {"low": bs, "high": bs, "log": False}
        elif bs is not None and not isinstance(bs, Mapping):
            raise ValueError(
                f"batch_size: expected a whole number of examples or a range {{low, high}}, "
                f"got {bs!r}"
            )
        if isinstance(data.get("optimizer"), str):
            data["optimizer"] = [data["optimizer"]]
        return data

    @model_validator(mode="after")
    def _sde_rule_defined(self) -> SearchSpaceConfig:
        """Under ``adam_sde`` 1 − β becomes κ(1 − β): a β at or below 0 for κ ≥ 1/(1 − β)."""
        if self.lr.scaling != "adam_sde" or not {"adam", "adamw"} & set(self.optimizer):
            return self
        # κ of the sampled batch size: a growing batch schedule changes the batch, not the rule
        kappa = self.batch_size.high / self.lr.reference_batch_size
        for name, default in (("beta1", 0.9), ("beta2", 0.999)):
            rng = getattr(self, name)
            beta = rng.high if rng is not None else default
            if kappa * (1 - beta) >= 1 - 1e-9:  # κ ≥ 1/(1 − β), to rounding
                raise ValueError(
                    f"scaling adam_sde: κ = batch_size.high / lr.reference_batch_size = "
                    f"{self.batch_size.high}/{self.lr.reference_batch_size} = {kappa:g} must be "
                    f"below 1/(1 − {name}) = {1 / (1 - beta):.4g} ({name} {beta:g} would become "
                    f"{1 - kappa * (1 - beta):.4g}); raise reference_batch_size or lower "
                    f"batch_size.high or {name}"
                )
        return self

    @field_validator("dropout", "label_smoothing", "momentum", "beta1", "beta2")
    @classmethod
    def _fraction(cls, v: FloatRange | None) -> FloatRange | None:
        if v is not None and not (v.low >= 0.0 and v.high < 1.0):
            raise ValueError(f"expected values in [0, 1), got [{v.low}, {v.high}]")
        return v

    @field_validator("weight_decay", "warmup_epochs")
    @classmethod
    def _non_negative(cls, v: FloatRange | None) -> FloatRange | None:
        if v is not None and v.low < 0:
            raise ValueError(f"expected values >= 0, got low={v.low}")
        return v


SearchSpace = SearchSpaceConfig
"""The public name of a search space, for Python code: ``SearchSpace(batch_size=(16, 1024),
lr=(1e-4, 1e-1), optimizer=["sgd", "adam"])`` — ranges as ``(low, high)`` or mappings with
``low``, ``high``, ``log``, ``step``, single values to pin a parameter, as in a study file."""


# Pruners: one typed config each, with Optuna's argument names and defaults.


class _NoPruner(_Config):
    name: Literal["none"]


class _Pruner(_Config):
    keep_front: bool = False
    """Multi-objective studies: do not stop a trial that would be on the Pareto front (by a 5%
    margin) if it finished now (bstune's ``KeepFront``); the pruner's decisions are otherwise
    unchanged."""


class _MedianPruner(_Pruner):
    name: Literal["median"]
    n_startup_trials: _NonNegInt = 5
    n_warmup_steps: _NonNegInt = 0
    interval_steps: _PosInt = 1
    n_min_trials: _PosInt = 1


class _PercentilePruner(_MedianPruner):
    name: Literal["percentile"]  # type: ignore[assignment]
    percentile: float = Field(25.0, ge=0.0, le=100.0)


class _SuccessiveHalvingPruner(_Pruner):
    name: Literal["successive_halving"]
    min_resource: _PosInt | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: _NonNegInt = 0
    bootstrap_count: _NonNegInt = 0


class _HyperbandPruner(_Pruner):
    name: Literal["hyperband"]
    min_resource: _PosInt = 1
    max_resource: _PosInt | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: _NonNegInt = 0


class _WilcoxonPruner(_Pruner):
    name: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, ge=0.0, le=1.0)
    n_startup_steps: _NonNegInt = 2


class _PatientPruner(_Pruner):
    name: Literal["patient"]
    patience: _NonNegInt = 1
    min_delta: float = Field(0.0, ge=0.0)
    wrapped: PrunerConfig | None = None

    @field_validator("wrapped")
    @classmethod
    def _guard_outside(cls, v: Any) -> Any:
        if v is not None and "keep_front" in v.model_fields_set:
            raise ValueError("keep_front belongs on the outer pruner, not on wrapped")
        return v


PrunerConfig = Annotated[
    _NoPruner
    | _MedianPruner
    | _PercentilePruner
    | _SuccessiveHalvingPruner
    | _HyperbandPruner
    | _WilcoxonPruner
    | _PatientPruner,
    Field(discriminator="name"),
]
_PatientPruner.model_rebuild()


class SamplerConfig(_Config):
    """``sampler:`` — an Optuna sampler by name, with its most used arguments.

    ``tpe`` is multivariate and grouped by default (batch size and learning rate are modelled
    jointly; conditional parameters such as momentum get their own group); set
    ``multivariate: false`` for Optuna's independent TPE. Its ``constant_liar`` (which keeps
    parallel workers from sampling the same point, at a storage write per trial) is off for a
    single worker; set it ``true`` when several processes or hosts share one study.
    """

    name: Literal["tpe", "nsga2", "random", "gp", "cmaes", "qmc", "grid"] = "tpe"
    seed: int | None = None
    n_startup_trials: _NonNegInt | None = None
    multivariate: bool = True
    group: bool | None = None
    constant_liar: bool | None = None
    population_size: int | None = Field(None, ge=2)


class BudgetConfig(_Config):
    """``budget:`` — when a study stops (a number of trials and/or seconds), and the most
    memory a trial may use: a trial whose measured peak exceeds ``max_memory_mb`` is infeasible
    (an Optuna constraint), stopped at the first epoch that exceeds it, never on the front."""

    n_trials: _PosInt | None = 20
    timeout: float | None = Field(None, gt=0.0)
    max_memory_mb: float | None = Field(None, gt=0.0)


class ArtifactsConfig(_Config):
    """``artifacts:`` — where each kept trial's trained weights go, and which trials keep them.

    ``store``: a folder (an ``optuna.artifacts.FileSystemArtifactStore``), or ``s3://bucket/
    prefix`` / ``gs://bucket/prefix`` (Optuna's Boto3 and GCS stores; boto3 or
    google-cloud-storage installed). Default: ``<file stem>_artifacts`` beside the study file;
    a config not read from a file keeps no weights unless a store is named. ``keep``: ``front``
    — the trials on the study's Pareto front (the best, with one objective), a trial's weights
    removed when a later trial dominates it; ``all``; ``none``."""

    store: str | None = None
    keep: Literal["front", "all", "none"] = "front"

    @field_validator("store")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected a folder, s3://bucket/prefix or gs://bucket/prefix")
        return v


class StudyConfig(_Config):
    """One study file, fully validated. Every section but ``dataset`` and ``model`` defaults."""

    study: StudySection = Field(default_factory=StudySection)
    objectives: list[Objective] = Field(
        default_factory=lambda: _objs("val_accuracy", "train_time", "peak_memory"), min_length=1
    )
    dataset: DatasetConfig
    model: ModelConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    search_space: SearchSpaceConfig = Field(default_factory=SearchSpaceConfig)
    pruner: PrunerConfig = Field(default_factory=lambda: _MedianPruner(name="median"))
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    source: str | None = Field(None, exclude=True)
    """The file this config was read from, if any (not a study-file key)."""

    @field_validator("objectives")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({o for o in v if v.count(o) > 1})
        if dupes:
            raise ValueError(f"each objective may appear once, {', '.join(dupes)} repeats")
        return v

    def with_training(self, **changes: Any) -> StudyConfig:
        """A copy with ``training`` keys replaced (command-line overrides), validated."""
        data = {**self.training.model_dump(), **changes}
        training = validated(TrainingConfig, data, "command line", section="training")
        return self.model_copy(update={"training": training})

    @property
    def study_name(self) -> str:
        if self.study.name:
            return self.study.name
        return Path(self.source).stem if self.source else "bstune"

    @property
    def storage_url(self) -> str:
        """The study's storage: ``$BSTUNE_STORAGE``, else Optuna's ``$OPTUNA_STORAGE``, else
        ``study.storage``, else ``<file stem>.db`` beside the study file. (A command's
        ``--storage`` comes before all of these.) The environment keeps a password out of the
        study file and off command lines.

        Raises:
            ConfigError: the variable that is used does not hold a URL.
        """
        for var in STORAGE_VARIABLES:
            value = os.environ.get(var, "").strip()
            if value:
                if not _URL.match(value):
                    raise ConfigError(
                        f"${var}: expected a database URL such as sqlite:///study.db or "
                        f"postgresql://user@host/db, got {mask_value(value)!r}"
                    )
                return value
        if self.study.storage:
            return self.study.storage
        stem = Path(self.source) if self.source else Path("bstune.yaml")
        return f"sqlite:///{stem.resolve().with_suffix('.db')}"

    @property
    def artifact_store(self) -> str | None:
        """Where kept weights go (``artifacts.store``, a folder relative to the study file, or
        ``<file stem>_artifacts`` beside it), or None: ``keep: none``, or no store named for a
        config not read from a file."""
        if self.artifacts.keep == "none":
            return None
        store = self.artifacts.store
        if store is not None and re.match(r"^(s3|gs)://", store):
            return store
        if store is not None:
            path = Path(store).expanduser()
            if not path.is_absolute() and self.source:
                path = Path(self.source).resolve().parent / path
            return str(path)
        if not self.source:
            return None
        source = Path(self.source).resolve()
        return str(source.with_name(f"{source.stem}_artifacts"))


