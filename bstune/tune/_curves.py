"""Learning curves where optuna-dashboard can show them in multi-objective studies too.

optuna-dashboard draws intermediate values only for single-objective studies, and bstune keeps a
multi-objective study's curves out of Optuna's intermediate values (see ``_pruning``). So bstune
saves a Plotly figure of every finished trial's validation-loss curve into the study with
``optuna_dashboard.save_plotly_graph_object``; the dashboard shows it on the study's page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.config._objectives import ATTR

__all__ = ["CURVES_FIGURE_ID", "CurvesRefresher", "learning_curves", "save_learning_curves"]

CURVES_FIGURE_ID = "bstune-learning-curves"


def learning_curves(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One entry per finished trial with a curve: number, state, batch size, val-loss curve."""
    out = []
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        metrics = t.user_attrs.get(f"{ATTR}metrics", {})
        curve = metrics.get("curves", {}).get("val_loss", [])
        if curve:
            batch = metrics.get("hparams", {}).get("batch_size")
            out.append({"number": t.number, "state": t.state.name, "batch_size": batch,
                        "val_loss": curve})  # fmt: skip
    return out


def save_learning_curves(study: optuna.Study) -> None:
    """Draw every finished trial's validation-loss curve and save it into ``study``."""
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    # Two traces (complete, pruned), curves separated by gaps: a figure of hundreds of trials
    # stays small and quick to save; hovering names the trial and its batch size.
    fig = go.Figure()
    for state, style in (("COMPLETE", {"width": 1.5}), ("PRUNED", {"width": 1, "dash": "dot"})):
        xs: list[int | None] = []
        ys: list[float | None] = []
        labels: list[str | None] = []
        for c in learning_curves(study.get_trials(deepcopy=False)):
            if c["state"] != state:
                continue
            n = len(c["val_loss"])
            xs += [*range(1, n + 1), None]
            ys += [*c["val_loss"], None]
            labels += [f"trial {c['number']} (batch {c['batch_size']})"] * n + [None]
        fig.add_trace(
            go.Scatter(x=xs, y=ys, text=labels, mode="lines", name=state.lower(), line=style,
                       hovertemplate="%{text}<br>epoch %{x}: %{y:.4g}<extra></extra>")
        )  # fmt: skip
    fig.update_layout(
        title="Validation loss per epoch (bstune)",
        xaxis_title="epoch (equal data seen)",
        yaxis_title="validation loss",
        yaxis_type="log",
    )
    save_plotly_graph_object(study, fig, graph_object_id=CURVES_FIGURE_ID)


class CurvesRefresher:
    """Saves the figure at most every ``interval_s`` seconds while a study runs, and on demand."""

    def __init__(self, study: optuna.Study, interval_s: float = 10.0) -> None:
        self.study = study
        self.interval_s = interval_s
        self._last = time.monotonic()

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.refresh()

    def refresh(self) -> None:
        save_learning_curves(self.study)
        self._last = time.monotonic()
