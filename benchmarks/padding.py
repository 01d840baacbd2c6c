"""Token positions the encoder computes per real token in the passes of training steps, for each way of cutting them.

    python benchmarks/padding.py [--data_dir data] [--batch_size 64] [--steps 40] [--checkpoint DIR]

The settings: passes of up to 1,024 padded tokens (the CPU default), 16,384 (the CUDA default), one pass per step
(40,960), the compiled encoder's CUDA graphs (one pass of a fixed number of sentences, lengths padded to a multiple
of 16), and recorded steps (--graph_steps: one pass of the step's sentences, lengths padded to a multiple of 16);
each padded and unpadded (--unpad: the linear layers, norms and dropout see the real tokens, and under CUDA graphs
fillers up to a multiple of TOKEN_MULTIPLE; attention sees the padded pass, or in recorded steps groups of its
sentences each padded to its own length, see model.ATTENTION_GROUPS). Over the training sampler's
first steps, those of train_speed.py (its training_steps). Prints one JSON line: per setting, positions per real
token for the linear layers and for attention, attention's T x T scores per real one (n x n for a sentence of n
tokens), passes per step, the distinct pass shapes (CUDA graphs are recorded per shape), and the host time to build
a step's passes (milliseconds). Needs the tokenizer and the data only (no model weights).
"""

from __future__ import annotations

import argparse
import json
import time

from train_speed import training_steps

from mtbert.accel.passes import ShapedPasses
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.multitask import MultitaskModel, batch_sentences
from mtbert.model.tasks import sentences_per_step
from mtbert.train.step import step_batch

# setting -> (chunk_tokens, torch_compile, graph_steps); the pass shapes of each mode, without compiling anything
SETTINGS = {
    "cpu": (1024, "off", False),
    "cuda": (16384, "off", False),
    "one_pass": (40960, "off", False),
    "cudagraphs": (None, "cudagraphs", False),
    "graph_steps": (None, "off", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint", help="the tokenizer's checkpoint folder (default: packaged MiniLM)")
    args = parser.parse_args()
    cfg, data, batches = training_steps(args)
    steps = [batch_sentences(step_batch(data, rows)[0]) for rows in batches]
    # a one-layer stand-in: only the pass shapes are used, and they depend on the position table alone
    model = MultitaskModel(
        BertEncoder(EncoderConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)),
        (),
        0,
    )
    real = sum(len(s) for sentences in steps for s in sentences)
    real_scores = sum(len(s) ** 2 for sentences in steps for s in sentences)
    result = {"steps": len(steps), "real_tokens_per_step": round(real / len(steps), 1)}
    for name, (chunk_tokens, mode, graph_steps) in SETTINGS.items():
        for unpad in (False, True):
            # the pass shapes of the mode, without compiling anything
            shaped = ShapedPasses(chunk_tokens, mode, sentences_per_step(cfg.active_tasks, args.batch_size), unpad)
            linear = attention = scores = passes = 0
            shapes = set()
            start = time.perf_counter()
            for sentences in steps:
                # recorded steps encode all of a step's sentences in one pass, in their order (see accel.graph_steps)
                cuts = [range(len(sentences))] if graph_steps else shaped.plan(model, [len(s) for s in sentences])
                for rows in cuts:
                    inputs = shaped.inputs(model, [sentences[i] for i in rows], recorded=graph_steps)
                    # attention's (rows, length) blocks: the pass, or its attention groups (recorded unpadded steps)
                    blocks = inputs.groups.shapes if inputs.groups is not None else [inputs.mask.shape]
                    attention += sum(rows * length for rows, length in blocks)
                    scores += sum(rows * length**2 for rows, length in blocks)
                    linear += len(inputs.tokens) if inputs.tokens is not None else inputs.mask.numel()
                    passes += 1
                    shapes.add((*inputs.mask.shape, len(inputs.tokens) if inputs.tokens is not None else None, *blocks))
            result[name + ("_unpadded" if unpad else "")] = {
                "linear_per_real": round(linear / real, 2),
                "attention_per_real": round(attention / real, 2),
                "scores_per_real": round(scores / real_scores, 2),
                "passes_per_step": round(passes / len(steps), 2),
                "pass_shapes": len(shapes),
                "host_ms_per_step": round(1000 * (time.perf_counter() - start) / len(steps), 2),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
