"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training"), estimated while a model trains, and what it predicts about batch size.

With G the true gradient and Σ the per-example gradient covariance, the simple noise scale
B_simple = tr(Σ) / |G|² is about the critical batch size: below it, doubling the batch nearly
halves the steps to a given loss; above it, the steps barely fall and the examples double.

Estimating it costs no extra examples: a step whose batch of B is backpropagated in two halves
gives the squared gradient norm at B/2 (after the first half) and at B (after both). Appendix A
gives unbiased estimates of |G|² and tr(Σ) from those two norms; each is smoothed by its own
exponential moving average and the noise scale is the ratio of the averages (the mean of
ratios is biased and unstable when |G|² is small).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = [
    "NoiseScale",
    "critical_tradeoff",
    "squared_grad_norm",
    "statistical_efficiency",
]


def squared_grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """Σ |∂L/∂p|² over ``params`` with a gradient, as a 0-d tensor on their device (no sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.stack(norms).float().square().sum()


class NoiseScale:
    """Running estimate of B_simple from pairs of squared gradient norms.

    ``update(small_sq, b_small, big_sq, b_big)``: |g|² of the mean gradient over ``b_small``
    examples and over ``b_big`` examples (``b_big > b_small``), as floats or 0-d tensors (kept on
    their device until read). ``decay`` is the moving averages' weight on the past.

    Example (norms as McCandlish's model predicts them, with |G|² = 1 and tr Σ = 100):
        >>> gns = NoiseScale()
        >>> gns.update(1 + 100 / 32, 32, 1 + 100 / 64, 64)
        >>> round(gns.value, 6), round(gns.grad_sq, 6), round(gns.trace, 6)
        (100.0, 1.0, 100.0)
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._g: torch.Tensor | float = 0.0
        self._s: torch.Tensor | float = 0.0
        self._weight = 0.0  # 1 - decay**n: the averages' bias correction
        self.count = 0

    def update(
        self,
        small_sq: torch.Tensor | float,
        b_small: int,
        big_sq: torch.Tensor | float,
        b_big: int,
    ) -> None:
        if not b_big > b_small > 0:
            raise ValueError(f"expected b_big > b_small > 0, got {b_big} and {b_small}")
        g = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
        s = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
        d = self.decay
        self._g = d * self._g + (1 - d) * g
        self._s = d * self._s + (1 - d) * s
        self._weight = d * self._weight + (1 - d)
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
    def value(self) -> float:
        """B_simple = tr(Σ) / |G|²; NaN before the first update, or while the |G|² estimate is
        not positive (the gradient is lost in its noise: no batch size is too small)."""
        g = self.grad_sq
        return self.trace / g if g > 0 else math.nan


@dataclass(frozen=True)
class Tradeoff:
    """What B_noise predicts at one batch size (McCandlish et al. eq. 2.11–2.12):
    ``steps_ratio`` = S / S_min = 1 + B_noise / B, ``examples_ratio`` = E / E_min =
    1 + B / B_noise, so that (S/S_min − 1)(E/E_min − 1) = 1."""

    batch_size: int
    steps_ratio: float
    examples_ratio: float


def critical_tradeoff(noise_scale: float, batch_size: int) -> Tradeoff:
    """The steps/examples trade-off at ``batch_size`` for a noise scale.

    >>> t = critical_tradeoff(256.0, 256)
    >>> t.steps_ratio, t.examples_ratio
    (2.0, 2.0)
    """
    return Tradeoff(batch_size, 1 + noise_scale / batch_size, 1 + batch_size / noise_scale)


def statistical_efficiency(noise_scale: float, batch_size: int, reference: int) -> float:
    """How much each example at ``batch_size`` is worth relative to one at ``reference``
    (Pollux/AdaptDL, Qiao et al. 2021): (B_noise + B_ref) / (B_noise + B). Throughput × this is
    goodput: progress per second relative to training at ``reference``.

    >>> statistical_efficiency(100.0, 100, 100), statistical_efficiency(100.0, 300, 100)
    (1.0, 0.5)
    """
    return (noise_scale + reference) / (noise_scale + batch_size)
