"""GPU acceptance: bstune's CUDA path end to end, in one command, as a markdown report.

    python bench/gpu_acceptance.py                          # on a CUDA machine, < 8 minutes
    python bench/gpu_acceptance.py --device cpu --quick     # the same flow on the CPU (tests)

Checks, each a section of the report (``--out``, default ``gpu_acceptance.md``), each saying
``ok``, ``FAILED`` or ``skipped`` and why:

1. **Precisions** — ``bstune train`` (the console script, ``--json``) in fp32, bf16 and fp16
   (fp16 with loss scaling: CUDA only) on an image-shaped synthetic data set and a GEMM-heavy
   MLP; throughput against the floor: the step's matrix-multiply FLOPs over the GEMM rate
   measured here in that precision.
2. **Peak memory** — a run's ``peak_memory_mb`` against ``torch.cuda.max_memory_allocated``
   and ``max_memory_reserved`` read right after it (the engine resets the peak each epoch).
3. **Out of memory in the probe** — with this process limited to a slice of the GPU
   (``torch.cuda.set_per_process_memory_fraction``, so the allocator raises its own
   out-of-memory error well before the card is full), ``bstune.probe`` searches a range: a
   real CUDA OOM, the largest batch size that fits found, the search going on past it.
   (The slice: 2.25 GiB; the model and data need 1.7 GB before any batch.)
4. **Out of memory in a study** — three enqueued trials (small, too large, small): the large
   one PRUNED and infeasible, the study going on, and the next trial starting from the same
   allocated memory as the first (memory released).
5. **Two workers on one GPU** — ``bstune optimize studies/digits.yaml --device cuda --n-jobs 2``.
6. **Launch-bound steps** — step time per batch size (``measure_steps``): where it stays flat as
   the batch grows, the step is bound by kernel launches, not arithmetic (where CUDA graphs
   would pay).
7. **bench_engine's GPU rows** — ``bench/bench_engine.py --device cuda`` in bf16 and fp32 (needs
   Fashion-MNIST's files: ``BSTUNE_DATA_DIR`` or Debian's package; skipped without them).
8. **A workload big enough for the GPU** — ``bstune optimize studies/resnet_synthetic.yaml``
   (a ResNet on image-shaped synthetic data), 6 trials of 3 epochs, when the file is present:
   every trial stored, accuracy well above chance, time and peak memory per batch size.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
import yaml

import bstune
from bstune.config._loading import load_study
from bstune.config._schema import DatasetConfig, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine  # its GEMM rate: the same floor as its CPU rows

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


@dataclass
class Section:
    title: str
    status: str = "ok"  # ok | FAILED | skipped
    lines: list[str] = field(default_factory=list)

    def skip(self, why: str) -> Section:
        self.status = "skipped"
        self.lines.append(f"skipped: needs CUDA ({why})")
        return self

    def check(self, cond: bool, what: str) -> None:
        self.lines.append(f"- {'✓' if cond else '✗'} {what}")
        if not cond:
            self.status = "FAILED"


@dataclass(frozen=True)
class Plan:
    """Sizes for the device: the full run on CUDA, a small one for ``--quick``."""

    device: str
    hidden: tuple[int, ...]
    n_train: int
    batch: int
    epochs: int
    cap_gib: float  # what this process may allocate in the OOM checks
    big_input: int  # features per example in the OOM checks

    @classmethod
    def make(cls, device: str, quick: bool) -> Plan:
        if quick:
            return cls(device, (256,), 4096, 512, 2, 0.0, 64)
        return cls(device, (4096, 4096), 65536, 4096, 3, 2.25, 4096)


def study_file(folder: Path, plan: Plan, name: str = "gpu.yaml", **extra: object) -> Path:
    data = {
        "study": {"name": "gpu-acceptance", "storage": f"sqlite:///{folder}/gpu.db"},
        "dataset": {"name": "synthetic", "n_train": plan.n_train, "n_test": 1024,
                    "shape": [1, 28, 28], "n_classes": 10},
        "model": {"name": "mlp", "hidden": list(plan.hidden)},
        "training": {"epochs": plan.epochs, "device": plan.device},
        "search_space": {"batch_size": {"low": 64, "high": plan.batch}, "lr": 1e-3,
                         "optimizer": ["adam"]},
    }  # fmt: skip
    data.update(extra)
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def quick(plan: Plan) -> bool:
    return plan.n_train < 10_000


def mlp_flops(inputs: int, hidden: tuple[int, ...], classes: int = 10) -> int:
    """A training step's matrix-multiply FLOPs per example: forward, weight gradients, and input
    gradients for every layer but the first."""
    widths = [inputs, *hidden, classes]
    layers = list(itertools.pairwise(widths))
    fwd = sum(2 * a * b for a, b in layers)
    return 2 * fwd + sum(2 * a * b for a, b in layers[1:])


def bstune_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bstune.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=REPO,
    )  # fmt: skip


def check_precisions(plan: Plan, folder: Path) -> Section:
    s = Section("1. bstune train in fp32, bf16 and fp16: throughput against the GEMM floor")
    path = study_file(folder, plan)
    flops = mlp_flops(784, plan.hidden)
    s.lines.append(f"MLP 784-{'-'.join(map(str, plan.hidden))}-10, batch {plan.batch}, "
                   f"{plan.epochs} epochs of {plan.n_train:,} examples; {flops:,} FLOPs per "
                   f"example per step\n")  # fmt: skip
    s.lines += ["| precision | samples/s | GEMM TFLOP/s | floor (samples/s) | % of floor |",
                "|---|---:|---:|---:|---:|"]  # fmt: skip
    rates: dict[str, float] = {}
    for precision in ("fp32", "bf16", "fp16"):
        if precision == "fp16" and not plan.device.startswith("cuda"):
            s.lines.append("| fp16 | skipped: needs CUDA | | | |")
            continue
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        n = 1024 if quick(plan) else 4096
        rate = rates[precision] = bench_engine.gemm_rate(torch.device(plan.device), dtype, n)
        data = yaml.safe_load(path.read_text())
        data["training"]["precision"] = precision
        cfg_path = folder / f"gpu_{precision}.yaml"
        cfg_path.write_text(yaml.safe_dump(data))
        out = bstune_cli(
            "train",
            str(cfg_path),
            "--param",
            f"batch_size={plan.batch}",
            "--param",
            "lr=0.001",
            "--param",
            "optimizer=adam",
            "--json",
        )
        if out.returncode != 0:
            s.check(False, f"{precision}: exit {out.returncode}: {out.stderr.strip()[-300:]}")
            continue
        r = json.loads(out.stdout)
        floor = rate / flops
        s.lines.append(f"| {precision} | {r['samples_per_s']:,.0f} | {rate / 1e12:.1f} | "
                       f"{floor:,.0f} | {100 * r['samples_per_s'] / floor:.0f}% |")  # fmt: skip
        s.check(r["val_accuracy"] > 0.5 and r["diverged"] is None,
                f"{precision}: trained (val_accuracy {r['val_accuracy']:.3f}), "
                f"disturbed: {r.get('disturbed')}")  # fmt: skip
    return s


def check_memory(plan: Plan) -> Section:
    s = Section("2. Peak memory against the CUDA allocator's own figures")
    if not plan.device.startswith("cuda"):
        return s.skip(
            "on the CPU the figure is live_tensors, tested in tests/training_tests/test_engine.py"
        )
    data = bstune.load_dataset(DatasetConfig(name="synthetic", n_train=plan.n_train,
                                             shape=[1, 28, 28]))  # fmt: skip
    spec = bstune.RunSpec(data, ModelConfig(name="mlp", hidden=list(plan.hidden)),
                          bstune.Hyperparams(batch_size=plan.batch, lr=1e-3, optimizer="adam"),
                          epochs=2, device=plan.device, evaluate_test=False)  # fmt: skip
    r = bstune.train(spec)
    allocated = torch.cuda.max_memory_allocated() / MB
    reserved = torch.cuda.max_memory_reserved() / MB
    s.lines.append(f"peak_memory_mb {r.peak_memory_mb:,.1f} ({r.memory_method}); "
                   f"max_memory_allocated {allocated:,.1f} MB; max_memory_reserved "
                   f"{reserved:,.1f} MB")  # fmt: skip
    s.check(r.memory_method == "cuda_max_allocated", "method cuda_max_allocated")
    s.check(abs(r.epochs[-1].peak_memory_mb - allocated) <= 1.0,
            "the last epoch's peak equals max_memory_allocated read after the run (±1 MB; "
            "evaluation allocates no more than training)")  # fmt: skip
    s.check(r.peak_memory_mb <= reserved + 1e-6, "peak ≤ max_memory_reserved")
    return s


def limited(plan: Plan) -> Callable[[], None]:
    """Limit this process to a slice of the GPU, so that the allocator runs out early; return
    the undo."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, plan.cap_gib * 1024**3 / total))
    return lambda: torch.cuda.set_per_process_memory_fraction(1.0)


def big_study(folder: Path, plan: Plan) -> Path:
    """A study whose largest batch sizes cannot fit the slice: a 4096-8192-8192-10 MLP (100 M
    parameters: 1.6 GB with gradients and Adam's state) on 8,192 wide examples (128 MB)."""
    return study_file(
        folder, plan, "big.yaml",
        dataset={"name": "synthetic", "n_train": 8192, "n_test": 256,
                 "shape": [plan.big_input], "n_classes": 10},
        model={"name": "mlp", "hidden": [8192, 8192]},
        search_space={"batch_size": {"low": 256, "high": 8192, "step": 256}, "lr": 1e-3,
                      "optimizer": ["adam"]},
    )  # fmt: skip


def check_probe_oom(plan: Plan, folder: Path) -> Section:
    s = Section("3. A real CUDA out-of-memory in bstune probe")
    if not plan.device.startswith("cuda"):
        return s.skip("the OOM path is tested on the CPU by raising the allocator's error: "
                      "tests/probing_tests/test_probe.py")  # fmt: skip
    cfg = load_study(big_study(folder, plan))
    undo = limited(plan)
    try:
        result = bstune.probe(cfg, steps=3)
    finally:
        undo()
    for r in result.rows:
        s.lines.append(f"- batch {r.batch_size}: "
                       + ("fits" if r.fits else f"does not fit: {r.reason}"))  # fmt: skip
    oom = [r for r in result.rows if not r.fits and r.reason and "out of memory" in r.reason]
    s.check(bool(oom), "at least one batch size ran out of memory (the allocator's own error)")
    s.check(result.largest_fit is not None, f"largest batch size that fits: {result.largest_fit}")
    first = oom[0].batch_size if oom else 0
    doubled = {256 * 2**k for k in range(6)}  # the doubling phase; anything else is bisection
    after = [
        r.batch_size for r in result.rows if r.batch_size < first and r.batch_size not in doubled
    ]
    s.check(bool(after), f"the probe went on after the first out-of-memory, bisecting: {after}")
    return s


def check_study_oom(plan: Plan, folder: Path) -> Section:
    s = Section("4. A real CUDA out-of-memory in a study: pruned, infeasible, memory released")
    if not plan.device.startswith("cuda"):
        return s.skip(
            "tests/training_tests/test_memory.py raises the allocator's error on the CPU"
        )
    cfg = load_study(big_study(folder, plan)).with_training(epochs=1)
    objective = bstune.Objective(cfg)
    _ = objective.dataset
    starts: list[int] = []
    objective.before_trial = lambda: starts.append(torch.cuda.memory_allocated())
    study = optuna.create_study(directions=objective.directions)
    for b in (256, 8192, 256):
        study.enqueue_trial({"batch_size": b})
    undo = limited(plan)
    try:
        study.optimize(objective, n_trials=3)
    finally:
        undo()
    states = [t.state.name for t in study.trials]
    s.lines.append(f"states {states}; allocated at each trial's start (MB): "
                   f"{[round(v / MB, 1) for v in starts]}")  # fmt: skip
    s.check(states == ["COMPLETE", "PRUNED", "COMPLETE"], "small, too large, small: "
            "COMPLETE, PRUNED, COMPLETE")  # fmt: skip
    s.check(
        study.trials[1].constraints == {"out_of_memory": 1.0},
        f"the large trial is infeasible: {study.trials[1].constraints}",
    )
    s.check(
        len(starts) == 3 and starts[2] == starts[0],
        "the third trial started from the first's allocation (memory released)",
    )
    return s


def check_workers(plan: Plan, folder: Path) -> Section:
    s = Section("5. bstune optimize studies/digits.yaml --n-jobs 2 on one device")
    url = f"sqlite:///{folder}/workers.db"
    n = 4 if plan.device == "cpu" else 10
    out = bstune_cli("optimize", "studies/digits.yaml", "--device", plan.device, "--n-jobs", "2",
                     "--n-trials", str(n), "--storage", url, "--epochs", "2", "--no-progress",
                     timeout=400)  # fmt: skip
    s.check(out.returncode == 0, f"exit status {out.returncode}")
    study = optuna.load_study(study_name="digits-batch-size", storage=url)
    numbers = sorted(t.number for t in study.trials)
    s.check(numbers == list(range(n)), f"{n} trials numbered 0..{n - 1}: {numbers}")
    devices = {t.user_attrs.get("bstune:metrics", {}).get("device") for t in study.trials}
    s.lines.append(f"devices recorded: {sorted(str(d) for d in devices)}")
    return s


def check_launch_bound(plan: Plan) -> Section:
    s = Section("6. Step time per batch size: where the GPU waits on kernel launches")
    data = bstune.load_dataset(DatasetConfig(name="synthetic", n_train=max(plan.n_train, 8192),
                                             shape=[1, 28, 28]))  # fmt: skip
    s.lines += ["| batch | step time (ms) | samples/s |", "|---:|---:|---:|"]
    times = {}
    for b in (32, 128, 512, 2048):
        spec = bstune.RunSpec(data, ModelConfig(name="mlp", hidden=[128]),
                              bstune.Hyperparams(batch_size=b, lr=1e-3, optimizer="adam"),
                              device=plan.device)  # fmt: skip
        st = bstune.measure_steps(spec, steps=20)
        times[b] = st.step_time_s
        s.lines.append(f"| {b} | {st.step_time_s * 1e3:.3f} | {st.samples_per_s:,.0f} |")
    flat = times[512] < 2 * times[32]
    s.lines.append(
        f"\nStep time at 512 is {times[512] / times[32]:.1f}× that at 32: "
        + ("launch-bound up to there — the step's ~50 kernels cost more than their arithmetic; "
           "CUDA graphs would remove the launches (not done: see results.md)." if flat else
           "not launch-bound.")
    )  # fmt: skip
    return s


def check_bench_engine(plan: Plan) -> Section:
    s = Section("7. bench/bench_engine.py on the GPU")
    if not plan.device.startswith("cuda"):
        return s.skip("the CPU rows are in results.md")
    for precision in ("bf16", "fp32"):
        out = subprocess.run(
            [sys.executable, "bench/bench_engine.py", "--device", "cuda", "--precision",
             precision, "--rounds", "1", "--epochs", "3"],
            capture_output=True, text=True, timeout=240, cwd=REPO,
        )  # fmt: skip
        if out.returncode != 0:
            s.status = "skipped"
            s.lines.append(f"{precision}: {out.stderr.strip().splitlines()[-1][:300]}")
            continue
        s.lines += [f"{precision}:", "", out.stdout.strip(), ""]
    return s


def check_resnet_study(plan: Plan, folder: Path) -> Section:
    s = Section("8. bstune optimize studies/resnet_synthetic.yaml (a ResNet) on the GPU")
    study_path = REPO / "studies" / "resnet_synthetic.yaml"
    if not plan.device.startswith("cuda"):
        return s.skip("minutes per trial on a CPU; tests/training_tests/test_engine.py trains "
                      "a small ResNet on the same data")  # fmt: skip
    if not study_path.exists():
        s.status = "skipped"
        s.lines.append("skipped: studies/resnet_synthetic.yaml is not in this checkout")
        return s
    url, n = f"sqlite:///{folder}/resnet.db", 6
    out = bstune_cli("optimize", str(study_path), "--device", plan.device, "--n-trials", str(n),
                     "--epochs", "3", "--storage", url, "--no-progress", timeout=420)  # fmt: skip
    s.check(out.returncode == 0, f"exit status {out.returncode}")
    if out.returncode != 0:
        s.lines.append(out.stderr.strip()[-600:])
    study = optuna.load_study(study_name="resnet-synthetic-batch-size", storage=url)
    numbers = sorted(t.number for t in study.trials)
    s.check(numbers == list(range(n)), f"{n} trials numbered 0..{n - 1}: {numbers}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max((t.values[0] for t in done), default=0.0)
    s.check(best > 0.3, f"best validation accuracy {best:.3f} (10 classes: chance 0.1)")
    s.lines += ["", "| trial | batch | state | val_accuracy | train_time (s) | peak memory (MB) | "
                "samples/s |", "|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for t in study.trials:
        m = t.user_attrs.get("bstune:metrics", {})
        s.lines.append(
            f"| {t.number} | {t.params.get('batch_size')} | {t.state.name} | "
            f"{m.get('val_accuracy') or 0:.3f} | {m.get('train_time_s') or 0:.2f} | "
            f"{m.get('peak_memory_mb') or 0:,.0f} | {m.get('samples_per_s') or 0:,.0f} |"
        )
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes (a dry run on the CPU)")
    ap.add_argument("--out", default="gpu_acceptance.md", help="the markdown report")
    ap.add_argument("--skip", default="", help="comma-separated check numbers to leave out")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_acceptance: no CUDA device here; --device cpu --quick runs the same flow on "
              "the CPU", file=sys.stderr)  # fmt: skip
        return 2
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plan = Plan.make(args.device, args.quick)
    skip = {int(x) for x in args.skip.split(",") if x.strip()}
    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    head = [f"# GPU acceptance — {name}", "",
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, bstune "
            f"{bstune.__version__}; command: `python bench/gpu_acceptance.py "
            f"{' '.join(sys.argv[1:])}`", ""]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bstune-gpu-") as tmp:
        sections = run_checks(plan, Path(tmp), skip)
    total = time.perf_counter() - started
    summary = ", ".join(f"{s.title.split('.')[0]} {s.status}" for s in sections)
    text = "\n".join(head + [f"Checks: {summary}; {total:.0f} s in all.", ""]
                     + [f"## {s.title} — {s.status}\n\n" + "\n".join(s.lines) + "\n"
                        for s in sections])  # fmt: skip
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 1 if any(s.status == "FAILED" for s in sections) else 0


def run_checks(plan: Plan, folder: Path, skip: set[int]) -> list[Section]:
    """Every check not skipped, in order; one that raises is a FAILED section, not the end."""
    checks: list[Callable[[], Section]] = [
        lambda: check_precisions(plan, folder),
        lambda: check_memory(plan),
        lambda: check_probe_oom(plan, folder),
        lambda: check_study_oom(plan, folder),
        lambda: check_workers(plan, folder),
        lambda: check_launch_bound(plan),
        lambda: check_bench_engine(plan),
        lambda: check_resnet_study(plan, folder),
    ]
    sections = []
    for i, check in enumerate(checks, 1):
        if i in skip:
            continue
        t0 = time.perf_counter()
        try:
            section = check()
        except Exception as e:  # a check that breaks is a finding, not the end of the report
            section = Section(f"{i}. (raised)", "FAILED", [f"{type(e).__name__}: {e}"])
        section.lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
        sections.append(section)
        print(f"{section.title}: {section.status}", file=sys.stderr, flush=True)
    return sections


if __name__ == "__main__":
    sys.exit(main())
