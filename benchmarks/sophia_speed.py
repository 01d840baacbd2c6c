"""Steps/s of the training step with SophiaH and SophiaG against AdamW, same model, data and batches.

    python benchmarks/sophia_speed.py [--device cpu|cuda] [--steps 20] [--hess_interval 10] [--checkpoint DIR]
        [--precision auto|fp32|bf16]

Sophia refreshes its Hessian estimate every --hess_interval steps: SophiaH with one Hessian-vector product
(a backward with create_graph=True, then a second backward along a random direction), SophiaG with one extra
backward of a loss against sampled labels. The timed steps are a whole number of intervals, so each optimizer pays
its share of refreshes. Prints one JSON line: steps/s of each and the ratio AdamW / Sophia (time per step).
"""

from __future__ import annotations

import argparse
import json

import torch
from train_speed import measure, setup

from mtbert.accel.kernels import tune_kernels
from mtbert.config import add_config_argument
from mtbert.model.multitask import MultitaskModel
from mtbert.train.optim import build_optimizer
from mtbert.train.step import train_step


def run(name: str, args: argparse.Namespace) -> dict:
    cfg, data, steps, encoder = setup(args)
    tune_kernels(torch.device(args.device))  # as training does
    model = MultitaskModel(encoder, cfg.active_tasks, 0.1).to(args.device).train()
    optimizer = build_optimizer(name, model, model.heads, 4e-5, 1e-3, 0.01, hess_interval=args.hess_interval)

    def step(rows: dict) -> None:
        train_step(model, model, optimizer, data, rows, dict.fromkeys(rows, 1.0), 0.25, args.device, args.precision)

    result = measure(step, steps, data, args, encoder.config)
    result["steps_per_s"] = round(result["samples_per_s"] / (args.batch_size * len(cfg.active_tasks)), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (a multiple of --hess_interval)")
    parser.add_argument("--hess_interval", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--checkpoint", help="BERT checkpoint folder (default: packaged MiniLM)")
    add_config_argument(parser, "precision", with_default=True)  # the training flag itself
    args = parser.parse_args()
    args.model = "minilm"
    # warm up for one interval; the timed steps then start on a refresh step, as the first step of a run does
    args.warmup = args.hess_interval
    args.steps += args.warmup
    torch.set_num_threads(args.threads)
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "threads": args.threads}
    for name in ("adamw", "sophiah", "sophiag"):
        result[name] = run(name, args)
    for name in ("sophiah", "sophiag"):
        result[f"{name}_time_ratio"] = round(result["adamw"]["steps_per_s"] / result[name]["steps_per_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
