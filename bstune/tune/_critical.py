"""``bstune critical``: the critical batch size of a study's workload, measured directly.

For each batch size of a ladder the learning rate is re-tuned — around the study's best trial
at that batch size where one exists (½×, 1×, 2× its rate; if none of those reaches the target,
as below), else over a log grid of the study's range moved to the batch size by its scaling
rule, then refined around the best point — by the steps each rate takes to reach the target
validation loss. A batch size that then needs more examples than a larger one (perfect scaling
at best keeps them equal) was under-tuned, and is searched again around the larger one's rate
and across the range. The best rate then runs again with more seeds. The target, unless given,
is the lowest loss the smallest batch size reached within a quarter of a run's cap plus 5% of
the way back to the loss before training, so that larger batch sizes have room to need more
examples and a minimum touched once does not set it. With ``branched``, one run at the smallest
batch size is branched at checkpoints into every batch size (its tuned rate) for the same
number of examples (Merrill et al. 2025). The numbers are summarised in
:mod:`bstune.analysis._critical` and stored in the study as ``bstune:critical``.

Everything runs within ``budget_s``: the work goes seed 0 across the whole ladder first, then
the other seeds, then the branches, so a budget that runs out leaves the widest answer it can.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from bstune.analysis._critical import (
    CRITICAL_ATTR,
    BranchPoint,
    CriticalBatch,
    Rung,
    branch_critical,
    steps_at_target,
    stored_critical,
    summarize,
)
from bstune.config._errors import ConfigError
from bstune.config._objectives import ATTR
from bstune.config._schema import StudyConfig
from bstune.data._datasets import Dataset, load_dataset
from bstune.training._engine import RunSpec
from bstune.training._optim import Hyperparams
from bstune.training._target import Curve, DeadlineError, TargetRun
from bstune.tune._space import fixed_hparams, scale_hparams

__all__ = ["CRITICAL_ATTR", "load_critical", "measure_critical_batch", "save_critical"]

_EVALS_PER_RUN = 64  # evaluations across a run's cap of examples
_TARGET_FRACTION = 0.25  # the default target: the best loss within this share of the cap,
_TARGET_SLACK = 0.05  # plus this share of the way back to the loss before training


@dataclass
class _Budget:
    start: float
    seconds: float

    @property
    def deadline(self) -> float:
        return self.start + self.seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def measure_critical_batch(
    cfg: StudyConfig,
    *,
    batch_sizes: Sequence[int] | None = None,
    target_loss: float | None = None,
    seeds: int = 3,
    lr_points: int = 4,
    max_epochs: float | None = None,
    budget_s: float = 600.0,
    branched: bool = False,
    branch_points: int = 4,
    tolerance: float = 0.01,
    study: optuna.Study | None = None,
    dataset: Dataset | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> CriticalBatch:
    """Measure the critical batch size of ``cfg``'s workload (see the module docstring).

    ``study`` (the study file's stored study, if any) lends its best trials' learning rates and
    optimizer; ``max_epochs`` caps each run (default twice ``training.epochs``).

    Raises:
        ConfigError: fewer than three batch sizes; a batch size above the training split; a
            budget too small for one run, or for the ladder's first pass; a given target the
            smallest batch size never reaches.
    """
    say = on_progress or (lambda line: None)
    budget = _Budget(time.monotonic(), budget_s)
    sizes = sorted(set(batch_sizes or cfg.search_space.batch_size.choices()))
    if len(sizes) < 3:
        raise ConfigError(
            f"critical: a ladder of at least three batch sizes is needed to fit or interpolate, "
            f"got {', '.join(map(str, sizes))}; give --batch-sizes with three or more (e.g. "
            f"16,32,64,128) or widen search_space.batch_size"
        )
    if seeds < 1 or lr_points < 2 or branch_points < 1 or not 0 < tolerance < 1:
        raise ConfigError(
            f"critical: expected seeds >= 1, lr_points >= 2, branch_points >= 1 and 0 < "
            f"tolerance < 1; got {seeds}, {lr_points}, {branch_points}, {tolerance}"
        )
    data = dataset or load_dataset(cfg.dataset)
    n = len(data.train)
    if sizes[-1] > n:
        raise ConfigError(
            f"critical: batch size {sizes[-1]} is above the training split ({n} examples of "
            f"{cfg.dataset.name}); give batch sizes of at most {n}"
        )
    epochs = max_epochs if max_epochs is not None else 2.0 * cfg.training.epochs
    cap = int(epochs * n)
    every = max(1, cap // _EVALS_PER_RUN)
    best_hp = _best_by_batch(study) if study is not None else {}
    optimizer = _optimizer(best_hp, cfg)

    def spec(hp: Hyperparams, seed: int) -> RunSpec:
        return replace(RunSpec.from_study(cfg, data, hp), seed=seed, evaluate_test=False)

    def base(b: int) -> Hyperparams:
        hp = best_hp.get(b)
        if hp is None or hp.optimizer != optimizer:
            hp = replace(fixed_hparams(cfg.search_space, {}), optimizer=optimizer)
        return replace(hp, batch_size=b, batch_schedule="none")

    _check_budget(spec(base(sizes[0]), cfg.training.seed), cap, every, budget, say)
    seed0 = cfg.training.seed
    notes: list[str] = []
    rungs: dict[int, Rung] = {}
    curves: dict[int, dict[float, Curve]] = {}
    target = target_loss
    target_source = "given" if target_loss is not None else ""

    def run(hp: Hyperparams, seed: int, stop_at: float | None) -> Curve:
        started = time.monotonic()
        curve = TargetRun(spec(hp, seed)).train(cap, every, target=stop_at,
                                                deadline=budget.deadline)  # fmt: skip
        took = time.monotonic() - started
        reached = steps_at_target(curve.by_step(), stop_at) if stop_at is not None else None
        what = (
            f"target at step {reached:.0f}" if reached is not None
            else f"loss {curve.last_loss:.4f} after {curve.points[-1][0]} steps"
        )  # fmt: skip
        say(f"batch {hp.batch_size} lr {hp.lr:.3g} seed {seed}: {what} ({took:.1f} s; "
            f"{max(0.0, budget.left()):.0f} s of {budget.seconds:.0f} left)")  # fmt: skip
        return curve

    # Phase 1: every rung's learning rate, seed 0
    try:
        for b in sizes:
            hp0 = base(b)
            known = b in best_hp and best_hp[b].optimizer == optimizer
            grid = _lr_grid(cfg, hp0, lr_points, known)
            tried: dict[float, Curve] = {}
            first = target is None and b == sizes[0]  # runs to the cap: it sets the target
            for lr in grid:
                tried[lr] = run(replace(hp0, lr=lr), seed0, None if first else target)
            if first:
                target = _default_target(tried, cap)
                target_source = (
                    f"the lowest validation loss batch size {b} reached within "
                    f"{_TARGET_FRACTION:.0%} of a run ({int(cap * _TARGET_FRACTION):,} examples), "
                    f"plus {_TARGET_SLACK:.0%} of the way back to the loss before training"
                )
                say(f"target validation loss {target:.4f} ({target_source})")
            assert target is not None
            if known and steps_at_target(tried[_best_lr(tried, target)].by_step(),
                                         target) is None:  # fmt: skip
                # the study's best rate there (best for its own objective) misses this target
                # at ½×, 1× and 2×: search the whole range as where the study has no trial
                known, grid = False, _lr_grid(cfg, hp0, lr_points, False)
                for lr in grid:
                    tried[lr] = run(replace(hp0, lr=lr), seed0, target)
            if not known:  # refine around the grid's best point
                best = _best_lr(tried, target)
                ratio = math.sqrt(grid[1] / grid[0])
                for lr in (best / ratio, best * ratio):
                    tried[lr] = run(replace(hp0, lr=lr), seed0, target)
            steps = steps_at_target(tried[_best_lr(tried, target)].by_step(), target)
            if b == sizes[0] and steps is None:
                low = min(c.last_loss for c in tried.values())
                raise ConfigError(
                    f"critical: target validation loss {target:g} was not reached at batch size "
                    f"{b} within {epochs:g} epochs (lowest {low:.4f}); give --target-loss above "
                    f"{low:.4f} or more --max-epochs"
                )
            rungs[b] = _rung(b, tried, target)
            curves[b] = tried
        # A batch size that needed more examples than a larger one was under-tuned (perfect
        # scaling at best keeps the examples constant): its rate search missed. Search it again
        # around the larger one's rate moved there (linear, square-root and no scaling) and
        # across the whole range, then refine around the best.
        assert target is not None
        for b in _under_tuned(rungs):
            tried = curves[b]
            donor = min((c for c in rungs if c > b and rungs[c].steps[0] is not None),
                        key=lambda c: (rungs[c].steps[0] or 0) * c)  # fmt: skip
            lr_d, k = rungs[donor].lr, b / donor
            grid = _lr_grid(cfg, base(b), lr_points, False)
            before = rungs[b].steps[0]
            for lr in _untried([lr_d * k, lr_d * math.sqrt(k), lr_d, *grid], tried):
                tried[lr] = run(replace(base(b), lr=lr), seed0, target)
            best, ratio = _best_lr(tried, target), math.sqrt(grid[1] / grid[0])
            for lr in _untried([best / ratio, best * ratio], tried):
                tried[lr] = run(replace(base(b), lr=lr), seed0, target)
            rungs[b] = _rung(b, tried, target)
            notes.append(
                f"batch size {b} needed more examples than {donor} at the rates first tried "
                f"({_fmt_steps(before)} steps); re-tuned over {len(tried)} rates: "
                f"{_fmt_steps(rungs[b].steps[0])} steps"
            )
    except DeadlineError:
        notes.append(f"the budget ran out while tuning the learning rate at batch size {b}")
    if len(rungs) < 3 or target is None:
        done = ", ".join(map(str, rungs)) or "none"
        spent = time.monotonic() - budget.start
        need = spent / max(1, len(rungs)) * len(sizes) * (1 + (seeds - 1) / (lr_points + 2))
        raise ConfigError(
            f"critical: --budget-s {budget.seconds:g} measured only batch sizes {done} of "
            f"{', '.join(map(str, sizes))}; three are needed. Give --budget-s {math.ceil(need)} "
            f"or more, fewer --lr-points, or fewer batch sizes"
        )
    if sum(r.steps[0] is not None for r in rungs.values()) < 3:
        notes.append("fewer than three batch sizes reached the target: no fit")

    # Phase 2: more seeds at each rung's rate
    try:
        for seed in range(seed0 + 1, seed0 + seeds):
            for b, rung in rungs.items():
                if rung.steps[0] is None:
                    rung.steps.append(None)
                    continue
                curve = run(replace(base(b), lr=rung.lr), seed, target)
                rung.steps.append(steps_at_target(curve.by_step(), target))
    except DeadlineError:
        notes.append(f"the budget ran out at seed {seed}: intervals from fewer seeds")
        for rung in rungs.values():
            del rung.steps[seed - seed0 :]

    # Phase 3: branches along one run of the smallest batch size
    branches: list[BranchPoint] = []
    if branched:
        try:
            branches = _branches(cfg, sizes, rungs, base, spec, seed0, cap, every,
                                 branch_points, tolerance, budget, say)  # fmt: skip
        except DeadlineError:
            notes.append("the budget ran out during the branched measurement")

    ladder = [rungs[b] for b in sizes if b in rungs]
    rule, rule_range, fit, fit_range = summarize(ladder, cap)
    return CriticalBatch(
        target_loss=target, target_source=target_source, optimizer=optimizer,
        max_examples=cap, rungs=ladder, seeds=max(len(r.steps) for r in ladder),
        rule=rule[0] if rule else None, rule_bound=rule[1] if rule else "",
        rule_range=rule_range, fit=fit, fit_range=fit_range, branches=branches,
        branch_tolerance=tolerance if branched else 0.0,
        elapsed_s=time.monotonic() - budget.start, budget_s=budget.seconds, notes=notes,
    )  # fmt: skip


def save_critical(study: optuna.Study, crit: CriticalBatch) -> None:
    """Store ``crit`` in ``study`` (``bstune:critical``), where ``bstune report`` reads it."""
    from bstune._json import json_safe

    study.set_user_attr(CRITICAL_ATTR, json_safe(crit.to_dict()))  # the dashboard reads it too


def load_critical(study: optuna.Study) -> CriticalBatch | None:
    """What ``save_critical`` stored in ``study``, if anything this bstune can read."""
    return stored_critical(study.user_attrs)


def _check_budget(
    spec: RunSpec, cap: int, every: int, budget: _Budget, say: Callable[[str], None]
) -> None:
    """Refuse a budget below one full run at the smallest batch size, timed on a few steps."""
    probe = TargetRun(spec)
    started = time.monotonic()
    probe.evaluate()
    eval_s = time.monotonic() - started
    curve = Curve()
    probe.train(spec.hparams.batch_size * 2, cap, curve)  # warms kernels and allocator up
    started = time.monotonic()
    probe.train(spec.hparams.batch_size * 5, cap, curve)  # five steps and one evaluation
    step_s = (time.monotonic() - started - eval_s) / 5
    run_s = max(0.0, step_s) * cap / spec.hparams.batch_size + eval_s * _EVALS_PER_RUN
    if run_s > budget.left():
        raise ConfigError(
            f"critical: --budget-s {budget.seconds:g} is less than one run at batch size "
            f"{spec.hparams.batch_size} (about {run_s:.0f} s for {cap:,} examples); give "
            f"--budget-s {math.ceil(run_s * 10)} or more, or fewer --max-epochs"
        )
    say(f"one run at batch size {spec.hparams.batch_size}: at most about {run_s:.1f} s")


def _lr_grid(cfg: StudyConfig, hp: Hyperparams, points: int, known: bool) -> list[float]:
    """The learning rates first tried at ``hp.batch_size``: ½×, 1×, 2× a known best rate, or
    ``points`` log-spaced across the study's range moved there by its scaling rule."""
    if known:
        return [hp.lr / 2, hp.lr, hp.lr * 2]
    space = cfg.search_space.lr
    kappa = hp.batch_size / space.reference_batch_size
    ratio = scale_hparams(replace(hp, lr=1.0), kappa, space.scaling).lr
    lo, hi = math.log(space.low * ratio), math.log(space.high * ratio)
    if lo == hi:
        return [math.exp(lo) / 2, math.exp(lo), math.exp(lo) * 2]
    return [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]


def _default_target(tried: dict[float, Curve], cap: int) -> float:
    """The lowest loss the smallest batch size reached within a quarter of a run, plus 5% of
    the way back to the loss before training: a target near the best, not at a minimum that
    only one run's noise (or the onset of overfitting) touched."""
    within = [
        loss for c in tried.values() for _, ex, loss in c.points
        if ex <= cap * _TARGET_FRACTION and math.isfinite(loss)
    ]  # fmt: skip
    if not within:
        raise ConfigError("critical: every run at the smallest batch size diverged; lower the "
                          "learning-rate range")  # fmt: skip
    low = min(within)
    start = max(c.points[0][2] for c in tried.values() if c.points)
    return low + _TARGET_SLACK * max(0.0, start - low)


def _rung(b: int, tried: dict[float, Curve], target: float) -> Rung:
    """Batch size ``b``'s rung: its best rate, that rate's steps, and every rate's steps."""
    best = _best_lr(tried, target)
    return Rung(b, best, [steps_at_target(tried[best].by_step(), target)],
                {f"{lr:.6g}": steps_at_target(c.by_step(), target)
                 for lr, c in sorted(tried.items())})  # fmt: skip


def _under_tuned(rungs: dict[int, Rung], slack: float = 0.1) -> list[int]:
    """The batch sizes that needed more than ``1 + slack`` times the examples of some larger
    one (or never reached the target where a larger one did), smallest first."""
    out = []
    for b, rung in rungs.items():
        larger = [c * (r.steps[0] or 0) for c, r in rungs.items()
                  if c > b and r.steps[0] is not None]  # fmt: skip
        if larger and (rung.steps[0] is None or b * rung.steps[0] > (1 + slack) * min(larger)):
            out.append(b)
    return sorted(out)


def _untried(rates: Sequence[float], tried: Mapping[float, object]) -> list[float]:
    """``rates`` less those within 5% of a rate already tried or earlier in ``rates``."""
    out: list[float] = []
    for lr in rates:
        if all(abs(math.log(lr / t)) > 0.05 for t in [*tried, *out]):
            out.append(lr)
    return out


def _fmt_steps(steps: float | None) -> str:
    return "never reached" if steps is None else f"{steps:.0f}"


def _best_lr(tried: dict[float, Curve], target: float) -> float:
    """The rate that reached the target in the fewest steps; else the lowest final loss."""

    def key(lr: float) -> tuple[float, float]:
        steps = steps_at_target(tried[lr].by_step(), target)
        last = tried[lr].last_loss
        last = last if math.isfinite(last) else math.inf
        return (steps if steps is not None else math.inf, last)

    return min(tried, key=key)


def _best_by_batch(study: optuna.Study) -> dict[int, Hyperparams]:
    """Per batch size, the hyperparameters of the complete trial with the lowest final
    validation loss (what bstune stored with it)."""
    best: dict[int, tuple[float, Hyperparams]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = t.user_attrs.get(f"{ATTR}metrics", {})
        curve = metrics.get("curves", {}).get("val_loss", [])
        stored = metrics.get("hparams")
        if not curve or not isinstance(stored, dict) or curve[-1] is None:
            continue
        try:
            hp = Hyperparams(**stored)
        except (TypeError, ConfigError):
            continue  # written by another bstune: not ours to read
        loss = float(curve[-1])
        if math.isfinite(loss) and (hp.batch_size not in best or loss < best[hp.batch_size][0]):
            best[hp.batch_size] = (loss, hp)
    return {b: hp for b, (_, hp) in best.items()}


def _optimizer(best_hp: dict[int, Hyperparams], cfg: StudyConfig) -> str:
    """The optimizer of the study's best trials (the most common among the rungs' best), else
    the study file's first."""
    chosen = [hp.optimizer for hp in best_hp.values()]
    if chosen:
        return max(sorted(set(chosen)), key=chosen.count)
    return cfg.search_space.optimizer[0]


def _branches(
    cfg: StudyConfig,
    sizes: Sequence[int],
    rungs: dict[int, Rung],
    base: Callable[[int], Hyperparams],
    spec: Callable[[Hyperparams, int], RunSpec],
    seed: int,
    cap: int,
    every: int,
    points: int,
    tolerance: float,
    budget: _Budget,
    say: Callable[[str], None],
) -> list[BranchPoint]:
    """One run at the smallest batch size, branched at ``points`` checkpoints into every batch
    size (its tuned rate) for the same further examples each."""
    b0 = sizes[0]
    spans = [b for b in sizes if b in rungs]
    delta = max(4 * spans[-1], cap // (2 * (points + 1)))
    trunk = TargetRun(spec(replace(base(b0), lr=rungs[b0].lr), seed))
    out = []
    for i in range(1, points + 1):
        checkpoint = cap * i // (points + 1)
        start = trunk.train(checkpoint - trunk.examples, every * 1000).last_loss
        if time.monotonic() > budget.deadline:
            raise DeadlineError
        losses = {}
        for b in spans:
            branch = trunk.branch(b, rungs[b].lr)
            curve = branch.train(delta, delta, deadline=budget.deadline)
            losses[b] = curve.last_loss
        start_loss = start if math.isfinite(start) else None
        critical = branch_critical(losses, tolerance, start_loss)
        point = BranchPoint(trunk.examples, losses, critical, start_loss)
        found = (
            f"critical batch size {point.critical}" if point.critical is not None
            else f"not measurable (the loss moved less than {tolerance:.0%} in any branch)"
        )  # fmt: skip
        say(f"branched at {trunk.examples:,} examples: {found} "
            f"({max(0.0, budget.left()):.0f} s left)")  # fmt: skip
        out.append(point)
    return out
