"""`mtbert ablate`: the original project's ablation rows (baseline, tag embeddings, synthetic SST data, SophiaH) and
ours (gradual unfreezing, a mixture of experts, layer-wise learning-rate decay, an average of the weights, SMART,
PCGrad, square-root task sampling, cross-encoded pairs), each
trained over several seeds with the same shared flags, then compared as mean ± std per task with the report's table
and plots (mtbert.lab.report).

    ablation/
      ablation.json        the shared settings (a rerun must have the same ones; rows and seeds may change)
      ROW/seed-S/          a run: runs/ (TensorBoard), predictions/, done.json when it finished (model/ and state/
                           while it runs; kept with --keep_models)
      ablation.md          the tables, dev-metrics.png the plots

A rerun skips finished runs and continues a stopped one from its --resume state.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtbert.config import Config, add_config_arguments, changed_settings, config_from_args, opt
from mtbert.errors import Interrupted, MtbertError
from mtbert.lab.report import find_runs, markdown, plot
from mtbert.lab.runs import run_config, saved_settings

log = logging.getLogger(__name__)
ROWS = (
    "baseline",
    "tagging",
    "synthetic",
    "sophiah",
    "unfreeze",
    "moe",
    "layer_lr_decay",
    "ema",
    "smart",
    "pcgrad",
    "task_sampling",
    "cross",
)
# Each row's flags, set on top of the shared ones; the synthetic row's file comes from --synthetic_train.
ROW_FLAGS = {
    "baseline": {},
    "tagging": {"additional_input": True},
    "synthetic": {"sst_train": None},
    "sophiah": {"optimizer": "sophiah", "lr": None},
    "unfreeze": {"unfreeze_interval": 1},
    "moe": {"moe": True},
    "layer_lr_decay": {"layer_lr_decay": 0.95},
    "ema": {"ema": 0.99},
    "smart": {"smart": 1.0},
    "pcgrad": {"grad_surgery": "pcgrad"},
    "task_sampling": {"task_sampling": "sqrt"},
    "cross": {"pair_encoding": "cross"},
}
SYNTHETIC_FILE = "ids-sst-train-syn.csv"  # the original project's GPT-2 file: the SST rows, then generated ones


@dataclass(frozen=True)
class Ablation:
    rows: str = opt(
        ",".join(ROWS),
        "the rows to train, comma-separated: baseline (the shared flags), tagging (--additional_input), synthetic "
        "(--sst_train --synthetic_train), sophiah (--optimizer sophiah at its default lr), unfreeze "
        "(--unfreeze_interval 1), moe (--moe), layer_lr_decay (--layer_lr_decay 0.95), ema (--ema 0.99), smart "
        "(--smart 1), pcgrad (--grad_surgery pcgrad), task_sampling (--task_sampling sqrt), cross (--pair_encoding "
        "cross)",
    )
    seeds: int = opt(3, "runs of each row, with seeds --seed, --seed + 1, ...")
    ablate_dir: str = opt("ablation", "the folder of the runs, the table (ablation.md) and the plots")
    synthetic_train: str | None = opt(
        None,
        f"the synthetic row's SST training file(s) (default: DATA_DIR/{SYNTHETIC_FILE}, the original project's "
        "GPT-2 rows after the SST ones; or ORIGINAL,GENERATED as `mtbert synth` prints)",
    )
    keep_models: bool = opt(False, "keep every run's best model (by default a finished run keeps its logs only)")
    recipe: str | None = opt(
        None,
        "adds a row named recipe: these training flags on top of the shared ones (a shared flag that it names takes "
        "the recipe's value in that row), quoted as one argument (--recipe '--pair_encoding cross --layer_lr_decay "
        "0.95', --recipe '--epochs 8 --scheduler cosine'), to compare a combination with the baseline",
    )

    def __post_init__(self) -> None:
        unknown = [r for r in self.row_names if r not in ROWS]
        if unknown or not self.row_names:
            raise ValueError(f"--rows {self.rows}: the rows are {', '.join(ROWS)}")
        if self.seeds < 1:
            raise ValueError(f"--seeds {self.seeds}: at least 1")

    @property
    def row_names(self) -> list[str]:
        return [r.strip() for r in self.rows.split(",") if r.strip()]


@dataclass(frozen=True)
class AblationResult:
    table: Path
    plot: Path
    trained: int  # runs trained by this call (the others had finished before)


def row_changes(base: Config, ablation: Ablation) -> dict[str, dict]:
    """Each row's flags; a row's flag set among the shared ones would blur the comparison, so it is refused."""
    defaults, settings = Config().settings(), base.settings()
    row_flags = {flag for flags in ROW_FLAGS.values() for flag in flags} - {"lr"}  # lr: the shared one stands
    for flag in sorted(row_flags):
        if settings[flag] != defaults[flag]:
            raise MtbertError(
                f"--{flag} sets a row of the ablation: leave it out of the shared flags (--rows picks the rows)"
            )
    synthetic = ablation.synthetic_train or str(Path(base.data_dir) / SYNTHETIC_FILE)
    changes = {name: dict(ROW_FLAGS[name]) for name in ablation.row_names}
    if "synthetic" in changes:
        for path in synthetic.split(","):
            if not Path(path.strip()).is_file():
                raise MtbertError(
                    f"--synthetic_train {path}: no such file (the synthetic row trains on it; write one "
                    "with `mtbert synth`, or leave the row out with --rows)"
                )
        changes["synthetic"]["sst_train"] = synthetic
    if ablation.recipe is not None:  # its flags override the shared ones in its row (--epochs 8: a longer run)
        changes["recipe"] = recipe_flags(ablation.recipe)
    if "tagging" in changes and importlib.util.find_spec("spacy") is None:
        raise MtbertError("the tagging row needs spaCy: pip install 'mtbert[tagging]' (or leave it out with --rows)")
    return changes


def recipe_flags(recipe: str) -> dict[str, Any]:
    """The training flags of --recipe, each named as its setting, with its value (checked as training checks it)."""
    parser = argparse.ArgumentParser(prog="mtbert ablate --recipe", add_help=False)
    add_config_arguments(parser)
    args, extra = parser.parse_known_args(shlex.split(recipe))
    if extra or not vars(args):
        raise MtbertError(f"--recipe {recipe!r}: {' '.join(extra) or 'no flags'}; give training flags, as to train")
    if "seed" in vars(args):
        raise MtbertError("--recipe: the seeds are the ablation's (--seed, --seeds)")
    settings = config_from_args(parser, args).settings()
    return {name: settings[name] for name in vars(args)}


def check_same_ablation(root: Path, base: Config, recipe: dict | None) -> None:
    """The first run writes the shared settings (and the recipe's) to ablation.json; a rerun must have the same."""
    saved = saved_settings(root / "ablation.json", {"config": base.settings(), "recipe": recipe})
    if saved is None:
        return
    if recipe is not None and saved.get("recipe") not in (None, recipe):
        raise MtbertError(
            f"--ablate_dir {root} holds a recipe row of other flags ({saved['recipe']}); use the same --recipe to "
            "continue it, or another --ablate_dir"
        )
    changed = changed_settings(saved["config"], base)
    if changed:
        raise MtbertError(
            f"--ablate_dir {root} holds an ablation with other shared flags ({'; '.join(changed)}); use "
            "the same flags to continue it, or another --ablate_dir"
        )


def ablate(base: Config, ablation: Ablation) -> AblationResult:
    """Trains every row's runs that have not finished (seed by seed, so that a stopped ablation has whole seeds),
    then writes the table and the plots."""
    from mtbert.fitting import fit

    if base.resume is not None:
        raise MtbertError("--resume does not go with mtbert ablate (it resumes its own runs)")
    root = Path(ablation.ablate_dir)
    changes = row_changes(base, ablation)
    check_same_ablation(root, base, changes.get("recipe"))
    runs = [(name, base.seed + k) for k in range(ablation.seeds) for name in changes]
    trained = 0
    for n, (name, seed) in enumerate(runs, start=1):
        folder = root / name / f"seed-{seed}"
        if (folder / "done.json").exists():
            continue
        if not (folder / "state").exists():  # nothing to continue from: the run starts again, its old logs gone
            shutil.rmtree(folder, ignore_errors=True)
        cfg = run_config(base, {**changes[name], "seed": seed}, folder)
        flags = (
            " ".join(f"--{k}" if v is True else f"--{k} {v}" for k, v in changes[name].items()) or "the shared flags"
        )
        log.info("ablation run %d/%d: %s, seed %d (%s)", n, len(runs), name, seed, flags)
        started = time.perf_counter()
        try:
            best = fit(cfg)
        except KeyboardInterrupt:
            raise Interrupted(
                f"ablation stopped in run {n}/{len(runs)} ({name}, seed {seed}); the same command continues it"
            ) from None
        minutes = (time.perf_counter() - started) / 60
        (folder / "done.json").write_text(json.dumps({"best": best, "minutes": minutes}, indent=2) + "\n")
        shutil.rmtree(folder / "state", ignore_errors=True)
        if not ablation.keep_models:
            shutil.rmtree(folder / "model", ignore_errors=True)
        log.info("ablation run %d/%d done in %.1f min: mean dev score %.3f", n, len(runs), minutes, best["mean"])
        trained += 1
    groups = {
        name: find_runs([root / name / f"seed-{base.seed + k}" / "runs" for k in range(ablation.seeds)])
        for name in changes
    }
    for name, group in groups.items():  # a run's whole wall time (loading, test predictions), not its log's span
        for k, run in enumerate(group):
            run.seconds = 60 * json.loads((root / name / f"seed-{base.seed + k}" / "done.json").read_text())["minutes"]
    picture = plot(groups, root / "dev-metrics.png")
    table = root / "ablation.md"
    head = (
        f"# Ablation: {len(changes)} rows x {ablation.seeds} seeds ({base.epochs} epochs x "
        f"{base.samples_per_epoch} samples per task)\n\n"
    )
    text = markdown(groups, baseline="baseline" if "baseline" in groups else None)
    table.write_text(head + text + f"\n![dev metrics per epoch]({picture.name})\n", encoding="utf-8")
    return AblationResult(table, picture, trained)
