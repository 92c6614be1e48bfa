"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training"), estimated while a model trains, and what it predicts about batch size.

With G the true gradient and Σ the per-example gradient covariance, the simple noise scale
B_simple = tr(Σ) / |G|² is about the critical batch size: below it, doubling the batch nearly
halves the steps to a given loss; above it, the steps barely fall and the examples double.

Estimating it costs no extra examples: a step whose batch of B is backpropagated in two halves
gives the squared gradient norm at B/2 — of each half — and at B (both). Appendix A gives
unbiased estimates of |G|² and tr(Σ) from a norm at B/2 and the norm at B; bstune makes one
from each half and averages the two (as AdaptDL does, rather than using the first half alone as
GPT-NeoX does): the tr(Σ) estimate is then proportional to |g₁ − g₂|², in which the noise of
the mean gradient cancels, and its spread across runs falls about threefold. Each estimate is
smoothed by its own exponential moving average and the noise scale is the ratio of the averages
(the mean of ratios is biased and unstable when |G|² is small).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["NoiseScale", "squared_grad_norm"]


def squared_grad_norm(
    params: Iterable[torch.nn.Parameter],
    grads: Iterable[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Σ |∂L/∂p|² over ``params`` with a gradient (or over ``grads``, gradients set aside), as
    a 0-d tensor on their device (no sync)."""
    source = (p.grad for p in params) if grads is None else grads
    present = [g for g in source if g is not None]
    if not present:
        return torch.zeros(())
    norms = torch._foreach_norm(present)
    return torch.stack(norms).float().square().sum()


class NoiseScale:
    """Running estimate of B_simple from pairs of squared gradient norms.

    ``update(small_sq, b_small, big_sq, b_big)``: |g|² of the mean gradient over ``b_small``
    examples and over ``b_big`` examples (``b_big > b_small``), as floats or 0-d tensors (kept on
    their device until read). ``decay`` is the moving averages' weight on the past.

    Example (norms as McCandlish's model predicts them, with |G|² = 1 and tr Σ = 100):
        >>> gns = NoiseScale()
        >>> for _ in range(4):
        ...     gns.update(1 + 100 / 32, 32, 1 + 100 / 64, 64)
        >>> round(gns.value, 6), round(gns.grad_sq, 6), round(gns.trace, 6)
        (100.0, 1.0, 100.0)
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._g: torch.Tensor | float = 0.0
        self._g2: torch.Tensor | float = 0.0  # of the squared |G|² estimates: their spread
        self._s: torch.Tensor | float = 0.0
        self._weight = 0.0  # 1 - decay**n: the averages' bias correction
        self._weight_sq = 0.0  # Σ of the squared weights: the averages' effective count
        self.count = 0

    def update(
        self,
        small_sq: torch.Tensor | float,
        b_small: int,
        big_sq: torch.Tensor | float,
        b_big: int,
    ) -> None:
        g, s = _estimates(small_sq, b_small, big_sq, b_big)
        self._add(g, s)

    def update_halves(
        self,
        first_sq: torch.Tensor | float,
        b_first: int,
        second_sq: torch.Tensor | float,
        b_second: int,
        big_sq: torch.Tensor | float,
    ) -> None:
        """One step split in two halves: |g|² of each half's mean gradient (over ``b_first``
        and ``b_second`` examples) and of the whole batch's (over their sum). The estimates
        from each half are averaged: far less spread than from one half alone."""
        b = b_first + b_second
        g1, s1 = _estimates(first_sq, b_first, big_sq, b)
        g2, s2 = _estimates(second_sq, b_second, big_sq, b)
        self._add((g1 + g2) / 2, (s1 + s2) / 2)

    def _add(self, g: torch.Tensor | float, s: torch.Tensor | float) -> None:
        d = self.decay
        self._g = d * self._g + (1 - d) * g
        self._g2 = d * self._g2 + (1 - d) * g * g
        self._s = d * self._s + (1 - d) * s
        self._weight = d * self._weight + (1 - d)
        self._weight_sq = d * d * self._weight_sq + (1 - d) ** 2
        self.count += 1

    @property
    def grad_sq(self) -> float:
        """The smoothed estimate of |G|² (NaN before the first update)."""
        return float(self._g) / self._weight if self.count else math.nan

    @property
    def trace(self) -> float:
        """The smoothed estimate of tr(Σ) (NaN before the first update)."""
        return float(self._s) / self._weight if self.count else math.nan

    @property
    def grad_sq_error(self) -> float:
        """The standard error of :attr:`grad_sq`: the spread of the per-step |G|² estimates
        over the moving average's effective number of steps (NaN before two updates)."""
        if self.count < 2:
            return math.nan
        mean = float(self._g) / self._weight
        var = max(float(self._g2) / self._weight - mean * mean, 0.0)
        n_eff = self._weight**2 / self._weight_sq
        return math.sqrt(var / max(n_eff - 1.0, 1.0))

    @property
    def value(self) -> float:
        """B_simple = tr(Σ) / |G|²; NaN before two updates, or while the |G|² estimate is not
        clearly above zero — less than ``SIGNIFICANCE`` standard errors: the gradient is lost
        in its noise (batches far below B_noise, or too few steps), where the ratio would be a
        wild number rather than an estimate."""
        g, error = self.grad_sq, self.grad_sq_error
        if self.count < MIN_UPDATES or not g > SIGNIFICANCE * error:
            return math.nan
        return self.trace / g


# B_simple is reported once the |G|² estimate rests on at least MIN_UPDATES split steps (a
# spread read from fewer means little) and lies SIGNIFICANCE standard errors above zero (its
# relative error at most a half).
MIN_UPDATES = 4
SIGNIFICANCE = 2.0


def _estimates(
    small_sq: torch.Tensor | float, b_small: int, big_sq: torch.Tensor | float, b_big: int
) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """McCandlish et al.'s unbiased estimates of |G|² and tr(Σ) from |g|² at two batch sizes."""
    if not b_big > b_small > 0:
        raise ValueError(f"expected b_big > b_small > 0, got {b_big} and {b_small}")
    g = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    s = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
    return g, s
