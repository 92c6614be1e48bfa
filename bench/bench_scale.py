"""A scale curve by simulation: many worker processes on one PostgreSQL study, directly and
through Optuna's gRPC storage proxy (issue 18, item 3).

    python bench/bench_scale.py --workers 4,16 --trials 1000           # what fits a 2-core box
    python bench/bench_scale.py --workers 4,16,64 --trials 10000       # the full curve
    python bench/bench_scale.py --workers 4 --trials 600 --paths proxy

Each worker is a process that imports no torch (about 90 MB): bstune's sampler and pruner from a
study file (``make_sampler``, ``make_pruner``: TPE, median + ``keep_front``), Optuna's study
loop, and a simulated trial — a batch size, learning rate and optimizer suggested as bstune's
space does, a synthetic 5-epoch validation-loss curve reported through
``bstune.report_val_loss`` (multi-objective pruning, the guard's projection included), the
trial's records written as bstune's objective writes them (flat attributes and
``bstune:metrics`` in one transaction) and three objective values; a few milliseconds of work,
no training. Workers run until the study holds ``--trials`` trials (``MaxTrialsCallback``).

Reported per configuration: trials per minute; time per trial outside its work — the wall time
of the trial less its simulated work: storage round trips, the sampler and the pruner — p50 and
p99; the pruning decision's latency by how many trials
the study held; errors; and trial numbers lost or duplicated (must be 0).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG = "postgresql://postgres@127.0.0.1:5432/test"
WORK_S = 0.003  # the simulated trial's own work


def worker(url: str, name: str, target: int, seed: int, out: str) -> None:
    """One worker process: trials until the study holds ``target``; its timings to ``out``."""
    import optuna

    from bstune.config._loading import parse_study
    from bstune.tune._factories import make_pruner, make_sampler
    from bstune.tune._optuna_private import set_user_attrs
    from bstune.tune._pruning import report_val_loss
    from bstune.tune._storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = parse_study({
        "dataset": {"name": "digits"}, "model": {"name": "mlp"},
        "objectives": ["val_accuracy", "train_time", "peak_memory"],
        "sampler": {"name": "tpe", "seed": seed, "constant_liar": True},
        "pruner": {"name": "median", "n_startup_trials": 5, "keep_front": True},
    })  # fmt: skip
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(cfg, seed),
                              pruner=make_pruner(cfg.pruner))  # fmt: skip
    rng = random.Random(seed)
    rows = []

    def objective(trial: optuna.Trial) -> list[float]:
        start = time.perf_counter()
        b = trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256, 512])
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.suggest_categorical("optimizer", ["sgd", "adam"])
        quality = math.exp(-abs(math.log10(lr) + 2)) * rng.uniform(0.8, 1.0)
        time.sleep(WORK_S)  # the trial's own work
        decisions = []
        n_done = trial.number  # the study's size as the trial starts (no extra read)
        for epoch in range(1, 6):
            loss = 2.3 * math.exp(-quality * epoch) + rng.uniform(0, 0.05)
            t0 = time.perf_counter()
            try:
                report_val_loss(trial, epoch, loss, persist=False,
                                projected=[quality, 5.0 * 10 / b, 0.1 * b])  # fmt: skip
            finally:
                decisions.append((n_done, time.perf_counter() - t0))
        metrics = {"train_time_s": 50.0 / b, "peak_memory_mb": 0.1 * b,
                   "val_loss_by_step": {str(e): 1.0 for e in range(1, 6)}}  # fmt: skip
        set_user_attrs(trial, {"bstune:train_time_s": 50.0 / b, "bstune:metrics": metrics})
        rows.append({"number": trial.number, "wall": time.perf_counter() - start,
                     "decisions": decisions})  # fmt: skip
        return [quality, 50.0 / b, 0.1 * b]

    errors = 0
    stop = optuna.study.MaxTrialsCallback(target, states=None)
    while len(study.get_trials(deepcopy=False)) < target:
        try:
            study.optimize(objective, n_trials=50, callbacks=[stop], catch=(Exception,))
        except Exception:  # a storage error outside a trial
            errors += 1
            if errors > 20:
                break
    Path(out).write_text(json.dumps({"rows": rows, "errors": errors}))


def run(url: str, storage_url: str, k: int, target: int, tmp: Path) -> dict:  # type: ignore[type-arg]
    import optuna

    name = f"scale-{k}-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=storage_url,
                        directions=["maximize", "minimize", "minimize"])  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    procs = [ctx.Process(target=worker, args=(url, name, target, i, str(tmp / f"{name}-{i}.json")))
             for i in range(k)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=storage_url)
    numbers = [t.number for t in study.trials]
    rows, errors = [], 0
    for i in range(k):
        path = tmp / f"{name}-{i}.json"
        if path.exists():
            data = json.loads(path.read_text())
            rows += data["rows"]
            errors += data["errors"]
        else:
            errors += 1  # the process died
    failed = sum(t.state.name == "FAIL" for t in study.trials)
    optuna.delete_study(study_name=name, storage=storage_url)
    storage_s = sorted(max(0.0, r["wall"] - WORK_S) for r in rows)
    by_size: dict[int, list[float]] = {}
    for r in rows:
        for n, d in r["decisions"]:
            by_size.setdefault(n // max(1, target // 5) * max(1, target // 5), []).append(d)
    return {
        "trials": len(numbers), "per_min": len(numbers) / wall * 60, "wall": wall,
        "p50": storage_s[len(storage_s) // 2] if storage_s else math.nan,
        "p99": storage_s[int(len(storage_s) * 0.99)] if storage_s else math.nan,
        "lost": sorted(set(range(max(numbers) + 1)) - set(numbers)) if numbers else [],
        "dupes": len(numbers) - len(set(numbers)), "errors": errors + failed,
        "decisions": {n: statistics.median(v) for n, v in sorted(by_size.items())},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="4,16", help="worker process counts")
    ap.add_argument("--trials", type=int, default=1000, help="trials the study grows to")
    ap.add_argument("--storage", default=PG)
    ap.add_argument("--paths", default="direct,proxy", help="direct, proxy, or both")
    args = ap.parse_args()
    import tempfile

    print(f"machine: {os.cpu_count()} CPUs; storage {args.storage.split('@')[-1]}; command: "
          f"python bench/bench_scale.py {' '.join(sys.argv[1:])}\n")  # fmt: skip
    print("| workers | path | trials | trials/min | outside the work per trial p50 / p99 (ms) | "
          "decision latency by study size (ms) | errors | lost / duplicated |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in (int(w) for w in args.workers.split(",")):
            paths = [{"direct": "direct", "proxy": "gRPC proxy"}[p] for p in args.paths.split(",")]
            for path in paths:
                proxy = None
                url = args.storage
                if path != "direct":
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", 0))
                        port = s.getsockname()[1]
                    exe = Path(sys.executable).with_name("bstune")
                    proxy = subprocess.Popen([str(exe), "storage-proxy", "--storage",
                                              args.storage, "--port", str(port)],
                                             stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(3)
                    url = f"grpc://127.0.0.1:{port}"
                try:
                    r = run(url, args.storage, k, args.trials, Path(tmp))
                finally:
                    if proxy is not None:
                        # SIGTERM, not SIGINT: a process started in the background of a
                        # non-interactive shell ignores SIGINT, and so would the proxy
                        proxy.terminate()
                        try:
                            proxy.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            proxy.kill()
                latency = ", ".join(f"{n}: {v * 1e3:.1f}" for n, v in r["decisions"].items())
                print(f"| {k} | {path} | {r['trials']} | {r['per_min']:,.0f} | "
                      f"{r['p50'] * 1e3:.0f} / {r['p99'] * 1e3:.0f} | {latency} | {r['errors']} | "
                      f"{len(r['lost'])} / {r['dupes']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
