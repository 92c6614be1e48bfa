"""The Optuna objective: trial → hyperparameters → engine → objective values and records.

What a trial stores, written once at the end of the trial in one storage transaction (each
separate write is a round trip, ~1.5 ms on SQLite): the figures users sort and filter by as
user attributes of their own — ``bstune:train_time_s``, ``bstune:samples_per_s``,
``bstune:peak_memory_mb``, ``bstune:val_accuracy``, ``bstune:test_accuracy``,
``bstune:noise_scale``, ``bstune:cpu_threads``, ``bstune:effective_lr``
(:data:`bstune.tune._trial_record.FLAT_METRICS`) — and
``bstune:metrics``, holding them and

* ``effective_lr`` — the learning rate that trained (after any scaling rule);
* ``cpu_threads`` — the CPU threads it trained with (the count in force longest; see
  :mod:`bstune.training._threads`), ``cpu_time_s`` — its process's CPU time while training,
  ``load_others`` — the mean cores other processes kept busy meanwhile, ``load_avg`` — the
  machine's 1-minute load average at the end, ``disturbed`` — why its timing is not what this
  machine gives undisturbed (absent when it is);
* ``train_time_s``, ``eval_time_s``, ``data_time_s``, ``samples_per_s``, ``peak_memory_mb``,
  ``memory_method``, ``steps``, ``epochs``, ``val_accuracy``, ``val_loss``, ``test_accuracy``,
  ``test_loss``, ``device``, ``torch_version``;
* ``hparams`` — every hyperparameter of the run;
* ``noise_scale`` — the gradient noise scale B_simple at the end (see
  :mod:`bstune.training._noise`);
* ``curves`` — per epoch ``train_loss``, ``val_loss``, ``val_accuracy``, ``epoch_time_s``
  (training phase), ``samples_per_s``, ``lr`` and ``batch_size`` (a batch schedule changes
  them), ``noise_scale``;
* ``val_loss_by_step`` — the validation-loss curve by reported step (what pruners compare);
* ``stopped`` — why the run ended early (a non-finite loss, pruning, out of memory, over the
  memory budget), if it did;
* ``kept_on_front`` — the steps where the pruner said "prune" and ``keep_front`` overruled it.

A trial that raised stores ``bstune:error`` (type and message) and ``bstune:traceback``. A trial
that ran out of memory, or whose peak exceeded ``budget.max_memory_mb``, ends PRUNED and
infeasible: an Optuna constraint (``out_of_memory`` = 1, or ``memory_mb`` = peak − budget > 0)
that samplers read, so they learn which batch sizes do not fit. With a budget every finished
trial carries ``memory_mb`` (<= 0 when it fits).
"""

from __future__ import annotations

import contextlib
import inspect
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from bstune.config._errors import ConfigError, validated
from bstune.config._loading import load_study
from bstune.config._objectives import ATTR, DIRECTIONS
from bstune.config._schema import ModelConfig, SearchSpaceConfig, StudyConfig, TrainingConfig
from bstune.data._datasets import Dataset, load_dataset
from bstune.data._user_data import DataLike, as_dataset
from bstune.training._engine import EpochStats, RunSpec, train
from bstune.training._measure import is_out_of_memory, release_memory
from bstune.training._optim import Hyperparams
from bstune.training._threads import merge_choices
from bstune.tune._artifacts import ArtifactKeeper, open_artifact_store
from bstune.tune._pruning import report_val_loss
from bstune.tune._signals import Interrupted
from bstune.tune._space import suggest
from bstune.tune._trial_record import _projected, _record, objective_values

__all__ = ["THREADS_ATTR", "Objective"]

THREADS_ATTR = f"{ATTR}threads"  # the study's thread calibrations (see bstune.training._threads)


class Objective:
    """bstune's objective, callable by any ``study.optimize``: from a study file, or from your
    own model and data.

    ``Objective(config)`` / ``Objective.from_yaml(path)``: the study file's data set (loaded on
    the first call, shared by every trial of this process), model, search space and training.
    ``Objective(model=..., train=..., val=..., space=...)``: your own ``nn.Module`` factory
    (called with no argument, with the trial's :class:`Hyperparams`, or with those and the
    trial) and your data (see :func:`bstune.data._user_data.as_dataset`: ``data_on_device``
    says whether a ``Dataset`` is held as tensors or streamed). ``loss`` replaces
    cross-entropy; ``prefix`` goes before bstune's parameter names, so a wrapper objective's own
    parameters cannot clash with them. ``artifact_store`` (a folder, or any
    ``optuna.artifacts`` store: S3, GCS, your own) keeps trials' trained weights as ``keep``
    says — ``front``, ``all`` or ``none`` (see :mod:`bstune.tune._artifacts`); a study file's
    ``artifacts:`` section does the same.

    Every epoch reports validation loss and asks the study's pruner (the step is the epoch:
    equal data seen whatever the batch size), in single- and multi-objective studies alike.
    ``directions`` and ``metric_names`` are what ``optuna.create_study`` should be given.

    Example:
        >>> import optuna, torch, bstune
        >>> x, y = torch.randn(256, 8), torch.randint(0, 2, (256,))
        >>> objective = bstune.Objective(
        ...     model=lambda: torch.nn.Linear(8, 2), train=(x, y), val=(x, y),
        ...     space={"batch_size": (16, 64), "lr": 0.1, "optimizer": "sgd"},
        ...     objectives=["val_loss", "train_time"], epochs=1, device="cpu")
        >>> objective.directions
        ['minimize', 'minimize']
        >>> study = optuna.create_study(directions=objective.directions)
        >>> study.optimize(objective, n_trials=2)
        >>> [t.state.name for t in study.trials]
        ['COMPLETE', 'COMPLETE']
    """

    def __init__(
        self,
        config: StudyConfig | None = None,
        *,
        model: OwnModel | None = None,
        train: DataLike | None = None,
        val: DataLike | None = None,
        test: DataLike | None = None,
        space: SearchSpaceConfig | Mapping[str, Any] | None = None,
        objectives: Sequence[str] | None = None,
        epochs: int = 5,
        device: str = "auto",
        precision: str = "fp32",
        seed: int = 0,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        max_memory_mb: float | None = None,
        prefix: str = "",
        threads: int | str = "auto",
        data_on_device: str = "auto",
        artifact_store: Any = None,
        keep: str = "front",
    ) -> None:
        own = (model, train, val, test, space, objectives)
        if config is not None:
            if any(v is not None for v in own):
                raise ConfigError(
                    "Objective: give a study config, or model=, train=, val= (and space=, "
                    "objectives=), not both"
                )
            self.space, self.training = config.search_space, config.training
            self.max_memory_mb = config.budget.max_memory_mb
            self.objectives: list[str] = list(config.objectives)
            self._model: ModelConfig | OwnModel = config.model
            self._dataset: Dataset | None = None
            self.keeper = ArtifactKeeper.from_study(config)
        else:
            if model is None or train is None or val is None:
                raise ConfigError("Objective: expected a study config, or model=, train= and val=")
            self.space = _space(space)
            self.training = _training(
                epochs=epochs, device=device, precision=precision, seed=seed, threads=threads,
                data_on_device=data_on_device,
            )  # fmt: skip
            self.max_memory_mb = max_memory_mb
            self.objectives = _objectives(objectives)
            self._model = model
            self._dataset = as_dataset(train, val, test, self.training.data_on_device)
            self.keeper = None
            if artifact_store is not None and keep != "none":
                store, where = artifact_store, None
                if isinstance(store, (str, Path)):
                    store, where = open_artifact_store(str(store)), str(store)
                self.keeper = ArtifactKeeper(store, keep, where)
        self.config = config
        self.loss = loss
        self.prefix = prefix
        self.directions = [DIRECTIONS[o] for o in self.objectives]
        self.metric_names = self.objectives
        self.engine_seconds = 0.0  # wall time inside the engine, for overhead measurements
        self.report_seconds = 0.0  # of which reporting and pruning decisions
        self.before_trial: Callable[[], None] | None = None  # e.g. refresh the curves figure
        # around each trial's run (bstune's own heartbeat through the gRPC storage proxy)
        self.around_trial: Callable[[optuna.Trial], AbstractContextManager[None]] | None = None
        self.interrupted: list[int] = []  # numbers of the trials a signal stopped
        self.trial_attrs: dict[str, Any] = {}  # set on each trial as it starts (worker tags)
        self.stop_signal: int | None = None  # set by run_study when SIGINT or SIGTERM arrives
        self.thread_choices: dict[str, int] = {}  # calibrations, kept in the study
        self._threads_read = False

    @classmethod
    def from_yaml(cls, path: str | Path) -> Objective:
        """The objective of the study file at ``path``.

        Raises:
            ConfigError: the file is missing or invalid.
        """
        return cls(load_study(path))

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            assert self.config is not None  # own data is converted in __init__
            self._dataset = load_dataset(self.config.dataset)
        return self._dataset

    def _spec(self, trial: optuna.Trial, hparams: Hyperparams) -> RunSpec:
        t, model = self.training, self._model
        if not isinstance(model, ModelConfig):
            model = _bound(model, trial)
        return RunSpec(
            self.dataset, model, hparams, t.epochs, t.device, t.precision, t.seed, t.drop_last,
            t.eval_batch_size, evaluate_test=len(self.dataset.test) > 0, loss=self.loss,
            noise_scale_every=t.noise_scale_every, threads=t.threads,
            thread_choices=self.thread_choices, data_on_device=t.data_on_device,
        )  # fmt: skip

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        around = self.around_trial(trial) if self.around_trial else contextlib.nullcontext()
        try:
            with around:
                return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM while a study runs
            self.interrupted.append(trial.number)
            trial.set_user_attr(f"{ATTR}error", str(e) or "interrupted by SIGINT")
            raise
        except Exception as e:
            if self.stop_signal is not None:  # the signal's exception, turned into another
                self.interrupted.append(trial.number)
                stop = Interrupted(self.stop_signal)
                trial.set_user_attr(f"{ATTR}error", str(stop))
                raise stop from e
            # Not swallowed: recorded on the trial, then re-raised for Optuna to fail it.
            trial.set_user_attr(f"{ATTR}error", f"{type(e).__name__}: {e}")
            trial.set_user_attr(f"{ATTR}traceback", traceback.format_exc(limit=-8))
            raise

    def _run(self, trial: optuna.Trial) -> float | list[float]:
        for key, value in self.trial_attrs.items():
            trial.set_user_attr(key, value)
        if self.before_trial is not None:
            self.before_trial()
        sampled = suggest(trial, self.space, self.prefix)
        spec = self._spec(trial, sampled.hparams)
        curves: list[EpochStats] = []
        by_step: dict[int, float] = {}
        kept: list[int] = []  # steps where the pruner said "prune" and KeepFront overruled it
        n_train = len(self.dataset.train)
        seen = 0

        budget = self.max_memory_mb

        def on_epoch(stats: EpochStats) -> None:
            nonlocal seen
            curves.append(stats)
            if self.stop_signal is not None:  # the signal's own exception was swallowed
                raise Interrupted(self.stop_signal)
            if budget is not None and stats.peak_memory_mb > budget:
                raise _OverBudgetError(stats.peak_memory_mb)
            # The step is the number of whole passes over the training split the trial has
            # seen: the epoch when every epoch sees every example (drop_last: false), and equal
            # data seen for every batch size when epochs drop a partial batch.
            step_before, seen = seen // n_train, seen + stats.samples
            if seen // n_train > step_before:
                by_step[seen // n_train] = stats.val_loss
                start = time.perf_counter()
                try:
                    projected = _projected(curves, spec.epochs, self.objectives)
                    if report_val_loss(trial, seen // n_train, stats.val_loss, persist=False,
                              projected=projected):  # fmt: skip
                        kept.append(seen // n_train)
                finally:
                    self.report_seconds += time.perf_counter() - start

        hparams = sampled.hparams.__dict__
        batch = sampled.hparams.batch_size
        infeasible: tuple[str, float, str] | None = None  # constraint, its value, the reason
        known = self._known_threads(trial)
        start = time.perf_counter()
        try:
            result = train(spec, on_epoch=on_epoch)
        except optuna.TrialPruned as pruned:
            _record(trial, hparams, curves, by_step, kept, None, str(pruned))
            raise
        except KeyboardInterrupt as stop:  # what the epochs so far measured, then stop
            _record(trial, hparams, curves, by_step, kept, None, str(stop) or "interrupted")
            raise
        except _OverBudgetError as over:
            infeasible = ("memory_mb", over.peak_mb - (budget or 0.0),
                          f"peak memory {over.peak_mb:.4g} MB is over the budget of {budget:g} MB "
                          f"at batch size {batch}")  # fmt: skip
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            infeasible = ("out_of_memory", 1.0, f"out of memory at batch size {batch}")
        finally:
            self.engine_seconds += time.perf_counter() - start
            if self.thread_choices.keys() - known:  # a calibration the study should keep
                trial.study.set_user_attr(THREADS_ATTR, self.thread_choices)
        if infeasible is not None:
            # Outside the except block: the error's traceback, which held the model, gradients
            # and optimizer state, is gone, so release_memory can give them back.
            release_memory()
            key, value, reason = infeasible
            trial.set_constraint(key, value)  # samplers learn the region does not fit
            _record(trial, hparams, curves, by_step, kept, None, reason)
            raise optuna.TrialPruned(reason)
        if budget is not None:
            trial.set_constraint("memory_mb", result.peak_memory_mb - budget)  # <= 0: fits
        _record(trial, hparams, result.epochs, by_step, kept, result, result.diverged)
        if result.diverged:
            # PRUNED, not FAIL: samplers learn from pruned trials that this region is bad.
            raise optuna.TrialPruned(result.diverged)
        values = objective_values(result, self.objectives)
        if self.keeper is not None and result.model is not None:
            self._keep(trial, result.model, values, sampled.hparams)
        return values[0] if len(values) == 1 else values

    def _keep(
        self, trial: optuna.Trial, model: nn.Module, values: list[float], hp: Hyperparams
    ) -> None:
        """The trial's weights to the artifact store (a store that fails costs the weights,
        not the trial: the reason is recorded in ``bstune:artifact_error``)."""
        assert self.keeper is not None
        about = {
            "model": self._model.model_dump() if isinstance(self._model, ModelConfig) else None,
            "input_shape": list(self.dataset.input_shape),
            "num_classes": self.dataset.num_classes,
            "hparams": dict(hp.__dict__),
            "objectives": list(self.objectives),
        }
        try:
            self.keeper.keep_trial(trial, model, values, about)
        except (OSError, RuntimeError, ValueError) as e:
            trial.set_user_attr(f"{ATTR}artifact_error", f"{type(e).__name__}: {e}")

    def _known_threads(self, trial: optuna.Trial) -> set[str]:
        """The calibrations known before this trial: the study's, read once per process."""
        if not self._threads_read:
            merge_choices(self.thread_choices, trial.study.user_attrs.get(THREADS_ATTR))
            self._threads_read = True
        return set(self.thread_choices)


OwnModel = Callable[..., nn.Module]
"""Your own model for :class:`Objective`: ``() -> nn.Module``, ``(hparams) -> nn.Module`` or
``(hparams, trial) -> nn.Module``. (A study file's ``package.module:factory`` is another kind:
:data:`bstune.training._models.ModelFactory`.)"""


def _bound(factory: OwnModel, trial: optuna.Trial) -> Callable[[Hyperparams], nn.Module]:
    """``factory`` as the engine calls a model: with the trial's hyperparameters only."""
    required = [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not required:
        return lambda _hp: factory()
    if len(required) == 1:
        return factory
    return lambda hp: factory(hp, trial)


def _space(space: SearchSpaceConfig | Mapping[str, Any] | None) -> SearchSpaceConfig:
    if isinstance(space, SearchSpaceConfig):
        return space
    return validated(SearchSpaceConfig, dict(space or {}), "space")


def _training(**values: Any) -> TrainingConfig:
    return validated(TrainingConfig, values, "training")


def _objectives(names: Sequence[str] | None) -> list[str]:
    chosen = list(names) if names is not None else ["val_accuracy", "train_time", "peak_memory"]
    unknown = [n for n in chosen if n not in DIRECTIONS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"objectives: expected distinct names from {', '.join(DIRECTIONS)}; got {chosen}"
        )
    return chosen


class _OverBudgetError(Exception):
    """Raised from the epoch callback when a trial's peak memory exceeds the budget."""

    def __init__(self, peak_mb: float) -> None:
        super().__init__(f"peak memory {peak_mb:.4g} MB")
        self.peak_mb = peak_mb


