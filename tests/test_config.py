import dataclasses

import pytest

from mtbert.cli import build_parser, train_parser
from mtbert.config import RESERVED_FLAGS, Config


def test_every_field_has_exactly_one_flag() -> None:
    flags = [a.option_strings for a in train_parser()._actions if a.dest != "help"]
    for f in dataclasses.fields(Config):
        owners = [opts for opts in flags if f"--{f.name}" in opts]
        assert len(owners) == 1, f.name
    assert all(f.metadata["help"] for f in dataclasses.fields(Config))


def test_defaults_are_the_original_baseline() -> None:
    cfg = Config()
    assert (cfg.option, cfg.optimizer, cfg.learning_rate, cfg.batch_size, cfg.clip) == (
        "finetune",
        "adamw",
        8e-5,
        64,
        0.25,
    )
    assert (cfg.epochs, cfg.samples_per_epoch, cfg.scheduler) == (10, 10000, "plateau")
    assert cfg.tasks == ("sst", "para", "sts")


def test_each_optimizer_has_its_own_default_lr() -> None:
    assert Config(optimizer="sophiah").learning_rate == 4e-5
    assert Config(optimizer="sophiag", lr=1e-4).learning_rate == 1e-4


def test_task_selection() -> None:
    assert Config(sts=True, sst=True).tasks == ("sst", "sts")


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"batch_size": 0}, "--batch_size"),
        ({"lr": -1.0}, "--lr"),
        ({"hidden_dropout_prob": 1.0}, "--hidden_dropout_prob"),
        ({"rho": 0.01}, "--rho"),
        ({"optimizer": "sophiah", "rho": -1.0}, "--rho"),
        ({"optimizer": "sophiag", "hess_interval": 0}, "--hess_interval"),
        ({"beta2": 1.0}, "--beta2"),
        ({"sts_loss_weight": -1.0}, "--sts_loss_weight"),
        ({"save_every": 5}, "--save_every needs --resume"),
        ({"model": "x", "checkpoint": "y"}, "--checkpoint"),
    ],
)
def test_invalid_values_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        Config(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("flag", sorted(RESERVED_FLAGS))
def test_reserved_flags_fail_clearly(flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", flag, "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} (" in err and "not yet supported" in err
