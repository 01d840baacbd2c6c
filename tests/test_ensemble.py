"""Ensembles: the mean of several trained models' head outputs, through the API and `mtbert ensemble`."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mtbert
from mtbert.cli import main
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.fitting import fit


@pytest.fixture()
def two_models(cfg: Config, tmp_path: Path) -> tuple[Config, Path, Path]:
    """Two models of the toy data, trained with different seeds."""
    fit(replace(cfg, epochs=2))
    first = Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask"
    other = replace(cfg, epochs=2, seed=5, save_dir=str(tmp_path / "models-5"))
    fit(other)
    return cfg, first, Path(other.save_dir) / first.name


def dev_data(model, cfg: Config) -> dict:
    return {t: model.read(t, Path(cfg.data_dir) / f"{name}-dev.csv") for t, name in NAMES.items()}


NAMES = {"sst": "ids-sst", "para": "quora", "sts": "sts"}


def test_an_ensemble_of_one_model_is_that_model(two_models) -> None:
    cfg, first, _ = two_models
    single = mtbert.load(first, precision="fp32")
    alone = mtbert.load([first], precision="fp32")
    data = dev_data(single, cfg)
    for t, out in single.outputs(data).items():
        assert torch.equal(alone.outputs(data)[t], out)
    one = mtbert.model.ensemble.Ensemble([single.model])
    for t, out in one(dict((t, d.tokens) for t, d in data.items())).items():
        torch.testing.assert_close(out, single.outputs(data)[t])


def test_an_ensemble_averages_the_models_head_outputs(two_models) -> None:
    cfg, first, second = two_models
    a, b = mtbert.load(first, precision="fp32"), mtbert.load(second, precision="fp32")
    both = mtbert.load([first, second], precision="fp32")
    data = dev_data(a, cfg)
    for t, out in both.outputs(data).items():
        torch.testing.assert_close(out, (a.outputs(data)[t] + b.outputs(data)[t]) / 2)
        assert not torch.allclose(out, a.outputs(data)[t])  # the seeds trained different models
    sentiment = both.sentiment(["a fine film", "dull"])
    expected = torch.softmax(
        (a._raw("sst", [["a fine film", "dull"]]) + b._raw("sst", [["a fine film", "dull"]])) / 2, -1
    )
    torch.testing.assert_close(torch.tensor([s.probabilities for s in sentiment]), expected)


def test_ensemble_command_prints_each_model_and_writes_the_ensembles_predictions(two_models, tmp_path, capsys) -> None:
    cfg, first, second = two_models
    out = {f"--{t}_{s}_out": str(tmp_path / "ens" / f"{t}-{s}.csv") for t in NAMES for s in ("dev", "test")}
    main(
        ["ensemble", str(first), str(second), "--data_dir", cfg.data_dir, "--precision", "fp32", *sum(out.items(), ())]
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[-3:]] == [str(first), str(second), "ensemble"]
    main(["evaluate", "--checkpoint", f"{first},{second}", "--data_dir", cfg.data_dir, "--precision", "fp32"])
    scored = json.loads(capsys.readouterr().out)
    assert lines[-1].split()[1:] == [
        f"{scored[k]:.3f}" for k in ("sst/accuracy", "para/accuracy", "sts/pearson", "mean")
    ]
    for flag, path in out.items():  # (the toy data has no Quora test file)
        assert Path(path).is_file() == (flag != "--para_test_out"), flag
    # the written dev predictions are the ensemble's
    both = mtbert.load([first, second], precision="fp32")
    written = [line.split(" , ")[1].strip() for line in Path(out["--sst_dev_out"]).read_text().splitlines()[1:]]
    sst = both.read("sst", Path(cfg.data_dir) / "ids-sst-dev.csv")
    assert written == [str(r.label) for r in both.sentiment(sst.examples.texts[0])]


def test_an_ensemble_of_models_of_other_tasks_is_refused(cfg: Config, two_models, tmp_path) -> None:
    _, first, _ = two_models
    sst_only = replace(cfg, epochs=1, sst=True, save_dir=str(tmp_path / "sst-only"))
    fit(sst_only)
    other = next(Path(sst_only.save_dir).iterdir())
    with pytest.raises(MtbertError, match="not one ensemble: model 2 has the tasks sst, model 1 sst, para, sts"):
        mtbert.load([first, other])


def test_score_gives_evaluates_metrics_for_the_written_predictions(two_models, tmp_path, capsys) -> None:
    """`mtbert score` of the dev predictions `mtbert ensemble` wrote equals `mtbert evaluate` of the ensemble."""
    cfg, first, second = two_models
    out = {f"--{t}_dev_out": str(tmp_path / "ens" / f"{t}-dev-output.csv") for t in NAMES}
    main(
        ["ensemble", str(first), str(second), "--data_dir", cfg.data_dir, "--precision", "fp32", *sum(out.items(), ())]
    )
    capsys.readouterr()
    main(["evaluate", "--checkpoint", f"{first},{second}", "--data_dir", cfg.data_dir, "--precision", "fp32"])
    evaluated = json.loads(capsys.readouterr().out)
    main(["score", str(tmp_path / "ens"), "--data_dir", cfg.data_dir])
    assert json.loads(capsys.readouterr().out) == pytest.approx(evaluated)
    bad = tmp_path / "ens" / "sts-dev-output.csv"
    bad.write_text("id \t Predicted_Similiary \nabc , 2.5 , 1\n")
    with pytest.raises(SystemExit) as e:
        main(["score", str(tmp_path / "ens"), "--data_dir", cfg.data_dir])
    assert e.value.code == 2 and "sts-dev-output.csv, line 2: expected `id , prediction`" in capsys.readouterr().err
