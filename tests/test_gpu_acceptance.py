"""bench/gpu_acceptance.py's CPU side: the same flow on the CPU (--device cpu --quick), the
CUDA-only checks saying they were skipped and why, and its FLOP count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def test_its_flop_count_is_bench_engine_s() -> None:
    import bench_engine
    import gpu_acceptance

    assert gpu_acceptance.mlp_flops(784, (128,)) == bench_engine.step_flops_per_sample()
    # two hidden layers: the second and third layers' input gradients count, the first's not
    assert gpu_acceptance.mlp_flops(10, (20, 30), 5) == 2 * 2 * (200 + 600 + 150) + 2 * (
        600 + 150
    )


def test_the_whole_flow_runs_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    run = subprocess.run(
        [sys.executable, "bench/gpu_acceptance.py", "--device", "cpu", "--quick", "--out",
         str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = out.read_text()
    for n in range(1, 9):
        assert f"## {n}. " in text, n
    assert "| fp32 |" in text and "| bf16 |" in text and "fp16 | skipped: needs CUDA" in text
    # memory, probe OOM, study OOM, bench_engine's rows, the ResNet study
    assert text.count("— skipped") == 5
    assert "FAILED" not in text and "4 trials numbered 0..3" in text


def test_it_refuses_cuda_where_there_is_none() -> None:
    import torch

    if torch.cuda.is_available():
        return
    run = subprocess.run([sys.executable, "bench/gpu_acceptance.py"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert run.returncode == 2 and "no CUDA device here" in run.stderr
