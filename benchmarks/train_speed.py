"""Our training step against the plain Hugging Face loop a user would write, on the same data, model and batches.

    python benchmarks/train_speed.py [--device cpu|cuda] [--model minilm|bert-base] [--steps 8] [--batch_size 64]
        [--checkpoint DIR] [--precision auto|fp32|bf16] [--chunk_tokens N] [--unpad]
        [--torch_compile off|on|cudagraphs] [--graph_steps]
        [--profile [--trace_dir DIR]]

The reference: a `transformers.BertModel` with the same pooling and heads, each task's batch tokenized on the fly
with padding to its longest sentence, one encoder forward per task and side (SST 1, Quora 2, STS 2), the losses
summed, AdamW. Ours: the step of `mtbert.train.loop.train` (`train_step`) (sentences tokenized once, all tasks in one
length-sorted pass, bf16 autocast on CUDA). Each runs in its own subprocess (so each peak memory is its own)
over the same sampled batches; prints one JSON line with samples/s, real tokens/s, the ratio ours / reference,
peak memory, and the model FLOP rate of each (and on CUDA its fraction of the chip's dense bf16 peak, MFU).
--profile prints where ours spends its time instead (mtbert's training profiler, as --profiler: ops by device time,
a trace under --trace_dir).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time

import torch

from mtbert.accel.graph_steps import GraphSteps
from mtbert.accel.kernels import tune_kernels
from mtbert.accel.passes import ShapedPasses
from mtbert.config import Config, add_config_argument
from mtbert.data.sampler import MultitaskSampler
from mtbert.data.task_data import TaskData, read_task
from mtbert.data.task_files import split_file
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.hf import default_checkpoint, load_encoder
from mtbert.model.multitask import MultitaskModel, PaddedPasses
from mtbert.model.tasks import TASKS, sentences_per_step
from mtbert.model.tokenizer import Tokenizer
from mtbert.train.optim import build_optimizer
from mtbert.train.profiler import StepProfiler, sort_key
from mtbert.train.step import train_step

# A bert-base-sized random encoder, for speed only (MiniLM's vocabulary).
BERT_BASE = EncoderConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
# Dense bf16 matrix peak (TFLOP/s) of the chips MFU is reported for (NVIDIA datasheets, SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def training_steps(args: argparse.Namespace) -> tuple[Config, dict[str, TaskData], list[dict]]:
    """The training data, tokenized once, and the sampler's first args.steps batches (seed 0)."""
    tokenizer = Tokenizer.from_pretrained(args.checkpoint)
    tokenizer.set_max_length(128)
    cfg = Config(data_dir=args.data_dir)
    data = {t: read_task(split_file(cfg, t, "train"), t, tokenizer) for t in cfg.active_tasks}
    sampler = MultitaskSampler({t: len(d) for t, d in data.items()}, args.batch_size * args.steps, args.batch_size, 0)
    return cfg, data, list(sampler.epoch(0))


def setup(args: argparse.Namespace):
    torch.manual_seed(0)
    cfg, data, steps = training_steps(args)
    encoder = load_encoder(args.checkpoint) if args.model == "minilm" else BertEncoder(BERT_BASE)
    return cfg, data, steps, encoder


def run_ours(args: argparse.Namespace) -> dict:
    cfg, data, steps, encoder = setup(args)
    model = MultitaskModel(encoder, cfg.active_tasks, 0.1).to(args.device).train()
    step_sentences = sentences_per_step(cfg.active_tasks, args.batch_size)
    tune_kernels(torch.device(args.device))  # as training does
    model.passes = PaddedPasses(args.chunk_tokens)
    if args.unpad or args.torch_compile != "off" or args.graph_steps:  # as accel.speed_for sets them
        model.passes = ShapedPasses(args.chunk_tokens, args.torch_compile, step_sentences, args.unpad)
        if args.torch_compile != "off":
            model.passes.compile(model)
    optimizer = build_optimizer("adamw", model, model.heads, 1e-5, 1e-5, 0.01)
    weights = dict.fromkeys(cfg.active_tasks, 1.0)
    graphs = GraphSteps(model, optimizer, weights, 0.25, args.precision) if args.graph_steps else None

    def step(rows: dict) -> None:
        if graphs is not None:
            graphs(data, rows)
        else:
            train_step(model, model, optimizer, data, rows, weights, 0.25, args.device, args.precision)

    result = profile(step, steps, args) if args.profile else measure(step, steps, data, args, encoder.config)
    if graphs is not None:
        result["step_shapes"] = len(graphs.shapes)  # each recorded as a CUDA graph, on its first step
    return result


def run_reference(args: argparse.Namespace) -> dict:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    cfg, data, steps, encoder = setup(args)
    folder = str(args.checkpoint or default_checkpoint())
    hf_tokenizer = BertTokenizerFast.from_pretrained(folder)
    if args.model == "minilm":
        bert = BertModel.from_pretrained(folder, add_pooling_layer=False, dtype=torch.float32)
    else:
        bert = BertModel(BertConfig(**BERT_BASE.to_dict()), add_pooling_layer=False)
    ours = MultitaskModel(encoder, cfg.active_tasks, 0.1)  # borrowed for its pooling and heads only
    modules = torch.nn.ModuleList([bert, ours.pool, ours.heads]).to(args.device).train()
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-5)

    def embed(texts: list[str]) -> torch.Tensor:
        enc = hf_tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt").to(args.device)
        hidden = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return ours.pool(hidden, enc["attention_mask"])

    def step(rows: dict) -> None:
        loss = 0.0
        for t, index in rows.items():
            sides = [embed([column[i] for i in index]) for column in data[t].examples.texts]
            out = ours.heads[t](*sides)
            loss = loss + TASKS[t].loss(out, data[t].labels[index].to(args.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 0.25)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return measure(step, steps, data, args, encoder.config)


def training_flops(lengths: list[int], cfg: EncoderConfig) -> float:
    """Model FLOPs of a training step (forward + backward = 3 forwards) over sentences of these real lengths:
    per token 2 FLOPs per weight of the layers' matrices, plus attention's QK^T and AV, 4 n H per token per layer."""
    H, L = cfg.hidden_size, cfg.num_hidden_layers
    weights = L * (4 * H * H + 2 * H * cfg.intermediate_size)
    return 3 * sum(2 * n * weights + 4 * n * n * H * L for n in lengths)


def measure(step, steps: list[dict], data: dict, args: argparse.Namespace, cfg: EncoderConfig) -> dict:
    sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
    start = time.perf_counter()
    for rows in steps[: args.warmup]:
        step(rows)
    sync()
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for rows in steps[args.warmup :]:
        step(rows)
    sync()
    seconds = time.perf_counter() - start
    timed = steps[args.warmup :]
    samples = sum(len(index) for rows in timed for index in rows.values())
    lengths = [
        len(data[t].tokens[c][i])
        for rows in timed
        for t, idx in rows.items()
        for c in range(len(data[t].tokens))
        for i in idx
    ]
    tflops = training_flops(lengths, cfg) / seconds / 1e12
    result = {
        "samples_per_s": round(samples / seconds, 1),
        "tokens_per_s": round(sum(lengths) / seconds, 1),
        "ms_per_step": round(1000 * seconds / len(timed), 2),
        "warmup_s": round(warmup_seconds, 2),  # --torch_compile: compiling happens here
        "model_tflops": round(tflops, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if args.device == "cuda":
        result["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        name = torch.cuda.get_device_name()
        peak = next((v for chip, v in PEAK_BF16_TFLOPS.items() if chip in name), None)
        result["mfu"] = peak and round(tflops / peak, 4)
    return result


def profile(step, steps: list[dict], args: argparse.Namespace) -> dict:
    """Runs the steps under mtbert's training profiler (the warm-up ones profiled but dropped, the timed ones
    recorded), which writes the trace to --trace_dir and logs the top operators by self time; returns how busy the
    device was: its summed kernel time over the wall time."""
    device = torch.device(args.device)
    profiler = StepProfiler(args.trace_dir, device, active=len(steps) - args.warmup, wait=0, warmup=args.warmup)
    cuda = args.device == "cuda"
    for rows in steps[: args.warmup]:
        step(rows)
        profiler.step()
    start = time.perf_counter()
    for rows in steps[args.warmup :]:
        step(rows)
        if cuda:
            torch.cuda.synchronize()
        profiler.step()
    seconds = time.perf_counter() - start  # (with the profiler's own work at the end of each step)
    averages, key = profiler.averages, sort_key(device)
    # on CUDA the device's own events (kernels, copies) only, as the table's total: a compiled graph's call is also
    # a device event, a user annotation spanning the kernels it launched, which would count them twice
    device_events = [
        e
        for e in averages
        if not cuda or (getattr(e, key) > 0 and e.device_type.name == "CUDA" and not e.is_user_annotation)
    ]
    busy = sum(getattr(e, key) for e in device_events) / 1e6  # microseconds -> seconds
    kernels = sum(e.count for e in device_events)
    n = len(steps) - args.warmup
    return {
        "ms_per_step": round(1000 * seconds / n, 2),
        "busy_fraction": round(busy / seconds, 3),
        "device_kernels_per_step": kernels // n if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="minilm", choices=("minilm", "bert-base"))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--checkpoint", help="BERT checkpoint folder of the minilm model (default: packaged MiniLM)")
    # ours: the training flags themselves
    for setting in ("precision", "chunk_tokens", "unpad", "torch_compile", "graph_steps"):
        add_config_argument(parser, setting, with_default=True)
    parser.add_argument("--only", choices=("ours", "reference"), help="run one side and print its JSON line")
    parser.add_argument("--profile", action="store_true", help="profile ours (implies --only ours)")
    parser.add_argument("--trace_dir", default="runs/profile", help="--profile: where the trace is written")
    args = parser.parse_args()
    args.steps += args.warmup
    torch.set_num_threads(args.threads)
    if args.profile:
        args.only = "ours"
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # the profiler's table goes to the log
    if args.only:
        print(json.dumps((run_ours if args.only == "ours" else run_reference)(args)))
        return
    result = {"device": args.device, "model": args.model, "batch_size": args.batch_size, "threads": args.threads}
    if args.device == "cuda":
        result["device"] = torch.cuda.get_device_name()
    argv = [a for a in sys.argv[1:]]
    for name in ("reference", "ours"):
        out = subprocess.run([sys.executable, __file__, *argv, "--only", name], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{name} run failed:\n{out.stderr}")
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
    result["samples_ratio"] = round(result["ours"]["samples_per_s"] / result["reference"]["samples_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
