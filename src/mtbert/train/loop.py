"""train(cfg): the one training loop, used by the CLI, the tests and every feature that trains (setup: setup.py)."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import math
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.inference.evaluate import evaluate
from mtbert.inference.saved import save_model
from mtbert.model.multitask import MultitaskModel
from mtbert.train import distributed
from mtbert.train.checkpoint import save_state
from mtbert.train.optim import Sophia
from mtbert.train.records import log_epoch, log_step, routing_shares, write_predictions_of, write_test_predictions
from mtbert.train.setup import Run, run_settings, setup_run, wrap
from mtbert.train.speed import Speed
from mtbert.train.step import train_step

log = logging.getLogger(__name__)
LOG_EVERY = 10  # optimizer steps between TensorBoard points and progress-bar loss updates


def train(
    cfg: Config, report: Callable[[dict[str, float]], None] | None = None, speed: Speed | None = None
) -> dict[str, float]:
    """Trains the multitask model as `cfg` says; returns the dev metrics of the best epoch.

    After every epoch the dev metrics go to `report` (with "epoch"), TensorBoard and the log; the best model is
    saved to --save_dir; at the end, dev and test predictions of the best model are written. Under torchrun every
    process trains on its share of each batch and rank 0 alone evaluates, logs, reports and writes files. With
    --resume, the full training state is saved every epoch (and every --save_every steps) and a run continues from
    a saved state. `speed`: the GPU speed modes (`mtbert.fit` passes those the config asks for); default: the
    readable path.
    """
    speed = check_speed(cfg, speed)
    world = distributed.setup(cfg.use_gpu)
    with setup_run(cfg, world, speed) as run:  # rank 0 holds the locks of what the run writes until it ends
        cfg, model, state, sampler = run.cfg, run.model, run.state, run.sampler
        while state.epoch < cfg.epochs:
            if run.unfreezing is not None:
                unfreeze(run)
            model.train()
            started = time.perf_counter()
            loss_sum = torch.tensor(state.loss_sum, device=world.device)  # summed on the device: no sync per step
            batches = itertools.islice(sampler.epoch(state.epoch), state.batch, None)  # a resumed epoch: the rest
            desc = f"epoch {state.epoch + 1}/{cfg.epochs}"
            bar = tqdm(
                batches, initial=state.batch, total=len(sampler), desc=desc, unit="step", disable=not world.is_main
            )
            losses: dict[str, torch.Tensor] = {}
            scales = sampler.loss_scales(state.epoch)  # --task_sampling: a task's loss counts as its share
            task_weights = {t: w * scales[t] for t, w in cfg.loss_weights.items()}
            for rows in bar:
                rows, share_weights = world.shard(rows)  # this process's part of every task's batch
                if run.recorded is not None:  # the same step, recorded as a CUDA graph (--graph_steps, mtbert.accel)
                    losses = run.recorded(run.train_data, rows)
                else:
                    weights = {t: task_weights[t] * share for t, share in share_weights.items()}
                    losses = train_step(
                        run.ddp_model,
                        model,
                        run.optimizer,
                        run.train_data,
                        rows,
                        weights,
                        cfg.clip,
                        world.device,
                        cfg.precision,
                        smart=run.smart,
                        surgery=run.surgery,
                    )
                loss_sum += sum(losses.values())
                if run.ema is not None:  # --ema: the running average of the weights, evaluated and saved
                    run.ema.update(model)
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
                    save_state(cfg, world, finite(run), run.optimizer, run.scheduler, state, run.ema)

            if run.profiler is not None:  # profiling ends with the first epoch at the latest (not evaluation)
                run.profiler.finish()
            last = {t: v.item() for t, v in losses.items()}  # the epoch's last step (reading waits for the device)
            epoch_loss = check_finite(run, {"epoch": loss_sum.item(), **last})["epoch"] / len(sampler)
            train_seconds = time.perf_counter() - started
            routing = routing_shares(run)  # a mixture of experts: the share of sentences each expert received
            metrics = {}
            averaged = run.ema.applied(model) if run.ema is not None else contextlib.nullcontext()
            if world.is_main:  # evaluate, keep the best model, report
                with averaged:  # (--ema: the averaged weights in place of the raw ones)
                    metrics, dev_predictions = evaluate(model, run.dev_data, cfg.precision, progress=True)
                    seconds = time.perf_counter() - started
                    log_epoch(run.writer, state.epoch + 1, cfg.epochs, metrics, train_seconds, seconds, routing)
                    if not state.best_metrics or metrics["mean"] > state.best_metrics["mean"]:
                        state.best_metrics = {**metrics, "epoch": state.epoch + 1}
                        save_model(run.save_to, finite(run), run.tokenizer, run_settings(run))
                        write_predictions_of(run, "dev", run.dev_data, dev_predictions)
                if report is not None:
                    timing = {"train_loss": epoch_loss, "seconds": seconds, "train_seconds": train_seconds}
                    report({**metrics, **routing, "epoch": state.epoch + 1, **timing})
            metrics = world.broadcast(metrics)
            if cfg.scheduler == "plateau":
                run.scheduler.step(metrics["mean"])
            state.epoch, state.batch, state.loss_sum = state.epoch + 1, 0, 0.0
            state.best_metrics = world.broadcast(state.best_metrics)
            run.trained = True
            if cfg.resume is not None:
                save_state(cfg, world, finite(run), run.optimizer, run.scheduler, state, run.ema)
        finish_run(run)
    if run.ddp_model is not run.model:  # DDP's reducer holds the process group: let it go before the group goes
        run.ddp_model = run.model
        gc.collect()
    distributed.teardown()  # on success only: leaving waits for every rank; after a failure torchrun stops them
    return state.best_metrics


def check_speed(cfg: Config, speed: Speed | None) -> Speed:
    """The run's speed modes: `speed`, or the readable path, which a run that asks for a GPU mode must not get."""
    if speed is not None:
        return speed
    asked = [f"--{name}" for name in ("unpad", "graph_steps") if getattr(cfg, name)]
    asked += [f"--torch_compile {cfg.torch_compile}"] if cfg.torch_compile != "off" else []
    if asked:
        raise MtbertError(f"{', '.join(asked)}: speed modes of mtbert.accel; train with mtbert.fit(cfg)")
    return Speed()


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


def check_finite(run: Run, losses: dict[str, float]) -> dict[str, float]:
    """The losses, if all are finite numbers; else the run stops (diverged), with the best model saved so far and
    the last state saved to --resume left as they were."""
    if all(math.isfinite(v) for v in losses.values()):
        return losses
    values = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
    kept = f"the best model so far stays in {run.save_to}" if run.state.best_metrics else "no model was saved"
    if run.cfg.resume is not None:
        kept += f"; --resume {run.cfg.resume} holds the last good state"
    raise MtbertError(
        f"training diverged by step {run.state.step} (loss {values}): stopped; {kept}. Try a lower --lr or --clip"
    )


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
