"""What the live-tensor memory figure counts, and what it does not."""

from __future__ import annotations

import torch

from bstune.training import LiveTensorMemory


def test_counts_new_storages_until_they_are_freed() -> None:
    with LiveTensorMemory(baseline=100) as mem:
        a = torch.ones(1024)  # 4096 bytes
        b = a * 2  # 4096 more
        del a
        c = b + 1  # a was freed: the peak does not grow
        del b, c
    assert mem.peak == 100 + 8192
    assert mem.current == 100


def test_views_and_in_place_ops_are_not_new_memory() -> None:
    x = torch.ones(256, 256)
    with LiveTensorMemory() as mem:
        v = x[:128].t()
        x.mul_(2)
        v.add_(1)
    assert mem.peak == 0


def test_saved_activations_count_until_backward_frees_them() -> None:
    w = torch.randn(64, 64, requires_grad=True)
    with LiveTensorMemory() as mem:
        x = torch.randn(512, 64)
        h = (x @ w).relu()  # kept alive by the graph
        loss = h.sum()
        after_forward = mem.current
        loss.backward()
        del h, loss
    assert after_forward >= 2 * 512 * 64 * 4
    assert mem.peak >= after_forward


def test_held_tensors_count_until_they_are_freed() -> None:
    w = torch.nn.Parameter(torch.randn(256, 256))
    w.grad = torch.ones(256, 256)  # last step's gradient: 256 KiB
    with LiveTensorMemory(baseline=4 * 256 * 256) as mem:
        mem.hold([w.grad])
        w.grad = None  # zero_grad(set_to_none=True)
        g = torch.zeros(256, 256)  # this step's gradient takes its place
        del g
    assert mem.peak == 2 * 4 * 256 * 256  # the parameter and one gradient at a time, not two
