"""Where studies are stored, and that nothing stored is lost or leaked (issue 15, items 1-3, 6)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import TESTS, bstune

from bstune.config._secrets import mask_passwords, mask_url, scrub

optuna.logging.set_verbosity(optuna.logging.ERROR)

EXE = Path(sys.executable).with_name("bstune")


def _study_file(write_study, epochs: int = 1, **study):  # type: ignore[no-untyped-def]
    return write_study(
        study={"name": f"s-{uuid.uuid4().hex[:8]}", **study},
        training={"epochs": epochs, "device": "cpu"},
        search_space={"batch_size": {"low": 32, "high": 64}, "lr": 0.01, "optimizer": ["sgd"]},
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},
    )


def _trials(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM trials").fetchone()[0])


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:S@CRET/123@host/db", "postgresql://u:***@host/db"),
        ("mysql+pymysql://root:p@ss:w/rd@h:3306/x", "mysql+pymysql://root:***@h:3306/x"),
        ("postgresql://u:plain@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u@host/db", "postgresql://u@host/db"),
        ("sqlite:///dir/a:b@c.db", "sqlite:///dir/a:b@c.db"),
    ],
)
def test_all_of_the_userinfo_is_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert mask_passwords(f"storage: {url}  # x") == f"storage: {masked}  # x"


def _main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """The console script's entry point, in this process (no interpreter start-up): its exit
    status and what it wrote on stderr."""
    from bstune.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_a_password_with_an_at_sign_never_reaches_an_error(write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://u:S@CRET/123@127.0.0.1:1/db"
    code, err = _main(capsys, "optimize", _study_file(write_study), "--storage", url)
    assert code == 2 and err.count("\n") == 1, err
    assert "CRET" not in err and "123" not in err, err
    assert "S@" not in scrub('host "CRET/123@127.0.0.1" u:S@CRET/123%40x', url)


@pytest.mark.parametrize("var", ["BSTUNE_STORAGE", "OPTUNA_STORAGE"])
def test_the_storage_may_come_from_the_environment(
    var: str, write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from bstune.config._loading import load_study

    study_file = _study_file(write_study, storage=f"sqlite:///{tmp_path}/file.db")
    assert load_study(study_file).storage_url == f"sqlite:///{tmp_path}/file.db"
    monkeypatch.setenv(var, f"sqlite:///{tmp_path}/env.db")
    assert load_study(study_file).storage_url == f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv(var, "postgres:u:pw@host")  # not a URL, and its secret not echoed
    code, err = _main(capsys, "validate", study_file)
    assert code == 2 and f"${var}: expected a database URL" in err
    assert "pw" not in err.replace("postgresql", "")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused(url: str, write_study, capsys) -> None:  # type: ignore[no-untyped-def]
    study_file = _study_file(write_study)
    for command in ("optimize", "report"):
        code, err = _main(capsys, command, study_file, "--storage", url)
        assert code == 2 and "in-memory SQLite database" in err and err.count("\n") == 1, err


def test_the_db_file_alone_holds_every_trial_after_a_run(write_study, tmp_path: Path) -> None:
    """With another connection open (a dashboard), closing bstune's own does not checkpoint
    the write-ahead log; bstune checkpoints it when the run ends."""
    study_file = _study_file(write_study)
    db = tmp_path / "wal.db"
    assert bstune("optimize", study_file, "--storage", f"sqlite:///{db}", "--n-trials", "1",
                  "--no-progress").returncode == 0  # fmt: skip
    reader = sqlite3.connect(db)  # a dashboard, open across the next run
    try:
        reader.execute("SELECT count(*) FROM trials").fetchone()
        out = bstune("optimize", study_file, "--storage", f"sqlite:///{db}", "--n-trials", "3",
                     "--no-progress")  # fmt: skip
        assert out.returncode == 0, out.stderr
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)  # the .db alone, as a user would copy it
        assert _trials(copy) == 4
    finally:
        reader.close()


def test_sigterm_checkpoints_too(write_study, tmp_path: Path) -> None:
    study_file = _study_file(write_study, epochs=5000)
    db = tmp_path / "term.db"
    reader = sqlite3.connect(db)
    try:
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        proc = subprocess.Popen(
            [str(EXE), "optimize", str(study_file), "--storage", f"sqlite:///{db}",
             "--n-trials", "2", "--no-progress"], env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if reader.execute("SELECT count(*) FROM trial_params").fetchone()[0]:
                    break
            except sqlite3.OperationalError:  # no tables yet
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)
        with sqlite3.connect(copy) as conn:
            states = [s for (s,) in conn.execute("SELECT state FROM trials ORDER BY number")]
        assert states == ["FAIL", "WAITING"]  # the interrupted trial, and its retry queued
    finally:
        reader.close()


def test_write_ahead_files_are_ignored_by_git() -> None:
    ignored = (TESTS.parent / ".gitignore").read_text().split()
    assert {"*.db-wal", "*.db-shm"} <= set(ignored)


def _mount_read_only(folder: Path) -> bool:
    """A tmpfs at ``folder``, remounted read-only by the caller; False where mounting is not
    allowed (not root, or no CAP_SYS_ADMIN)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    made = subprocess.run(["mount", "-t", "tmpfs", "none", str(folder)], capture_output=True)
    return made.returncode == 0


def test_report_and_dashboard_read_a_study_on_a_read_only_file_system(
    write_study, tmp_path: Path
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    if not _mount_read_only(folder):
        pytest.skip("cannot mount a file system here (needs root with CAP_SYS_ADMIN)")
    try:
        study_file = _study_file(write_study)
        url = f"sqlite:///{folder}/study.db"
        out = bstune("optimize", study_file, "--storage", url, "--n-trials", "2", "--no-progress")
        assert out.returncode == 0, out.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        out = bstune("report", study_file, "--storage", url)
        assert out.returncode == 0, out.stderr
        assert "2 trials" in out.stdout or "trial" in out.stdout
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(
            [str(EXE), "dashboard", str(study_file), "--storage", url, "--port", str(port)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            assert "serving it read-only" in first, first + proc.stderr.read()
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_damaged_database_is_one_line(write_study, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    study_file = _study_file(write_study)
    db = tmp_path / "damaged.db"
    url = f"sqlite:///{db}"
    assert bstune("optimize", study_file, "--storage", url, "--n-trials", "1",
                  "--no-progress").returncode == 0  # fmt: skip
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // 4096):  # every page but the first: garbage
        data[page * 4096 : page * 4096 + 4096] = os.urandom(4096)
    db.write_bytes(bytes(data))
    for command in (("report",), ("optimize", "--n-trials", "1")):
        code, err = _main(capsys, command[0], study_file, "--storage", url, *command[1:])
        assert code == 2 and err.count("\n") == 1 and "database" in err, (command, err)


def test_a_study_resumed_from_a_changed_file_is_refused_before_any_trial(
    write_study, tmp_path: Path, capsys
) -> None:
    url = f"sqlite:///{tmp_path}/same.db"
    first = _study_file(write_study)
    assert bstune("optimize", first, "--storage", url, "--n-trials", "1",
                  "--no-progress").returncode == 0  # fmt: skip
    name = yaml.safe_load(first.read_text())["study"]["name"]
    stored = optuna.load_study(study_name=name, storage=url).user_attrs["bstune:study_file"]
    data = yaml.safe_load(first.read_text())
    data["search_space"]["batch_size"] = {"low": 32, "high": 256}
    changed = write_study("changed.yaml", text=yaml.safe_dump(data))
    code, err = _main(capsys, "optimize", changed, "--storage", url, "--n-trials", "1")
    assert code == 2 and err.count("\n") == 1, err
    assert "search_space.batch_size.high: 64 in the study, 256 in the file" in err
    assert "new study.name" in err and "original file" in err
    other = write_study("other.yaml", text=yaml.safe_dump({**data, "model": {"name": "cnn"}}))
    code, err = _main(capsys, "optimize", other, "--storage", url, "--n-trials", "1")
    assert code == 2 and "model.name: mlp in the study, cnn in the file" in err
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 1 and study.user_attrs["bstune:study_file"] == stored
    # A study written before identities were stored is checked against its stored file.
    legacy = optuna.create_study(study_name="legacy", storage=url)
    legacy.set_user_attr("bstune:study_file", first.read_text())
    code, err = _main(capsys, "optimize", changed, "--storage", url, "--study-name", "legacy",
                      "--n-trials", "1")  # fmt: skip
    assert code == 2 and "batch_size.high" in err, err


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:1/x", "mysql+pymysql://root@127.0.0.1:1/x"]
)
def test_a_refused_connection_fails_at_once(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import bstune.tune._storage as storage_module
    from bstune import ConfigError

    waits: list[float] = []
    monkeypatch.setattr(storage_module.time, "sleep", waits.append)
    with pytest.raises(ConfigError, match="Connection refused"):
        storage_module.open_storage(url)
    assert waits == []  # no retries: nothing listens there


def test_a_study_from_an_earlier_bstune_resumes(write_study, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Settings a newer bstune added (dataset.structure, model.blocks) are absent from an older
    study's stored identity: they mean their defaults there, not a changed file."""
    url = f"sqlite:///{tmp_path}/old.db"
    path = _study_file(write_study)
    assert _main(capsys, "optimize", path, "--storage", url, "--n-trials", "1",
                 "--no-progress")[0] == 0  # fmt: skip
    name = yaml.safe_load(path.read_text())["study"]["name"]
    study = optuna.load_study(study_name=name, storage=url)
    old = study.user_attrs["bstune:identity"]
    old["dataset"].pop("structure")
    old["model"].pop("blocks")
    study.set_user_attr("bstune:identity", old)  # as an earlier bstune stored it
    code, err = _main(capsys, "optimize", path, "--storage", url, "--n-trials", "1",
                      "--no-progress")  # fmt: skip
    assert code == 0, err
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 2
