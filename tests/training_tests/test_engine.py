"""The training engine: accuracy, measurements, reproducibility, and stopping on divergence."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from bstune import ConfigError, Hyperparams, RunSpec, load_dataset, train
from bstune.config._schema import OPTIMIZERS, DatasetConfig, ModelConfig
from bstune.training import ModelError
from bstune.training._models import ReLUDropout, build_model
from bstune.training._optim import warmup_factor


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetConfig(name="digits"))


MLP = ModelConfig(name="mlp", hidden=[64])


def test_digits_above_85_percent_in_a_few_seconds(digits) -> None:
    start = time.perf_counter()
    result = train(
        RunSpec(digits, MLP, Hyperparams(batch_size=32, lr=3e-3), epochs=10, device="cpu")
    )
    assert time.perf_counter() - start < 30  # a generous bound: it takes well under a second
    assert result.val_accuracy > 0.85
    assert result.test_accuracy is not None and result.test_accuracy > 0.85
    assert len(result.epochs) == 10 and result.diverged is None
    assert result.epochs[-1].val_loss < result.epochs[0].val_loss


def test_measurements_are_consistent(digits) -> None:
    hp = Hyperparams(batch_size=100, lr=1e-3)
    r = train(RunSpec(digits, MLP, hp, epochs=3, device="cpu"))
    n = len(digits.train)
    steps = math.ceil(n / 100)
    assert r.steps == 3 * steps and all(e.steps == steps and e.samples == n for e in r.epochs)
    assert r.train_time_s == pytest.approx(sum(e.train_time_s for e in r.epochs))
    assert r.samples_per_s == pytest.approx(3 * n / r.train_time_s)
    assert r.memory_method == "live_tensors" and r.peak_memory_mb > 0
    for e in r.epochs:
        assert e.samples_per_s == pytest.approx(n / e.train_time_s)
        assert e.peak_memory_mb == r.peak_memory_mb
    assert r.device == "cpu" and r.torch_version == torch.__version__


def test_drop_last_drops_the_partial_batch(digits) -> None:
    r = train(
        RunSpec(digits, MLP, Hyperparams(batch_size=100), epochs=1, device="cpu", drop_last=True)
    )
    assert r.epochs[0].samples == (len(digits.train) // 100) * 100


@pytest.mark.parametrize("model", [MLP, ModelConfig(name="mlp", hidden=[64], dropout=0.3)])
def test_peak_memory_grows_with_batch_size(digits, model: ModelConfig) -> None:
    peaks = [
        train(
            RunSpec(digits, model, Hyperparams(batch_size=b), epochs=1, device="cpu")
        ).peak_memory_mb
        for b in (16, 64, 256, 1024)
    ]
    assert peaks == sorted(peaks) and peaks[-1] > 2 * peaks[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_peak_memory_matches_tensor_shapes_for_an_mlp(optimizer: str) -> None:
    """The live-tensor figure of a 784-256-10 MLP against one computed from tensor shapes."""
    data = load_dataset(DatasetConfig(name="synthetic", n_train=4200, shape=[784], n_classes=10))
    sizes = (64, 256, 512, 1024, 2048, 3072)
    peaks = [
        train(
            RunSpec(data, ModelConfig(name="mlp", hidden=[256]),
                    Hyperparams(batch_size=b, optimizer=optimizer), epochs=2, device="cpu")
        ).peak_memory_mb * 2**20
        for b in sizes
    ]  # fmt: skip
    params = 4 * (784 * 256 + 256 + 256 * 10 + 10)
    state = {"sgd": 0, "adam": 2}[optimizer] * params  # Adam: two moments per parameter
    for b, peak in zip(sizes, peaks, strict=True):
        # Parameters and optimizer state always; then the larger of two moments of the step:
        # the end of the forward pass — last step's gradients (freed by zero_grad), the batch
        # and labels, the hidden activation and log-softmax kept for backward, the logits — and
        # the ReLU's backward — the batch and labels, the hidden activation, its gradient and
        # the pre-activation's gradient, and the gradients of the output layer.
        forward_end = params + b * (4 * 784 + 8 + 4 * 256 + 4 * 10 * 2)
        relu_backward = b * (4 * 784 + 8 + 3 * 4 * 256) + 4 * (256 * 10 + 10)
        expected = params + state + max(forward_end, relu_backward)
        # the issue asks for 15%; it is exact to a few bytes (a 0.6% slip was caught once)
        assert peak == pytest.approx(expected, rel=0.002), b
    # Above 512 the backward pass sets the peak, which grows by 6,216 bytes a sample.
    slopes = [(peaks[i + 1] - peaks[i]) / (sizes[i + 1] - sizes[i]) for i in range(2, 5)]
    assert slopes == pytest.approx([4 * 784 + 8 + 3 * 4 * 256] * 3, rel=0.01)


def test_seeded_runs_reproduce_exactly(digits) -> None:
    model = ModelConfig(name="mlp", hidden=[64], dropout=0.2)
    spec = RunSpec(
        digits,
        model,
        Hyperparams(batch_size=64, lr=1e-2, optimizer="momentum"),
        epochs=3,
        device="cpu",
        seed=7,
    )
    a, b = train(spec), train(spec)
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]
    assert a.val_loss == b.val_loss and a.test_accuracy == b.test_accuracy
    c = train(RunSpec(digits, model, spec.hparams, epochs=3, device="cpu", seed=8))
    assert c.epochs[0].train_loss != a.epochs[0].train_loss


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_learns(digits, optimizer: str) -> None:
    lr = 0.05 if optimizer in ("sgd", "momentum", "nesterov") else 3e-3
    hp = Hyperparams(batch_size=32, lr=lr, optimizer=optimizer, weight_decay=1e-4)
    r = train(RunSpec(digits, MLP, hp, epochs=4, device="cpu"))
    assert r.val_accuracy > 0.8, optimizer


def test_warmup_reaches_the_rate_at_the_configured_step(digits) -> None:
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    hp = Hyperparams(batch_size=1000, lr=0.1, optimizer="sgd", warmup_epochs=2)
    r = train(RunSpec(digits, MLP, hp, epochs=3, device="cpu"))
    # 2 steps an epoch, 4 warm-up steps: epoch 1 ends at step 2 of 4, epoch 2 at the full rate
    assert [e.lr for e in r.epochs] == pytest.approx([0.05, 0.1, 0.1])


def test_warmup_under_a_growing_batch_ends_where_configured(digits) -> None:
    n = len(digits.train)
    hp = Hyperparams(batch_size=n // 8, lr=0.1, optimizer="sgd", warmup_epochs=2,
                     batch_schedule="grow_batch", grow_every_epochs=1, schedule_factor=2,
                     max_batch_size=n // 2)  # fmt: skip
    r = train(RunSpec(digits, MLP, hp, epochs=4, device="cpu", drop_last=True))
    # Epoch 1: 8 steps at B, epoch 2: 4 at 2B — 12 warm-up steps; from epoch 3 the full rate
    # (0.1, at 4B, no decay before the cap).
    assert r.epochs[1].lr == pytest.approx(0.1) and r.epochs[2].lr == pytest.approx(0.1)
    assert r.epochs[0].lr == pytest.approx(0.1 * 8 / 12)


def test_label_smoothing_raises_the_training_loss_floor(digits) -> None:
    plain = train(
        RunSpec(digits, MLP, Hyperparams(batch_size=32, lr=3e-3), epochs=8, device="cpu")
    )
    smooth = train(
        RunSpec(
            digits,
            MLP,
            Hyperparams(batch_size=32, lr=3e-3, label_smoothing=0.3),
            epochs=8,
            device="cpu",
        )
    )
    assert smooth.epochs[-1].train_loss > plain.epochs[-1].train_loss + 0.3


def test_cnn_with_batch_norm_learns(digits) -> None:
    model = ModelConfig(name="cnn", channels=[8, 16], hidden=[32], batch_norm=True, dropout=0.1)
    r = train(RunSpec(digits, model, Hyperparams(batch_size=64, lr=3e-3), epochs=3, device="cpu"))
    assert r.val_accuracy > 0.85


def test_resnet_is_he_et_al_s_and_learns_the_synthetic_shapes() -> None:
    from bstune.training._models import resnet

    resnet20 = resnet((3, 32, 32), 10, [16, 32, 64], blocks=3)
    assert sum(p.numel() for p in resnet20.parameters()) == 272_474  # ResNet-20 (0.27 M)
    assert resnet20(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ModelError, match="resnet needs image input"):
        resnet((64,), 10, [16])
    shapes = DatasetConfig(
        name="synthetic", structure="images", shape=[3, 16, 16], n_train=3000, n_test=100
    )
    data = load_dataset(shapes)
    model = ModelConfig(name="resnet", channels=[8, 16], blocks=1)
    hp = Hyperparams(batch_size=64, lr=3e-3, optimizer="adam")
    r = train(RunSpec(data, model, hp, epochs=8, device="cpu"))
    assert r.val_accuracy > 0.5, [e.val_accuracy for e in r.epochs]  # chance: 0.1


def test_nan_loss_stops_the_run_with_a_reason(digits) -> None:
    model = ModelConfig(name="models:exploding")
    r = train(RunSpec(digits, model, Hyperparams(batch_size=16), epochs=5, device="cpu"))
    assert r.diverged is not None and "non-finite training loss" in r.diverged
    assert "epoch 1" in r.diverged and r.epochs == [] and r.test_accuracy is None


def test_batch_size_larger_than_the_training_split_is_an_error(digits) -> None:
    with pytest.raises(
        ConfigError, match=r"batch_size 4096 is larger than the training split \(\d+ examples\)"
    ):
        train(RunSpec(digits, MLP, Hyperparams(batch_size=4096), device="cpu"))


def test_callback_sees_every_epoch_and_may_stop_the_run(digits) -> None:
    seen = []

    class StopError(Exception):
        pass

    def on_epoch(stats) -> None:
        seen.append(stats.epoch)
        if stats.epoch == 2:
            raise StopError

    with pytest.raises(StopError):
        train(RunSpec(digits, MLP, Hyperparams(), epochs=5, device="cpu"), on_epoch=on_epoch)
    assert seen == [1, 2]


def test_fp16_needs_cuda_and_absent_devices_are_errors(digits) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(RunSpec(digits, MLP, Hyperparams(), device="cpu", precision="fp16"))
    with pytest.raises(ConfigError, match="unknown precision 'fp64'"):
        train(RunSpec(digits, MLP, Hyperparams(), device="cpu", precision="fp64"))
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        train(RunSpec(digits, MLP, Hyperparams(), device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="requested but this machine has 0 CUDA devices"):
            train(RunSpec(digits, MLP, Hyperparams(), device="cuda:1"))


def test_bf16_autocast_on_cpu_trains(digits) -> None:
    r = train(
        RunSpec(
            digits,
            MLP,
            Hyperparams(batch_size=64, lr=3e-3),
            epochs=5,
            device="cpu",
            precision="bf16",
        )
    )
    assert r.val_accuracy > 0.8


def test_user_factory_and_callable_models(digits) -> None:
    model = build_model(ModelConfig(name="models:linear", options={"bias": False}), (1, 8, 8), 10)
    assert isinstance(model[1], nn.Linear) and model[1].bias is None
    r = train(
        RunSpec(
            digits,
            ModelConfig(name="models:linear"),
            Hyperparams(batch_size=32, lr=1e-2),
            epochs=3,
            device="cpu",
        )
    )
    assert r.val_accuracy > 0.8
    r = train(
        RunSpec(
            digits,
            lambda hp: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
            Hyperparams(),
            epochs=1,
            device="cpu",
        )
    )
    assert r.epochs


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module:f", "cannot import 'no_such_module'"),
        ("models:missing", "module 'models' has no 'missing'"),
        ("models:WIDTH", "'WIDTH' is a int, expected a function"),
        ("models:raises", "raised ValueError: no such architecture"),
        ("models:not_a_module", "returned str, expected a torch.nn.Module"),
    ],
)
def test_bad_factories_are_clear_errors(name: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(ModelConfig(name=name), (1, 8, 8), 10)


def test_relu_dropout_keeps_the_expected_activation() -> None:
    layer = ReLUDropout(0.2)
    x = torch.rand(1000, 1000) + 0.5  # all positive: only dropout zeroes
    torch.manual_seed(0)
    y = layer(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.8, abs=0.002)
    assert (y.sum() / x.sum()).item() == pytest.approx(1.0, abs=0.003)
    torch.manual_seed(0)
    assert torch.equal(layer(x), y)  # the global seed reproduces the mask
    neg = -torch.rand(10, 10)
    assert torch.equal(layer(neg), torch.zeros(10, 10))  # ReLU first
    layer.eval()
    assert torch.equal(layer(x), x)
    # gradient: the same mask and scale
    x.requires_grad_(True)
    layer.train()
    out = layer(x)
    out.sum().backward()
    assert torch.allclose(x.grad, (out / x).detach())
