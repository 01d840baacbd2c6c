import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError

import pytest

from mtbert.cli import build_parser, format_table, main, package_version, train_parser
from mtbert.config import Config, config_from_args

from .conftest import REPO

ORIGINAL = "--option finetune --optimizer adamw --batch_size 4 --lr 1e-5 --epochs 3 --use_gpu --sst --sts"


def test_original_flags_become_a_config() -> None:
    parser = train_parser()
    cfg = config_from_args(parser, parser.parse_args(ORIGINAL.split()))
    assert cfg == Config(option="finetune", batch_size=4, lr=1e-5, epochs=3, use_gpu=True, sst=True, sts=True)
    assert cfg.active_tasks == ("sst", "sts")


def test_train_subcommand_takes_the_same_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", *ORIGINAL.split()])
    assert config_from_args(parser, args) == config_from_args(
        train_parser(), train_parser().parse_args(ORIGINAL.split())
    )


def test_sophia_flags_reach_the_config() -> None:
    parser = train_parser()
    args = parser.parse_args("--optimizer sophiah --rho 0.02 --hess_interval 5 --beta1 0.9".split())
    cfg = config_from_args(parser, args)
    assert (cfg.optimizer, cfg.rho, cfg.hess_interval, cfg.beta1) == ("sophiah", 0.02, 5, 0.9)


def test_rho_without_sophia_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--rho", "0.01"])
    assert e.value.code == 2
    assert "--rho is a Sophia setting" in capsys.readouterr().err


@pytest.mark.slow
def test_help_lists_the_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "mtbert", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "evaluate", "predict", "encode", "data"):
        assert command in out
    version = subprocess.run([sys.executable, "-m", "mtbert", "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"mtbert \d+\.\d+\.\d+\n", version.stdout)


def test_version_of_a_source_tree_without_install(monkeypatch) -> None:
    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("mtbert.cli.version", not_installed)
    assert package_version() == "(not installed: run from a source tree)"
    with pytest.raises(SystemExit) as e:  # the parser still builds, and --version says so
        build_parser().parse_args(["--version"])
    assert e.value.code == 0


@pytest.mark.slow
def test_multitask_classifier_script_parses_the_original_flags() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "multitask_classifier.py"), "--help"], capture_output=True, text=True, check=True
    )
    for flag in ("--option", "--samples_per_epoch", "--hidden_dropout_prob", "--sst_dev_out", "--use_gpu"):
        assert flag in result.stdout


def test_format_table() -> None:
    table = format_table(
        [{"sst/accuracy": 0.5, "mean": 0.5, "epoch": 1, "train_loss": 1.25, "train_seconds": 11.0, "seconds": 12.3}]
    )
    assert table.splitlines()[1].split() == ["epoch", "train_loss", "sst/accuracy", "mean", "train_seconds", "seconds"]
    assert table.splitlines()[2].split() == ["1", "1.250", "0.500", "0.500", "11.0", "12.3"]


def test_train_reads_a_config_file_before_its_flags(tmp_path, monkeypatch, capsys) -> None:
    ran: list[Config] = []
    monkeypatch.setattr("mtbert.fitting.fit", lambda cfg, report=None: ran.append(cfg))
    f = tmp_path / "run.yaml"
    f.write_text("optimizer: sophiah\nbatch_size: 8\nepochs: 2\n")
    main(["train", "--config", str(f), "--epochs", "5"])
    main(["train", "--epochs", "5", "--config", str(f)])  # wherever --config stands
    main(["--config", str(f), "--epochs", "5"], parser=train_parser())  # multitask_classifier.py
    assert [(c.optimizer, c.batch_size, c.epochs) for c in ran] == [("sophiah", 8, 5)] * 3
    f.write_text("optimizer: adamw\nrho: 0.01\n")  # a cross-field check fails as for flags
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(f)])
    assert e.value.code == 2 and "--rho is a Sophia setting" in capsys.readouterr().err
    f.write_text("epochs: 0.5\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(f)])
    assert e.value.code == 2 and f"error: {f}: epochs: invalid int value: '0.5'" in capsys.readouterr().err
