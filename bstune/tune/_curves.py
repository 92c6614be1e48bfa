"""Learning curves where optuna-dashboard can show them in multi-objective studies too.

optuna-dashboard draws intermediate values only for single-objective studies, and bstune keeps a
multi-objective study's curves out of Optuna's intermediate values (see ``_pruning``). So bstune
saves a Plotly figure of every finished trial's validation-loss curve into the study with
``optuna_dashboard.save_plotly_graph_object``; the dashboard shows it on the study's page.

Its size is bounded whatever the study's: the curves of the completed trials with the lowest
final validation loss and of the most recent trials, :data:`MAX_CURVES` in all (the dashboard
stores a figure as 2,045-character study-attribute chunks: every curve of 2,000 trials took 904
chunks, 1.8 MB, and the first save 9.9 s on SQLite). While a study runs it is saved at most
every :data:`REFRESH_S` seconds, by one process (``--n-jobs``: worker 0; the supervisor saves
the final one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bstune.config._objectives import ATTR

__all__ = [
    "CURVES_FIGURE_ID", "MAX_CURVES", "REFRESH_S", "CurvesRefresher", "learning_curves",
    "save_learning_curves",
]  # fmt: skip

CURVES_FIGURE_ID = "bstune-learning-curves"
MAX_CURVES = 120  # curves in the figure: the best completed trials' and the most recent
REFRESH_S = 60.0  # while a study runs, the figure is saved at most this often


def learning_curves(
    trials: Sequence[FrozenTrial], limit: int | None = None
) -> list[dict[str, Any]]:
    """One entry per finished trial with a curve: number, state, batch size, val-loss curve;
    with ``limit``, at most that many: half the completed trials with the lowest final loss,
    the rest the most recent trials, in trial order."""
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
    if limit is None or len(out) <= limit:
        return out
    done = [c for c in out if c["state"] == "COMPLETE" and c["val_loss"][-1] is not None]
    best = {c["number"] for c in sorted(done, key=lambda c: c["val_loss"][-1])[: limit // 2]}
    recent = [c["number"] for c in out if c["number"] not in best][-(limit - len(best)) :]
    keep = best | set(recent)
    return [c for c in out if c["number"] in keep]


def save_learning_curves(study: optuna.Study) -> None:
    """Draw the finished trials' validation-loss curves (at most :data:`MAX_CURVES`) and save
    the figure into ``study``."""
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    # Two traces (complete, pruned), curves separated by gaps: a figure of hundreds of trials
    # stays small and quick to save; hovering names the trial and its batch size.
    fig = go.Figure()
    for state, style in (("COMPLETE", {"width": 1.5}), ("PRUNED", {"width": 1, "dash": "dot"})):
        xs: list[int | None] = []
        ys: list[float | None] = []
        labels: list[str | None] = []
        for c in learning_curves(study.get_trials(deepcopy=False), MAX_CURVES):
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
        title=f"Validation loss per epoch (bstune; at most {MAX_CURVES} trials: the best "
        f"completed and the most recent)",
        xaxis_title="epoch (equal data seen)",
        yaxis_title="validation loss",
        yaxis_type="log",
    )
    save_plotly_graph_object(study, fig, graph_object_id=CURVES_FIGURE_ID)


class CurvesRefresher:
    """Saves the figure at most every ``interval_s`` seconds while a study runs, and on demand."""

    def __init__(self, study: optuna.Study, interval_s: float = REFRESH_S) -> None:
        self.study = study
        self.interval_s = interval_s
        self._last = time.monotonic()

    def maybe_refresh(self) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.refresh()

    def refresh(self) -> None:
        save_learning_curves(self.study)
        self._last = time.monotonic()
