"""Before/after the speed work: the same training run with our step and with a plain step, same seed.

    python benchmarks/same_results.py [--epochs 2] [--samples_per_epoch 2000] [other `mtbert train` flags]

"Plain" is the step without the speed work: each task's batch tokenized sentences padded to its longest one, one
encoder forward per task and side (SST 1, Quora 2, STS 2), the loss read every step. "Ours" is the step of
`mtbert train`: all the step's sentences in one length-sorted pass, in chunks, under bf16 autocast where
`--precision auto` chooses it (a GPU, or a CPU with bf16 instructions); plain is float32. Everything else (the
loop, data, seed, initial weights, batches, optimizer, evaluation) is `mtbert.train.loop.train` itself. Prints one
JSON line with the best dev metrics and wall time of each; the metrics should agree within noise (dropout draws,
floating-point sums and bf16 rounding differ between the two).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import mtbert.train.loop as training
from mtbert.cli import train_parser
from mtbert.config import config_from_args
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import pad_batch

ours_step = training.train_step


def plain_step(
    ddp_model, model, optimizer, data, rows, weights, clip, device, precision, smart=None, surgery=None
) -> dict[str, torch.Tensor]:
    del precision, smart, surgery  # the loop before the speed work: float32 throughout, no techniques
    losses = {}
    for t, index in rows.items():
        sides = []
        for column in data[t].tokens:
            ids, mask = pad_batch([column[i] for i in index], model.pad_id)
            ids, mask = ids.to(device), mask.to(device)
            sides.append(model.pool(model.encoder(ids, mask), mask))
        out = model.heads[t](*sides)
        losses[t] = weights[t] * TASKS[t].loss(out, data[t].labels[index].to(device))
        losses[t].item()  # a plain loop reads its loss every step
    sum(losses.values()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {t: v.detach() for t, v in losses.items()}


def main() -> None:
    defaults = ["--epochs", "2", "--samples_per_epoch", "2000", "--head_lr", "1e-3", "--hidden_dropout_prob", "0"]
    parser = train_parser("same_results.py")
    cfg = config_from_args(parser, parser.parse_args(defaults + sys.argv[1:]))
    result = {}
    for name, step in (("plain", plain_step), ("ours", ours_step)):
        training.train_step = step
        with tempfile.TemporaryDirectory() as out:
            paths = {f"{t}_{s}_out": f"{out}/{t}-{s}.csv" for t in TASKS for s in ("dev", "test")}
            run = cfg.updated(save_dir=str(Path(out) / "models"), logdir=str(Path(out) / "runs"), **paths)
            started = time.perf_counter()
            best = training.train(run)
            result[name] = {
                **{k: round(v, 4) for k, v in best.items()},
                "seconds": round(time.perf_counter() - started),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
