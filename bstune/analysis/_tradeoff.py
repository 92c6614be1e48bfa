"""What a gradient noise scale predicts about batch size (McCandlish et al. 2018; Pollux/AdaptDL,
Qiao et al. 2021). Pure arithmetic, torch-free: reading a study never loads torch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tradeoff", "critical_tradeoff", "statistical_efficiency"]


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
