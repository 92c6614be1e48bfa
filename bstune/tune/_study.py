"""A study's lifecycle: create or resume it from a study file (its identity checked), run its
trials (a bad trial never stops it; signals end it cleanly), read it back, summarise a run.

A bstune study is a plain Optuna study: ``optuna.load_study``, optuna-dashboard and the
``optuna`` CLI read it. Storages: :mod:`bstune.tune._storage`; samplers and pruners:
:mod:`bstune.tune._factories`.
"""

from __future__ import annotations

import os
import signal
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune import __version__
from bstune.config._checks import check_batch_sizes
from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR, DIRECTIONS
from bstune.config._schema import StudyConfig
from bstune.config._secrets import mask_passwords, mask_url
from bstune.tune._artifacts import STORE_ATTR, check_artifact_store
from bstune.tune._curves import CurvesRefresher, save_learning_curves
from bstune.tune._factories import make_pruner, make_sampler
from bstune.tune._identity import IDENTITY_ATTR, check_identity, identity
from bstune.tune._liveness import ProxyHeartbeat, needs_own_heartbeat
from bstune.tune._signals import interruptible
from bstune.tune._storage import checkpoint_sqlite, open_storage, refuse_memory

if TYPE_CHECKING:
    from bstune.tune._objective import Objective

__all__ = [
    "MAX_NAME_LENGTH",
    "OptimizeSummary",
    "is_read_only",
    "load_existing_study",
    "open_study",
    "run_study",
    "started_trials",
    "trials_since",
]


def open_study(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    workers: int = 1,
) -> optuna.Study:
    """Create the study, or load it to resume. Stores the study file and bstune's version.

    Raises:
        ConfigError: the stored study has other objectives than the study file.
    """
    url = storage or cfg.storage_url
    name = study_name or cfg.study_name
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"study name {name[:40]!r}... is {len(name)} characters long; Optuna's storages "
            f"hold at most {MAX_NAME_LENGTH}"
        )
    directions = [DIRECTIONS[o] for o in cfg.objectives]
    artifacts = cfg.artifact_store
    if artifacts is not None:
        check_artifact_store(artifacts)  # before anything is stored
    store = open_storage(url, cfg.study)
    study = optuna.create_study(
        storage=store,
        study_name=name,
        directions=directions,
        sampler=make_sampler(cfg, seed, workers),
        pruner=make_pruner(cfg.pruner),
        load_if_exists=True,
    )
    base = cfg.sampler.seed if seed is None else seed
    resumed = len(study.get_trials(deepcopy=False))
    if resumed and base is not None and cfg.sampler.name not in ("qmc", "grid"):
        # The same seed again would propose the first run's first trials again; QMC and grid
        # samplers continue their sequence from the trials stored, and keep theirs.
        study.sampler = make_sampler(cfg, _resume_seed(base, resumed), workers)
    check_identity(study, cfg, url)
    stored = study.user_attrs.get(f"{ATTR}objectives")
    if stored is not None and stored != list(cfg.objectives):
        raise ConfigError(
            f"study {name!r} in {mask_url(url)} optimises {stored}, but the study file says "
            f"{list(cfg.objectives)}; use another study.name or storage"
        )
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            f"study {name!r} in {mask_url(url)} has directions "
            f"{[d.name.lower() for d in study.directions]}, expected {directions}"
        )
    if stored is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(cfg.objectives))
        study.set_user_attr(f"{ATTR}objectives", list(cfg.objectives))
    study.set_user_attr(f"{ATTR}version", __version__)
    if study.user_attrs.get(IDENTITY_ATTR) is None:
        study.set_user_attr(IDENTITY_ATTR, identity(cfg))
    if cfg.source and Path(cfg.source).is_file():
        text = mask_passwords(Path(cfg.source).read_text(encoding="utf-8"))
        study.set_user_attr(f"{ATTR}study_file", text)
    if artifacts is not None and study.user_attrs.get(STORE_ATTR) != artifacts:
        study.set_user_attr(STORE_ATTR, artifacts)  # where load_model and the dashboard look
    return study


MAX_NAME_LENGTH = 512  # Optuna's study_name column (RDB storage)


def _resume_seed(seed: int, stored: int) -> int:
    """A seed for a run that resumes a study of ``stored`` trials: reproducible, and distinct
    for each (seed, stored) pair."""
    import numpy as np

    return int(np.random.SeedSequence([seed, stored]).generate_state(1)[0])


def load_existing_study(url: str, name: str, read_only: bool | None = None) -> optuna.Study:
    """The stored study ``name`` in ``url``, for reading (report, dashboard); never creates one.

    A SQLite file is opened read-only when ``read_only`` says so, or (None) when it cannot be
    written — on a read-only file system, say; :func:`is_read_only` tells which it was.

    Raises:
        ConfigError: no such database file, or no such study in it.
    """
    from sqlalchemy.engine import make_url

    refuse_memory(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and not Path(database).is_file():
            raise ConfigError(
                f"storage {url}: no such database file; run `bstune optimize` first, or give "
                f"the study's database with --storage"
            )
        if read_only is None and database:
            folder = os.path.dirname(os.path.abspath(database))
            read_only = not (os.access(database, os.W_OK) and os.access(folder, os.W_OK))
    if url.startswith("journal:///") and not Path(url.removeprefix("journal:///")).is_file():
        raise ConfigError(f"storage {url}: no such journal file; run `bstune optimize` first")
    storage = open_storage(url, read_only=bool(read_only) and url.startswith("sqlite"))
    names = optuna.get_all_study_names(storage)
    if name not in names:
        stored = ", ".join(repr(n) for n in names) or "none"
        raise ConfigError(
            f"no study {name!r} in {mask_url(url)} (studies there: {stored}); run "
            f"`bstune optimize` first, or name one with --study-name"
        )
    study = optuna.load_study(study_name=name, storage=storage)
    _READ_ONLY[study] = bool(read_only) and url.startswith("sqlite")
    return study


_READ_ONLY: weakref.WeakKeyDictionary[optuna.Study, bool] = weakref.WeakKeyDictionary()


def is_read_only(study: optuna.Study) -> bool:
    """Whether :func:`load_existing_study` opened ``study`` for reading only."""
    return _READ_ONLY.get(study, False)


@dataclass
class OptimizeSummary:
    """What one ``run_study`` call did: its trials by state, and the failures' messages.

    ``interrupted`` names the signal that stopped it (``"SIGINT"``, ``"SIGTERM"``), if one did.
    """

    study: optuna.Study
    trials: list[FrozenTrial] = field(default_factory=list)
    interrupted: str | None = None

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state (``complete``, ``pruned``, ``fail`` ...), in Optuna's order, the
        states with none left out."""
        return {s.name.lower(): self.count(s) for s in TrialState if self.count(s)}

    @property
    def disturbed(self) -> list[int]:
        """The trials whose timing other processes disturbed."""
        metrics = ((t.number, t.user_attrs.get(f"{ATTR}metrics", {})) for t in self.trials)
        return [number for number, m in metrics if m.get("disturbed")]

    @property
    def failures(self) -> list[tuple[int, str]]:
        return [
            (
                t.number,
                str(t.user_attrs.get(f"{ATTR}error", t.system_attrs.get("fail_reason", "?"))),
            )
            for t in self.trials
            if t.state == TrialState.FAIL
        ]


def run_study(
    study: optuna.Study,
    cfg: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    show_progress_bar: bool = False,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    objective: Objective | None = None,
    figures: str = "all",
) -> OptimizeSummary:
    """Run trials: a bad trial (divergence: PRUNED; an exception: FAIL) never stops the study.

    ``figures``: ``all`` — the learning-curve figure saved into the study while it runs (at
    most once a minute) and bstune's figures at the end; ``running`` — while it runs only (a
    ``--n-jobs`` worker 0: the supervisor saves the final ones); ``none``.
    """
    from bstune.tune._objective import Objective

    objective = objective or Objective(cfg)
    check_batch_sizes(cfg, len(objective.dataset.train))  # before any trial starts
    curves = len(cfg.objectives) > 1 and figures in ("all", "running")
    figure = CurvesRefresher(study) if curves else None
    before_trial: list[Callable[[], object]] = []
    if figure is not None:  # the dashboard draws single-objective curves itself
        before_trial.append(figure.maybe_refresh)
    if cfg.study.heartbeat_interval and needs_own_heartbeat(study):  # the gRPC proxy
        heartbeat = ProxyHeartbeat(study, cfg.study)
        heartbeat.reap()  # first: a dead worker's trial queued now runs before new ones
        before_trial.append(heartbeat.reap)
        objective.around_trial = heartbeat.beating
    if before_trial:

        def run_hooks() -> None:
            for hook in before_trial:
                hook()

        objective.before_trial = run_hooks
    before = started_trials(study)
    objective.stop_signal = None
    objective.interrupted.clear()  # an earlier call's were queued again by that call

    def stop_if_signalled(study: optuna.Study, _trial: FrozenTrial) -> None:
        if objective.stop_signal is not None:
            study.stop()

    try:
        with interruptible(objective):
            study.optimize(
                objective,
                n_trials=n_trials,
                timeout=timeout,
                catch=(Exception,),
                callbacks=[*callbacks, stop_if_signalled],
                show_progress_bar=show_progress_bar,
                gc_after_trial=False,
            )
    except KeyboardInterrupt as e:
        objective.stop_signal = getattr(e, "signum", signal.SIGINT)
    interrupted = None
    if objective.stop_signal is not None:
        interrupted = signal.Signals(objective.stop_signal).name
        _requeue(study, objective.interrupted)
    try:
        if figures == "all":
            save_study_figures(study)
    finally:
        checkpoint_sqlite()  # a copy of the .db alone then holds every trial
    return OptimizeSummary(study, trials_since(study, before), interrupted)


def save_study_figures(study: optuna.Study) -> None:
    """bstune's figures saved into ``study`` for optuna-dashboard: the learning curves (several
    objectives) and the report's Pareto and batch-size figures."""
    if len(study.directions) > 1:
        save_learning_curves(study)
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        save_report_figures(study)


def started_trials(study: optuna.Study) -> set[int]:
    """Numbers of the trials that have started (all but those queued, WAITING, to run)."""
    return {t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING}


def trials_since(study: optuna.Study, before: set[int]) -> list[FrozenTrial]:
    """The trials started since ``before`` (:func:`started_trials`) was taken."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number not in before and t.state != TrialState.WAITING
    ]


def _requeue(study: optuna.Study, numbers: Sequence[int]) -> None:
    """Queue the parameters of the trials ``numbers`` (interrupted in this process) so that
    resuming the study runs them first."""
    for t in study.get_trials(deepcopy=False):
        if t.number in numbers:
            study.enqueue_trial(t.params, user_attrs={f"{ATTR}retry_of": t.number})


def save_report_figures(study: optuna.Study) -> None:
    """Store the report's Pareto and batch-size figures in ``study`` for optuna-dashboard."""
    from bstune.analysis._plots import save_to_study
    from bstune.analysis._report import build_report

    save_to_study(study, build_report(study))
