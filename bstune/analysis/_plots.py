"""The report's plots: interactive HTML (Plotly) and PNG (Matplotlib, headless Agg backend).

Three figures, each drawn from a ``Report``:

* ``pareto`` — every pair of objectives (complete trials, coloured by batch size, log scale; the
  front's trials ringed), and with three objectives ``pareto_3d`` as well;
* ``batch_size`` — accuracy, training time and peak memory against batch size;
* ``curves`` — validation loss per epoch of the front's (or best) trials.

PNG goes through Matplotlib rather than Plotly's kaleido, which needs a Chrome install.
``save_to_study`` stores the Plotly figures in the study, where optuna-dashboard shows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from bstune.analysis._report import Report
from bstune.analysis._rows import TrialRow

__all__ = ["FIGURE_IDS", "plotly_figures", "save_to_study", "write_plots"]

FIGURE_IDS = {"pareto": "bstune-pareto", "batch_size": "bstune-batch-size"}
_METRICS = (
    ("val_accuracy", "validation accuracy"),
    ("train_time_s", "training time (s)"),
    ("peak_memory_mb", "peak memory (MB)"),
)


def _label(report: Report, objective: str) -> str:
    unit = report.unit(objective)
    return f"{objective} ({unit})" if unit else objective


def _short(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _log2(b: int | None) -> float:
    return math.log2(b) if b else 0.0


def _batch_ticks(trials: Sequence[TrialRow]) -> tuple[list[float], list[str]]:
    """Colour-bar ticks for batch size coloured on a log2 scale: at the batch sizes seen (at
    most 8 of them), labelled with the batch size itself, not its logarithm."""
    sizes = sorted({t.batch_size for t in trials if t.batch_size})
    if len(sizes) > 8:
        step = math.ceil(len(sizes) / 8)
        sizes = sizes[::step]
    return [_log2(b) for b in sizes], [str(b) for b in sizes]


def _complete(report: Report) -> list[TrialRow]:
    return [t for t in report.trials if t.state == "complete"]


def plotly_figures(report: Report) -> dict[str, Any]:
    """The report's figures as Plotly ``Figure`` objects, by name."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    done, on_front = _complete(report), {t.number for t in report.front}
    tickvals, ticktext = _batch_ticks(done)
    groups = {
        "other trials": [t for t in done if t.number not in on_front],
        "Pareto front": [t for t in done if t.number in on_front],
    }
    figs: dict[str, Any] = {}

    def style(name: str, trials: list[TrialRow], first: bool) -> dict[str, Any]:
        front = name == "Pareto front"
        return {
            "name": name,
            "legendgroup": name,
            "showlegend": first,
            "mode": "markers",
            "text": [f"trial {t.number}, batch {t.batch_size}, lr {_short(t.lr)}" for t in trials],
            "marker": {
                "color": [_log2(t.batch_size) for t in trials],
                "colorscale": "Viridis",
                "cmin": min((_log2(t.batch_size) for t in done), default=0),
                "cmax": max((_log2(t.batch_size) for t in done), default=1),
                "showscale": first and front,
                "colorbar": {"title": "batch size", "tickvals": tickvals, "ticktext": ticktext},
                "symbol": "diamond" if front else "circle",
                "line": {"width": 2 if front else 0, "color": "red"},
            },
        }

    if report.multi_objective:
        pairs = list(combinations(report.objectives, 2))
        fig = make_subplots(rows=1, cols=len(pairs))
        for i, (a, b) in enumerate(pairs, start=1):
            for name, trials in groups.items():
                fig.add_trace(
                    go.Scatter(
                        x=[t.values[a] for t in trials],
                        y=[t.values[b] for t in trials],
                        hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}",
                        **style(name, trials, i == 1),
                    ),
                    row=1,
                    col=i,
                )
            fig.update_xaxes(title_text=_label(report, a), row=1, col=i)
            fig.update_yaxes(title_text=_label(report, b), row=1, col=i)
        fig.update_layout(title=f"Pareto front of {report.study_name}")
        figs["pareto"] = fig
        if len(report.objectives) == 3:
            a, b, c = report.objectives
            fig3 = go.Figure()
            for name, trials in groups.items():
                st = style(name, trials, True)
                st["marker"] = {**st["marker"], "size": 4, "line": {"width": 0}}
                fig3.add_trace(
                    go.Scatter3d(
                        x=[t.values[a] for t in trials],
                        y=[t.values[b] for t in trials],
                        z=[t.values[c] for t in trials],
                        **st,
                    )
                )
            fig3.update_layout(
                title=f"Pareto front of {report.study_name}",
                scene={
                    "xaxis_title": _label(report, a),
                    "yaxis_title": _label(report, b),
                    "zaxis_title": _label(report, c),
                },
            )
            figs["pareto_3d"] = fig3
    fig = make_subplots(rows=1, cols=3)
    for i, (attr, title) in enumerate(_METRICS, start=1):
        pts = [(t.batch_size, getattr(t, attr)) for t in done if getattr(t, attr) is not None]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                name=title,
                showlegend=False,
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="batch size", type="log", row=1, col=i)
        fig.update_yaxes(title_text=title, row=1, col=i)
    fig.update_layout(title=f"Accuracy, time and memory against batch size ({report.study_name})")
    figs["batch_size"] = fig
    fig = go.Figure()
    curves = [t.curve for t in report.front if t.curve]
    for t in report.front:
        if t.curve:
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(t.curve) + 1)),
                    y=t.curve,
                    mode="lines",
                    name=f"trial {t.number} (batch {t.batch_size})",
                )
            )
    fig.update_layout(
        title="Validation loss of the front's trials",
        xaxis_title="epoch",
        yaxis_title="validation loss",
        yaxis_type="log",
        xaxis={"tickformat": "d", "dtick": 1 if max(map(len, curves), default=0) <= 20 else None},
    )
    figs["curves"] = fig
    return figs


def _matplotlib_figures(report: Report) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    done, front = _complete(report), {t.number for t in report.front}
    colour = [_log2(t.batch_size) for t in done]
    edge = ["red" if t.number in front else "none" for t in done]
    tickvals, ticktext = _batch_ticks(done)

    def batch_bar(fig: Any, mappable: Any, ax: Any, **kw: Any) -> None:
        bar = fig.colorbar(mappable, ax=ax, label="batch size", **kw)
        bar.set_ticks(tickvals, labels=ticktext)

    figs: dict[str, Any] = {}
    if report.multi_objective:
        pairs = list(combinations(report.objectives, 2))
        # constrained layout: each panel's y-label clear of the panel to its left
        fig, axes = plt.subplots(
            1, len(pairs), figsize=(5.5 * len(pairs), 4.2), squeeze=False, layout="constrained"
        )
        sc = None
        for ax, (a, b) in zip(axes[0], pairs, strict=True):
            sc = ax.scatter(
                [t.values[a] for t in done],
                [t.values[b] for t in done],
                c=colour,
                edgecolors=edge,
                linewidths=1.5,
                cmap="viridis",
            )
            ax.set_xlabel(_label(report, a))
            ax.set_ylabel(_label(report, b))
        if sc is not None:
            batch_bar(fig, sc, axes[0].tolist())
        fig.suptitle(f"Pareto front of {report.study_name} (front ringed red)")
        figs["pareto"] = fig
        if len(report.objectives) == 3:
            a, b, c = report.objectives
            fig = plt.figure(figsize=(7, 5.5))
            ax = fig.add_subplot(projection="3d")
            sc3 = ax.scatter(
                [t.values[a] for t in done],
                [t.values[b] for t in done],
                [t.values[c] for t in done],
                c=colour,
                edgecolors=edge,
                cmap="viridis",
            )
            ax.set_xlabel(_label(report, a))
            ax.set_ylabel(_label(report, b))
            ax.set_zlabel(_label(report, c))
            ax.set_title(f"Pareto front of {report.study_name} (front ringed red)")
            if done:
                batch_bar(fig, sc3, ax, pad=0.15, shrink=0.7)  # clear of the z label
            figs["pareto_3d"] = fig
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (attr, title) in zip(axes, _METRICS, strict=True):
        pts = [(t.batch_size, getattr(t, attr)) for t in done if getattr(t, attr) is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(title)
    fig.suptitle(f"Accuracy, time and memory against batch size ({report.study_name})")
    figs["batch_size"] = fig
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for t in report.front:
        if t.curve:
            ax.plot(
                range(1, len(t.curve) + 1), t.curve, label=f"trial {t.number} (b {t.batch_size})"
            )
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    ax.set_ylabel("validation loss")
    ax.set_title("Validation loss of the front's trials")
    if report.front and len(report.front) <= 12:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data
    figs["curves"] = fig
    return figs


def write_plots(report: Report, out: Path) -> list[Path]:
    """Every figure as ``<name>.html`` and ``<name>.png`` in ``out``; the paths written."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, fig in plotly_figures(report).items():
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory")  # one plotly.min.js beside them
        paths.append(path)
    for name, fig in _matplotlib_figures(report).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    if report.critical is not None:
        from bstune.analysis._critical_plots import write_critical_plots

        noise = report.noise.noise_scale if report.noise is not None else None
        paths += write_critical_plots(report.critical, out, noise)
    return paths


def save_to_study(study: Any, report: Report, names: Sequence[str] = tuple(FIGURE_IDS)) -> None:
    """Store the Pareto and batch-size figures in ``study`` for optuna-dashboard."""
    from optuna_dashboard import save_plotly_graph_object

    figs = plotly_figures(report)
    for name in names:
        if name in figs:
            save_plotly_graph_object(study, figs[name], graph_object_id=FIGURE_IDS[name])
