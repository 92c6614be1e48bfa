"""Study files: defaults, shorthands, and one clear message per kind of bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bstune import ConfigError, load_study, parse_study

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name", ["fashion_mnist.yaml", "mnist.yaml", "digits.yaml", "resnet_synthetic.yaml"]
)
def test_shipped_study_files_are_valid(name: str) -> None:
    cfg = load_study(REPO / "studies" / name)
    assert cfg.objectives
    assert cfg.search_space.batch_size.choices()[0] >= 1


def test_defaults_fill_every_section_but_dataset_and_model(write_study) -> None:
    path = write_study(text="dataset: {name: digits}\nmodel: {name: mlp}\n")
    cfg = load_study(path)
    assert cfg.objectives == ["val_accuracy", "train_time", "peak_memory"]
    assert cfg.training.epochs == 5 and cfg.training.device == "auto"
    assert cfg.study_name == "study"
    # default storage: <file stem>.db beside the study file
    assert cfg.storage_url == f"sqlite:///{path.with_suffix('.db')}"
    assert cfg.pruner.name == "median" and cfg.sampler.name == "tpe"


def test_the_issue_example_parses_with_scientific_notation(write_study) -> None:
    path = write_study(
        text="""
study: {name: fm, storage: "sqlite:///fm.db"}
objectives: [val_accuracy, train_time, peak_memory]
dataset: {name: fashion_mnist, val_fraction: 0.1}
model: {name: mlp, hidden: [128]}
training: {epochs: 5, device: auto, precision: fp32, seed: 0}
search_space:
  batch_size: {low: 16, high: 4096}
  lr: {low: 1e-4, high: 1.0, scaling: linear, reference_batch_size: 128}
  optimizer: [sgd, momentum, adam, adamw, rmsprop]
  weight_decay: {low: 1.0e-6, high: 1.0e-2}
  dropout: {low: 0.0, high: 0.5}
pruner: {name: median, n_warmup_steps: 1}
sampler: {name: tpe, seed: 0}
budget: {n_trials: 40, timeout: 3600}
"""
    )
    cfg = load_study(path)
    assert cfg.search_space.lr.low == pytest.approx(1e-4)  # YAML 1.1 alone reads a string
    assert cfg.search_space.lr.scaling == "linear"
    assert cfg.search_space.batch_size.choices() == [2**k for k in range(4, 13)]
    assert cfg.storage_url == "sqlite:///fm.db"


def test_single_values_pin_parameters() -> None:
    cfg = parse_study(
        {
            "dataset": {"name": "digits"},
            "model": {"name": "mlp"},
            "search_space": {"batch_size": 100, "dropout": 0.1, "optimizer": "adam"},
        }
    )
    space = cfg.search_space
    assert space.batch_size.choices() == [100]
    assert (space.dropout.low, space.dropout.high) == (0.1, 0.1)
    assert space.optimizer == ["adam"]


def test_batch_size_step_range() -> None:
    cfg = parse_study(
        {
            "dataset": {"name": "digits"},
            "model": {"name": "mlp"},
            "search_space": {"batch_size": {"low": 32, "high": 128, "step": 32}},
        }
    )
    assert cfg.search_space.batch_size.choices() == [32, 64, 96, 128]


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"training": {"epochz": 3}}, "training.epochz: unknown key (did you mean 'epochs'?)"),
        ({"training": {"epochs": "five"}}, "training.epochs: expected an integer, got 'five'"),
        ({"training": {"epochs": 0}}, "training.epochs: expected a value >= 1, got 0"),
        ({"training": {"epochs": 2.5}}, "training.epochs: expected an integer, got 2.5"),
        (
            {"search_space": {"lr": {"low": 1.0, "high": 0.1}}},
            "search_space.lr: low (1.0) must not be greater than high (0.1)",
        ),
        (
            {"search_space": {"batch_size": {"low": 512, "high": 64}}},
            "search_space.batch_size: low (512) must not be greater than high (64)",
        ),
        (
            {"search_space": {"optimizer": ["adam", "sgdd"]}},
            "search_space.optimizer: unknown value 'sgdd' (did you mean 'sgd'?)",
        ),
        (
            {"dataset": {"name": "mnistt"}},
            "dataset.name: unknown value 'mnistt' (did you mean 'mnist'?)",
        ),
        ({"model": {"name": "mpl"}}, "model.name: unknown model 'mpl' (did you mean 'mlp'?)"),
        (
            {"pruner": {"name": "median", "n_warmup": 1}},
            "pruner.n_warmup: unknown key (did you mean 'n_warmup_steps'?)",
        ),
        (
            {"pruner": {"name": "medain"}},
            "pruner: unknown value 'medain' (did you mean 'median'?)",
        ),
        (
            {"pruner": {"name": "patient", "wrapped": {"name": "median", "keep_front": True}}},
            "pruner.wrapped: keep_front belongs on the outer pruner",
        ),
        (
            {"training": {"device": "gpu"}},
            "training.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'",
        ),
        (
            {"objectives": ["val_accuracy", "val_accuracy"]},
            "objectives: each objective may appear once",
        ),
        ({"search_space": {"batch_size": {"low": 10, "high": 64}}}, "10 is not a power of two"),
        (
            {"search_space": {"weight_decay": {"low": 0.0, "high": 0.1}}},
            "a log range needs low > 0",
        ),
        ({"study": {"storage": "study.db"}}, "study.storage: expected a database URL"),
        (
            {"dataset": {"name": "digits", "n_train": 5}},
            "n_train only apply to dataset 'synthetic'",
        ),
    ],
)
def test_each_kind_of_bad_input_names_file_key_and_expectation(
    write_study, sections: dict, expected: str
) -> None:
    path = write_study(**sections)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_all_problems_are_reported_at_once(write_study) -> None:
    path = write_study(training={"epochs": 0, "seed": "x"}, modle={"name": "mlp"})
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert "training.epochs" in message and "training.seed" in message
    assert "modle: unknown key (did you mean 'model'?)" in message


def test_dataset_and_model_are_required(write_study) -> None:
    path = write_study(text="training: {epochs: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert "dataset: required key is missing" in message
    assert "model: required key is missing" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such study file"):
        load_study(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_line(write_study) -> None:
    path = write_study(text="dataset: {name: digits\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_study(path)


def test_top_level_must_be_a_mapping(write_study) -> None:
    path = write_study(text="- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping with sections"):
        load_study(path)


def test_command_line_overrides_are_validated() -> None:
    cfg = parse_study({"dataset": {"name": "digits"}, "model": {"name": "mlp"}})
    assert cfg.with_training(epochs=2).training.epochs == 2
    with pytest.raises(ConfigError, match=r"training\.device: expected auto"):
        cfg.with_training(device="tpu")


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"name": "synthetic", "structure": "images", "shape": [32]},
         "structure 'images' needs shape [channels, height, width], got [32]"),
        ({"name": "synthetic", "structure": "images", "n_classes": 11},
         "expected n_classes of at most 10, got 11"),
        ({"name": "synthetic", "structure": "pictures"}, "structure"),
        ({"name": "digits", "structure": "images"},
         "structure only apply to dataset 'synthetic'"),
    ],
)  # fmt: skip
def test_synthetic_images_bad_settings_are_one_line(dataset: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        parse_study({"dataset": dataset, "model": {"name": "resnet"}})
    assert "\n" not in str(e.value)
