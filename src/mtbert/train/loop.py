"""train(cfg): the one training loop, used by the CLI, the tests and every feature that trains."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from mtbert.config import Config
from mtbert.data.files import write_predictions
from mtbert.data.sampler import MultitaskSampler
from mtbert.data.tagging import Tagger
from mtbert.data.task_data import TaskData, read_task
from mtbert.errors import MtbertError
from mtbert.model.hf import load_encoder
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.multitask import MultitaskModel, PaddedPasses
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import Tokenizer
from mtbert.outputs import lock_all, writable_dir, writable_file
from mtbert.train import distributed
from mtbert.train.checkpoint import (
    STATE,
    RunState,
    load_model,
    load_training_state,
    restore,
    rng_state,
    save_model,
    save_training_state,
)
from mtbert.train.distributed import Distributed
from mtbert.train.evaluate import evaluate, predict
from mtbert.train.optim import Sophia, build_optimizer
from mtbert.train.profiler import StepProfiler
from mtbert.train.schedule import Scheduler, build_scheduler
from mtbert.train.speed import Speed, StepFn
from mtbert.train.step import train_step
from mtbert.train.unfreeze import Unfreezing

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter  # imported where a run opens it: slow to import

log = logging.getLogger(__name__)
LOG_EVERY = 10  # optimizer steps between TensorBoard points and progress-bar loss updates
# --smoketest: one epoch of a few tiny batches, scored on the first dev rows of each task
SMOKE = {"epochs": 1, "samples_per_epoch": 32, "batch_size": 8}
SMOKE_ROWS = 32
SPLITS = ("dev", "test")


def train(
    cfg: Config, report: Callable[[dict[str, float]], None] | None = None, speed: Speed | None = None
) -> dict[str, float]:
    """Trains the multitask model as `cfg` says; returns the dev metrics of the best epoch.

    After every epoch the dev metrics go to `report` (with "epoch"), TensorBoard and the log; the best model is
    saved to --save_dir; at the end, dev and test predictions of the best model are written. Under torchrun every
    process trains on its share of each batch and rank 0 alone evaluates, logs, reports and writes files. With
    --resume, the full training state is saved every epoch (and every --save_every steps) and a run continues from
    a saved state. `speed`: the GPU speed modes, `mtbert.accel.speed_for(cfg)` (default: the readable path).
    """
    speed = check_speed(cfg, speed)
    cfg = replace(cfg, **SMOKE) if cfg.smoketest else cfg
    world = distributed.setup(cfg.use_gpu)
    with start_run(cfg, world, speed) as run:  # rank 0 holds the locks of what the run writes until it ends
        model, state, sampler = run.model, run.state, run.sampler
        while state.epoch < cfg.epochs:
            if run.unfreezing is not None:
                unfreeze(run)
            model.train()
            started = time.perf_counter()
            loss_sum = torch.tensor(state.loss_sum, device=world.device)  # summed on the device: no sync per step
            batches = itertools.islice(sampler.epoch(state.epoch), state.batch, None)  # a resumed epoch: the rest
            bar = tqdm(batches, initial=state.batch, total=len(sampler), desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
                       unit="step", disable=not world.is_main)  # fmt: skip
            losses: dict[str, torch.Tensor] = {}
            for rows in bar:
                rows, share_weights = world.shard(rows)  # this process's part of every task's batch
                if run.recorded is not None:  # the same step, recorded as a CUDA graph (--graph_steps, mtbert.accel)
                    losses = run.recorded(run.train_data, rows)
                else:
                    weights = {t: cfg.loss_weights[t] * share for t, share in share_weights.items()}
                    losses = train_step(run.ddp_model, model, run.optimizer, run.train_data, rows, weights, cfg.clip,
                                        world.device, cfg.precision)  # fmt: skip
                loss_sum += sum(losses.values())
                if run.profiler is not None:
                    run.profiler.step()
                if run.scheduler is not None and cfg.scheduler != "plateau":
                    run.scheduler.step()
                state.step, state.batch = state.step + 1, state.batch + 1
                if state.step % LOG_EVERY == 0:  # reading the losses waits for the device: only now and then
                    values = check_finite(run, {t: v.item() for t, v in losses.items()})  # a diverged run stops
                    if run.writer is not None:
                        log_step(run.writer, bar, values, float(run.optimizer.param_groups[0]["lr"]), state.step)
                if cfg.save_every and state.step % cfg.save_every == 0 and state.batch < len(sampler):
                    state.loss_sum = check_finite(run, {"epoch": loss_sum.item()})["epoch"]
                    save_state(run)

            if run.profiler is not None:  # profiling ends with the first epoch at the latest (not evaluation)
                run.profiler.finish()
            last = {t: v.item() for t, v in losses.items()}  # the epoch's last step (reading waits for the device)
            epoch_loss = check_finite(run, {"epoch": loss_sum.item(), **last})["epoch"] / len(sampler)
            train_seconds = time.perf_counter() - started
            routing = routing_shares(run)  # a mixture of experts: the share of sentences each expert received
            metrics = {}
            if world.is_main:  # evaluate, keep the best model, report
                metrics, dev_predictions = evaluate(model, run.dev_data, cfg.precision, progress=True)
                seconds = time.perf_counter() - started
                log_epoch(run.writer, state.epoch + 1, cfg.epochs, metrics, train_seconds, seconds, routing)
                if not state.best_metrics or metrics["mean"] > state.best_metrics["mean"]:
                    state.best_metrics = {**metrics, "epoch": state.epoch + 1}
                    save_model(run.save_to, finite(run), run.tokenizer, run_settings(run))
                    write_predictions_of(cfg, "dev", run.dev_data, dev_predictions)
                if report is not None:
                    report({**metrics, **routing, "epoch": state.epoch + 1, "train_loss": epoch_loss,
                            "seconds": seconds, "train_seconds": train_seconds})  # fmt: skip
            metrics = world.broadcast(metrics)
            if cfg.scheduler == "plateau":
                run.scheduler.step(metrics["mean"])
            state.epoch, state.batch, state.loss_sum = state.epoch + 1, 0, 0.0
            state.best_metrics = world.broadcast(state.best_metrics)
            run.trained = True
            if cfg.resume is not None:
                save_state(run)
        finish_run(run)
    distributed.teardown()  # on success only: leaving waits for every rank; after a failure torchrun stops them
    return state.best_metrics


@dataclass
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
    dev_data: dict[str, TaskData]
    sampler: MultitaskSampler
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    state: RunState
    recorded: StepFn | None  # a replacement of train_step (--graph_steps), or None
    unfreezing: Unfreezing | None  # --unfreeze_interval
    profiler: StepProfiler | None  # --profiler (rank 0)
    writer: SummaryWriter | None
    save_to: Path
    claims: contextlib.ExitStack  # the locks on what the run writes (rank 0)
    trained: bool = False  # whether this invocation trained an epoch (a finished --resume run does not)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.claims.close()


def start_run(cfg: Config, world: Distributed, speed: Speed) -> Run:
    """Builds the model, checks and locks what the run will write (rank 0), reads the data, sets up the
    optimization, and restores a saved state (--resume)."""
    if speed.tune is not None:
        speed.tune(world.device)  # before the first kernel runs
    seed_everything(cfg.seed)  # the same initial weights on every rank
    model, tokenizer = build_model(cfg)
    claims = claim_outputs(cfg, model) if world.is_main else contextlib.ExitStack()
    try:
        tagger = make_tagger(cfg, model)
        place_model(model, cfg, world.device, speed)
        if world.world_size > 1:
            seed_everything(cfg.seed + world.rank)  # but each rank its own dropout masks
        train_data = {t: read_task(train_files(cfg, t), t, tokenizer, tagger=tagger) for t in cfg.tasks}
        dev_data = {t: read_dev(cfg, t, tokenizer, tagger) for t in cfg.tasks} if world.is_main else {}
        sampler = build_sampler(cfg, train_data)
        optimizer, scheduler = build_optimization(cfg, model, cfg.epochs * len(sampler))
        state = RunState(logdir=str(Path(cfg.logdir, cfg.tensorboard_subfolder or "", log_name(cfg))))
        saved = load_training_state(cfg.resume) if cfg.resume is not None else None
        if saved is not None:
            state = restore(cfg, saved, world, model, optimizer, scheduler)
            log.info("resuming from %s: epoch %d, step %d", cfg.resume, state.epoch + 1, state.step)
        recorded = speed.steps(model, optimizer, cfg.loss_weights, cfg.clip, cfg.precision) if speed.steps else None
        unfreezing = Unfreezing(model, cfg.unfreeze_interval) if cfg.unfreeze_interval else None
        if unfreezing is not None:  # the optimizer holds every parameter that will train; those yet to join wait
            unfreezing.set_epoch(state.epoch)
        to_train = state.epoch < cfg.epochs  # a finished --resume run has nothing to do, and writes nothing
        writer = open_tensorboard(cfg, state, resumed=saved is not None) if world.is_main and to_train else None
        profiler = None
        if cfg.profiler and world.is_main and to_train:
            profiler = StepProfiler(Path(state.logdir, "profile"), world.device, active=cfg.profiler_steps)
    except BaseException:
        claims.close()
        raise
    return Run(cfg, world, speed, model, wrap(world, model), tokenizer, tagger, train_data, dev_data, sampler,
               optimizer, scheduler, state, recorded, unfreezing, profiler, writer, Path(cfg.save_dir) / run_name(cfg),
               claims)  # fmt: skip


def wrap(world: Distributed, model: MultitaskModel) -> torch.nn.Module:
    """The model as it trains: DDP's wrapper under torchrun (over the parameters that train now), else itself."""
    return world.wrap(model, find_unused=model.moe is not None and model.moe.gate_mode == "hard")


def unfreeze(run: Run) -> None:
    """At an epoch's start (--unfreeze_interval): the blocks due join training, which is logged; Sophia refreshes
    its Hessian estimate on the next step, so that they have one from their first step."""
    state = run.state
    if run.unfreezing.set_epoch(state.epoch):
        run.ddp_model = wrap(run.world, run.model)  # DDP reduces the gradients of what trains when it is built
    joining = run.unfreezing.joining(state.epoch) if state.batch == 0 else []  # (a resumed epoch has begun)
    if joining:
        log.info("epoch %d: %s start training", state.epoch + 1, ", ".join(joining))
        if state.epoch > 0 and isinstance(run.optimizer, Sophia):
            run.optimizer.refresh_hessian()


def routing_shares(run: Run) -> dict[str, float]:
    """A mixture of experts' routing in the epoch just trained, summed over the ranks: "expert_K_share", the share
    of sentences whose top expert is K, and "expert_K_weight", its mean gate weight. Empty without a mixture."""
    if run.model.moe is None:
        return {}
    routed = run.model.moe.take_routing()
    routed = sum(r for r in run.world.gather(routed.cpu() if routed is not None else None) if r is not None)
    if not isinstance(routed, torch.Tensor):
        return {}
    counts, weights = routed / routed[0].sum()
    shares = {f"expert_{k}_share": float(v) for k, v in enumerate(counts)}
    return shares | {f"expert_{k}_weight": float(v) for k, v in enumerate(weights)}


def run_settings(run: Run) -> dict:
    """What a saved model keeps of its run: the config, the best dev metrics, and (--unfreeze_interval) the epoch
    at which each block joined training (None: not within the run)."""
    meta = {"config": asdict(run.cfg), "dev_metrics": run.state.best_metrics}
    if run.unfreezing is not None:
        meta["unfreezing"] = run.unfreezing.schedule(run.cfg.epochs)
    return meta


def claim_outputs(cfg: Config, model: MultitaskModel) -> contextlib.ExitStack:
    """Checks every path the run will write before anything runs (the right kind, writable, room for a model; one
    line naming the flag), then locks them for this run: a second run writing the same ones stops at once."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    save_to = Path(cfg.save_dir) / run_name(cfg)
    writable_dir("--save_dir", save_to, need_bytes=model_bytes)
    writable_dir("--logdir", cfg.logdir)
    outputs = [(f"--{t}_{split}_out", Path(getattr(cfg, f"{t}_{split}_out"))) for t in cfg.tasks for split in SPLITS]
    for flag, path in outputs:
        writable_file(flag, path)
    claims = [("--save_dir", save_to), *outputs]
    if cfg.resume is not None:  # a state holds the model and the optimizer's moments: about three models
        writable_dir("--resume", cfg.resume, need_bytes=3 * model_bytes)
        claims.append(("--resume", Path(cfg.resume) / STATE))
    return lock_all(claims)


def check_finite(run: Run, losses: dict[str, float]) -> dict[str, float]:
    """The losses, if all are finite numbers; else the run stops (diverged), with the best model saved so far and
    the last state saved to --resume left as they were."""
    if all(math.isfinite(v) for v in losses.values()):
        return losses
    values = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    kept = f"the best model so far stays in {run.save_to}" if run.state.best_metrics else "no model was saved"
    if run.cfg.resume is not None:
        kept += f"; --resume {run.cfg.resume} holds the last good state"
    raise MtbertError(f"training diverged by step {run.state.step} (loss {values}): stopped; {kept}. Try a lower "
                      "--lr or --clip")  # fmt: skip


def finite(run: Run) -> MultitaskModel:
    """The model, if all its weights are finite (a step can turn them to inf or nan before a loss shows it)."""
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        check_finite(run, {"weights": math.nan})
    return run.model


def finish_run(run: Run) -> None:
    """Closes TensorBoard; rank 0 writes the best model's test predictions (if this run trained one)."""
    if run.writer is not None:
        run.writer.close()
    if not run.trained:
        log.info("--resume %s: this run is complete (%d epochs); nothing to do", run.cfg.resume, run.cfg.epochs)
    elif run.world.is_main:
        log.info("best epoch %d saved to %s", run.state.best_metrics["epoch"], run.save_to)
        write_test_predictions(run)


def save_state(run: Run) -> None:
    """The full training state to --resume (rank 0 writes it, with every rank's random generators and, for a
    mixture of experts, its routing counts of the epoch so far)."""
    rngs = run.world.gather(rng_state())
    moe = run.model.moe
    routing = run.world.gather(moe.routed.cpu() if moe is not None and moe.routed is not None else None)
    if run.world.is_main:
        scheduler = run.scheduler.state_dict() if run.scheduler is not None else None
        state = {"config": asdict(run.cfg), "model": finite(run).state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": scheduler, "run": asdict(run.state), "rng": rngs, "routing": routing}  # fmt: skip
        save_training_state(run.cfg.resume, state)


def check_speed(cfg: Config, speed: Speed | None) -> Speed:
    """The run's speed modes: `speed`, or the readable path, which a run that asks for a GPU mode must not get."""
    if speed is not None:
        return speed
    asked = [f"--{name}" for name in ("unpad", "graph_steps") if getattr(cfg, name)]
    asked += [f"--torch_compile {cfg.torch_compile}"] if cfg.torch_compile != "off" else []
    if asked:
        raise MtbertError(f"{', '.join(asked)}: speed modes of mtbert.accel; train(cfg, speed=speed_for(cfg))")
    return Speed()


def task_file(cfg: Config, task: str, split: str) -> Path:
    """The file of a task's split: its --{task}_{split} flag, or the default name inside --data_dir."""
    given = getattr(cfg, f"{task}_{split}")
    return Path(given) if given is not None else Path(cfg.data_dir) / TASKS[task].files[split]


def train_files(cfg: Config, task: str) -> list[Path]:
    """A task's training files: its --{task}_train flag (comma-separated files are read as one), or the default."""
    given = getattr(cfg, f"{task}_train")
    return [Path(p.strip()) for p in given.split(",") if p.strip()] if given else [task_file(cfg, task, "train")]


def build_sampler(cfg: Config, train_data: dict[str, TaskData]) -> MultitaskSampler:
    """The sampler of the run's training data; with --synthetic_ratio, capping the generated rows drawn per epoch."""
    synthetic = {t: d.examples.is_synthetic() for t, d in train_data.items() if d.examples.is_synthetic().any()}
    for task, mask in synthetic.items():
        log.info("%s training rows: %d original, %d generated", task, int((~mask).sum()), int(mask.sum()))
    if cfg.synthetic_ratio is not None and not synthetic:
        raise MtbertError(f"--synthetic_ratio {cfg.synthetic_ratio}: the training files have no generated rows (rows "
                          "whose first, index column reads `synthetic`, as `mtbert synth` writes them)")  # fmt: skip
    return MultitaskSampler({t: len(d) for t, d in train_data.items()}, cfg.samples_per_epoch, cfg.batch_size,
                            cfg.seed, synthetic, cfg.synthetic_ratio)  # fmt: skip


def read_dev(cfg: Config, task: str, tokenizer: Tokenizer, tagger: Tagger | None) -> TaskData:
    """A task's dev data (--smoketest: its first rows)."""
    data = read_task(task_file(cfg, task, "dev"), task, tokenizer, tagger=tagger)
    return data.head(SMOKE_ROWS) if cfg.smoketest else data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: Config) -> tuple[MultitaskModel, Tokenizer]:
    """The model a run starts from: a saved mtbert model (--checkpoint) or a BERT checkpoint (--model)."""
    if cfg.checkpoint is not None:
        model, tokenizer, _ = load_model(cfg.checkpoint, cfg.hidden_dropout_prob)
        missing = set(cfg.tasks) - set(model.heads)
        if missing:
            raise MtbertError(f"--checkpoint {cfg.checkpoint} has no head for {', '.join(sorted(missing))}")
        check_moe(cfg, model)
    else:
        encoder = load_encoder(cfg.model)
        if cfg.moe:  # every expert and the gate start from the checkpoint
            encoder = MixtureOfEncoders.from_encoder(encoder, cfg.moe_experts, cfg.moe_gate)
        tokenizer = Tokenizer.from_pretrained(cfg.model)
        model = MultitaskModel(encoder, cfg.tasks, cfg.hidden_dropout_prob, pad_id=tokenizer.pad_id)
    set_dropout(model, cfg.hidden_dropout_prob)
    tokenizer.set_max_length(min(tokenizer.max_length, cfg.max_length))
    return model, tokenizer


def check_moe(cfg: Config, model: MultitaskModel) -> None:
    """A --checkpoint trains on as it was built (a mixture or not, its number of experts); --moe_gate may change."""
    if model.moe is None:
        if cfg.moe:
            raise MtbertError(f"--moe: --checkpoint {cfg.checkpoint} has one encoder, not a mixture of experts")
        return
    if not cfg.moe or cfg.moe_experts != len(model.moe.experts):
        raise MtbertError(f"--checkpoint {cfg.checkpoint} is a mixture of {len(model.moe.experts)} experts: add --moe "
                          f"--moe_experts {len(model.moe.experts)}")  # fmt: skip
    model.moe.gate_mode = cfg.moe_gate


def make_tagger(cfg: Config, model: MultitaskModel) -> Tagger | None:
    """The tagger of a run with tags (--additional_input, or a --checkpoint trained with them), which gives a new
    model its tag embeddings; None without tags."""
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
    """Moves the model to the run's device, sets how it encodes (--chunk_tokens, --activation_checkpointing, then the
    speed modes) and a mixture's --moe_balance, and with --option pretrain (and no --unfreeze_interval) freezes the
    encoder."""
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


def run_name(cfg: Config) -> str:
    """The saved model's folder name, as the original project named its model file."""
    return f"{cfg.option}-{cfg.epochs}-{cfg.learning_rate}-{cfg.optimizer}-{cfg.scheduler}-multitask"


def log_name(cfg: Config) -> str:
    return f"{run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_optimization(
    cfg: Config, model: MultitaskModel, total_steps: int
) -> tuple[torch.optim.Optimizer, Scheduler | None]:
    """The optimizer (--optimizer, its hyper-parameters, the heads at --head_lr) and the lr schedule (--scheduler)."""
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.learning_rate
    betas_rho = {"beta1": cfg.beta1, "beta2": cfg.beta2, "rho": cfg.rho, "hess_interval": cfg.hess_interval}
    optimizer = build_optimizer(
        cfg.optimizer, model, model.heads, cfg.learning_rate, head_lr, cfg.weight_decay, **betas_rho
    )
    return optimizer, build_scheduler(cfg.scheduler, optimizer, total_steps)


def open_tensorboard(cfg: Config, state: RunState, resumed: bool) -> SummaryWriter:
    """The run's TensorBoard writer (rank 0), with the config as text; a resumed run drops points after its step."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

    writer = SummaryWriter(state.logdir, purge_step=state.step + 1 if resumed else None)
    writer.add_text("config", json.dumps(asdict(cfg)))  # read back by `mtbert report`
    return writer


def log_step(writer: SummaryWriter, bar: tqdm, values: dict[str, float], lr: float, step: int) -> None:
    """Each task's weighted loss and the lr to TensorBoard, their sum to the progress bar."""
    bar.set_postfix(loss=f"{sum(values.values()):.3f}")
    for t, v in values.items():
        writer.add_scalar(f"train_loss/{t}", v, step)
    writer.add_scalar("lr", lr, step)


def log_epoch(
    writer: SummaryWriter,
    epoch: int,
    epochs: int,
    metrics: dict[str, float],
    train_s: float,
    total_s: float,
    routing: dict[str, float],
) -> None:
    """An epoch's dev metrics (and a mixture's routing, see routing_shares) to TensorBoard and the log, with its
    training and evaluation time."""
    for key, value in metrics.items():
        writer.add_scalar(f"dev/{key}", value, epoch)
    for key, value in routing.items():
        writer.add_scalar(f"experts/{key}", value, epoch)
    scores = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
    log.info("epoch %d/%d: %s (training %.1f s, evaluation %.1f s)", epoch, epochs, scores, train_s, total_s - train_s)
    if routing:
        shares = " ".join(f"{v:.0%}" for k, v in routing.items() if k.endswith("_share"))
        weights = " ".join(f"{v:.2f}" for k, v in routing.items() if k.endswith("_weight"))
        log.info("epoch %d: sentences per expert %s (mean gate weights %s)", epoch, shares, weights)


def write_test_predictions(run: Run) -> None:
    """Test predictions of the best model, read back from where it was saved. A task without a test file is left
    out with a warning (--smoketest: predicted on its first dev rows instead, to try the set-up)."""
    cfg = run.cfg
    model, tokenizer, _ = load_model(run.save_to)
    set_dropout(model, cfg.hidden_dropout_prob)
    place_model(model, cfg, run.world.device, run.speed)
    test_data = {}
    for t in cfg.tasks:
        path = task_file(cfg, t, "test")
        if path.is_file():
            test_data[t] = read_task(path, t, tokenizer, require_labels=False, tagger=run.tagger)
        elif cfg.smoketest:
            log.warning("%s: no such file; --smoketest writes %s test predictions of dev rows", path, t)
            test_data[t] = read_dev(cfg, t, tokenizer, run.tagger)
        else:
            log.warning("%s: no such file, so no %s test predictions", path, t)
    write_predictions_of(cfg, "test", test_data, predict(model, test_data, cfg.precision, progress=True))


def write_predictions_of(cfg: Config, split: str, data: dict[str, TaskData], predictions: dict[str, np.ndarray]):
    """Writes predictions to the original project's files, named by the --{task}_{split}_out flags."""
    for t, preds in predictions.items():
        out = getattr(cfg, f"{t}_{split}_out")
        write_predictions(out, TASKS[t].prediction_header, data[t].examples.ids, preds)
        log.info("wrote %s", out)
