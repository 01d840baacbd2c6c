"""train(cfg): the one training loop, used by the CLI, tests and (later) the hyper-parameter search."""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from mtbert import distributed
from mtbert.checkpoint import (
    RunState,
    load_model,
    load_training_state,
    restore,
    rng_state,
    save_model,
    save_training_state,
)
from mtbert.config import Config
from mtbert.data import Examples, MultitaskSampler, read_examples, write_predictions
from mtbert.distributed import Distributed
from mtbert.encoder import BertEncoder
from mtbert.errors import MtbertError
from mtbert.model import MultitaskModel
from mtbert.optim import Scheduler, build_optimizer, build_scheduler
from mtbert.precision import autocast
from mtbert.step import GraphSteps, train_step
from mtbert.tasks import TASKS, sentences_per_step
from mtbert.tokenizer import Tokenizer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter  # imported where a run opens it: slow to import

log = logging.getLogger(__name__)
LOG_EVERY = 10  # optimizer steps between TensorBoard points and progress-bar loss updates


@dataclass
class TaskData:
    """One task's split, tokenized once: tokens[c][i] are the word-piece ids of text column c of row i."""

    task: str
    examples: Examples
    tokens: list[list[list[int]]]
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.examples)

    def rows(self, index: np.ndarray) -> list[list[list[int]]]:
        return [[column[i] for i in index] for column in self.tokens]


def task_file(cfg: Config, task: str, split: str) -> Path:
    """The file of a task's split: its --{task}_{split} flag, or the default name inside --data_dir."""
    given = getattr(cfg, f"{task}_{split}")
    return Path(given) if given is not None else Path(cfg.data_dir) / TASKS[task].files[split]


def read_task(path: Path, task: str, tokenizer: Tokenizer, require_labels: bool = True) -> TaskData:
    spec = TASKS[task]
    examples = read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, require_labels)
    tokens = [tokenizer.encode_ids(column) for column in examples.texts]
    labels = torch.from_numpy(examples.labels) if examples.labels is not None else None
    return TaskData(task, examples, tokens, labels)


@torch.inference_mode()
def predict(
    model: MultitaskModel, data: dict[str, TaskData], precision: str = "auto", progress: bool = False
) -> dict[str, np.ndarray]:
    """Predictions of every task's rows, all sentences encoded in one length-sorted pass (with a progress bar of
    the sentences encoded if `progress`)."""
    if not data:
        return {}
    was_training = model.training
    model.eval()
    with autocast(model.device, precision):
        outputs = model({task: d.tokens for task, d in data.items()}, progress)
    model.train(was_training)
    return {task: TASKS[task].predict(out.float()).cpu().numpy() for task, out in outputs.items()}


def evaluate(
    model: MultitaskModel, data: dict[str, TaskData], precision: str = "auto", progress: bool = False
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics keyed "{task}/{metric}" for the labelled tasks, plus "mean" (each mapped to [0, 1]) when all are."""
    predictions = predict(model, data, precision, progress)
    metrics: dict[str, float] = {}
    for task, d in data.items():
        if d.labels is not None:
            spec = TASKS[task]
            metrics[f"{task}/{spec.metric_name}"] = spec.metric(predictions[task], d.labels.numpy())
    if len(metrics) == len(data):
        metrics["mean"] = mean_score(metrics)
    return metrics, predictions


def mean_score(metrics: dict[str, float]) -> float:
    """Model selection score: the mean of the tasks' metrics, Pearson r mapped to (r + 1) / 2."""
    scores = [TASKS[key.split("/")[0]].unit_score(v) for key, v in metrics.items() if "/" in key]
    return float(np.mean(scores))


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
    else:
        encoder = BertEncoder.from_pretrained(cfg.model)
        tokenizer = Tokenizer.from_pretrained(cfg.model)
        model = MultitaskModel(encoder, cfg.tasks, cfg.hidden_dropout_prob, pad_id=tokenizer.pad_id)
    set_dropout(model, cfg.hidden_dropout_prob)
    tokenizer.set_max_length(min(tokenizer.max_length, cfg.max_length))
    return model, tokenizer


def set_dropout(model: MultitaskModel, p: float) -> None:
    """--hidden_dropout_prob sets the encoder's dropout as well as the heads'. (A model reloaded for predictions
    gets it too: a compiled encoder would otherwise be compiled again for the other probability.)"""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def run_name(cfg: Config) -> str:
    return f"{cfg.option}-{cfg.epochs}-{cfg.learning_rate}-multitask"


def train(cfg: Config, report: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Trains the multitask model as `cfg` says; returns the dev metrics of the best epoch.

    After every epoch the dev metrics go to `report` (with "epoch"), TensorBoard and the log; the best model is
    saved to --save_dir; at the end, dev and test predictions of the best model are written. Under torchrun every
    process trains on its share of each batch and rank 0 alone evaluates, logs, reports and writes files.
    With --resume, the full training state is saved every epoch (and every --save_every steps) and a run
    continues from a saved state.
    """
    ddp = distributed.setup(cfg.use_gpu)
    best = _train(cfg, report, ddp)
    distributed.teardown()  # on success only: leaving waits for every rank; after a failure torchrun stops them
    return best


def _train(cfg: Config, report: Callable[[dict[str, float]], None] | None, ddp: Distributed) -> dict[str, float]:
    if cfg.graph_steps and ddp.world_size > 1:
        raise MtbertError("--graph_steps records the steps of one process; under torchrun leave it out")
    seed_everything(cfg.seed)  # the same initial weights on every rank
    model, tokenizer = build_model(cfg)
    step_sentences = sentences_per_step(cfg.tasks, -(-cfg.batch_size // ddp.world_size))  # one process's share
    place_model(model, cfg, ddp.device, step_sentences)
    if ddp.world_size > 1:
        seed_everything(cfg.seed + ddp.rank)  # but each rank its own dropout masks

    train_data = {t: read_task(task_file(cfg, t, "train"), t, tokenizer) for t in cfg.tasks}
    dev_data = {t: read_task(task_file(cfg, t, "dev"), t, tokenizer) for t in cfg.tasks} if ddp.is_main else {}
    sampler = MultitaskSampler(
        {t: len(d) for t, d in train_data.items()}, cfg.samples_per_epoch, cfg.batch_size, cfg.seed
    )
    optimizer, scheduler = build_optimization(cfg, model, cfg.epochs * len(sampler))
    per_step_scheduler = scheduler is not None and cfg.scheduler != "plateau"

    run = RunState(logdir=str(Path(cfg.logdir) / f"{run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"))
    saved = load_training_state(cfg.resume) if cfg.resume is not None else None
    if saved is not None:
        run = restore(cfg, saved, ddp, model, optimizer, scheduler)
        log.info("resuming from %s: epoch %d, step %d", cfg.resume, run.epoch + 1, run.step)

    def save_state() -> None:
        """The full training state to --resume (rank 0 writes it, with every rank's random generators)."""
        rngs = ddp.gather(rng_state())
        if ddp.is_main:
            scheduler_state = scheduler.state_dict() if scheduler is not None else None
            state = {"config": asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler_state, "run": asdict(run), "rng": rngs}  # fmt: skip
            save_training_state(cfg.resume, state)

    net = ddp.wrap(model)  # the model to train through; `model` stays the unwrapped one that is saved and evaluated
    loss_weights = cfg.loss_weights
    graphs = GraphSteps(model, optimizer, loss_weights, cfg.clip, cfg.precision) if cfg.graph_steps else None
    writer = open_tensorboard(cfg, run, resumed=saved is not None) if ddp.is_main else None
    save_to = Path(cfg.save_dir) / run_name(cfg)
    while run.epoch < cfg.epochs:
        model.train()
        started = time.perf_counter()
        loss_sum = torch.tensor(run.loss_sum, device=ddp.device)  # summed on the device: no sync per step
        batches = itertools.islice(sampler.epoch(run.epoch), run.batch, None)  # a resumed epoch skips its done part
        bar = tqdm(batches, initial=run.batch, total=len(sampler), desc=f"epoch {run.epoch + 1}/{cfg.epochs}",
                   unit="step", disable=not ddp.is_main)  # fmt: skip
        for rows in bar:
            rows, shares = ddp.shard(rows)
            if graphs is not None:  # one process: its shares are 1, and the graphs hold the loss weights
                losses = graphs(train_data, rows)
            else:
                weights = {t: loss_weights[t] * share for t, share in shares.items()}
                losses = train_step(
                    net, model, optimizer, train_data, rows, weights, cfg.clip, ddp.device, cfg.precision
                )
            loss_sum += sum(losses.values())
            if per_step_scheduler:
                scheduler.step()
            run.step += 1
            run.batch += 1
            if run.step % LOG_EVERY == 0 and writer is not None:  # reading losses synchronises: only now and then
                log_step(writer, bar, losses, float(optimizer.param_groups[0]["lr"]), run.step)
            if cfg.save_every and run.step % cfg.save_every == 0 and run.batch < len(sampler):
                run.loss_sum = loss_sum.item()
                save_state()

        epoch_loss = loss_sum.item() / len(sampler)  # waits for the device: the epoch's training time ends here
        train_seconds = time.perf_counter() - started
        metrics = {}
        if ddp.is_main:  # evaluate, keep the best model, report
            metrics, dev_predictions = evaluate(model, dev_data, cfg.precision, progress=True)
            seconds = time.perf_counter() - started
            log_epoch(writer, run.epoch + 1, cfg.epochs, metrics, train_seconds, seconds)
            if not run.best_metrics or metrics["mean"] > run.best_metrics["mean"]:
                run.best_metrics = {**metrics, "epoch": run.epoch + 1}
                save_model(save_to, model, tokenizer, {"config": asdict(cfg), "dev_metrics": run.best_metrics})
                write_predictions_of(cfg, "dev", dev_data, dev_predictions)
            if report is not None:
                times = {"seconds": seconds, "train_seconds": train_seconds}
                report({**metrics, "epoch": run.epoch + 1, "train_loss": epoch_loss, **times})
        metrics = ddp.broadcast(metrics)
        if cfg.scheduler == "plateau":
            scheduler.step(metrics["mean"])
        run.epoch, run.batch, run.loss_sum = run.epoch + 1, 0, 0.0
        run.best_metrics = ddp.broadcast(run.best_metrics)
        if cfg.resume is not None:
            save_state()
    if writer is not None:
        writer.close()
    if ddp.is_main:
        log.info("best epoch %d saved to %s", run.best_metrics["epoch"], save_to)
        write_test_predictions(cfg, save_to, ddp.device, step_sentences)
    return run.best_metrics


def place_model(model: MultitaskModel, cfg: Config, device: torch.device, step_sentences: int) -> None:
    """Moves the model to the run's device and sets how it encodes (--chunk_tokens, --torch_compile; see
    MultitaskModel.set_passes); --option pretrain freezes the encoder."""
    model.to(device)
    model.set_passes(cfg.chunk_tokens, cfg.torch_compile, step_sentences, cfg.unpad)
    if cfg.torch_compile != "off":
        log.info("--torch_compile %s: the first step and the first evaluation compile the encoder "
                 "(about 50 s on 2 CPU cores; cached for later runs)", cfg.torch_compile)  # fmt: skip
    if cfg.graph_steps and device.type != "cuda":
        slow = "" if cfg.unpad else " (padded to the step's longest: several times slower here; add --unpad)"
        log.warning("--graph_steps records CUDA graphs, and this run is on the CPU: its steps run eagerly, each as "
                    "one pass of all its sentences%s", slow)  # fmt: skip
    if cfg.option == "pretrain":
        model.encoder.requires_grad_(False)


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


def open_tensorboard(cfg: Config, run: RunState, resumed: bool) -> SummaryWriter:
    """The run's TensorBoard writer (rank 0), with the config as text; a resumed run drops points after its step."""
    from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

    writer = SummaryWriter(run.logdir, purge_step=run.step + 1 if resumed else None)
    writer.add_text("config", str(asdict(cfg)))
    return writer


def log_step(writer: SummaryWriter, bar: tqdm, losses: dict[str, torch.Tensor], lr: float, step: int) -> None:
    """Each task's weighted loss and the lr to TensorBoard, their sum to the progress bar (waits for the device)."""
    values = {t: v.item() for t, v in losses.items()}
    bar.set_postfix(loss=f"{sum(values.values()):.3f}")
    for t, v in values.items():
        writer.add_scalar(f"train_loss/{t}", v, step)
    writer.add_scalar("lr", lr, step)


def log_epoch(
    writer: SummaryWriter, epoch: int, epochs: int, metrics: dict[str, float], train_s: float, total_s: float
) -> None:
    """An epoch's dev metrics to TensorBoard and the log, with its training and evaluation time."""
    for key, value in metrics.items():
        writer.add_scalar(f"dev/{key}", value, epoch)
    scores = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
    log.info("epoch %d/%d: %s (training %.1f s, evaluation %.1f s)", epoch, epochs, scores, train_s, total_s - train_s)


def write_test_predictions(cfg: Config, best_folder: Path, device: torch.device, step_sentences: int) -> None:
    """Test predictions of the best model, read back from where it was saved."""
    model, tokenizer, _ = load_model(best_folder)
    set_dropout(model, cfg.hidden_dropout_prob)
    model.to(device)
    model.set_passes(cfg.chunk_tokens, cfg.torch_compile, step_sentences, cfg.unpad)
    test_data = {}
    for t in cfg.tasks:
        path = task_file(cfg, t, "test")
        if path.is_file():
            test_data[t] = read_task(path, t, tokenizer, require_labels=False)
        else:
            log.warning("%s: no such file, so no %s test predictions", path, t)
    write_predictions_of(cfg, "test", test_data, predict(model, test_data, cfg.precision, progress=True))


def write_predictions_of(cfg: Config, split: str, data: dict[str, TaskData], predictions: dict[str, np.ndarray]):
    """Writes predictions to the original project's files, named by the --{task}_{split}_out flags."""
    for t, preds in predictions.items():
        out = getattr(cfg, f"{t}_{split}_out")
        write_predictions(out, TASKS[t].prediction_header, data[t].examples.ids, preds)
        log.info("wrote %s", out)
