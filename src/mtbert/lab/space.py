"""A search space: which Config fields a search varies and how, checked against the fields before anything runs.

A space maps field names to one distribution each, `{kind: arguments}`:

    lr: {loguniform: [1.0e-5, 3.0e-4]}      # low > 0; drawn evenly in log space
    hidden_dropout_prob: {uniform: [0.0, 0.3]}
    hess_interval: {int: [5, 20]}           # both ends included
    batch_size: {choice: [16, 32, 64]}      # any values of the field's type

Ray Tune's own domains are made from it only in `to_tune`, so that the space can be read and checked without Ray.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from mtbert.config import TASK_NAMES, Config, Search, flags_of, value_type
from mtbert.errors import MtbertError
from mtbert.outputs import parse_mapping, readable_file

Space = dict[str, tuple[str, list]]  # field -> (kind, arguments)
KINDS = ("uniform", "loguniform", "int", "choice")
# What each trial sets itself: where it writes, and that it is one training
PER_TRIAL = {
    "resume",
    "save_every",
    "save_dir",
    "logdir",
    "tensorboard_subfolder",
    "smoketest",
    *(f"{t}_{s}_out" for t in TASK_NAMES for s in ("dev", "test")),
}


def default_space(cfg: Config) -> Space:
    """The space searched without --hpo_space: the learning rates and their layer-wise decay, the weight average,
    task sampling, gradient surgery, SMART, pair encoding, the lr schedule, dropout, weight decay, batch size and the
    active tasks' loss weights; with Sophia also its clipping scale rho and the interval of its Hessian estimates."""
    sophia = cfg.optimizer != "adamw"
    space: Space = {
        "lr": ("loguniform", [5e-6, 1e-4] if sophia else [1e-5, 3e-4]),
        "head_lr": ("loguniform", [1e-4, 3e-3]),
        "hidden_dropout_prob": ("uniform", [0.0, 0.3]),
        "weight_decay": ("uniform", [0.0, 0.1]),
        "batch_size": ("choice", [16, 32, 64]),
        "layer_lr_decay": ("uniform", [0.8, 1.0]),
        "ema": ("choice", [0.0, 0.99, 0.999]),
        "task_sampling": ("choice", ["equal", "proportional", "sqrt", "annealed"]),
        "grad_surgery": ("choice", ["none", "pcgrad"]),
        "smart": ("choice", [0.0, 1.0]),
        "pair_encoding": ("choice", ["bi", "cross"]),
        "scheduler": ("choice", ["plateau", "cosine"]),
        **{f"{t}_loss_weight": ("uniform", [0.5, 3.0]) for t in cfg.active_tasks if t in TASK_NAMES},
    }
    if sophia:
        space |= {"rho": ("loguniform", [0.005, 0.1]), "hess_interval": ("choice", [5, 10, 20])}
    return space


def read_space(path: str | Path, cfg: Config) -> Space:
    """The space of an --hpo_space file, each entry checked (see `check_space`); errors name the file and entry."""
    path = readable_file("--hpo_space", path)
    entries = parse_mapping(path, path.read_text(encoding="utf-8"))
    space: Space = {}
    kinds = {name: flag.kind for name, flag in flags_of(Config).items()}
    for name, spec in entries.items():
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
            raise MtbertError(
                f"{path}: {name}: expected one of {', '.join(KINDS)} with its values, as "
                f"`{name}: {{uniform: [0.0, 0.3]}}`, got {spec!r}"
            )
        kind, args = next(iter(spec.items()))
        if isinstance(args, list) and name in kinds and _value_type(kinds[name]) == "float":
            args = [_number(v) for v in args]  # YAML reads 1e-5 (no dot) as a string
        space[str(name)] = (kind, args)
    check_space(space, cfg, where=str(path))
    return space


def check_space(space: Space, cfg: Config, where: str) -> None:
    """Every name is a Config field a trial may vary, every distribution fits its field's type, and every end and
    choice is a value the field accepts alongside the other settings (`cfg`)."""
    if not space:
        raise MtbertError(f"{where}: an empty search space; name at least one setting")
    kinds = {name: flag.kind for name, flag in flags_of(Config).items()}
    for name, (kind, args) in space.items():
        at = f"{where}: {name}"
        if name in flags_of(Search) or name in PER_TRIAL:
            raise MtbertError(f"{at}: a setting of the search or of where each trial writes, not one to search")
        if name not in kinds:
            raise MtbertError(f"{at}: not a setting; the settings are the flags of `mtbert train --help`, without --")
        if not isinstance(args, list) or not args:
            raise MtbertError(f"{at}: {kind} takes a list of values, got {args!r}")
        field_type = _value_type(kinds[name])
        if kind == "choice":
            for value in args:
                if not _fits(value, field_type):
                    raise MtbertError(f"{at}: the choice {value!r} is not a value of --{name}")
        else:
            wanted = "int" if kind == "int" else "float"
            if field_type != wanted or len(args) != 2:
                raise MtbertError(
                    f"{at}: {kind} takes [low, high] of a setting of {wanted} values; --{name} "
                    f"takes {field_type} values"
                )
            low, high = args
            if not all(_fits(v, field_type) for v in args) or not low < high:
                raise MtbertError(f"{at}: {kind} takes [low, high] numbers with low < high, got {args!r}")
            if kind == "loguniform" and low <= 0:
                raise MtbertError(f"{at}: loguniform needs low > 0, got {low!r}")
        for value in args if kind == "choice" else args[:2]:
            try:
                cfg.updated(**{name: value})
            except ValueError as e:
                raise MtbertError(f"{at}: {value!r} does not fit the other settings: {e}") from None


def _value_type(kind: object) -> str | tuple:
    """What a field holds: "int", "float", "bool", "str", or a Literal's choices (None is never searched)."""
    kind = value_type(kind)
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)
    return kind.__name__


def _number(value: object) -> object:
    """A string that reads as a number, as that number; anything else as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _fits(value: object, field_type: str | tuple) -> bool:
    if isinstance(field_type, tuple):
        return value in field_type
    if isinstance(value, bool) or field_type == "bool":
        return isinstance(value, bool) and field_type == "bool"
    return isinstance(value, {"int": int, "float": (int, float), "str": str}[field_type])


def to_tune(space: Space) -> dict:
    """Ray Tune's domains of a space (Optuna draws from them through Ray's OptunaSearch)."""
    from ray import tune

    make = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "int": lambda a: tune.randint(a[0], a[1] + 1),  # Ray's upper end is excluded
        "choice": tune.choice,
    }
    return {name: make[kind](args) for name, (kind, args) in space.items()}


def describe(space: Space) -> str:
    """One line of a space, for the log: `lr loguniform(1e-05, 0.0003), ...`."""
    return ", ".join(f"{name} {kind}({', '.join(map(str, args))})" for name, (kind, args) in space.items())
