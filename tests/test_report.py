"""mtbert report: runs read back from their TensorBoard logs, the Markdown tables and the plots."""

from dataclasses import replace
from pathlib import Path

import pytest

from mtbert.cli import main
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.lab.report import Run, find_runs, markdown


@pytest.mark.slow
def test_report_of_two_tiny_runs_writes_a_table_and_a_png(cfg: Config, tmp_path: Path, capsys) -> None:
    first = fit(replace(cfg, epochs=2, logdir=f"{cfg.logdir}/a"))
    second = fit(replace(cfg, epochs=3, lr=1e-3, logdir=f"{cfg.logdir}/b"))
    runs = find_runs([cfg.logdir])
    assert [r.folder.parent.name for r in runs] == ["a", "b"] and [len(r.history) for r in runs] == [2, 3]
    assert runs[1].best["mean"] == pytest.approx(second["mean"]) and runs[1].config["lr"] == 1e-3

    main(["report", cfg.logdir, "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out
    table = (tmp_path / "report" / "report.md").read_text()
    assert printed.startswith(table)
    for title in ("SST-5 sentiment: accuracy", "Quora paraphrase: accuracy", "STS similarity: Pearson r"):
        assert f"### {title}" in table
    # a row per run, with the flags that set it apart and its best epoch's metric
    a, b = (r.folder.name for r in runs)
    assert f"| {a} | `--epochs 2 --lr 0.003` | {first['sst/accuracy']:.3f} | 1 |" in table
    assert f"| {b} | `--epochs 3 --lr 0.001` | {second['sts/pearson']:.3f} | 1 |" in table
    png = (tmp_path / "report" / "dev-metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_names_a_folder_without_logs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path)])
    assert e.value.code == 2 and f"{tmp_path}: no TensorBoard logs" in capsys.readouterr().err
    with pytest.raises(MtbertError, match="no such folder"):
        find_runs([tmp_path / "absent"])


def fake(mean: float, seed: int, **config) -> Run:
    return Run(Path(f"run{seed}"), {"seed": seed, "lr": 1e-3, **config}, [{"epoch": 1, "mean": mean}], 60.0)


def test_groups_of_seeds_give_mean_and_std_and_marks_beyond_their_spread() -> None:
    groups = {
        "baseline": [fake(0.70, 1), fake(0.72, 2)],  # 0.710 ± 0.014
        "far": [fake(0.80, 1, moe=True), fake(0.82, 2, moe=True)],  # +0.100: beyond both spreads
        "near": [fake(0.71, 1, lr=1e-4), fake(0.73, 2, lr=1e-4)],  # +0.010: within them
    }
    for g in groups.values():
        for r in g:
            r.config.setdefault("moe", False)
    table = markdown(groups, baseline="baseline")
    assert "| baseline | `(the shared flags)` | 0.710 ± 0.014 |  | 2 | 1.0 |" in table
    assert "| far | `--moe` | 0.810 ± 0.014 | +0.100 * | 2 |" in table
    assert "| near | `--lr 0.0001` | 0.720 ± 0.014 | +0.010 | 2 |" in table
