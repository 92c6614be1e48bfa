"""Storages: an Optuna storage from a URL, safely.

Storage URLs are Optuna's (``sqlite:///``, ``postgresql://``, ``mysql://`` ...), plus
``journal:///path/to/file.log`` for Optuna's journal file storage and ``grpc://HOST:PORT`` for
Optuna's gRPC storage proxy (``bstune storage-proxy`` serves one). SQLite files are opened in
WAL mode with ``synchronous=NORMAL``: a commit no longer waits for the disk (a trial's storage
writes went from ~60 ms to ~25 ms here), and a killed process loses nothing; only a power cut or
OS crash can lose the last commits, never corrupt the file. The write-ahead log is copied back
into the file when a run ends and when the process exits (:func:`checkpoint_sqlite`); a file
that cannot be written is opened read-only; an in-memory database is refused (it would be lost
when the command ends); a refused connection fails at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from bstune.config._errors import ConfigError
from bstune.config._schema import StudySection
from bstune.config._secrets import mask_url, scrub

__all__ = ["checkpoint_sqlite", "open_storage", "refuse_memory", "serve_storage_proxy"]


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
        "mysql+pymysql://user@host/db, journal:///study.log or grpc://host:port"
    )
    if url.startswith("grpc://"):
        return _open_grpc(url)
    if url.startswith("journal:///"):  # like sqlite:///, three slashes then the path
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:///")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        except OSError as e:
            raise ConfigError(f"storage {url}: cannot open the journal file ({e})") from None
    refuse_memory(url)
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


GRPC_WAIT_S = 5.0  # how long a grpc:// URL's proxy has to answer before it is called absent


def _open_grpc(url: str) -> BaseStorage:
    """Optuna's ``GrpcStorageProxy`` for ``grpc://HOST:PORT``, once its proxy answers.

    Raises:
        ConfigError: the URL is malformed, gRPC is not installed, or no proxy answers there.
    """
    import re

    match = re.fullmatch(r"grpc://(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})/?", url)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"storage {url}: expected grpc://HOST:PORT, e.g. grpc://127.0.0.1:13000")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    except ImportError:
        raise ConfigError(
            f"storage {url}: gRPC is not installed; install bstune[grpc] (grpcio, protobuf)"
        ) from None
    try:
        proxy.wait_server_ready(timeout=GRPC_WAIT_S)
    except ConnectionError:
        proxy.close()
        raise ConfigError(
            f"storage {url}: no storage proxy answered within {GRPC_WAIT_S:g} s; expected "
            f"`bstune storage-proxy --storage DATABASE_URL --port {port}` running there"
        ) from None
    return proxy


def serve_storage_proxy(
    url: str,
    host: str = "127.0.0.1",
    port: int = 13000,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the database storage at ``url`` to ``grpc://HOST:PORT`` clients (Optuna's
    ``run_grpc_proxy_server``) until interrupted.

    Raises:
        ConfigError: ``url`` is not a database storage, or the address cannot be served.
    """
    if url.startswith(("journal:///", "grpc://")):
        raise ConfigError(
            f"storage-proxy --storage {mask_url(url)}: expected a database URL (sqlite:///, "
            f"postgresql://, mysql+pymysql://) for the proxy to serve"
        )
    storage = open_storage(url)
    _check_free(host, port)
    if on_ready is not None:  # the storage opened: say where the proxy serves it
        on_ready()
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # its C core's log line: one is enough
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna's own advice: serve get_storage's cached wrapper, not the bare RDBStorage,
            # or every request re-reads the study's trials from the database (its cost grew
            # with the study: 47 -> 557 ms a pruning decision by 500 trials, bench_scale.py).
            cached = optuna.storages.get_storage(storage)
            optuna.storages.run_grpc_proxy_server(cached, host=host, port=port)
    except ImportError:
        raise ConfigError(
            "storage-proxy: gRPC is not installed; install bstune[grpc] (grpcio, protobuf)"
        ) from None
    except RuntimeError:  # grpc: "Failed to bind to address" (taken since the check)
        _check_free(host, port)
        raise


def _check_free(host: str, port: int) -> None:
    """Whether this machine can serve on ``host``:``port`` now.

    Raises:
        ConfigError: it cannot (in use, or not this machine's address).
    """
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise ConfigError(
            f"storage-proxy: cannot serve on {host}:{port} ({e.strerror}); expected a free "
            f"port (--port) on this machine's address (--host)"
        ) from None


def refuse_memory(url: str) -> None:
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
                storage = optuna.storages.RDBStorage(url, **(heartbeat or {}))
            # Opening left two connections in the pool (the tables' and the schema check's);
            # a worker needs one at a time (two with a heartbeat). Released, 64 workers fit
            # PostgreSQL's default of 100 connections.
            storage.engine.dispose()
            return storage
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
