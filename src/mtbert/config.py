"""The one typed run configuration, its validation, and the command-line parser generated from it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mtbert.errors import MtbertError
from mtbert.outputs import readable_file

TASK_NAMES = ("sst", "para", "sts")


def opt(default: object, doc: str, repeatable: bool = False) -> typing.Any:
    """A config field with its one-line help text (shown by --help); a repeatable flag given twice or more holds the
    values joined by commas."""
    return field(default=default, metadata={"help": doc, "repeatable": repeatable})


@dataclass(frozen=True)
class Config:
    # --- run
    option: Literal["pretrain", "finetune"] = opt(
        "finetune", "pretrain: freeze the encoder and train only the heads; finetune: train everything"
    )
    seed: int = opt(11711, "random seed; the same seed gives the same numbers on CPU")
    use_gpu: bool = opt(False, "train on CUDA")
    model: str | None = opt(None, "Hugging Face BERT checkpoint folder to start from (default: packaged MiniLM)")
    checkpoint: str | None = opt(None, "an mtbert model folder (saved by training) to start from instead of --model")
    save_dir: str = opt("models", "where the best model of the run is saved")
    resume: str | None = opt(
        None,
        "folder for the full training state, saved every epoch (and every --save_every steps); "
        "if it already holds one, training continues from it",
    )
    save_every: int = opt(0, "also save the training state to --resume every this many optimizer steps (0: off)")
    logdir: str = opt("runs", "TensorBoard log folder")
    tensorboard_subfolder: str | None = opt(None, "a folder inside --logdir for this run's TensorBoard logs")
    smoketest: bool = opt(
        False,
        "check a set-up in seconds: one epoch of 4 batches of 8 examples per task, scored on the first 32 dev rows "
        "of each task; all six prediction files are written (a task without a test file: on those dev rows)",
    )
    local_files_only: bool = opt(
        False, "accepted for the original project's commands: mtbert never downloads a model at run time anyway"
    )
    # --- tasks and data
    sst: bool = opt(False, "train on SST-5 sentiment (with none of --sst --para --sts: all three)")
    para: bool = opt(False, "train on Quora paraphrase detection")
    sts: bool = opt(False, "train on STS similarity")
    data_dir: str = opt("data", "folder with the CS224N CSV files (see `mtbert data fetch`)")
    sst_train: str | None = opt(
        None,
        "default: DATA_DIR/ids-sst-train.csv; several files: a.csv,b.csv or the flag repeated (a row that repeats one "
        "of an earlier file is left out, with a warning)",
        repeatable=True,
    )
    sst_dev: str | None = opt(None, "default: DATA_DIR/ids-sst-dev.csv")
    sst_test: str | None = opt(None, "default: DATA_DIR/ids-sst-test-student.csv")
    para_train: str | None = opt(None, "default: DATA_DIR/quora-train.csv")
    para_dev: str | None = opt(None, "default: DATA_DIR/quora-dev.csv")
    para_test: str | None = opt(None, "default: DATA_DIR/quora-test-student.csv (skipped if absent)")
    sts_train: str | None = opt(None, "default: DATA_DIR/sts-train.csv")
    sts_dev: str | None = opt(None, "default: DATA_DIR/sts-dev.csv")
    sts_test: str | None = opt(None, "default: DATA_DIR/sts-test-student.csv")
    synthetic_ratio: float | None = opt(
        None,
        "at most this share of each epoch's examples of a task may be generated rows (rows whose index column reads "
        "`synthetic`, as `mtbert synth` writes them and the original project's ids-sst-train-syn.csv has), drawn "
        "without replacement; the rest are original rows (default: no cap, generated rows count as any other)",
    )
    sst_dev_out: str = opt("predictions/sst-dev-output.csv", "dev predictions for SST")
    sst_test_out: str = opt("predictions/sst-test-output.csv", "test predictions for SST")
    para_dev_out: str = opt("predictions/para-dev-output.csv", "dev predictions for Quora")
    para_test_out: str = opt("predictions/para-test-output.csv", "test predictions for Quora")
    sts_dev_out: str = opt("predictions/sts-dev-output.csv", "dev predictions for STS")
    sts_test_out: str = opt("predictions/sts-test-output.csv", "test predictions for STS")
    max_length: int = opt(128, "sentences are truncated to this many word pieces")
    additional_input: bool = opt(
        False,
        "add POS and NER tag embeddings to the input embeddings, as the original project did: spaCy's fine-grained "
        "tags and IOB entity types of every word, given to its word pieces (needs the [tagging] extra, or a "
        "filled --tag_cache)",
    )
    tag_cache: str | None = opt(None, "folder of the tags of every sentence seen, shared by all runs (default: "
                                "$XDG_CACHE_HOME/mtbert/tags, ~/.cache/mtbert/tags)")  # fmt: skip
    # --- speed
    precision: Literal["auto", "fp32", "bf16"] = opt(
        "auto",
        "bf16: bfloat16 autocast of the forward pass (weights and optimizer stay float32); auto: bf16 on "
        "CUDA and on CPUs with bf16 instructions (AVX512-BF16 or AMX), else fp32",
    )
    chunk_tokens: int | None = opt(
        None,
        "padded tokens per encoder pass: a step's sentences are sorted by length and encoded in chunks of at "
        "most this many (default: 1024 on CPU, 16384 on CUDA)",
    )
    unpad: bool = opt(
        False,
        "encode only the real tokens of a pass: embeddings, linear layers, norms and dropout skip the padding, "
        "and only attention sees the sentences padded. For a GPU's large passes, which pad much; a CPU's small "
        "passes pad little (see docs/speed.md)",
    )
    torch_compile: Literal["off", "on", "cudagraphs"] = opt(
        "off",
        "on: torch.compile the encoder and the pooling into fused kernels, compiled on the first step and again "
        "for evaluation (passes padded to a multiple of 16 tokens). cudagraphs: also replay them as CUDA graphs, "
        "one per shape (CUDA only; elsewhere as on), with one pass per step (--chunk_tokens is then not used). "
        "For a GPU, whose small-encoder steps are bound by launching kernels; on a CPU compiling is slower",
    )
    graph_steps: bool = opt(
        False,
        "record each shape of training step once as one CUDA graph (forward, backward, clipping and the AdamW "
        "update) and replay it, so that the GPU does not wait for Python to launch a step's kernels one by one. A "
        "step's sentences form one pass, padded to a multiple of 16 tokens (with --unpad: a multiple of 1,024 real "
        "tokens, attending in three groups of sentences sorted by length); the first step of each shape runs "
        "eagerly. --optimizer adamw only, one process; with --torch_compile on the recorded kernels are the "
        "compiled ones (and attention sees the whole pass). Off CUDA the same steps run eagerly",
    )
    activation_checkpointing: bool = opt(
        False,
        "recompute each encoder layer's activations in the backward pass instead of keeping them from the forward "
        "pass: the same numbers, a fraction of the activation memory, about a third more compute (a soft --moe "
        "keeps every expert's activations: see README for its memory with and without)",
    )
    # --- optimisation
    optimizer: Literal["adamw", "sophiag", "sophiah"] = opt(
        "adamw", "adamw, or Sophia with the Gauss-Newton-Bartlett (sophiag) or Hutchinson (sophiah) Hessian estimate"
    )
    lr: float | None = opt(
        None,
        "learning rate of the shared encoder and pooling (default: 8e-5 for adamw, "
        "4e-5 for Sophia, whose clipped steps move every coordinate by up to lr)",
    )
    head_lr: float | None = opt(None, "learning rate of the task heads (default: --lr)")
    beta1: float | None = opt(None, "EMA factor of the gradient (default: 0.9 for adamw, 0.965 for Sophia)")
    beta2: float | None = opt(
        None, "EMA factor of the squared gradient (adamw, default 0.999) or of the Hessian estimate (Sophia, 0.99)"
    )
    rho: float | None = opt(
        None,
        "Sophia's clipping scale: a coordinate takes a Newton step when |m| < rho * h, else a step of lr "
        "(default: 0.05 for sophiag, 0.01 for sophiah)",
    )
    hess_interval: int = opt(10, "Sophia: optimizer steps between refreshes of the diagonal Hessian estimate")
    weight_decay: float = opt(0.01, "decoupled weight decay of AdamW")
    batch_size: int = opt(
        64,
        "examples per task in each step (each step sums the losses of all tasks); with torchrun, the global "
        "batch, split between the processes",
    )
    epochs: int = opt(10, "number of epochs")
    samples_per_epoch: int = opt(10000, "examples drawn per task and epoch (random, without replacement)")
    scheduler: Literal["plateau", "cosine", "none"] = opt(
        "plateau", "plateau: halve the lr when the dev score stalls; cosine: decay to 0 over the run"
    )
    sst_loss_weight: float = opt(1.0, "weight of the SST cross-entropy in the summed loss of a step")
    para_loss_weight: float = opt(1.0, "weight of the Quora binary cross-entropy in the summed loss of a step")
    sts_loss_weight: float = opt(
        1.0,
        "weight of the STS squared error in the summed loss of a step (the short default of `make train` uses 3: "
        "STS r rises with it, see README)",
    )
    clip: float = opt(0.25, "gradient-norm clipping (0: off)")
    hidden_dropout_prob: float = opt(
        0.1, "dropout of the encoder's hidden states and in the heads (attention dropout stays the checkpoint's)"
    )
    unfreeze_interval: int = opt(
        0,
        "gradual unfreezing: training starts with the heads, the pooling and the top encoder layer trainable, and "
        "every this many epochs the next layer down joins (the embeddings last), under either --option; the "
        "optimizer and the lr schedule run on. 0: off",
    )
    # --- mixture of experts
    moe: bool = opt(
        False,
        "a mixture of expert encoders: --moe_experts encoders and a gating encoder, all initialised from the "
        "same checkpoint; the gate's [CLS] pooler output gives each sentence a distribution over the experts",
    )
    moe_experts: int = opt(3, "--moe: the number of expert encoders (at least 2)")
    moe_gate: Literal["soft", "hard"] = opt(
        "soft",
        "--moe: soft mixes every expert's sentence embedding by the gate's weights (all experts run); hard sends "
        "each sentence through its top expert only, and the gate learns through a straight-through weight",
    )
    moe_balance: float = opt(
        0.0,
        "--moe: weight of the Switch Transformer's load-balancing loss, K * sum_k f_k * P_k (f_k: the share of a "
        "step's sentences whose top expert is k, P_k: its mean gate weight; 1 when routing is even), added to the "
        "step's loss against a gate that sends every sentence to one expert (0: off)",
    )
    # --- diagnostics
    profiler: bool = opt(
        False,
        "profile training steps with torch.profiler (2 skipped, 2 of warm-up, then --profiler_steps recorded), "
        "write the trace under the run's log folder (Perfetto, chrome://tracing, TensorBoard's profiler plugin "
        "open it), print the top operators by self time, then stop profiling",
    )
    profiler_steps: int = opt(5, "--profiler: the number of steps recorded")
    # --- hyper-parameter search (mtbert tune, or train --hpo; mtbert.lab.hpo)
    hpo: bool = opt(
        False,
        "search hyper-parameters instead of training once: --hpo_trials trainings of these settings with values "
        "drawn by Optuna, each scored by its mean dev score every epoch, the poor ones stopped early by "
        "asynchronous HyperBand (ASHA); on Ray Tune (needs the [hpo] extra)",
    )
    hpo_trials: int = opt(16, "--hpo: the number of trials")
    hpo_space: str | None = opt(
        None,
        "--hpo: YAML or JSON file of the settings to search, `name: {loguniform: [low, high]}` (or uniform, int, "
        "choice: [values]), replacing the default space (docs/search.md); every setting not searched is the same "
        "in every trial",
    )
    hpo_dir: str = opt(
        "hpo",
        "--hpo: the search's folder: Ray's state, each trial's log and history, the table of trials, the best "
        "configuration and the best trial's model. Running the same command again resumes an interrupted search",
    )
    hpo_cpus_per_trial: float = opt(1.0, "--hpo: CPU cores per trial (trials run side by side on what is free)")
    hpo_gpus_per_trial: float | None = opt(
        None, "--hpo: GPUs per trial, fractions allowed (0.5: two trials share a GPU); default 1 with --use_gpu, else 0"
    )
    ray_address: str | None = opt(
        None,
        "--hpo: the address of a running Ray cluster (`ray start --head` prints it) to spread the trials over; "
        "default: a Ray instance on this machine for the search alone",
    )

    def __post_init__(self) -> None:
        for name, kind in typing.get_type_hints(Config).items():  # inf and nan train to nothing but nan
            value = getattr(self, name)
            if kind in (float, float | None) and value is not None and not math.isfinite(value):
                raise ValueError(f"--{name} must be a finite number, got {value}")
        if self.optimizer == "adamw" and self.rho is not None:
            raise ValueError("--rho is a Sophia setting; use it with --optimizer sophiag or sophiah")
        if self.graph_steps and self.optimizer != "adamw":
            raise ValueError("--graph_steps records AdamW's update only; use --optimizer adamw")
        if self.graph_steps and self.torch_compile == "cudagraphs":
            raise ValueError("--graph_steps records whole steps: use it with --torch_compile off or on, not cudagraphs")
        speed_modes = self.unpad or self.torch_compile != "off" or self.graph_steps
        for name in ("additional_input", "moe"):  # what the speed modes' single-encoder passes do not carry
            if getattr(self, name) and speed_modes:
                raise ValueError(f"--{name} works with the default passes: leave out --unpad, --torch_compile and "
                                 "--graph_steps")  # fmt: skip
        if self.checkpoint is not None and self.model is not None:
            raise ValueError("--checkpoint and --model both name a starting point; give one")
        if self.save_every < 0:
            raise ValueError(f"--save_every must not be negative, got {self.save_every}")
        if self.save_every and self.resume is None:
            raise ValueError("--save_every needs --resume DIR: the folder the training state is saved to")
        for name in ("batch_size", "epochs", "samples_per_epoch", "max_length", "hess_interval", "chunk_tokens",
                     "profiler_steps", "hpo_trials"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr", "weight_decay", "clip", "rho", "unfreeze_interval", "moe_balance",
                     "hpo_gpus_per_trial", *(f"{t}_loss_weight" for t in TASK_NAMES)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must not be negative, got {value}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {value}")
        if self.unfreeze_interval and self.unfreeze_interval >= self.epochs:
            raise ValueError(f"--unfreeze_interval {self.unfreeze_interval} with --epochs {self.epochs}: no layer "
                             "would join before training ends; use an interval below --epochs")  # fmt: skip
        if self.unfreeze_interval and self.graph_steps:
            raise ValueError("--graph_steps records the step of a fixed set of parameters: leave it out with "
                             "--unfreeze_interval")  # fmt: skip
        if self.moe_experts < 2:
            raise ValueError(f"--moe_experts must be at least 2 (a mixture of one is the plain model), got "
                             f"{self.moe_experts}")  # fmt: skip
        if self.activation_checkpointing and (self.unpad or self.graph_steps):
            raise ValueError("--activation_checkpointing works with the padded passes: leave out --unpad and "
                             "--graph_steps")  # fmt: skip
        if self.moe_balance and not self.moe:
            raise ValueError("--moe_balance weighs a mixture of experts' routing: use it with --moe")
        search = [f"--{f.name}" for f in dataclasses.fields(Config)
                  if f.name in SEARCH_FIELDS and f.name != "hpo" and getattr(self, f.name) != f.default]  # fmt: skip
        if search and not self.hpo:
            raise ValueError(f"{', '.join(search)}: settings of a search; add --hpo (or run `mtbert tune`)")
        if self.hpo and self.resume is not None:
            raise ValueError("--hpo with --resume: every trial keeps its own training state in --hpo_dir, and the "
                             "same command resumes an interrupted search; leave out --resume")  # fmt: skip
        if self.hpo_cpus_per_trial <= 0:
            raise ValueError(f"--hpo_cpus_per_trial must be above 0, got {self.hpo_cpus_per_trial}")
        if self.synthetic_ratio is not None and not 0 <= self.synthetic_ratio <= 1:
            raise ValueError(f"--synthetic_ratio must be in [0, 1], got {self.synthetic_ratio}")
        if not 0 <= self.hidden_dropout_prob < 1:
            raise ValueError(f"--hidden_dropout_prob must be in [0, 1), got {self.hidden_dropout_prob}")

    @property
    def learning_rate(self) -> float:
        """--lr, or the optimizer's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def loss_weights(self) -> dict[str, float]:
        """Task -> weight of its loss in the sum a step minimises, for the active tasks."""
        return {t: getattr(self, f"{t}_loss_weight") for t in self.tasks}

    @property
    def tasks(self) -> tuple[str, ...]:
        """The active tasks: those flagged, or all three when none is."""
        chosen = tuple(t for t in TASK_NAMES if getattr(self, t))
        return chosen or TASK_NAMES

    @property
    def gpus_per_trial(self) -> float:
        """--hpo_gpus_per_trial, or its default: 1 with --use_gpu, else 0."""
        if self.hpo_gpus_per_trial is not None:
            return self.hpo_gpus_per_trial
        return 1.0 if self.use_gpu else 0.0


DEFAULT_LR = {"adamw": 8e-5, "sophiag": 4e-5, "sophiah": 4e-5}
# The settings of a search (mtbert.lab.hpo), not of the trainings it runs
SEARCH_FIELDS = ("hpo", "hpo_trials", "hpo_space", "hpo_dir", "hpo_cpus_per_trial", "hpo_gpus_per_trial", "ray_address")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, named as the field; types, choices and help come from the dataclass. And
    --config FILE, whose values stand before the command line's flags (see config_file_flags)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of settings, `field: value` with the flag names below (without --), or a saved "
        "model's mtbert.json to train with its run's settings; flags on the command line override it",
    )
    for f in dataclasses.fields(Config):
        add_config_argument(parser, f.name)


def add_config_argument(parser: argparse.ArgumentParser, name: str, settings: type = None) -> None:
    """The flag of one field of `settings` (default Config; also used by commands that share a setting with
    training, as --precision); its type, choices, default and help come from the dataclass."""
    settings = settings or Config
    f = next(f for f in dataclasses.fields(settings) if f.name == name)
    kind = typing.get_type_hints(settings)[name]
    kwargs: dict = {"default": f.default, "help": f.metadata["help"]}
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is Literal:
        kwargs["choices"] = typing.get_args(kind)
    else:
        if isinstance(kind, types.UnionType):  # `X | None`
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        kwargs["type"] = kind
        kwargs["metavar"] = name.upper()
    if f.default is not None and kind is not bool:
        kwargs["help"] += f" (default: {f.default})"
    if f.metadata.get("repeatable"):
        kwargs["action"] = JoinRepeated
    parser.add_argument(f"--{name}", **kwargs)


class JoinRepeated(argparse.Action):
    """A flag given more than once (`--sst_train a.csv --sst_train b.csv`) holds its values joined by commas."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest)
        given = namespace.__dict__.setdefault("_repeated", set())  # the default is not a value given
        setattr(namespace, self.dest, f"{before},{values}" if self.dest in given and before else values)
        given.add(self.dest)


def config_file_flags(path: str | Path) -> list[str]:
    """The flags that a --config file stands for. The file is a YAML or JSON mapping of Config field names to values
    (null keeps a field's default), or an mtbert.json written with a saved model, whose "config" holds the settings
    of the run that trained it. Each value is checked as its flag would be; an error names the file and the field."""
    path = readable_file("--config", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MtbertError(f"--config {path}: not UTF-8 text ({e})") from None
    settings = parse_mapping(path, text)
    if isinstance(settings.get("config"), dict) and "encoder" in settings:  # a saved model's mtbert.json
        settings = settings["config"]
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise MtbertError(
            f"{path}: unknown setting(s) {', '.join(map(str, unknown))}; the settings are the flags of "
            "`mtbert train --help`, without the leading --"
        )
    checker = argparse.ArgumentParser(exit_on_error=False)
    for name in settings:
        add_config_argument(checker, name)
    kinds = typing.get_type_hints(Config)
    flags: list[str] = []
    for name, value in settings.items():
        if value is None:
            continue
        if kinds[name] is bool:
            if not isinstance(value, bool):
                raise MtbertError(f"{path}: {name}: expected true or false, got {value!r}")
            flags.append(f"--{name}" if value else f"--no-{name}")
            continue
        if isinstance(value, bool | dict | list):
            raise MtbertError(f"{path}: {name}: expected a value of --{name}, got {value!r}")
        try:
            checker.parse_args([f"--{name}", str(value)])
        except argparse.ArgumentError as e:
            raise MtbertError(f"{path}: {name}: {e.message}") from None
        flags += [f"--{name}", str(value)]
    return flags


def drop_flags(flags: list[str], names: set[str]) -> list[str]:
    """`flags` without those named in `names` (each with its value): a config file's settings that the command line
    gives again, so that a repeatable flag takes the command line's value instead of adding to the file's."""
    kept: list[str] = []
    skip_value = False
    for flag in flags:
        if skip_value and not flag.startswith("--"):
            skip_value = False
            continue
        skip_value = flag in names
        if not skip_value:
            kept.append(flag)
    return kept


def changed_settings(saved: dict, cfg: Config, ignore: set[str] | frozenset = frozenset()) -> list[str]:
    """The settings of `cfg` that differ from `saved` (a Config as a dict, as saved with a run), as `--name old ->
    new`, leaving out `ignore`. A setting newer than `saved` counts as its default there."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return [f"--{k} {saved.get(k, defaults[k])} -> {v}" for k, v in dataclasses.asdict(cfg).items()
            if k not in ignore and saved.get(k, defaults[k]) != v]  # fmt: skip


def parse_mapping(path: Path, text: str) -> dict:
    """A config file's top-level mapping: JSON for a .json file, else YAML."""
    if path.suffix == ".json":
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as e:
            raise MtbertError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    else:
        import yaml  # PyYAML, a dependency of mtbert (and of transformers)

        try:
            settings = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise MtbertError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(settings, dict):
        raise MtbertError(f"{path}: expected a mapping of settings (`lr: 1e-4`), got {type(settings).__name__}")
    return settings


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: type = None) -> typing.Any:
    """Builds the Config (or another dataclass of `settings`, as mtbert.lab.synth_config's) from parsed flags; a failed
    check becomes a parser error (exit code 2)."""
    settings = settings or Config
    try:
        return settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings)})
    except ValueError as e:
        parser.error(str(e))
