"""The trained model back: weights kept as Optuna artifacts (front / all / none), export and
load_model, the dashboard serving them, the report's files kept with the study, bad input."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch

import bstune
from bstune.tune._artifacts import ARTIFACT_ATTR

optuna.logging.set_verbosity(optuna.logging.ERROR)
SPACE = {"batch_size": {"low": 16, "high": 256}, "lr": {"low": 1e-3, "high": 0.1},
         "optimizer": ["sgd", "adam"], "dropout": {"low": 0.0, "high": 0.3}}  # fmt: skip


def _main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    from bstune.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A digits study of 8 trials, run by `bstune optimize` with the default artifacts (keep:
    front, the store beside the study file). Its objectives are accuracy and peak memory, both
    fixed by the seeds: with training time, measured, the whole front can differ from run to
    run, and on a busy machine every trial of 8 can be on it."""
    import yaml

    from bstune.cli import main

    folder = tmp_path_factory.mktemp("artifacts")
    path = folder / "digits.yaml"
    path.write_text(yaml.safe_dump({
        "study": {"name": "kept"}, "objectives": ["val_accuracy", "peak_memory"],
        "dataset": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
        "training": {"epochs": 3, "device": "cpu"}, "search_space": SPACE,
        "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
    }))  # fmt: skip
    assert main(["optimize", str(path), "--n-trials", "8", "--no-progress"]) == 0
    cfg = bstune.load_study(path)
    study = optuna.load_study(study_name="kept", storage=cfg.storage_url)
    return path, cfg, study


def test_the_front_keeps_its_weights_and_only_it(digits_study) -> None:  # type: ignore[no-untyped-def]
    path, _, study = digits_study
    store = path.parent / "digits_artifacts"
    assert study.user_attrs["bstune:artifact_store"] == str(store)
    front = {t.number for t in study.best_trials}
    files = {p.name for p in store.iterdir()}
    kept = {t.number for t in study.trials if t.user_attrs.get(ARTIFACT_ATTR) in files}
    listed = {
        t.number
        for t in study.trials
        if optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
    }
    assert kept == front == listed, (kept, front, listed)
    assert len([p for p in store.iterdir() if p.is_file()]) == len(front)  # the rest removed
    assert 1 <= len(front) < 8


def test_the_knee_trial_exported_and_loaded_gives_its_stored_accuracy(
    digits_study, tmp_path: Path, capsys  # type: ignore[no-untyped-def]
) -> None:
    path, cfg, study = digits_study
    out = tmp_path / "model.pt"
    code, err = _main(capsys, "export", path, "--trial", "knee", "--out", out)
    assert code == 0, err
    knee = bstune.build_report(study).knee.trial.number  # type: ignore[union-attr]
    model = bstune.load_model(out)
    assert not model.training and isinstance(model, torch.nn.Module)
    val = bstune.load_dataset(cfg.dataset).val
    with torch.inference_mode():
        accuracy = (model(val.x).argmax(1) == val.y).sum().item() / len(val)
    stored = study.trials[knee].user_attrs["bstune:metrics"]["val_accuracy"]
    assert accuracy == stored
    # the same model straight from the study, by its file or as an Optuna study
    for source in (path, study):
        again = bstune.load_model(source, knee)
        pairs = zip(again.state_dict().values(), model.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_exporting_what_was_not_kept_is_one_line(
    digits_study, tmp_path: Path, capsys  # type: ignore[no-untyped-def]
) -> None:
    path, _, study = digits_study
    front = sorted(t.number for t in study.best_trials)
    not_kept = next(t.number for t in study.trials if t.number not in front)
    cases = [
        (["--trial", str(not_kept), "--out", tmp_path / "a.pt"], f"trial {not_kept} of study"),
        (["--trial", "99", "--out", tmp_path / "b.pt"], "has no trial 99 (trials 0..7)"),
        (["--trial", str(front[0]), "--out", tmp_path / "no" / "c.pt"], "no such folder"),
    ]  # fmt: skip
    for args, message in cases:
        code, err = _main(capsys, "export", path, *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert f"trials with weights: {', '.join(map(str, front))}" in _main(
        capsys, "export", path, "--trial", str(not_kept), "--out", tmp_path / "d.pt"
    )[1]
    (tmp_path / "e.pt").write_text("mine")
    code, err = _main(capsys, "export", path, "--trial", str(front[0]), "--out", tmp_path / "e.pt")
    assert code == 2 and "already exists" in err and (tmp_path / "e.pt").read_text() == "mine"
    with pytest.raises(bstune.ConfigError, match="not a bstune weights file"):
        bstune.load_model(tmp_path / "e.pt")


def test_keep_all_and_none(write_study, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    for keep in ("all", "none"):
        path = write_study(f"{keep}.yaml", study={"name": keep},
                           training={"epochs": 1, "device": "cpu"}, search_space=SPACE,
                           artifacts={"keep": keep})  # fmt: skip
        assert _main(capsys, "optimize", path, "--n-trials", "3", "--no-progress")[0] == 0
        study = optuna.load_study(study_name=keep, storage=f"sqlite:///{tmp_path}/{keep}.db")
        kept = [t.number for t in study.trials if t.user_attrs.get(ARTIFACT_ATTR)]
        assert kept == ([0, 1, 2] if keep == "all" else []), keep
        assert (tmp_path / f"{keep}_artifacts").exists() == (keep == "all")


def test_bad_artifact_settings_are_refused_before_anything_is_stored(
    write_study, tmp_path: Path, capsys  # type: ignore[no-untyped-def]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    for artifacts, message in (
        ({"keep": "some"}, "artifacts.keep"),
        ({"store": str(blocked / "sub")}, "cannot write in"),
        ({"store": str(blocked)}, "not a folder"),
        ({"store": "  "}, "artifacts.store"),
    ):
        path = write_study(artifacts=artifacts, study={"name": "bad"})
        for command in ("validate", "optimize"):
            code, err = _main(capsys, command, path, "--n-trials", "1", "--no-progress")[:2] if (
                command == "optimize") else _main(capsys, command, path)  # fmt: skip
            assert code == 2 and err.count("\n") == 1 and message in err, (command, err)
    assert not (tmp_path / "study.db").exists()  # nothing stored


class MemoryStore:
    """An artifact store of the user's own (Optuna's protocol), passed straight through."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def open_reader(self, artifact_id: str) -> io.BytesIO:
        if artifact_id not in self.files:
            from optuna.artifacts.exceptions import ArtifactNotFound

            raise ArtifactNotFound(artifact_id)
        return io.BytesIO(self.files[artifact_id])

    def write(self, artifact_id: str, content_body: io.BufferedReader) -> None:
        self.files[artifact_id] = content_body.read()

    def remove(self, artifact_id: str) -> None:
        self.files.pop(artifact_id)


def test_a_user_s_own_store_and_model_pass_through() -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16, dtype=torch.float32)
    net = lambda hp: torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),  # noqa: E731
                                         torch.nn.Linear(32, 10))  # fmt: skip
    store = MemoryStore()
    objective = bstune.Objective(
        model=net, train=(x[:1400], y[:1400]), val=(x[1400:], y[1400:]), space=SPACE,
        objectives=["val_accuracy", "train_time"], epochs=2, device="cpu",
        artifact_store=store, keep="all",
    )  # fmt: skip
    study = optuna.create_study(directions=objective.directions)
    study.optimize(objective, n_trials=2)
    assert len(store.files) == 2
    with pytest.raises(bstune.ConfigError, match="pass model="):
        bstune.load_model(study, 1, store=store)
    model = bstune.load_model(study, 1, model=net, store=store)
    with torch.inference_mode():
        correct = (model(x[1400:]).argmax(1) == torch.tensor(y[1400:])).sum().item()
    assert correct / len(x[1400:]) == study.trials[1].values[0]


def test_the_report_s_files_are_kept_with_the_study(digits_study, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path, _, _study = digits_study
    for _ in range(2):  # a second report replaces the first's files
        code, err = _main(capsys, "report", path, "--out", tmp_path / "r")
        assert code == 0 and "study artifacts" in err, err
    metas = optuna.artifacts.get_all_artifact_meta(optuna.load_study(
        study_name="kept", storage=f"sqlite:///{path.with_suffix('.db')}"))  # fmt: skip
    names = sorted(m.filename for m in metas)
    listed = err.split("\n")[0].split(": ", 1)[1]  # "wrote N files to DIR: a, b, ..."
    assert names == sorted(listed.split(", ")) and len(names) == len(set(names)) > 5


def test_the_dashboard_serves_a_trial_s_weights(digits_study) -> None:  # type: ignore[no-untyped-def]
    from test_dashboard import free_port, get_json

    path, _, study = digits_study
    # a trial whose weights are still kept: one that a later trial dominated keeps the
    # attribute but lost its file (which trials those are depends on measured times)
    files = {p.name for p in (path.parent / "digits_artifacts").iterdir()}
    trial = next(t for t in study.trials if t.user_attrs.get(ARTIFACT_ATTR) in files)
    port = free_port()
    exe = Path(sys.executable).with_name("bstune")
    proc = subprocess.Popen([str(exe), "dashboard", str(path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                summaries = get_json(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.3)
        study_id = summaries[0]["study_id"]
        detail = get_json(f"{base}/api/studies/{study_id}")
        listed = next(t for t in detail["trials"] if t["number"] == trial.number)["artifacts"]
        assert [a["artifact_id"] for a in listed] == [trial.user_attrs[ARTIFACT_ATTR]]
        url = f"{base}/artifacts/{study_id}/{trial._trial_id}/{listed[0]['artifact_id']}"
        with urllib.request.urlopen(url, timeout=10) as r:
            payload = torch.load(io.BytesIO(r.read()), weights_only=True)
        assert payload["trial"] == trial.number and "state_dict" in payload
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
