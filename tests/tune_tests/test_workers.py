"""Many workers: --n-jobs, PostgreSQL across processes, killed workers, interruption, secrets."""

from __future__ import annotations

import collections
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
from helpers import TESTS, bstune
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bstune.tune._workers import cpu_cores, shares, worker_slot

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

PG = "postgresql://postgres@127.0.0.1:5432/test"
EXE = Path(sys.executable).with_name("bstune")


def _pg_up() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


needs_pg = pytest.mark.skipif(not _pg_up(), reason="PostgreSQL not reachable on 127.0.0.1:5432")


def _study_file(write_study, epochs: int = 2, **sections):  # type: ignore[no-untyped-def]
    return write_study(
        study={"name": f"w-{uuid.uuid4().hex[:8]}", **sections.pop("study", {})},
        training={"epochs": epochs, "device": "cpu"},
        search_space={
            "batch_size": {"low": 16, "high": 128},
            "lr": {"low": 1e-3, "high": 1e-1},
            "optimizer": ["sgd", "adam"],
        },
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},
        **sections,
    )


def _load(study_file: Path, url: str) -> optuna.Study:
    import yaml

    name = yaml.safe_load(study_file.read_text())["study"]["name"]
    return optuna.load_study(study_name=name, storage=url)


def _start(*args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [str(EXE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def _wait_for_running(study_file: Path, url: str, count: int = 1, timeout: float = 60) -> None:
    """Wait until `count` trials are training: RUNNING with all three parameters sampled.

    RUNNING alone is not enough: a trial is RUNNING before it has sampled its parameters, and
    a trial killed then is retried with fresh ones. (A multi-objective trial stores no
    intermediate values while it runs, so they cannot tell.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = _load(study_file, url).get_trials(states=(TrialState.RUNNING,))
            if sum(len(t.params) == 3 for t in running) >= count:
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"no {count} running trials after {timeout} s")


def test_trials_and_cores_are_shared_out() -> None:
    assert shares(10, 3) == [4, 3, 3] and shares(2, 3) == [1, 1, 0] and sum(shares(9, 4)) == 9
    slots = [worker_slot(i, 4, "auto", cuda_devices=2) for i in range(4)]
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_slot(0, 2, "cuda", cuda_devices=1).device is None  # one GPU: the study's
    assert worker_slot(1, 2, "cpu", cuda_devices=2).device is None  # a CPU study stays on CPU
    assert worker_slot(0, 2, "cpu", 0).threads == max(1, cpu_cores() // 2)
    assert worker_slot(0, 64, "cpu", 0).threads == 1


def test_n_jobs_on_one_sqlite_file(write_study, tmp_path: Path) -> None:
    study_file = _study_file(write_study)
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = bstune("optimize", study_file, "--storage", url, "--n-jobs", "3", "--n-trials", "9",
                 "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "with 3 worker processes" in out.stderr and "9 trials: 9 complete" in out.stdout
    assert "locked" not in out.stderr
    trials = _load(study_file, url).trials
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 9  # seeds differ per worker
    threads = {t.user_attrs["bstune:metrics"]["cpu_threads"] for t in trials}
    assert threads == {max(1, cpu_cores() // 3)}  # never more threads than cores in all


@needs_pg
def test_three_processes_share_one_postgresql_study(write_study) -> None:
    study_file = _study_file(write_study)
    procs = [_start("optimize", study_file, "--storage", PG, "--n-trials", "4",
                    "--seed", str(seed), "--no-progress") for seed in (1, 2, 3)]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = _load(study_file, PG).trials
    assert len(trials) == 12 and sorted(t.number for t in trials) == list(range(12))
    assert collections.Counter(t.state for t in trials) == {TrialState.COMPLETE: 12}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_a_killed_worker_s_trial_fails_and_is_retried_once(
    backend: str, write_study, tmp_path: Path
) -> None:
    study_file = _study_file(write_study, epochs=5000, study={"heartbeat_interval": 1,
                                                             "grace_period": 3})  # fmt: skip
    url = f"sqlite:///{tmp_path}/kill.db" if backend == "sqlite" else PG
    victim = _start("optimize", study_file, "--storage", url, "--n-trials", "1", "--no-progress")
    _wait_for_running(study_file, url)
    victim.send_signal(signal.SIGKILL)  # mid-trial: no chance to record anything
    victim.communicate(timeout=60)
    [stale] = _load(study_file, url).get_trials(states=(TrialState.RUNNING,))
    time.sleep(4)  # past the grace period
    out = bstune("optimize", study_file, "--storage", url, "--n-trials", "1", "--epochs", "1",
                 "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = {t.number: t for t in _load(study_file, url).trials}
    assert trials[stale.number].state == TrialState.FAIL
    [retry] = [t for t in trials.values() if t.number != stale.number]
    assert retry.state == TrialState.COMPLETE and retry.params == stale.params
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == stale.number


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_trial_cleanly_and_a_rerun_resumes(
    signum: int, code: int, write_study, tmp_path: Path
) -> None:
    study_file = _study_file(write_study, epochs=5000)
    url = f"sqlite:///{tmp_path}/signal.db"
    proc = _start("optimize", study_file, "--storage", url, "--n-trials", "3", "--no-progress")
    _wait_for_running(study_file, url)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == code, err
    assert f"interrupted by {name}; run the same command again to resume" in err
    assert "1 trial: 1 fail\n" in out and f"failed: interrupted by {name}" in out
    study = _load(study_file, url)
    [stopped] = study.trials[:1]
    assert stopped.state == TrialState.FAIL and not study.get_trials(states=(TrialState.RUNNING,))
    assert stopped.user_attrs["bstune:metrics"]["stopped"] == f"interrupted by {name}"
    assert "curves" in stopped.user_attrs["bstune:metrics"]  # its epochs so far, recorded
    out = bstune("optimize", study_file, "--storage", url, "--n-trials", "2", "--epochs", "1",
                 "--no-progress")  # fmt: skip
    assert out.returncode == 0 and "2 trials: 2 complete" in out.stdout, out.stderr
    retried = _load(study_file, url).trials[1]
    assert retried.params == stopped.params and retried.state == TrialState.COMPLETE
    assert retried.user_attrs["bstune:retry_of"] == stopped.number


def test_a_signal_to_the_supervisor_stops_every_worker(write_study, tmp_path: Path) -> None:
    study_file = _study_file(write_study, epochs=5000)
    url = f"sqlite:///{tmp_path}/jobs.db"
    proc = _start("optimize", study_file, "--storage", url, "--n-jobs", "2", "--n-trials", "4",
                  "--no-progress")  # fmt: skip
    _wait_for_running(study_file, url, count=2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "2 trials: 2 fail\n" in out
    states = collections.Counter(t.state for t in _load(study_file, url).trials)
    assert states == {TrialState.FAIL: 2, TrialState.WAITING: 2}  # none left RUNNING


@needs_pg
def test_passwords_never_appear(write_study, tmp_path: Path) -> None:
    secret = "S3cret-pw"  # noqa: S105 - the password the test looks for
    url = f"postgresql://postgres:{secret}@127.0.0.1:5432/test"  # trust auth accepts any
    study_file = _study_file(write_study, epochs=1, study={"storage": url})
    outputs = [
        bstune("validate", study_file),
        bstune("optimize", study_file, "--n-trials", "1", "--no-progress"),
        bstune("report", study_file),
        bstune("report", study_file, "--study-name", "no-such-study"),
        bstune("optimize", study_file, "--storage", url.replace("5432", "1"), "--n-trials", "1"),
    ]
    assert [o.returncode for o in outputs] == [0, 0, 0, 2, 2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = _start("dashboard", study_file, "--port", str(port))
    try:
        line = dashboard.stderr.readline() if dashboard.stderr else ""
    finally:
        dashboard.kill()
        dashboard.communicate()
    assert "optuna-dashboard on postgresql://postgres:***@127.0.0.1:5432/test" in line
    for text in [line, *(o.stdout + o.stderr for o in outputs)]:
        assert secret not in text
    study = _load(study_file, PG)
    assert secret not in study.user_attrs["bstune:study_file"]
    assert "postgres:***@127.0.0.1" in study.user_attrs["bstune:study_file"]


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        ({"heartbeat_interval": 10, "grace_period": 5}, "must be longer than heartbeat_interval"),
        ({"heartbeat_interval": None, "grace_period": 5}, "grace_period needs a heartbeat"),
        ({"retries": -1}, "study.retries: expected a value >= 0"),
    ],
)
def test_bad_liveness_settings_are_one_line_errors(study, expected: str, write_study) -> None:  # type: ignore[no-untyped-def]
    out = bstune("validate", write_study(study=study))
    assert out.returncode == 2 and expected in out.stderr and out.stderr.count("\n") == 1


def test_passwords_are_masked_in_any_text() -> None:
    from bstune.config._secrets import mask_passwords, mask_url

    text = "storage: postgresql://me:pa55@db:5432/x  # and mysql+pymysql://root:r00t@h/db"
    assert mask_passwords(text) == (
        "storage: postgresql://me:***@db:5432/x  # and mysql+pymysql://root:***@h/db"
    )
    assert mask_url("postgresql://me:pa55@db/x") == "postgresql://me:***@db/x"
    assert mask_url("sqlite:///a:b@c.db") == "sqlite:///a:b@c.db"  # a path, not a password


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_pg
def test_workers_get_the_storage_without_argv(write_study) -> None:
    secret = "W0rker-pw"  # noqa: S105 - the password the test looks for
    url = f"postgresql://postgres:{secret}@127.0.0.1:5432/test"  # trust auth accepts any
    study_file = _study_file(write_study, epochs=5000)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OPTUNA_STORAGE": url}
    proc = subprocess.Popen(
        [str(EXE), "optimize", str(study_file), "--n-jobs", "2", "--n-trials", "2",
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_for_running(study_file, PG, count=2)
        workers = _children(proc.pid)
        assert len(workers) == 2
        for pid in [proc.pid, *workers]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert secret not in cmdline and "postgresql" not in cmdline, cmdline
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert secret not in out + err and "postgres:***@127.0.0.1" in err


def test_a_killed_worker_is_started_again_for_its_share(write_study, tmp_path: Path) -> None:
    study_file = _study_file(write_study, epochs=5000)
    url = f"sqlite:///{tmp_path}/restart.db"
    proc = _start("optimize", study_file, "--storage", url, "--n-jobs", "2", "--n-trials", "4",
                  "--epochs", "15", "--no-progress")  # fmt: skip
    _wait_for_running(study_file, url, count=2)
    victim = _children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "was killed by SIGKILL in trial" in err
    assert "starting it again for its 2 remaining" in err
    trials = _load(study_file, url).trials
    states = collections.Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 4, TrialState.FAIL: 1}, states  # 4 asked, 4 ran
    [killed] = [t for t in trials if t.state == TrialState.FAIL]
    assert killed.user_attrs["bstune:error"].startswith("worker ")
    [retry] = [t for t in trials if t.user_attrs.get("bstune:retry_of") == killed.number]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE


def _two_workers_training(write_study, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``bstune optimize --n-jobs 2`` with both workers in a long trial: the study file, the
    storage, the supervisor's process and its workers' ids."""
    study_file = _study_file(write_study, epochs=5000)
    url = f"sqlite:///{tmp_path}/two.db"
    proc = _start("optimize", study_file, "--storage", url, "--n-jobs", "2", "--n-trials", "2",
                  "--no-progress")  # fmt: skip
    _wait_for_running(study_file, url, count=2)
    return study_file, url, proc, _children(proc.pid)


def test_workers_die_with_a_killed_supervisor(write_study, tmp_path: Path) -> None:
    study_file, url, proc, workers = _two_workers_training(write_study, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, workers))
    # Each ended its trial as a signal does: recorded, none left RUNNING.
    assert not _load(study_file, url).get_trials(states=(TrialState.RUNNING,))


def test_a_second_ctrl_c_ends_everything_at_once(write_study, tmp_path: Path) -> None:
    study_file, url, proc, workers = _two_workers_training(write_study, tmp_path)
    for pid in workers:  # a worker busy in cleanup would take its time: make them stop now
        os.kill(pid, signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not any(map(_alive, workers))
    study = _load(study_file, url)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # failed, and queued again
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2
