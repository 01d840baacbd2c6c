"""The typed run configuration (Config, its per-task table TaskSettings, the search's Search), the command-line
flags generated from the dataclasses, and config files merged under the flags given."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mtbert.errors import MtbertError
from mtbert.outputs import parse_mapping, readable_file
from mtbert.task_file import TaskDecl, TaskFile, read_task_file

TASK_NAMES = ("sst", "para", "sts")
TASK_TITLES = {"sst": "SST", "para": "Quora", "sts": "STS"}


def opt(default: object, doc: str, repeatable: bool = False, bounds: str | None = None) -> Any:
    """A config field with its one-line help text (shown by --help). `repeatable`: a flag given twice or more holds
    the values joined by commas. `bounds`: the values allowed, as an interval: "[1, inf)", "[0, 1)", "(0, inf)"."""
    return field(default=default, metadata={"help": doc, "repeatable": repeatable, "bounds": bounds})


def check_bounds(settings: object, prefix: str = "") -> None:
    """Every float field of a settings dataclass is finite (inf and nan train to nothing but nan) and every field with
    `bounds` lies within them; a ValueError names the flag (`prefix` + the field's name)."""
    kinds = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, flag = getattr(settings, f.name), f"--{prefix}{f.name}"
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if kinds[f.name] in (float, float | None) and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
        bounds = f.metadata.get("bounds")
        if bounds is not None and not within(value, bounds):
            raise ValueError(f"{flag} {describe_bounds(bounds)}, got {value}")


def bound_ends(bounds: str) -> tuple[float, float]:
    """The low and high ends of an interval written "[low, high)"."""
    low, high = (float(end) for end in bounds[1:-1].split(","))
    return low, high


def within(value: float, bounds: str) -> bool:
    low, high = bound_ends(bounds)
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[-1] == "]" else value < high
    return above and below


def describe_bounds(bounds: str) -> str:
    low, high = bound_ends(bounds)
    if math.isinf(high):
        if bounds[0] == "(":
            return f"must be above {low:g}"
        return "must not be negative" if low == 0 else f"must be at least {low:g}"
    return f"must be in {bounds}"


@dataclass(frozen=True)
class TaskSettings:
    """One task's files and loss weight. On the command line and in config files each is the original project's
    flag, the task's name then the field's: --sst_train, --para_dev_out, --sts_loss_weight."""

    train: str | None = opt(
        None,
        "training file (default: the task's file in --data_dir); several: a.csv,b.csv or the flag repeated (a row that "
        "repeats one of an earlier file is left out, with a warning)",
        repeatable=True,
    )
    dev: str | None = opt(None, "dev file (default: the task's file in --data_dir)")
    test: str | None = opt(None, "test file (default: the task's file in --data_dir; no test predictions if absent)")
    dev_out: str = opt("", "where the dev predictions of the best model are written")
    test_out: str = opt("", "where its test predictions are written")
    loss_weight: float = opt(1.0, "weight of the task's loss in the summed loss of a step", bounds="[0, inf)")

    @classmethod
    def default(cls, task: str) -> TaskSettings:
        """A task's defaults: its files in --data_dir, its predictions where the original project wrote them."""
        return cls(dev_out=f"predictions/{task}-dev-output.csv", test_out=f"predictions/{task}-test-output.csv")


# The flag of each task setting: "sst_train" -> ("sst", "train")
TASK_FLAGS = {f"{t}_{f.name}": (t, f.name) for t in TASK_NAMES for f in dataclasses.fields(TaskSettings)}


def default_tasks() -> dict[str, TaskSettings]:
    return {t: TaskSettings.default(t) for t in TASK_NAMES}


@dataclass(frozen=True)
class Config:
    # --- run
    option: Literal["pretrain", "finetune"] = opt(
        "finetune", "pretrain: freeze the encoder and train only the heads; finetune: train everything"
    )
    seed: int = opt(11711, "random seed; the same seed gives the same numbers on CPU")
    use_gpu: bool = opt(False, "train on CUDA")
    model: str | None = opt(
        None,
        "the encoder to start from: a Hugging Face checkpoint folder, or a hub name (bert-base-uncased, org/name, "
        "org/name@revision) downloaded once into the Hugging Face cache (HF_HOME; HF_TOKEN for private models); "
        "model_type bert runs on mtbert's own encoder, other families (roberta, deberta-v2, electra, ...) through "
        "transformers (default: the packaged all-MiniLM-L6-v2)",
    )
    checkpoint: str | None = opt(None, "an mtbert model folder (saved by training) to start from instead of --model")
    save_dir: str = opt("models", "where the best model of the run is saved")
    resume: str | None = opt(
        None,
        "folder for the full training state, saved every epoch (and every --save_every steps); "
        "if it already holds one, training continues from it",
    )
    save_every: int = opt(
        0, "also save the training state to --resume every this many optimizer steps (0: off)", bounds="[0, inf)"
    )
    logdir: str = opt("runs", "TensorBoard log folder")
    tensorboard_subfolder: str | None = opt(None, "a folder inside --logdir for this run's TensorBoard logs")
    smoketest: bool = opt(
        False,
        "check a set-up in seconds: one epoch of 4 batches of 8 examples per task, scored on the first 32 dev rows "
        "of each task; all six prediction files are written (a task without a test file: on those dev rows)",
    )
    local_files_only: bool = opt(
        False, "take a hub --model from the Hugging Face cache only, never from the network (as HF_HUB_OFFLINE=1)"
    )
    # --- tasks and data
    sst: bool = opt(False, "train on SST-5 sentiment (with none of --sst --para --sts: all three)")
    para: bool = opt(False, "train on Quora paraphrase detection")
    sts: bool = opt(False, "train on STS similarity")
    data_dir: str = opt("data", "folder with the CS224N CSV files (see `mtbert data fetch`)")
    tasks: str | None = opt(
        None,
        "a YAML file declaring tasks of your own, trained beside the built-in ones: per task its files, text "
        "column(s), label column, kind (classes, binary, regression), head (mlp, pair, cosine, cross), metrics "
        "(accuracy, f1, pearson, spearman) and loss weight (see the README, 'Your own tasks')",
    )
    per_task: dict[str, TaskSettings] = field(
        default_factory=default_tasks, metadata={"help": "each task's files and loss weight (TaskSettings)"}
    )
    pair_encoding: Literal["bi", "cross"] = opt(
        "bi",
        "how the pair tasks (Quora, STS) read a pair: bi encodes each sentence on its own and the head compares "
        "the two embeddings (a sentence embedding per sentence, as the original project); cross encodes the pair "
        "as one sequence, [CLS] a [SEP] b [SEP] with b's token type 1, so that every layer attends across the two, "
        "and the head reads the pair's pooled state (Devlin et al., 2019; Reimers & Gurevych, 2019 compare both)",
    )
    synthetic_ratio: float | None = opt(
        None,
        "at most this share of each epoch's examples of a task may be generated rows (rows whose index column reads "
        "`synthetic`, as `mtbert synth` writes them and the original project's ids-sst-train-syn.csv has), drawn "
        "without replacement; the rest are original rows (default: no cap, generated rows count as any other)",
        bounds="[0, 1]",
    )
    max_length: int = opt(128, "sentences are truncated to this many word pieces", bounds="[1, inf)")
    additional_input: bool = opt(
        False,
        "add POS and NER tag embeddings to the input embeddings, as the original project did: spaCy's fine-grained "
        "tags and IOB entity types of every word, given to its word pieces (needs the [tagging] extra, or a "
        "filled --tag_cache)",
    )
    tag_cache: str | None = opt(
        None,
        "folder of the tags of every sentence seen, shared by all runs (default: $XDG_CACHE_HOME/mtbert/tags, "
        "~/.cache/mtbert/tags)",
    )
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
        bounds="[1, inf)",
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
        "keeps every expert's activations: docs/results.md has its memory with and without)",
    )
    # --- optimisation
    optimizer: Literal["adamw", "sophiag", "sophiah"] = opt(
        "adamw", "adamw, or Sophia with the Gauss-Newton-Bartlett (sophiag) or Hutchinson (sophiah) Hessian estimate"
    )
    lr: float | None = opt(
        None,
        "learning rate of the shared encoder and pooling (default: 8e-5 for adamw, "
        "4e-5 for Sophia, whose clipped steps move every coordinate by up to lr)",
        bounds="[0, inf)",
    )
    head_lr: float | None = opt(None, "learning rate of the task heads (default: --lr)", bounds="[0, inf)")
    beta1: float | None = opt(
        None, "EMA factor of the gradient (default: 0.9 for adamw, 0.965 for Sophia)", bounds="[0, 1)"
    )
    beta2: float | None = opt(
        None,
        "EMA factor of the squared gradient (adamw, default 0.999) or of the Hessian estimate (Sophia, 0.99)",
        bounds="[0, 1)",
    )
    rho: float | None = opt(
        None,
        "Sophia's clipping scale: a coordinate takes a Newton step when |m| < rho * h, else a step of lr "
        "(default: 0.05 for sophiag, 0.01 for sophiah)",
        bounds="[0, inf)",
    )
    hess_interval: int = opt(
        10, "Sophia: optimizer steps between refreshes of the diagonal Hessian estimate", bounds="[1, inf)"
    )
    weight_decay: float = opt(0.01, "decoupled weight decay of AdamW", bounds="[0, inf)")
    layer_lr_decay: float = opt(
        1.0,
        "layer-wise learning-rate decay (Howard & Ruder, 2018; Sun et al., 2019, 'How to Fine-Tune BERT for Text "
        "Classification'): each encoder layer trains at --lr times this to the power of the layers above it, the "
        "embeddings lowest; the pooling and heads keep theirs (1: off; 0.95 is the usual value)",
        bounds="(0, 1]",
    )
    batch_size: int = opt(
        64,
        "examples per task in each step (each step sums the losses of all tasks); with torchrun, the global "
        "batch, split between the processes",
        bounds="[1, inf)",
    )
    epochs: int = opt(10, "number of epochs", bounds="[1, inf)")
    samples_per_epoch: int = opt(
        10000, "examples drawn per task and epoch (random, without replacement)", bounds="[1, inf)"
    )
    task_sampling: Literal["equal", "proportional", "sqrt", "annealed"] = opt(
        "equal",
        "each task's share of an epoch's samples_per_epoch x tasks examples (Stickland & Murray, 2019, 'BERT and "
        "PALs'): equal; proportional to its training rows N; to sqrt(N); or annealed, N^a with a falling from 1 "
        "at the first epoch to 0.2 at the last. A task's mean loss counts as its share, so every example weighs "
        "the same; each step still holds every task",
    )
    scheduler: Literal["plateau", "cosine", "none"] = opt(
        "plateau", "plateau: halve the lr when the dev score stalls; cosine: decay to 0 over the run"
    )
    clip: float = opt(0.25, "gradient-norm clipping (0: off)", bounds="[0, inf)")
    ema: float = opt(
        0.0,
        "an exponential moving average of the weights (Polyak & Juditsky, 1992), avg = ema * avg + (1 - ema) * "
        "weights after every step, evaluated and saved in place of the raw weights (0: off; 0.999 is usual)",
        bounds="[0, 1)",
    )
    smart: float = opt(
        0.0,
        "weight of SMART's smoothness term (Jiang et al., 2020, 'SMART: Robust and Efficient Fine-Tuning'): the "
        "symmetric KL divergence (squared error for STS) between the heads' outputs on the input embeddings and on "
        "them perturbed adversarially within --smart_eps, added to the loss; a step runs --smart_steps + 1 more "
        "forward and backward passes (2.7 times the plain step's time on a CPU; 0: off; the paper uses 1 to 5)",
        bounds="[0, inf)",
    )
    smart_eps: float = opt(
        1e-5, "--smart: the perturbation's radius in the L-infinity norm (per coordinate)", bounds="[0, inf)"
    )
    smart_steps: int = opt(
        1, "--smart: steps of projected gradient ascent that find the perturbation", bounds="[1, inf)"
    )
    grad_surgery: Literal["none", "pcgrad"] = opt(
        "none",
        "pcgrad: gradient surgery (Yu et al., 2020, 'Gradient Surgery for Multi-Task Learning'): each task's "
        "gradient of the shared encoder and pooling loses its component along any other task's gradient it "
        "conflicts with (negative dot product) before they are summed; one backward pass per task (2.7 times the "
        "plain step's time on a CPU)",
    )
    hidden_dropout_prob: float = opt(
        0.1,
        "dropout of the encoder's hidden states and in the heads (attention dropout stays the checkpoint's)",
        bounds="[0, 1)",
    )
    unfreeze_interval: int = opt(
        0,
        "gradual unfreezing: training starts with the heads, the pooling and the top encoder layer trainable, and "
        "every this many epochs the next layer down joins (the embeddings last), under either --option; the "
        "optimizer and the lr schedule run on. 0: off",
        bounds="[0, inf)",
    )
    # --- mixture of experts
    moe: bool = opt(
        False,
        "a mixture of expert encoders: --moe_experts encoders and a gating encoder, all initialised from the "
        "same checkpoint; the gate's [CLS] pooler output gives each sentence a distribution over the experts",
    )
    moe_experts: int = opt(
        3, "--moe: the number of expert encoders (a mixture of one is the plain model)", bounds="[2, inf)"
    )
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
        bounds="[0, inf)",
    )
    # --- diagnostics
    profiler: bool = opt(
        False,
        "profile training steps with torch.profiler (2 skipped, 2 of warm-up, then --profiler_steps recorded), "
        "write the trace under the run's log folder (Perfetto, chrome://tracing, TensorBoard's profiler plugin "
        "open it), print the top operators by self time, then stop profiling",
    )
    profiler_steps: int = opt(5, "--profiler: the number of steps recorded", bounds="[1, inf)")

    def __post_init__(self) -> None:
        check_bounds(self)
        if set(self.per_task) != set(TASK_NAMES) or not all(
            isinstance(s, TaskSettings) for s in self.per_task.values()
        ):
            raise ValueError(f"per_task: one TaskSettings for each of {', '.join(TASK_NAMES)}")
        for task, settings in self.per_task.items():
            check_bounds(settings, prefix=f"{task}_")
        if self.tasks:  # the declared tasks, read (and checked) now: an error names the file and the entry
            read_tasks(self.tasks)
        # the rules that link fields
        if self.optimizer == "adamw" and self.rho is not None:
            raise ValueError("--rho is a Sophia setting; use it with --optimizer sophiag or sophiah")
        if self.graph_steps and self.optimizer != "adamw":
            raise ValueError("--graph_steps records AdamW's update only; use --optimizer adamw")
        if self.graph_steps and (self.task_sampling != "equal" or self.smart or self.grad_surgery != "none"):
            raise ValueError(
                "--graph_steps records the plain step: leave out --task_sampling, --smart and --grad_surgery"
            )
        if self.smart and (self.unpad or self.torch_compile != "off"):
            raise ValueError("--smart perturbs the default passes' embeddings: leave out --unpad and --torch_compile")
        if self.graph_steps and self.torch_compile == "cudagraphs":
            raise ValueError("--graph_steps records whole steps: use it with --torch_compile off or on, not cudagraphs")
        speed_modes = self.unpad or self.torch_compile != "off" or self.graph_steps
        if self.pair_encoding == "cross" and (self.moe or self.additional_input):
            raise ValueError(
                "--pair_encoding cross works with one encoder without tags: leave out --moe and --additional_input"
            )
        # what the speed modes' single-encoder passes do not carry
        cross = self.pair_encoding == "cross"
        carried = {"additional_input": self.additional_input, "moe": self.moe, "pair_encoding cross": cross}
        for name, on in carried.items():
            if on and speed_modes:
                raise ValueError(
                    f"--{name} works with the default passes: leave out --unpad, --torch_compile and --graph_steps"
                )
        if self.checkpoint is not None and self.model is not None:
            raise ValueError("--checkpoint and --model both name a starting point; give one")
        if self.save_every and self.resume is None:
            raise ValueError("--save_every needs --resume DIR: the folder the training state is saved to")
        if self.unfreeze_interval and self.unfreeze_interval >= self.epochs:
            raise ValueError(
                f"--unfreeze_interval {self.unfreeze_interval} with --epochs {self.epochs}: no layer would join before "
                "training ends; use an interval below --epochs"
            )
        if self.unfreeze_interval and self.graph_steps:
            raise ValueError(
                "--graph_steps records the step of a fixed set of parameters: leave it out with --unfreeze_interval"
            )
        if self.activation_checkpointing and (self.unpad or self.graph_steps):
            raise ValueError(
                "--activation_checkpointing works with the padded passes: leave out --unpad and --graph_steps"
            )
        if self.moe_balance and not self.moe:
            raise ValueError("--moe_balance weighs a mixture of experts' routing: use it with --moe")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Config:
        """A Config from settings named as their flags (`lr`, `sst_train`), as the command line, config files and
        saved runs hold them; the rest keep their defaults."""
        plain = {k: v for k, v in settings.items() if k not in TASK_FLAGS}
        per_task = default_tasks()
        for name, value in settings.items():
            if name in TASK_FLAGS:
                task, key = TASK_FLAGS[name]
                per_task[task] = replace(per_task[task], **{key: value})
        return cls(**plain, per_task=per_task)

    def settings(self) -> dict[str, Any]:
        """The settings named as their flags (the inverse of from_settings): what runs save and compare."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "per_task"}
        return flat | {name: getattr(self.per_task[t], key) for name, (t, key) in TASK_FLAGS.items()}

    def updated(self, **settings: Any) -> Config:
        """This config with some settings changed, named as their flags (`cfg.updated(sst_train="a.csv", lr=1e-4)`)."""
        return Config.from_settings(self.settings() | settings)

    @property
    def learning_rate(self) -> float:
        """--lr, or the optimizer's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def declared(self) -> dict[str, TaskDecl]:
        """The tasks of the --tasks file, by name ({} without one)."""
        return read_tasks(self.tasks).tasks if self.tasks else {}

    @property
    def active_tasks(self) -> tuple[str, ...]:
        """The active tasks: the built-in ones flagged (none flagged: the --tasks file's `builtin` list, else all
        three), then the declared ones."""
        chosen = tuple(t for t in TASK_NAMES if getattr(self, t))
        if not chosen:
            builtin = read_tasks(self.tasks).builtin if self.tasks else None
            chosen = builtin if builtin is not None else TASK_NAMES
        return chosen + tuple(self.declared)

    def task_settings(self, task: str) -> TaskSettings:
        """A task's files and loss weight: a built-in task's flags, a declared task's entry (its prediction files
        beside SST's)."""
        if task in self.per_task:
            return self.per_task[task]
        d, out = self.declared[task], Path(self.per_task["sst"].dev_out).parent
        return TaskSettings(
            train=d.train,
            dev=d.dev,
            test=d.test,
            dev_out=str(out / f"{task}-dev-output.csv"),
            test_out=str(out / f"{task}-test-output.csv"),
            loss_weight=d.loss_weight,
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        """Task -> weight of its loss in the sum a step minimises, for the active tasks."""
        return {t: self.task_settings(t).loss_weight for t in self.active_tasks}


@functools.lru_cache(maxsize=8)
def read_task_file_at(path: str, mtime_ns: int) -> TaskFile:
    return read_task_file(path)


def read_tasks(path: str) -> TaskFile:
    """A --tasks file, read once while it is unchanged."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        mtime = 0  # read_task_file names the problem
    return read_task_file_at(path, mtime)


DEFAULT_LR = {"adamw": 8e-5, "sophiag": 4e-5, "sophiah": 4e-5}


@dataclass(frozen=True)
class Search:
    """The settings of a hyper-parameter search (`mtbert tune`, `train --hpo`; mtbert.lab.hpo), not of the trainings
    it runs."""

    hpo: bool = opt(
        False,
        "search hyper-parameters instead of training once: --hpo_trials trainings of these settings with values "
        "drawn by Optuna, each scored by its mean dev score every epoch, the poor ones stopped early by "
        "asynchronous HyperBand (ASHA); on Ray Tune (needs the [hpo] extra)",
    )
    hpo_trials: int = opt(16, "--hpo: the number of trials", bounds="[1, inf)")
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
    hpo_cpus_per_trial: float = opt(
        1.0, "--hpo: CPU cores per trial (trials run side by side on what is free)", bounds="(0, inf)"
    )
    hpo_gpus_per_trial: float | None = opt(
        None,
        "--hpo: GPUs per trial, fractions allowed (0.5: two trials share a GPU); default 1 with --use_gpu, else 0",
        bounds="[0, inf)",
    )
    ray_address: str | None = opt(
        None,
        "--hpo: the address of a running Ray cluster (`ray start --head` prints it) to spread the trials over; "
        "default: a Ray instance on this machine for the search alone",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        given = [
            f"--{f.name}" for f in dataclasses.fields(self) if f.name != "hpo" and getattr(self, f.name) != f.default
        ]
        if given and not self.hpo:
            raise ValueError(f"{', '.join(given)}: settings of a search; add --hpo (or run `mtbert tune`)")

    def gpus_per_trial(self, use_gpu: bool) -> float:
        """--hpo_gpus_per_trial, or its default: 1 with --use_gpu, else 0."""
        if self.hpo_gpus_per_trial is not None:
            return self.hpo_gpus_per_trial
        return 1.0 if use_gpu else 0.0


# --- flags


@dataclass(frozen=True)
class Flag:
    """A setting as a flag: its name (the field's, or a task's `sst_train`), value type, default and help."""

    name: str
    kind: Any
    default: Any
    help: str
    repeatable: bool = False


@functools.cache
def flags_of(settings: type) -> dict[str, Flag]:
    """Name -> flag of every setting of a settings dataclass; Config's task table gives a flag per task and field."""
    kinds = typing.get_type_hints(settings)
    found: dict[str, Flag] = {}
    for f in dataclasses.fields(settings):
        if f.name == "per_task":
            task_kinds = typing.get_type_hints(TaskSettings)
            for name, (task, key) in TASK_FLAGS.items():
                tf = TaskSettings.__dataclass_fields__[key]
                default = getattr(TaskSettings.default(task), key)
                found[name] = Flag(
                    name,
                    task_kinds[key],
                    default,
                    f"{TASK_TITLES[task]}: {tf.metadata['help']}",
                    tf.metadata["repeatable"],
                )
            continue
        found[f.name] = Flag(f.name, kinds[f.name], f.default, f.metadata["help"], f.metadata.get("repeatable", False))
    return found


def value_type(kind: Any) -> Any:
    """A flag's value type without `| None`: bool, int, float, str, or a Literal."""
    if isinstance(kind, types.UnionType):
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def add_config_argument(
    parser: argparse.ArgumentParser, name: str, settings: type = Config, with_default: bool = False
) -> None:
    """The flag of one setting of `settings`. A flag not given leaves no attribute (the dataclass gives the default),
    so that a config file's value stands unless the command line gives the flag; `with_default`: it holds the
    default (a command that reads the flag itself, sharing a setting with training, as --precision)."""
    flag = flags_of(settings)[name]
    kind = value_type(flag.kind)
    kwargs: dict = {
        "default": flag.default if with_default else argparse.SUPPRESS,
        "help": flag.help.replace("%", "%%"),
    }
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is Literal:
        kwargs["choices"] = typing.get_args(kind)
    else:
        kwargs["type"] = kind
        kwargs["metavar"] = name.upper()
    if flag.default not in (None, ""):
        kwargs["help"] += f" (default: {flag.default})"
    if flag.repeatable:
        kwargs["action"] = JoinRepeated
    parser.add_argument(f"--{name}", **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser, settings: type = Config) -> None:
    """One flag per setting of `settings`, named as the field; types, choices and help come from the dataclass."""
    for name in flags_of(settings):
        add_config_argument(parser, name, settings)


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of settings, `field: value` with the flag names below (without --), or a saved "
        "model's mtbert.json to train with its run's settings; flags on the command line override it",
    )


class JoinRepeated(argparse.Action):
    """A flag given more than once (`--sst_train a.csv --sst_train b.csv`) holds its values joined by commas."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else values)


def config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, settings: type = Config, file: dict | None = None
) -> Any:
    """The settings dataclass `settings` (Config, Search, or another command's) from parsed flags: the defaults, then
    the --config file's values (if the command has one; `file`: those values, read once by a command that builds
    several dataclasses, see file_settings), then the flags given. A failed check becomes a parser error (exit code
    2) naming the flag, and the file when the value came from it."""
    names = flags_of(settings)
    given = {k: v for k, v in vars(args).items() if k in names}
    path = getattr(args, "config", None)
    file = file_settings(args) if file is None else file
    from_file = {k: v for k, v in file.items() if k in names}
    values = from_file | given
    try:
        return settings.from_settings(values) if settings is Config else settings(**values)
    except ValueError as e:
        named = [k for k in from_file if k not in given and f"--{k} " in f"{e} "]
        parser.error(f"{path}: {e}" if named else str(e))


def file_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of the command's --config file (see read_config_file); none without one."""
    path = getattr(args, "config", None)
    return read_config_file(path) if path else {}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a --config file: a YAML or JSON mapping of flag names (without --) to values (null keeps a
    setting's default), or an mtbert.json written with a saved model, whose "config" holds the settings of the run
    that trained it. Each value is converted and checked as its flag's would be; an error names the file and key."""
    path = readable_file("--config", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MtbertError(f"--config {path}: not UTF-8 text ({e})") from None
    settings = parse_mapping(path, text)
    if isinstance(settings.get("config"), dict) and "encoder" in settings:  # a saved model's mtbert.json
        settings = settings["config"]
    known = flags_of(Config) | flags_of(Search)
    unknown = sorted(map(str, set(settings) - set(known)))
    if unknown:
        raise MtbertError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; the settings are the flags of `mtbert train --help`, "
            "without the leading --"
        )
    return {name: file_value(path, known[name], value) for name, value in settings.items() if value is not None}


def file_value(path: Path, flag: Flag, value: Any) -> Any:
    """A config file's value of `flag`, of the flag's type (YAML reads 1e-5, without a dot, as a string)."""
    kind = value_type(flag.kind)
    where = f"{path}: {flag.name}"
    if kind is bool:
        if not isinstance(value, bool):
            raise MtbertError(f"{where}: expected true or false, got {value!r}")
        return value
    if flag.repeatable and isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if isinstance(value, bool | dict | list):
        raise MtbertError(f"{where}: expected a value of --{flag.name}, got {value!r}")
    if typing.get_origin(kind) is Literal:
        if value not in typing.get_args(kind):
            raise MtbertError(f"{where}: invalid choice: {value!r} (choose from {', '.join(typing.get_args(kind))})")
        return value
    try:
        converted = kind(str(value)) if kind is not str else str(value)
    except ValueError:
        raise MtbertError(f"{where}: invalid {kind.__name__} value: {str(value)!r}") from None
    return converted


def changed_settings(saved: dict, cfg: Config, ignore: set[str] | frozenset = frozenset()) -> list[str]:
    """The settings of `cfg` that differ from `saved` (settings as a run saved them, see Config.settings), as
    `--name old -> new`, leaving out `ignore`. A setting newer than `saved` counts as its default there."""
    defaults = Config().settings()
    return [
        f"--{k} {saved.get(k, defaults[k])} -> {v}"
        for k, v in cfg.settings().items()
        if k not in ignore and saved.get(k, defaults[k]) != v
    ]
