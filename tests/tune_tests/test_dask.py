"""`bstune optimize --dask`: workers as tasks on a real distributed.LocalCluster (a scheduler and
two worker processes on loopback) against PostgreSQL: exact trial counts, a worker process
SIGKILLed mid-trial, bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

pytest.importorskip("distributed", reason="the dask extra (distributed) is not installed")

PG = "postgresql://postgres@127.0.0.1:5432/test"
CLUSTER = """
import time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                       dashboard_address=None)
print(cluster.scheduler_address, flush=True)
while True:
    time.sleep(1)
"""
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _pg_up() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


pytestmark = pytest.mark.skipif(not _pg_up(), reason="PostgreSQL not reachable on 127.0.0.1:5432")


@pytest.fixture(scope="module")
def scheduler():  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("tcp://"), address
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def bstune(*args: str | Path) -> list[str]:
    return [str(Path(sys.executable).with_name("bstune")), *map(str, args)]


def _study(write_study, epochs: int, **study):  # type: ignore[no-untyped-def]
    name = f"dask-{uuid.uuid4().hex[:8]}"
    path = write_study(
        study={"name": name, **study}, training={"epochs": epochs, "device": "cpu"},
        search_space={"batch_size": {"low": 32, "high": 128}, "lr": 0.01, "optimizer": ["sgd"]},
        sampler={"name": "random", "seed": 0}, pruner={"name": "none"}, artifacts={"keep": "none"},
    )  # fmt: skip
    return path, name


def test_eight_trials_on_two_dask_workers(scheduler, write_study) -> None:  # type: ignore[no-untyped-def]
    path, name = _study(write_study, epochs=2)
    out = subprocess.run(bstune("optimize", path, "--storage", PG, "--dask", scheduler,
                                "--n-jobs", "2", "--n-trials", "8", "--no-progress"),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name=name, storage=PG)
    assert sorted(t.number for t in study.trials) == list(range(8))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert {t.user_attrs["bstune:worker"]["slot"] for t in study.trials} == {0, 1}
    assert out.stderr.count(": trial ") == 8  # every trial's line came back
    optuna.delete_study(study_name=name, storage=PG)


def test_a_worker_process_killed_mid_trial(scheduler, write_study) -> None:  # type: ignore[no-untyped-def]
    """The scheduler runs the lost task again on the other worker, which continues its share;
    the heartbeat fails the trial left RUNNING and queues it again; 8 trials complete."""
    # trials of a few seconds each: the other worker's share must outlast the grace period, or
    # the study is full before anything looks for the stale trial (a quiet machine trains 40
    # epochs of digits in a fraction of a second)
    path, name = _study(write_study, epochs=600, heartbeat_interval=1, grace_period=2)
    run = subprocess.Popen(bstune("optimize", path, "--storage", PG, "--dask", scheduler,
                                  "--n-jobs", "2", "--n-trials", "8", "--no-progress"),
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name=name, storage=PG).trials
        except KeyError:
            continue
        running = [t for t in trials if t.state.name == "RUNNING"
                   and "bstune:worker" in t.user_attrs]  # fmt: skip
        if running and len(trials) >= 2:
            killed = running[0]
            os.kill(killed.user_attrs["bstune:worker"]["pid"], signal.SIGKILL)
    assert killed is not None, "no trial was seen running"
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    trials = optuna.load_study(study_name=name, storage=PG).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 8, states
    assert trials[killed.number].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == trials[killed.number].params
    optuna.delete_study(study_name=name, storage=PG)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_stops_the_cluster_s_trials_cleanly(scheduler, write_study) -> None:  # type: ignore[no-untyped-def]
    """SIGINT to `bstune optimize --dask`: each running trial ends FAIL, "interrupted by
    SIGINT", its parameters queued to run first when the study resumes; exit status 130 —
    also where the client inherited SIGINT ignored (started in the background of a script, as
    this test's process may be), which once left it, and the workers, training on."""
    path, name = _study(write_study, epochs=100_000)  # interrupted long before it ends
    run = subprocess.Popen(bstune("optimize", path, "--storage", PG, "--dask", scheduler,
                                  "--n-jobs", "2", "--n-trials", "4", "--no-progress"),
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=_ignore_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name=name, storage=PG).trials
        except KeyError:
            continue
        if sum(t.state.name == "RUNNING" for t in trials) == 2:
            break
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    trials = optuna.load_study(study_name=name, storage=PG).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 2 and all(
        t.user_attrs["bstune:error"] == "interrupted by SIGINT" for t in failed
    ), [(t.state.name, t.user_attrs.get("bstune:error")) for t in trials]
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert sorted(t.user_attrs["bstune:retry_of"] for t in queued) == sorted(
        t.number for t in failed
    )
    optuna.delete_study(study_name=name, storage=PG)


def test_bad_dask_input_is_one_line(write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    from bstune.cli import main

    path, name = _study(write_study, epochs=1)
    cases = [
        (["--storage", PG, "--dask", "tcp://127.0.0.1:1"], "cannot reach a Dask scheduler"),
        (["--dask", "tcp://127.0.0.1:1"], "a local file that workers on other machines"),
        (["--storage", PG, "--dask", "tcp://127.0.0.1:1", "--dask-resources", "GPU"],
         "expected NAME=N"),
    ]  # fmt: skip
    for extra, message in cases:
        try:
            code = main(["optimize", str(path), "--n-trials", "2", "--n-jobs", "2", *extra])
        except SystemExit as e:  # argparse's own: exit status 2, one line
            code = int(e.code or 0)
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.strip().count("\n") == 0, err
    with pytest.raises(KeyError):  # nothing was created
        optuna.load_study(study_name=name, storage=PG)
