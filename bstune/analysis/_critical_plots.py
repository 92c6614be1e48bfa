"""The critical batch size's plots (PNG, Matplotlib's headless Agg backend).

* ``critical_steps`` — steps to the target against batch size, log-log: each seed's point, the
  medians, the fit S(B) = S_min (1 + B_noise / B), perfect linear scaling from the smallest
  batch size and 20% above it, the critical batch size by the rule and the fit's B_noise (and
  the noise scale's estimate, when given);
* ``critical_over_training`` — with a branched measurement, the critical batch size at each
  checkpoint against the examples trained before it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bstune.analysis._critical import OVERHEAD, CriticalBatch

__all__ = ["write_critical_plots"]


def critical_figures(crit: CriticalBatch, noise_scale: float | None = None) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    for r in crit.rungs:
        seeds = [s for s in r.steps if s is not None]
        ax.scatter([r.batch_size] * len(seeds), seeds, s=14, color="0.6", zorder=2)
    reached = [(r.batch_size, r.median_steps) for r in crit.rungs if r.median_steps is not None]
    if reached:
        xs, ys = zip(*reached, strict=True)
        ax.plot(xs, ys, "o", color="C0", label="median steps to target", zorder=3)
        b0, s0 = reached[0]
        grid = [crit.rungs[0].batch_size * 2 ** (i / 8) for i in range(
            int(8 * math.log2(crit.rungs[-1].batch_size / crit.rungs[0].batch_size)) + 1)]
        ax.plot(grid, [s0 * b0 / b for b in grid], "--", color="0.4", lw=1,
                label="perfect linear scaling")
        ax.plot(grid, [(1 + OVERHEAD) * s0 * b0 / b for b in grid], ":", color="0.4", lw=1,
                label=f"{OVERHEAD:.0%} above it")
        if crit.fit is not None:
            ax.plot(grid, [crit.fit.steps(b) for b in grid], color="C1",
                    label=f"fit: S_min {crit.fit.s_min:.0f}, B_noise {crit.fit.b_noise:.0f}")
    if crit.rule is not None:
        bound = "≥ " if crit.rule_bound else ""
        ax.axvline(crit.rule, color="C3", lw=1.2,
                   label=f"critical (20% rule): {bound}{crit.rule:.0f}")
    if noise_scale is not None and math.isfinite(noise_scale):
        ax.axvline(noise_scale, color="C2", lw=1.2, ls="-.",
                   label=f"noise scale B_simple: {noise_scale:.0f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"steps to validation loss {crit.target_loss:.3g}")
    ax.set_title("Steps to the target against batch size")
    ax.legend(fontsize=7)
    figs["critical_steps"] = fig
    if crit.branches:
        fig, ax = plt.subplots(figsize=(6.5, 4.0), layout="constrained")
        points = [(p.examples, p.critical) for p in crit.branches if p.critical is not None]
        ax.plot([e for e, _ in points], [c for _, c in points], "o-")
        for p in crit.branches:
            if p.critical is None:  # the loss at its floor: nothing measured there
                ax.axvline(p.examples, color="0.7", lw=1, ls=":")
        if points:
            ax.set_yscale("log", base=2)
        else:
            ax.text(0.5, 0.5, "not measurable at any checkpoint:\nthe loss did not move in the "
                    "branches", ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_xlabel("examples trained before the branch")
        ax.set_ylabel("critical batch size")
        ax.set_title(f"Critical batch size along training (branched, tolerance "
                     f"{crit.branch_tolerance:.0%})")  # fmt: skip
        figs["critical_over_training"] = fig
    return figs


def write_critical_plots(
    crit: CriticalBatch, out: Path, noise_scale: float | None = None
) -> list[Path]:
    """The critical batch size's figures as PNG files in ``out``; the paths written."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in critical_figures(crit, noise_scale).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
