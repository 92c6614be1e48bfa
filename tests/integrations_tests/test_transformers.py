"""bstune.transformers.BstuneTrainerCallback with the real Transformers Trainer, on the CPU: a
tiny BERT built from a config (nothing downloaded), pruning in a multi-objective study,
measurements, records, and bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
import torch

import bstune

transformers = pytest.importorskip("transformers", reason="the transformers extra is missing")
from bstune.transformers import BstuneTrainerCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore", category=FutureWarning)

OBJECTIVES = ["val_accuracy", "train_time", "peak_memory"]
VOCAB, LENGTH = 50, 12


class Tokens(torch.utils.data.Dataset):
    """Sequences of random tokens; the label says whether token 7 occurs in them."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(8, VOCAB, (n, LENGTH), generator=g)
        has = torch.rand(n, generator=g) < 0.5
        where = torch.randint(0, LENGTH, (n,), generator=g)
        self.ids[has, where[has]] = 7
        self.labels = has.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}  # fmt: skip


def tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def accuracy(prediction: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def _train(trial: optuna.Trial, hp: bstune.Sampled, callback, out: Path, epochs: int = 3):  # type: ignore[no-untyped-def]
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=hp.batch_size, learning_rate=hp.lr,
        num_train_epochs=epochs, eval_strategy="epoch", save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=trial.number,
        per_device_eval_batch_size=256, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=Tokens(256, 0), eval_dataset=Tokens(128, 1),
        compute_metrics=accuracy, callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    return trainer


def test_a_multi_objective_study_is_pruned_and_recorded(tmp_path: Path) -> None:
    space = {"batch_size": {"low": 16, "high": 64}, "lr": {"low": 1e-6, "high": 1e-2}}
    used = []

    def objective(trial: optuna.Trial) -> list[float]:
        torch.manual_seed(trial.number)
        hp = bstune.suggest(trial, space)
        callback = BstuneTrainerCallback(trial, objectives=OBJECTIVES)
        trainer = _train(trial, hp, callback, tmp_path / str(trial.number))
        used.append((hp, trainer.args))
        return callback.values()  # type: ignore[return-value]

    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"],
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    # two trials that learn, then one whose rate is too small to learn: pruned, stopped early
    study.enqueue_trial({"batch_size": 16, "lr": 3e-3})
    study.enqueue_trial({"batch_size": 32, "lr": 5e-3})
    study.enqueue_trial({"batch_size": 16, "lr": 1e-6})
    study.optimize(objective, n_trials=3)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    for t in study.trials[:2]:
        m = t.user_attrs["bstune:metrics"]
        acc, time_s, memory = t.values
        assert acc == m["last_evaluation"]["eval_accuracy"] and 0 <= acc <= 1
        assert time_s == m["train_time_s"] == t.user_attrs["bstune:train_time_s"] > 0
        assert memory == m["peak_memory_mb"] > 0 and m["memory_method"] == "live_tensors"
        assert sorted(m["val_loss_by_step"]) == ["1", "2", "3"]
    pruned = study.trials[2].user_attrs["bstune:metrics"]
    assert pruned["stopped"].startswith("pruned at step") and pruned["evaluations"] < 3
    for hp, args in used:  # the trial's batch size and learning rate reached the Trainer
        assert args.per_device_train_batch_size == hp.batch_size and args.learning_rate == hp.lr


def test_a_monitor_never_logged_is_one_clear_error(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    hp = bstune.suggest(trial, {"batch_size": 32, "lr": 1e-3})
    callback = BstuneTrainerCallback(trial, monitor="eval_los", objectives=OBJECTIVES)
    with pytest.raises(bstune.ConfigError, match=r"monitor 'eval_los'.*logged: .*eval_loss"):
        _train(trial, hp, callback, tmp_path, epochs=1)
