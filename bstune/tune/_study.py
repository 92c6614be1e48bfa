"""Studies: storage, sampler and pruner from a study file; create or resume; run; summarise.

A bstune study is a plain Optuna study: ``optuna.load_study``, optuna-dashboard and the
``optuna`` CLI read it. Storage URLs are Optuna's (``sqlite:///``, ``postgresql://``,
``mysql://`` ...), plus ``journal:///path/to/file.log`` for Optuna's journal file storage.
SQLite files are opened in WAL mode with ``synchronous=NORMAL``: a commit no longer waits for
the disk (a trial's storage writes went from ~60 ms to ~25 ms here), and a killed process loses
nothing; only a power cut or OS crash can lose the last commits, never corrupt the file.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from bstune import __version__
from bstune.config._objectives import ATTR, DIRECTIONS
from bstune.config._schema import ConfigError, StudyConfig, StudySection, check_batch_sizes
from bstune.config._secrets import mask_passwords, mask_url, scrub
from bstune.tune._curves import CurvesRefresher
from bstune.tune._pruning import KeepFront
from bstune.tune._signals import Interrupted, interruptible

if TYPE_CHECKING:
    from bstune.tune._objective import Objective

__all__ = [
    "Interrupted",
    "OptimizeSummary",
    "abandon",
    "checkpoint_sqlite",
    "is_read_only",
    "load_existing_study",
    "make_pruner",
    "make_sampler",
    "mask_passwords",
    "mask_url",
    "open_storage",
    "open_study",
    "run_study",
    "started_trials",
    "trials_since",
]


def open_storage(
    url: str, liveness: StudySection | None = None, read_only: bool = False
) -> BaseStorage:
    """An Optuna storage for ``url``; with ``liveness`` (a study file's ``study:`` section),
    database storages carry its heartbeat, grace period and retries of dead workers' trials.
    ``read_only`` opens a SQLite file for reading only (it may lie on a read-only file system).

    Raises:
        ConfigError: the URL's scheme is unknown, its driver is missing, or it cannot be opened.
    """
    from sqlalchemy.exc import SQLAlchemyError

    expected = (
        "expected a URL such as sqlite:///study.db, postgresql://user@host/db, "
        "mysql+pymysql://user@host/db or journal:///study.log"
    )
    if url.startswith("journal:///"):  # like sqlite:///, three slashes then the path
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:///")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        except OSError as e:
            raise ConfigError(f"storage {url}: cannot open the journal file ({e})") from None
    _refuse_memory(url)
    rdb_url = _read_only_url(url) if read_only and url.startswith("sqlite") else url
    try:
        storage = _open_rdb(rdb_url, _heartbeat_args(liveness))
    except ImportError:
        raise ConfigError(
            f"storage {mask_url(url)}: its database driver is not installed; for postgresql:// "
            f"install bstune[postgres], for MySQL use mysql+pymysql:// with bstune[mysql]"
        ) from None
    except SQLAlchemyError as e:
        reason = scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, url)
        raise ConfigError(
            f"storage {mask_url(url)}: cannot open it ({reason}); {expected}"
        ) from None
    if url.startswith("sqlite"):
        _sqlite_wal(storage, writable=rdb_url == url)
    return storage


def _refuse_memory(url: str) -> None:
    """An in-memory SQLite database ends with the process that made it: useless to a command,
    and Optuna's error for it (StorageInternalError) says nothing of the kind."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url.startswith("sqlite"):
        return
    try:
        database = make_url(url).database
    except ArgumentError:
        return  # reported when it is opened
    if not database or database == ":memory:" or "mode=memory" in url:
        raise ConfigError(
            f"storage {url}: an in-memory SQLite database is lost when the command ends; "
            f"expected a file, e.g. sqlite:///study.db"
        )


def _read_only_url(url: str) -> str:
    """``sqlite:///path`` as a URI that SQLite opens read-only.

    A file in WAL mode needs its ``-shm`` index to be read, which a read-only file system
    cannot create; there, with no write-ahead log waiting beside it (bstune checkpoints it when
    a run ends), the file cannot change under the reader and is opened ``immutable``.
    """
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    path = os.path.abspath(make_url(url).database or "")
    wal = Path(f"{path}-wal")
    pending = wal.is_file() and wal.stat().st_size > 0
    frozen = not os.access(os.path.dirname(path), os.W_OK) and not pending
    mode = "immutable=1" if frozen and not Path(f"{path}-shm").is_file() else "mode=ro"
    return f"sqlite:///file:{quote(path)}?{mode}&uri=true"


# SQLite engines bstune opened, checkpointed when a run ends and when the process exits.
_SQLITE_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def checkpoint_sqlite() -> None:
    """Copy what sits in the write-ahead log of every SQLite file bstune opened back into the
    file (``PRAGMA wal_checkpoint(TRUNCATE)``), so that copying the ``.db`` alone copies every
    trial. Waits at most 2 s for another process's reader; a busy file is left as it is (its
    log is still safe beside it)."""
    from sqlalchemy.exc import SQLAlchemyError

    for engine in list(_SQLITE_ENGINES):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA busy_timeout=2000")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except SQLAlchemyError:
            pass


atexit.register(checkpoint_sqlite)


def _heartbeat_args(liveness: StudySection | None) -> dict[str, Any]:
    if liveness is None or liveness.heartbeat_interval is None:
        return {}
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(liveness.retries) if liveness.retries else None
    return {
        "heartbeat_interval": liveness.heartbeat_interval,
        "grace_period": liveness.grace_period,
        "heartbeat_stale_trial_callback": retry,
    }


def _open_rdb(
    url: str, heartbeat: dict[str, Any] | None = None, attempts: int = 10
) -> optuna.storages.RDBStorage:
    """RDBStorage(url), safe when several processes open the same new database at once.

    Creating a database's tables is not atomic in Optuna: two workers opening a fresh SQLite
    file at once fail ("table studies already exists", a unique-constraint error on the schema
    version). For SQLite files bstune holds an exclusive lock on the file's folder while opening;
    elsewhere it retries such errors a few times.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import IntegrityError, OperationalError

    database = make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:":
        folder = os.path.dirname(os.path.abspath(database))
        with _folder_lock(folder), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **(heartbeat or {}))
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeat arguments are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **(heartbeat or {}))
        except (OperationalError, IntegrityError) as e:
            # Only the race between processes creating the tables is worth another try; a
            # server that refuses the connection, an unknown host or a bad password is not.
            race = isinstance(e, IntegrityError) or any(
                word in str(e).lower() for word in ("already exists", "duplicate", "deadlock")
            )
            if not race or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (a race there fails with a clear error)
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a missing folder: let SQLite report it
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _sqlite_wal(storage: optuna.storages.RDBStorage, writable: bool = True) -> None:
    from sqlalchemy import event

    def pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        if writable:  # the journal mode is kept in the file: a reader need not set it
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")  # processes sharing the file wait, not fail
        cursor.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections opened before the listener are replaced
    if writable:
        _SQLITE_ENGINES.add(storage.engine)


def make_sampler(
    cfg: StudyConfig, seed: int | None = None, workers: int = 1
) -> optuna.samplers.BaseSampler:
    """The sampler the study file names; ``seed`` (``--seed``) overrides its seed.

    Raises:
        ConfigError: the sampler cannot serve this study (``cmaes`` and ``gp`` with several
            objectives; ``grid`` with a continuous range).
    """
    s = cfg.sampler
    seed = s.seed if seed is None else seed
    multi = len(cfg.objectives) > 1
    opt: dict[str, Any] = {}
    if s.n_startup_trials is not None:
        opt["n_startup_trials"] = s.n_startup_trials
    if s.name == "tpe":
        group = s.multivariate if s.group is None else s.group
        opt["constant_liar"] = workers > 1 if s.constant_liar is None else s.constant_liar
        with warnings.catch_warnings():  # multivariate and group are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=s.multivariate, group=group, **opt
            )
    if s.name == "nsga2":
        if s.population_size is not None:
            opt["population_size"] = s.population_size
        opt.pop("n_startup_trials", None)
        return optuna.samplers.NSGAIISampler(seed=seed, **opt)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "qmc":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed)
    if s.name == "grid":
        from bstune.tune._space import grid_space  # imports torch: only for grid samplers

        return optuna.samplers.GridSampler(grid_space(cfg.search_space), seed=seed)
    if multi:
        raise ConfigError(
            f"sampler.name: {s.name} supports single-objective studies only, and this study has "
            f"{len(cfg.objectives)} objectives; use tpe, nsga2, random, qmc or grid"
        )
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **opt)
    return optuna.samplers.GPSampler(seed=seed, **opt)


def make_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    """Optuna's pruner of that name, with the study file's arguments; in ``KeepFront`` when
    the file says ``keep_front: true``."""
    if getattr(cfg, "keep_front", False):
        return KeepFront(_optuna_pruner(cfg))
    return _optuna_pruner(cfg)


def _optuna_pruner(cfg: Any) -> optuna.pruners.BasePruner:
    skip = ("name", "wrapped", "keep_front")
    args = {k: v for k, v in cfg.model_dump().items() if k not in skip}
    name = cfg.name
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(**args)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**args)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(**args)
    wrapped = _optuna_pruner(cfg.wrapped) if cfg.wrapped is not None else None
    return optuna.pruners.PatientPruner(wrapped, **args)


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
    _check_identity(study, cfg, url)
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
    return study


MAX_NAME_LENGTH = 512  # Optuna's study_name column (RDB storage)
IDENTITY_ATTR = f"{ATTR}identity"
# What a study's trials mean: resuming a study with other data, another model or another search
# space would mix incomparable trials (and Optuna fails every trial whose categorical choices,
# such as the batch sizes, changed). Budget, sampler, pruner, training and storage may change.
_IDENTITY_EXCLUDE = {"dataset": {"data_dir", "download"}}


def identity(cfg: StudyConfig) -> dict[str, Any]:
    """The parts of ``cfg`` that a resumed study must keep: dataset, model, search space."""
    import json

    parts = {
        key: getattr(cfg, key).model_dump(exclude=_IDENTITY_EXCLUDE.get(key, set()))
        for key in ("dataset", "model", "search_space")
    }
    return dict(json.loads(json.dumps(parts, sort_keys=True, default=str)))


def _check_identity(study: optuna.Study, cfg: StudyConfig, url: str) -> None:
    """Refuse, before any trial runs, to resume ``study`` from a study file that changed what
    its trials mean.

    Raises:
        ConfigError: naming what changed and what to do.
    """
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        stored = _identity_of_stored_file(study)
    if stored is None:
        return
    changes = _differences(stored, identity(cfg))
    if not changes:
        return
    shown = "; ".join(
        f"{key}: {old} in the study, {new} in the file" for key, old, new in changes[:3]
    )
    more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
    raise ConfigError(
        f"study {study.study_name!r} in {mask_url(url)} was created from another study file: "
        f"{shown}{more}; to run this file, give it a new study.name (or --study-name); to resume "
        f"the study, run it with its original file (stored in the study's user attribute "
        f"bstune:study_file)"
    )


def _identity_of_stored_file(study: optuna.Study) -> dict[str, Any] | None:
    """The identity of the study file stored in ``study`` by an earlier bstune, if readable."""
    import yaml

    from bstune.config._schema import parse_study

    text = study.user_attrs.get(f"{ATTR}study_file")
    if not isinstance(text, str):
        return None
    try:
        return identity(parse_study(yaml.safe_load(text)))
    except (yaml.YAMLError, ConfigError):
        return None


def _differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)
        return out
    return [] if old == new else [(key, _short(old), _short(new))]


def _short(value: Any) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


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

    _refuse_memory(url)
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
) -> OptimizeSummary:
    """Run trials: a bad trial (divergence: PRUNED; an exception: FAIL) never stops the study."""
    from bstune.tune._objective import Objective

    objective = objective or Objective(cfg)
    check_batch_sizes(cfg, len(objective.dataset.train))  # before any trial starts
    figure = CurvesRefresher(study) if len(cfg.objectives) > 1 else None
    if figure is not None:  # the dashboard draws single-objective curves itself
        objective.before_trial = figure.maybe_refresh
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
        if figure is not None:
            figure.refresh()
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            save_report_figures(study)
    finally:
        checkpoint_sqlite()  # a copy of the .db alone then holds every trial
    return OptimizeSummary(study, trials_since(study, before), interrupted)


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


def abandon(study: optuna.Study, trials: Sequence[FrozenTrial], reason: str) -> list[int]:
    """Fail the trials among ``trials`` still RUNNING though their process is gone (a killed
    worker), recording ``reason``, and queue their parameters so that they run again; their
    numbers."""
    from bstune.tune._optuna_private import fail_running_trial

    lost = []
    for t in trials:
        current = study.get_trials(deepcopy=False)[t.number]
        if current.state != TrialState.RUNNING:
            continue
        fail_running_trial(study, current, reason)
        if current.params:
            study.enqueue_trial(current.params, user_attrs={f"{ATTR}retry_of": current.number})
        lost.append(current.number)
    return lost


def save_report_figures(study: optuna.Study) -> None:
    """Store the report's Pareto and batch-size figures in ``study`` for optuna-dashboard."""
    from bstune.analysis._plots import save_to_study
    from bstune.analysis._report import build_report

    save_to_study(study, build_report(study))


def best_rows(study: optuna.Study, objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The best trials (single objective: the top five; several: the Pareto front), as rows."""
    if len(objectives) == 1:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        trials = sorted(
            done, key=lambda t: t.value if t.value is not None else math.nan, reverse=reverse
        )[:5]
    else:
        trials = sorted(study.best_trials, key=lambda t: t.number)
    rows = []
    for t in trials:
        metrics = t.user_attrs.get(f"{ATTR}metrics", {})
        hp = metrics.get("hparams", {})
        row: dict[str, Any] = {
            "trial": t.number,
            "batch_size": hp.get("batch_size", t.params.get("batch_size")),
            "lr": metrics.get("effective_lr"),
            "optimizer": hp.get("optimizer", t.params.get("optimizer")),
        }
        for name, value in zip(objectives, t.values or [], strict=False):
            row[name] = value
        rows.append(row)
    return rows
