import dataclasses
import json

import pytest

from mtbert.cli import train_parser
from mtbert.config import TASK_FLAGS, Config, Search, TaskSettings, config_from_args, flags_of, read_config_file
from mtbert.errors import MtbertError


def test_every_setting_has_exactly_one_flag() -> None:
    flags = [a.option_strings for a in train_parser()._actions if a.dest != "help"]
    names = [*flags_of(Config), *flags_of(Search)]
    assert "per_task" not in names and set(TASK_FLAGS) <= set(names)  # the task table: a flag per task and field
    assert len(names) == len(dataclasses.fields(Config)) - 1 + len(TASK_FLAGS) + len(dataclasses.fields(Search))
    for name in names:
        owners = [opts for opts in flags if f"--{name}" in opts]
        assert len(owners) == 1, name
    assert all(flag.help for flag in [*flags_of(Config).values(), *flags_of(Search).values()])


def test_tasks_are_one_table_under_the_original_flag_names() -> None:
    cfg = Config.from_settings({"sst_train": "a.csv", "sts_loss_weight": 3.0, "para_dev_out": "p.csv", "lr": 1e-4})
    assert cfg.per_task["sst"] == TaskSettings(
        train="a.csv", dev_out="predictions/sst-dev-output.csv", test_out="predictions/sst-test-output.csv"
    )
    assert (cfg.per_task["sts"].loss_weight, cfg.per_task["para"].dev_out, cfg.lr) == (3.0, "p.csv", 1e-4)
    assert cfg.loss_weights == {"sst": 1.0, "para": 1.0, "sts": 3.0}
    assert Config.from_settings(cfg.settings()) == cfg  # saved settings read back
    assert cfg.settings()["sts_loss_weight"] == 3.0 and "per_task" not in cfg.settings()
    assert cfg.updated(sst_train=None).per_task["sst"].train is None
    assert Config().per_task["para"].test_out == "predictions/para-test-output.csv"


def test_bounds_are_declared_with_the_fields() -> None:
    """The range checks come from each field's bounds: __post_init__ keeps the rules that link fields."""
    bounded = {f.name: f.metadata["bounds"] for f in dataclasses.fields(Config) if f.metadata.get("bounds")}
    assert bounded["batch_size"] == "[1, inf)" and bounded["hidden_dropout_prob"] == "[0, 1)"
    with pytest.raises(ValueError, match=r"--moe_experts must be at least 2, got 1"):
        Config(moe_experts=1)
    with pytest.raises(ValueError, match=r"--synthetic_ratio must be in \[0, 1\], got 1.5"):
        Config(synthetic_ratio=1.5)
    with pytest.raises(ValueError, match=r"--hpo_cpus_per_trial must be above 0, got 0"):
        Search(hpo=True, hpo_cpus_per_trial=0)
    with pytest.raises(ValueError, match=r"--hpo_trials: settings of a search; add --hpo"):
        Search(hpo_trials=4)


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
    assert cfg.active_tasks == ("sst", "para", "sts")


def test_each_optimizer_has_its_own_default_lr() -> None:
    assert Config(optimizer="sophiah").learning_rate == 4e-5
    assert Config(optimizer="sophiag", lr=1e-4).learning_rate == 1e-4


def test_task_selection() -> None:
    assert Config(sts=True, sst=True).active_tasks == ("sst", "sts")


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
        Config.from_settings(kwargs)


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
    return config_from_args(parser, parser.parse_args(["--config", str(path), *flags]))


def test_a_yaml_config_file_sets_flags_and_the_command_line_overrides_it(tmp_path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text(
        "optimizer: sophiah\nlr: 1e-4   # YAML reads this as a string: checked as --lr would be\n"
        "epochs: 3\nsts: true\nuse_gpu: false\nmodel: null\nprecision: fp32\n"
    )
    cfg = file_config(f)
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.active_tasks, cfg.precision) == (
        "sophiah",
        1e-4,
        3,
        ("sts",),
        "fp32",
    )
    assert file_config(f, "--epochs", "5", "--no-sts", "--sst").epochs == 5
    assert file_config(f, "--no-sts", "--sst").active_tasks == ("sst",)


def test_a_saved_models_config_reproduces_its_run(tmp_path) -> None:
    ran = Config.from_settings(
        {"optimizer": "sophiag", "rho": 0.03, "batch_size": 16, "para": True, "sts_loss_weight": 3.0, "save_dir": "x"}
    )
    f = tmp_path / "mtbert.json"  # as save_model writes it
    f.write_text(json.dumps({"encoder": {}, "tasks": ["para"], "config": ran.settings(), "dev_metrics": {}}))
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
        read_config_file(tmp_path / name)
    with pytest.raises(MtbertError, match="no such file"):
        read_config_file(tmp_path / "missing.yaml")


def test_a_config_file_is_merged_under_the_flags_given(tmp_path, capsys) -> None:
    """Defaults, then the file, then the flags given: a repeatable flag on the command line replaces the file's, and
    a file's value that fails a check is named with the file."""
    f = tmp_path / "run.yaml"
    f.write_text("sst_train: a.csv,b.csv\nsts_loss_weight: 2\nepochs: 2\n")
    cfg = file_config(f, "--sst_train", "c.csv")
    assert (cfg.per_task["sst"].train, cfg.per_task["sts"].loss_weight, cfg.epochs) == ("c.csv", 2.0, 2)
    assert file_config(f).per_task["sst"].train == "a.csv,b.csv"
    f.write_text("batch_size: 0\n")
    with pytest.raises(SystemExit) as e:
        file_config(f)
    assert e.value.code == 2 and f"{f}: --batch_size must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        file_config(f, "--batch_size", "-1")  # the command line's value: the error names the flag alone
    assert f"{f}:" not in capsys.readouterr().err
