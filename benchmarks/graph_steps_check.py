"""Recorded training steps (--graph_steps) against the same steps run eagerly: the same losses and weights, on the GPU.

    python benchmarks/graph_steps_check.py [--device cpu|cuda] [--steps 20] [--no-unpad] [--checkpoint DIR]
        [--data_dir data] [--precision auto|fp32|bf16]

Two copies of the MiniLM multitask model, dropout off, take the same batches of the data through GraphSteps: one with
every step run eagerly, the other (on CUDA) with each step shape recorded once as a CUDA graph and replayed; so
the two differ by the recording alone (elsewhere nothing is recorded and both run eagerly). Prints one JSON line:
the recorded step shapes, the largest relative difference of a task's loss over the steps, the largest difference
of a weight at the end against the largest distance a weight moved, and "same": whether they stay within float
rounding (losses within 1e-3 relative, weights within 5% of that distance; atomic additions on the GPU round
differently run to run). The tests check the unrecorded computation on a CPU (tests/test_step.py); this checks the
recording itself.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
from train_speed import setup

from mtbert.accel.graph_steps import GraphSteps
from mtbert.accel.kernels import tune_kernels
from mtbert.accel.passes import ShapedPasses
from mtbert.config import add_config_argument
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import sentences_per_step
from mtbert.train.setup import set_dropout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--checkpoint", help="BERT checkpoint folder (default: packaged MiniLM)")
    for setting in ("precision", "unpad"):
        add_config_argument(parser, setting, with_default=True)
    parser.set_defaults(unpad=True)
    args = parser.parse_args()
    args.model = "minilm"
    cfg, data, steps, encoder = setup(args)
    tune_kernels(torch.device(args.device))
    model = MultitaskModel(encoder, cfg.active_tasks, 0.0).to(args.device).train()
    set_dropout(model, 0.0)  # dropout off everywhere: eager and replayed steps draw their masks differently
    for layer in model.encoder.layers:
        layer.attn.dropout_p = 0.0
    eager, recorded = model, copy.deepcopy(model)
    for m in (eager, recorded):
        m.passes = ShapedPasses(None, "off", sentences_per_step(cfg.active_tasks, args.batch_size), args.unpad)
    initial = [p.detach().clone() for p in eager.parameters()]
    # a large eps: Adam's update of a coordinate whose gradient is about 0 is noise / noise, which rounding flips
    fused = args.device == "cuda"
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-3, eps=1e-3, fused=fused) for m in (eager, recorded)]
    weights = dict.fromkeys(cfg.active_tasks, 1.0)
    unrecorded = GraphSteps(eager, optimizers[0], weights, 0.25, args.precision, record=False)
    graphs = GraphSteps(recorded, optimizers[1], weights, 0.25, args.precision)
    loss_diff = 0.0
    for rows in steps:
        expected = unrecorded(data, rows)
        losses = graphs(data, rows)
        for t, loss in losses.items():
            loss_diff = max(loss_diff, ((loss - expected[t]).abs() / expected[t].abs()).item())
    params = list(zip(initial, eager.parameters(), recorded.parameters(), strict=True))
    weight_diff = max((a - b).abs().max().item() for _, a, b in params)
    moved = max((a - start).abs().max().item() for start, a, _ in params)  # how far training moved a weight
    result = {
        "device": args.device,
        "steps": len(steps),
        "step_shapes": len(graphs.shapes),
        "recorded": graphs.record,
        "max_loss_rel_diff": loss_diff,
        "max_weight_diff": weight_diff,
        "max_weight_moved": moved,
        "same": loss_diff < 1e-3 and weight_diff < 0.05 * moved,
    }
    print(json.dumps(result))
    if not result["same"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
