"""`bstune dashboard`: optuna-dashboard on a study's storage, checked over HTTP and in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import hand_made_study

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--window-size=1280,900",
         "--virtual-time-budget=10000"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture
def dashboard(tmp_path: Path, write_study):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/hand.db"
    hand_made_study(url)
    study_file = write_study(objectives=["val_accuracy", "train_time"], study={"name": "hand"})
    port = free_port()
    exe = Path(sys.executable).with_name("bstune")
    proc = subprocess.Popen(
        [str(exe), "dashboard", str(study_file), "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            get_json(f"{base}/api/studies")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"dashboard did not start: {proc.communicate()[1]}")
            time.sleep(0.3)
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_dashboard_lists_the_study_with_bstune_figures(dashboard: str) -> None:
    (summary,) = get_json(f"{dashboard}/api/studies")["study_summaries"]
    assert summary["study_name"] == "hand"
    study = get_json(f"{dashboard}/api/studies/{summary['study_id']}")
    assert len(study["trials"]) == 8
    assert study["objective_names"] == ["val_accuracy", "train_time"]
    ids = {g["id"] for g in study["plotly_graph_objects"]}
    assert {"bstune-pareto", "bstune-batch-size"} <= ids
    pareto = next(g for g in study["plotly_graph_objects"] if g["id"] == "bstune-pareto")
    layout = json.loads(pareto["graph_object"])["layout"]
    assert layout["xaxis"]["title"]["text"] == "val_accuracy"  # named axes
    assert layout["yaxis"]["title"]["text"] == "train_time (s)"


def test_dashboard_binds_loopback_by_default(dashboard: str) -> None:
    assert dashboard.startswith("http://127.0.0.1:")


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_dashboard_renders_in_chromium(dashboard: str, tmp_path: Path) -> None:
    (summary,) = get_json(f"{dashboard}/api/studies")["study_summaries"]
    page = f"{dashboard}/dashboard/studies/{summary['study_id']}"
    env = {**os.environ, "HOME": str(tmp_path)}  # chromium writes its profile under HOME
    dom = subprocess.run([CHROMIUM, *FLAGS, "--dump-dom", f"{page}/trials"], capture_output=True,
                         text=True, timeout=120, env=env).stdout  # fmt: skip
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(
        r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)))  # fmt: skip
    assert "hand (id=" in text  # the study's name, rendered by the page's scripts
    assert "8 Trials" in text
    shot = tmp_path / "study.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={shot}", page], capture_output=True,
                   timeout=120, env=env, check=True)  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
