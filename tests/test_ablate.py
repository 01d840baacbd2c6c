"""mtbert ablate: rows over seeds through the one training loop, resumable, with mean ± std tables."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mtbert.cli import main
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.lab.ablate import ROWS, Ablation, ablate, recipe_flags, row_changes
from mtbert.lab.report import TITLES
from mtbert.lab.runs import run_config

from .conftest import SST_ROWS


def synthetic_file(data: Path) -> Path:
    """The toy SST rows, then generated ones marked as `mtbert synth` marks them."""
    rows = [(i, f"s{i}", s, y) for i, (s, y) in enumerate(SST_ROWS)]
    rows += [
        ("synthetic", f"synthetic-{i}", f"a made up {w} film", y)
        for i, (w, y) in enumerate([("great", 4), ("dull", 1), ("fine", 2)])
    ]
    path = data / "ids-sst-train-syn.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("\tid\tsentence\tsentiment\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_the_rows_over_seeds_resume_and_make_a_table(cfg: Config, tmp_path: Path) -> None:
    base = replace(cfg, epochs=2)
    synthetic_file(Path(cfg.data_dir))
    settings = Ablation(rows="baseline,synthetic,sophiah,unfreeze", seeds=2, ablate_dir=str(tmp_path / "ab"))
    result = ablate(base, settings)
    assert result.trained == 8
    table = result.table.read_text()
    assert table.startswith("# Ablation: 4 rows x 2 seeds (2 epochs x 8 samples per task)")
    assert "| baseline | `(the shared flags)` |" in table and "± " in table and "vs baseline" in table
    assert (
        "| sophiah | `--lr default --optimizer sophiah` |" in table
        and "| unfreeze | `--unfreeze_interval 1` |" in table
    )
    assert "| synthetic | `--sst_train ids-sst-train-syn.csv` |" in table
    for metric in ("sst/accuracy", "sts/pearson"):  # a cell is its runs' mean ± std, as the runs recorded them
        runs = [tmp_path / "ab" / "sophiah" / f"seed-{cfg.seed + k}" / "done.json" for k in (0, 1)]
        values = [json.loads(f.read_text())["best"][metric] for f in runs]
        section = table.split(f"### {TITLES[metric]}", 1)[1]
        row = next(line for line in section.splitlines() if line.startswith("| sophiah |"))
        assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in row, (row, values)
    assert result.plot.read_bytes()[:4] == b"\x89PNG"
    seed = tmp_path / "ab" / "sophiah" / f"seed-{cfg.seed + 1}"
    assert json.loads((seed / "done.json").read_text())["best"]["epoch"] in (1, 2)
    assert not (seed / "model").exists() and not (seed / "state").exists() and (seed / "predictions").is_dir()

    (seed / "done.json").unlink()  # as if stopped in that run: a rerun trains it alone, and logs it once
    again = ablate(base, settings)
    assert again.trained == 1 and len(list((seed / "runs").iterdir())) == 1
    sophiah = [line for line in again.table.read_text().splitlines() if line.startswith("| sophiah |")]
    assert len(sophiah) == 4 and all(" | 2 | " in line for line in sophiah)  # still its 2 seeds, in every table
    with pytest.raises(MtbertError, match=r"other shared flags \(--lr 0.003 -> 0.001\)"):
        ablate(replace(base, lr=1e-3), settings)


def test_ablate_flags_are_checked_before_any_run(cfg: Config, tmp_path: Path, capsys) -> None:
    with pytest.raises(MtbertError, match="--moe sets a row of the ablation"):
        ablate(replace(cfg, moe=True), Ablation(ablate_dir=str(tmp_path / "a")))
    with pytest.raises(MtbertError, match="ids-sst-train-syn.csv: no such file"):
        ablate(cfg, Ablation(rows="baseline,synthetic", ablate_dir=str(tmp_path / "a")))
    with pytest.raises(SystemExit) as e:
        main(["ablate", "--rows", "baseline,dropout", "--ablate_dir", str(tmp_path / "a")])
    assert e.value.code == 2 and "--rows baseline,dropout: the rows are baseline, tagging" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_recipe_flags_are_training_flags(cfg: Config, tmp_path: Path, capsys) -> None:
    assert recipe_flags("--pair_encoding cross --layer_lr_decay 0.9 --sst_loss_weight 2") == {
        "pair_encoding": "cross",
        "layer_lr_decay": 0.9,
        "sst_loss_weight": 2.0,
    }
    with pytest.raises(MtbertError, match="--recipe '--nonsense 1': --nonsense 1; give training flags"):
        recipe_flags("--nonsense 1")
    with pytest.raises(SystemExit) as e:
        recipe_flags("--layer_lr_decay 2")
    assert e.value.code == 2 and "--layer_lr_decay must be in (0, 1], got 2.0" in capsys.readouterr().err
    base = cfg.updated(sts_loss_weight=2.0)  # a shared flag that the recipe names takes its value in that row
    changes = row_changes(base, Ablation(rows="baseline", recipe="--sts_loss_weight 3 --epochs 3"))
    assert changes == {"baseline": {}, "recipe": {"sts_loss_weight": 3.0, "epochs": 3}}
    recipe = run_config(base, changes["recipe"], tmp_path / "r").settings()
    assert (recipe["sts_loss_weight"], recipe["epochs"]) == (3.0, 3)
    baseline = run_config(base, changes["baseline"], tmp_path / "b").settings()
    assert (baseline["sts_loss_weight"], baseline["epochs"]) == (2.0, base.epochs) and base.epochs != 3


@pytest.mark.slow
def test_every_row_through_the_command_line(cfg: Config, tmp_path: Path, capsys) -> None:
    synthetic_file(Path(cfg.data_dir))
    flags = [
        "--model",
        cfg.model,
        "--data_dir",
        cfg.data_dir,
        "--epochs",
        "2",
        "--samples_per_epoch",
        "8",
        "--batch_size",
        "8",
        "--lr",
        "3e-3",
        "--precision",
        "fp32",
        "--scheduler",
        "none",
        "--tag_cache",
        str(tmp_path / "tags"),
        "--seeds",
        "2",
        "--ablate_dir",
        str(tmp_path / "ab"),
        "--recipe",
        "--ema 0.9 --pair_encoding cross",
    ]
    main(["ablate", *flags])
    out = capsys.readouterr().out
    assert len(ROWS) == 12
    for row in (*ROWS, "recipe"):
        assert f"| {row} | " in out
    assert f"({2 * (len(ROWS) + 1)} runs trained now)" in out
    recipe = json.loads((tmp_path / "ab" / "ablation.json").read_text())["recipe"]
    assert recipe == {"ema": 0.9, "pair_encoding": "cross"}
    main(["ablate", *flags])
    assert "(0 runs trained now)" in capsys.readouterr().out
