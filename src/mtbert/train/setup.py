"""Setting up a training run (torchtune's recipe `_setup_*`): the model, the data, the optimization, where the run
stands and where it writes, gathered in one Run for the loop."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtbert.config import TASK_NAMES, Config
from mtbert.data.sampler import MultitaskSampler
from mtbert.data.tagging import Tagger
from mtbert.data.task_data import TaskData, read_task
from mtbert.data.task_files import split_file, split_files
from mtbert.errors import MtbertError
from mtbert.inference.saved import load_model
from mtbert.model.auto import FamilyConfig
from mtbert.model.encoder import EncoderConfig
from mtbert.model.hf import load_encoder
from mtbert.model.hub import resolve
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.multitask import MultitaskModel, PaddedPasses
from mtbert.model.tasks import register
from mtbert.model.tokenizer import Tokenizer
from mtbert.outputs import lock_all, writable_dir, writable_file
from mtbert.train.checkpoint import STATE, RunState, load_training_state, restore
from mtbert.train.distributed import Distributed
from mtbert.train.ema import WeightAverage
from mtbert.train.optim import build_optimizer, layer_lr_scales
from mtbert.train.profiler import StepProfiler
from mtbert.train.schedule import Scheduler, build_scheduler
from mtbert.train.smart import Smart
from mtbert.train.speed import Speed, StepFn
from mtbert.train.surgery import PCGrad
from mtbert.train.unfreeze import Unfreezing

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter  # imported where a run opens it: slow to import

log = logging.getLogger(__name__)
# --smoketest: one epoch of a few tiny batches, scored on the first dev rows of each task
SMOKE = {"epochs": 1, "samples_per_epoch": 32, "batch_size": 8}
SMOKE_ROWS = 32
SPLITS = ("dev", "test")


@dataclass(kw_only=True)
class Run:
    """What the loop works with: the model (`model` unwrapped, saved and evaluated; `ddp_model` what trains, DDP's
    wrapper under torchrun), the data, the optimization, where the run stands and where it writes."""

    cfg: Config
    world: Distributed
    speed: Speed
    model: MultitaskModel
    ddp_model: torch.nn.Module
    tokenizer: Tokenizer
    tagger: Tagger | None  # --additional_input
    train_data: dict[str, TaskData]
    dev_data: dict[str, TaskData]  # rank 0's; empty on the others
    sampler: MultitaskSampler
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    state: RunState
    recorded: StepFn | None  # a replacement of train_step (--graph_steps), or None
    unfreezing: Unfreezing | None  # --unfreeze_interval
    ema: WeightAverage | None  # --ema
    smart: Smart | None  # --smart
    surgery: PCGrad | None  # --grad_surgery
    profiler: StepProfiler | None  # --profiler (rank 0)
    writer: SummaryWriter | None
    save_to: Path
    claims: contextlib.ExitStack  # the locks on what the run writes (rank 0)
    trained: bool = False  # whether this invocation trained an epoch (a finished --resume run does not)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.claims.close()


def setup_run(cfg: Config, world: Distributed, speed: Speed) -> Run:
    """Builds the model, checks and locks what the run will write (rank 0), reads the data, sets up the
    optimization, and restores a saved state (--resume)."""
    cfg = replace(cfg, **SMOKE) if cfg.smoketest else cfg
    if speed.tune is not None:
        speed.tune(world.device)  # before the first kernel runs
    seed_everything(cfg.seed)  # the same initial weights on every rank
    model, tokenizer = setup_model(cfg)
    save_to = Path(cfg.save_dir) / run_name(cfg)
    claims = claim_outputs(cfg, model, save_to) if world.is_main else contextlib.ExitStack()
    try:
        tagger = setup_tagger(cfg, model)
        place_model(model, cfg, world.device, speed)
        if world.world_size > 1:
            seed_everything(cfg.seed + world.rank)  # but each rank its own dropout masks
        train_data = {t: read_task(split_files(cfg, t, "train"), t, tokenizer, tagger=tagger) for t in cfg.active_tasks}
        dev_data = {t: read_dev(cfg, t, tokenizer, tagger) for t in cfg.active_tasks} if world.is_main else {}
        sampler = setup_sampler(cfg, train_data)
        optimizer, scheduler = setup_optimization(cfg, model, cfg.epochs * len(sampler))
        state = RunState(logdir=str(Path(cfg.logdir, cfg.tensorboard_subfolder or "", log_name(cfg))))
        saved = load_training_state(cfg.resume) if cfg.resume is not None else None
        ema = WeightAverage(model, cfg.ema) if cfg.ema else None
        if saved is not None:
            state = restore(cfg, saved, world, model, optimizer, scheduler, ema)
            log.info("resuming from %s: epoch %d, step %d", cfg.resume, state.epoch + 1, state.step)
        unfreezing = Unfreezing(model, cfg.unfreeze_interval) if cfg.unfreeze_interval else None
        if unfreezing is not None:  # the optimizer holds every parameter that will train; those yet to join wait
            unfreezing.set_epoch(state.epoch)
        to_write = world.is_main and state.epoch < cfg.epochs  # a finished --resume run has nothing to do
        profiler = None
        if cfg.profiler and to_write:
            profiler = StepProfiler(Path(state.logdir, "profile"), world.device, active=cfg.profiler_steps)
        return Run(
            cfg=cfg,
            world=world,
            speed=speed,
            model=model,
            ddp_model=wrap(world, model),
            tokenizer=tokenizer,
            tagger=tagger,
            train_data=train_data,
            dev_data=dev_data,
            sampler=sampler,
            optimizer=optimizer,
            scheduler=scheduler,
            state=state,
            recorded=speed.steps(model, optimizer, cfg.loss_weights, cfg.clip, cfg.precision) if speed.steps else None,
            unfreezing=unfreezing,
            ema=ema,
            smart=Smart(cfg.smart, cfg.smart_eps, cfg.smart_steps) if cfg.smart else None,
            surgery=PCGrad(cfg.seed, state.step) if cfg.grad_surgery == "pcgrad" else None,
            profiler=profiler,
            writer=setup_writer(cfg, state, resumed=saved is not None) if to_write else None,
            save_to=save_to,
            claims=claims,
        )
    except BaseException:
        claims.close()
        raise


def wrap(world: Distributed, model: MultitaskModel) -> torch.nn.Module:
    """The model as it trains: DDP's wrapper under torchrun (over the parameters that train now), else itself."""
    return world.wrap(model, find_unused=model.moe is not None and model.moe.gate_mode == "hard")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_model(cfg: Config) -> tuple[MultitaskModel, Tokenizer]:
    """The model a run starts from: a saved mtbert model (--checkpoint) or a BERT checkpoint (--model), with a head
    for each active task (the --tasks file's declared ones registered first)."""
    register(cfg.declared)
    if cfg.checkpoint is not None:
        model, tokenizer, _ = load_model(cfg.checkpoint, cfg.hidden_dropout_prob)
        missing = set(cfg.active_tasks) - set(model.heads)
        if missing:
            raise MtbertError(f"--checkpoint {cfg.checkpoint} has no head for {', '.join(sorted(missing))}")
        check_family(cfg, model.config)
        check_moe(cfg, model)
        if model.pair_encoding != cfg.pair_encoding:
            raise MtbertError(
                f"--checkpoint {cfg.checkpoint} encodes pairs as {model.pair_encoding}: add --pair_encoding "
                f"{model.pair_encoding}"
            )
    else:
        checkpoint = resolve(cfg.model, cfg.local_files_only)
        encoder = load_encoder(checkpoint.folder)
        check_family(cfg, encoder.config)
        if cfg.moe:  # every expert and the gate start from the checkpoint
            encoder = MixtureOfEncoders.from_encoder(encoder, cfg.moe_experts, cfg.moe_gate)
        tokenizer = Tokenizer.from_pretrained(checkpoint.folder)
        model = MultitaskModel(
            encoder,
            cfg.active_tasks,
            cfg.hidden_dropout_prob,
            pad_id=tokenizer.pad_id,
            pair_encoding=cfg.pair_encoding,
            sep_id=tokenizer.token_id("[SEP]"),
        )
        model.source = checkpoint.source()
    set_dropout(model, cfg.hidden_dropout_prob)
    tokenizer.set_max_length(min(tokenizer.max_length, cfg.max_length))
    return model, tokenizer


def check_family(cfg: Config, config: EncoderConfig | FamilyConfig) -> None:
    """An encoder of another family than BERT (through transformers) refuses what needs mtbert's own encoder."""
    if not isinstance(config, FamilyConfig):
        return
    needs_bert = {
        "--moe": cfg.moe,
        "--additional_input": cfg.additional_input,
        "--unpad": cfg.unpad,
        "--torch_compile": cfg.torch_compile != "off",
        "--graph_steps": cfg.graph_steps,
    }
    for flag, given in needs_bert.items():
        if given:
            raise MtbertError(f"{flag} needs a BERT encoder; the model is {config.model_type}")


def check_moe(cfg: Config, model: MultitaskModel) -> None:
    """A --checkpoint trains on as it was built (a mixture or not, its number of experts); --moe_gate may change."""
    if model.moe is None:
        if cfg.moe:
            raise MtbertError(f"--moe: --checkpoint {cfg.checkpoint} has one encoder, not a mixture of experts")
        return
    if not cfg.moe or cfg.moe_experts != len(model.moe.experts):
        raise MtbertError(
            f"--checkpoint {cfg.checkpoint} is a mixture of {len(model.moe.experts)} experts: add --moe "
            f"--moe_experts {len(model.moe.experts)}"
        )
    model.moe.gate_mode = cfg.moe_gate


def setup_tagger(cfg: Config, model: MultitaskModel) -> Tagger | None:
    """The tagger of a run with tags (--additional_input, or a --checkpoint trained with them); None without tags.
    A model that has no tag embeddings yet gets them here, sized by the tagger's vocabulary."""
    if model.tag_vocab is None and not cfg.additional_input:
        return None
    if not cfg.additional_input:
        raise MtbertError(f"--checkpoint {cfg.checkpoint} was trained with tag embeddings: add --additional_input")
    tagger = Tagger(cfg.tag_cache, model.tag_vocab)
    if model.tag_vocab is None:
        model.add_tags(tagger.vocab.to_dict())
    return tagger


def set_dropout(model: MultitaskModel, p: float) -> None:
    """--hidden_dropout_prob sets the encoder's dropout as well as the heads'. (A model reloaded for predictions
    gets it too: a compiled encoder would otherwise be compiled again for the other probability.)"""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def place_model(model: MultitaskModel, cfg: Config, device: torch.device, speed: Speed) -> None:
    """Moves the model to the run's device and sets how it encodes: its passes (--chunk_tokens, then the speed
    modes), --activation_checkpointing, a mixture's --moe_balance; --option pretrain (without
    --unfreeze_interval) freezes the encoder."""
    model.to(device)
    model.passes = PaddedPasses(cfg.chunk_tokens)
    for encoder in model.encoders():
        encoder.checkpointing = cfg.activation_checkpointing
    if model.moe is not None:
        model.moe.balance = cfg.moe_balance
    if speed.prepare is not None:
        speed.prepare(model)
    if cfg.option == "pretrain" and not cfg.unfreeze_interval:  # (with it, the encoder joins layer by layer)
        for encoder in model.encoders():
            encoder.requires_grad_(False)


def read_dev(cfg: Config, task: str, tokenizer: Tokenizer, tagger: Tagger | None) -> TaskData:
    """A task's dev data (--smoketest: its first rows)."""
    data = read_task(split_file(cfg, task, "dev"), task, tokenizer, tagger=tagger)
    return data.head(SMOKE_ROWS) if cfg.smoketest else data


def setup_sampler(cfg: Config, train_data: dict[str, TaskData]) -> MultitaskSampler:
    """The sampler of the run's training data; with --synthetic_ratio, capping the generated rows drawn per epoch."""
    synthetic = {t: d.examples.is_synthetic() for t, d in train_data.items() if d.examples.is_synthetic().any()}
    for task, mask in synthetic.items():
        log.info("%s training rows: %d original, %d generated", task, int((~mask).sum()), int(mask.sum()))
    if cfg.synthetic_ratio is not None and not synthetic:
        raise MtbertError(
            f"--synthetic_ratio {cfg.synthetic_ratio}: the training files have no generated rows (rows whose first, "
            "index column reads `synthetic`, as `mtbert synth` writes them)"
        )
    sizes = {t: len(d) for t, d in train_data.items()}
    return MultitaskSampler(
        sizes,
        cfg.samples_per_epoch,
        cfg.batch_size,
        cfg.seed,
        synthetic,
        cfg.synthetic_ratio,
        sampling=cfg.task_sampling,
        epochs=cfg.epochs,
    )


def setup_optimization(
    cfg: Config, model: MultitaskModel, total_steps: int
) -> tuple[torch.optim.Optimizer, Scheduler | None]:
    """The optimizer (--optimizer, its hyper-parameters, the heads at --head_lr, the encoder's layers decayed by
    --layer_lr_decay) and the lr schedule (--scheduler)."""
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.learning_rate
    betas_rho = {"beta1": cfg.beta1, "beta2": cfg.beta2, "rho": cfg.rho, "hess_interval": cfg.hess_interval}
    scales = layer_lr_scales(model.encoders(), model.tags, cfg.layer_lr_decay) if cfg.layer_lr_decay < 1 else None
    optimizer = build_optimizer(
        cfg.optimizer, model, model.heads, cfg.learning_rate, head_lr, cfg.weight_decay, **betas_rho, lr_scales=scales
    )
    return optimizer, build_scheduler(cfg.scheduler, optimizer, total_steps)


def claim_outputs(cfg: Config, model: MultitaskModel, save_to: Path) -> contextlib.ExitStack:
    """Checks every path the run will write before anything runs (the right kind, writable, room for a model in
    `save_to`; one line naming the flag), then locks them for this run: a second run writing the same ones stops at
    once."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    writable_dir("--save_dir", save_to, need_bytes=model_bytes)
    writable_dir("--logdir", cfg.logdir)
    outputs = [
        (f"--{t}_{split}_out", Path(prediction_file(cfg, t, split))) for t in cfg.active_tasks for split in SPLITS
    ]
    for flag, path in outputs:
        writable_file(flag, path)
    claims = [("--save_dir", save_to), *outputs]
    if cfg.resume is not None:  # a state holds the model and the optimizer's moments: about three models
        writable_dir("--resume", cfg.resume, need_bytes=3 * model_bytes)
        claims.append(("--resume", Path(cfg.resume) / STATE))
    return lock_all(claims)


def prediction_file(cfg: Config, task: str, split: str) -> str:
    """Where a task's predictions of `split` go (--{task}_{split}_out)."""
    settings = cfg.task_settings(task)
    return settings.dev_out if split == "dev" else settings.test_out


def output_flag(task: str, split: str) -> str:
    """What names a task's prediction file: its flag, or for a declared task the --tasks file."""
    return f"--{task}_{split}_out" if task in TASK_NAMES else f"--tasks (task {task}, {split} predictions)"


def run_name(cfg: Config) -> str:
    """The saved model's folder name, as the original project named its model file."""
    return f"{cfg.option}-{cfg.epochs}-{cfg.learning_rate}-{cfg.optimizer}-{cfg.scheduler}-multitask"


def log_name(cfg: Config) -> str:
    return f"{run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"


def setup_writer(cfg: Config, state: RunState, resumed: bool) -> SummaryWriter:
    """The run's TensorBoard writer (rank 0), with the settings as text; a resumed run drops points after its step."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

    writer = SummaryWriter(state.logdir, purge_step=state.step + 1 if resumed else None)
    writer.add_text("config", json.dumps(cfg.settings()))  # read back by `mtbert report`
    return writer


def run_settings(run: Run) -> dict:
    """What a saved model keeps of its run: the settings, the best dev metrics, and (--unfreeze_interval) the epoch
    at which each block joined training (None: not within the run)."""
    meta = {"config": run.cfg.settings(), "dev_metrics": run.state.best_metrics}
    if run.unfreezing is not None:
        meta["unfreezing"] = run.unfreezing.schedule(run.cfg.epochs)
    return meta
