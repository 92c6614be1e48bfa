"""Optuna's gRPC storage proxy: `bstune storage-proxy` in front of a study database, workers on
grpc://HOST:PORT, a killed worker's trial failed and retried through bstune's own heartbeat,
and bad URLs."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

pytest.importorskip("grpc", reason="the grpc extra (grpcio) is not installed")

optuna.logging.set_verbosity(optuna.logging.ERROR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bstune(*args: str | Path) -> list[str]:
    return [str(Path(sys.executable).with_name("bstune")), *map(str, args)]


def _main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    from bstune.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture
def proxy(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`bstune storage-proxy` serving a SQLite study database; yields (grpc URL, db URL)."""
    db = f"sqlite:///{tmp_path}/proxied.db"
    port = free_port()
    proc = subprocess.Popen(bstune("storage-proxy", "--storage", db, "--port", str(port)),
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the proxy did not start: {proc.communicate()[1]}")
        time.sleep(0.2)
    yield f"grpc://127.0.0.1:{port}", db
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _study_file(write_study, epochs: int = 1, **study):  # type: ignore[no-untyped-def]
    return write_study(
        study={"name": "proxied", **study}, training={"epochs": epochs, "device": "cpu"},
        search_space={"batch_size": {"low": 16, "high": 64}, "lr": 0.01, "optimizer": ["sgd"]},
        sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
    )  # fmt: skip


def test_a_study_through_the_proxy(proxy, write_study) -> None:  # type: ignore[no-untyped-def]
    url, db = proxy
    out = subprocess.run(bstune("optimize", _study_file(write_study), "--storage", url,
                                "--n-trials", "4", "--no-progress"),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="proxied", storage=db)  # the database behind it
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_a_killed_worker_s_trial_is_failed_and_retried(proxy, write_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Optuna has no heartbeat through the proxy; bstune's own (bstune:alive) finds the trial
    of a worker SIGKILLed mid-trial and queues it again."""
    url, db = proxy
    path = _study_file(write_study, epochs=200, heartbeat_interval=1, grace_period=3)
    worker = subprocess.Popen(bstune("optimize", path, "--storage", url, "--n-trials", "1",
                                     "--no-progress"), stderr=subprocess.PIPE)  # fmt: skip
    database = tmp_path / "proxied.db"
    deadline = time.monotonic() + 120
    # until its trial has beaten once and holds its parameters: the heartbeat starts with the
    # trial, before sampling, and on a busy machine a kill between the two leaves a trial with
    # nothing to run again
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not database.exists():
            continue
        with sqlite3.connect(database) as conn:
            beats = conn.execute(
                "SELECT count(*) FROM trial_user_attributes WHERE key = 'bstune:alive'"
            ).fetchone()[0]
            params = conn.execute("SELECT count(*) FROM trial_params").fetchone()[0]
        if beats and params:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    time.sleep(4)  # past the grace period
    short = _study_file(write_study, epochs=1, heartbeat_interval=1, grace_period=3)
    out = subprocess.run(bstune("optimize", short, "--storage", url, "--n-trials", "1",
                                "--no-progress"), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = optuna.load_study(study_name="proxied", storage=db).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], trials
    assert "stopped sending heartbeats" in trials[0].user_attrs["bstune:error"]
    assert trials[1].user_attrs["bstune:retry_of"] == 0  # its parameters, run again
    assert trials[1].params == trials[0].params


def test_bad_grpc_urls_are_one_line(write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    path = _study_file(write_study)
    port = free_port()  # nothing listens there
    started = time.monotonic()
    code, err = _main(capsys, "optimize", path, "--storage", f"grpc://127.0.0.1:{port}")
    assert code == 2 and err.count("\n") == 1 and "no storage proxy answered" in err, err
    assert time.monotonic() - started < 30
    for bad in ("grpc://127.0.0.1", "grpc://:13000", "grpc://h:99999"):
        code, err = _main(capsys, "optimize", path, "--storage", bad)
        assert code == 2 and err.count("\n") == 1 and "expected grpc://HOST:PORT" in err, err
    code, err = _main(capsys, "storage-proxy", "--storage", "journal:///x.log")
    assert code == 2 and "expected a database URL" in err
    with socket.socket() as taken:  # a port in use: one line, before anything is announced
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        code, err = _main(capsys, "storage-proxy", "--storage", f"sqlite:///{path.parent}/p.db",
                          "--port", str(busy))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "cannot serve on" in err, err


def test_the_proxy_reads_a_finished_trial_from_the_database_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    """The proxy answers each worker's every trials request: from a bare RDBStorage each one
    re-read the whole study (a pruning decision grew from 47 to 557 ms by 500 trials)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from bstune.tune._storage import serve_storage_proxy

    db = f"sqlite:///{tmp_path}/served.db"
    study = optuna.create_study(study_name="served", storage=db)
    for x in range(5):
        study.enqueue_trial({"x": x})
    study.optimize(lambda t: t.suggest_float("x", 0, 10), n_trials=5)
    served = []
    monkeypatch.setattr(optuna.storages, "run_grpc_proxy_server",
                        lambda storage, **_: served.append(storage))  # fmt: skip
    serve_storage_proxy(db, port=free_port())
    (storage,) = served
    study_id = storage.get_study_id_from_name("served")
    assert len(storage.get_all_trials(study_id)) == 5
    queries: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        queries.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        trials = storage.get_all_trials(study_id)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert [t.params["x"] for t in trials] == [0, 1, 2, 3, 4]
    assert not [q for q in queries if "trial_params" in q or "trial_values" in q], queries


def test_a_decision_through_the_proxy_reads_only_what_changed(proxy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Through the proxy, as from a database, the pruner's index asks only for the trials that
    are new or were running (the GetTrials request's two filters; pinned private API)."""
    import bstune.tune._optuna_private as private
    from bstune.tune._pruning import report_val_loss
    from bstune.tune._storage import open_storage

    url, _ = proxy
    study = optuna.create_study(storage=open_storage(url), directions=["minimize", "minimize"],
                                pruner=optuna.pruners.NopPruner())  # fmt: skip
    for i in range(6):
        t = study.ask()
        report_val_loss(t, 1, 1.0 + i)
        study.tell(t, [1.0 + i, 1.0])
    running = study.ask()
    ids = [private.trial_id(t) for t in study.get_trials(deepcopy=False)]
    got = private.changed_trials(study, {ids[-1]}, ids[-1])
    assert [t.number for t in got or []] == [running.number], (
        "GrpcStorageProxy's GetTrials no longer reads the trials above an id or among given ids"
    )
    assert [t.number for t in private.changed_trials(study, set(), ids[2]) or []] == [3, 4, 5, 6]
    # the median pruner through the proxy: the first decision reads every trial, later ones
    # only the running trial
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
    fetched: list[int] = []
    real = private.changed_trials

    def counting(*args):  # type: ignore[no-untyped-def]
        out = real(*args)
        fetched.append(len(out or []))
        return out

    monkeypatch.setattr("bstune.tune._incremental.changed_trials", counting)
    for step in (1, 2, 3):
        report_val_loss(running, step, 0.5)
    assert fetched[0] == 7 and fetched[1:] == [1, 1]
