import dataclasses
import json

import pytest

from mtbert.cli import train_parser
from mtbert.config import Config, config_file_flags, config_from_args
from mtbert.errors import MtbertError


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


def test_the_original_projects_extra_flags_are_accepted() -> None:
    args = train_parser().parse_args(["--smoketest", "--tensorboard_subfolder", "sweep1", "--local_files_only"])
    cfg = config_from_args(train_parser(), args)
    assert cfg.smoketest and cfg.local_files_only and cfg.tensorboard_subfolder == "sweep1"


def file_config(path, *flags: str) -> Config:
    """The Config that `mtbert train --config PATH FLAGS` trains with."""
    parser = train_parser()
    return config_from_args(parser, parser.parse_args([*config_file_flags(path), *flags]))


def test_a_yaml_config_file_sets_flags_and_the_command_line_overrides_it(tmp_path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("optimizer: sophiah\nlr: 1e-4   # YAML reads this as a string: checked as --lr would be\n"
                 "epochs: 3\nsts: true\nuse_gpu: false\nmodel: null\nprecision: fp32\n")  # fmt: skip
    cfg = file_config(f)
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.tasks, cfg.precision) == ("sophiah", 1e-4, 3, ("sts",), "fp32")
    assert file_config(f, "--epochs", "5", "--no-sts", "--sst").epochs == 5
    assert file_config(f, "--no-sts", "--sst").tasks == ("sst",)


def test_a_saved_models_config_reproduces_its_run(tmp_path) -> None:
    ran = Config(optimizer="sophiag", rho=0.03, batch_size=16, para=True, sts_loss_weight=3.0, save_dir="elsewhere")
    f = tmp_path / "mtbert.json"  # as save_model writes it
    f.write_text(json.dumps({"encoder": {}, "tasks": ["para"], "config": dataclasses.asdict(ran), "dev_metrics": {}}))
    assert file_config(f) == ran


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", "lr: 1e-4\nbatchsize: 8\n", r"a.yaml: unknown setting\(s\) batchsize"),
        ("a.yaml", "precision: fp16\n", r"a.yaml: precision: invalid choice: 'fp16'"),
        ("a.yaml", "epochs: many\n", r"a.yaml: epochs: invalid int value: 'many'"),
        ("a.yaml", "use_gpu: 1\n", r"a.yaml: use_gpu: expected true or false, got 1"),
        ("a.yaml", "lr: [1, 2]\n", r"a.yaml: lr: expected a value of --lr, got \[1, 2\]"),
        ("a.yaml", "lr: 1\n  epochs: 2\n", r"a.yaml:2: not valid YAML"),
        ("a.yaml", "- lr\n", r"a.yaml: expected a mapping of settings"),
        ("a.json", '{"lr": 1,}', r"a.json:1: not valid JSON"),
    ],
)
def test_a_bad_config_file_names_the_file_and_the_setting(tmp_path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(MtbertError, match=message):
        config_file_flags(tmp_path / name)
    with pytest.raises(MtbertError, match="no such file"):
        config_file_flags(tmp_path / "missing.yaml")
