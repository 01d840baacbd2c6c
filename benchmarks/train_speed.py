"""Our training step against the plain Hugging Face loop a user would write, on the same data, model and batches.

    python benchmarks/train_speed.py [--device cpu|cuda] [--model minilm|bert-base] [--steps 8] [--batch_size 64]

The reference: a `transformers.BertModel` with the same pooling and heads, each task's batch tokenized on the fly
with padding to its longest sentence, one encoder forward per task and side (SST 1, Quora 2, STS 2), the losses
summed, AdamW. Ours: the step of `mtbert.training.train` (sentences tokenized once, all tasks in one
length-sorted pass). Each runs in its own subprocess (so each peak memory is its own) over the same sampled
batches; prints one JSON line with samples/s, real tokens/s, the ratio ours / reference and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from mtbert.config import Config
from mtbert.data import MultitaskSampler
from mtbert.encoder import BertEncoder, EncoderConfig, default_checkpoint
from mtbert.model import MultitaskModel
from mtbert.tasks import TASKS
from mtbert.tokenizer import Tokenizer
from mtbert.training import read_task, task_file, train_step

# A bert-base-sized random encoder, for speed only (MiniLM's vocabulary).
BERT_BASE = EncoderConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def setup(args: argparse.Namespace):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_pretrained()
    tokenizer.set_max_length(128)
    cfg = Config(data_dir=args.data_dir)
    data = {t: read_task(task_file(cfg, t, "train"), t, tokenizer) for t in cfg.tasks}
    sampler = MultitaskSampler({t: len(d) for t, d in data.items()}, args.batch_size * args.steps, args.batch_size, 0)
    steps = list(sampler.epoch(0))
    encoder = BertEncoder.from_pretrained() if args.model == "minilm" else BertEncoder(BERT_BASE)
    return cfg, data, steps, encoder


def run_ours(args: argparse.Namespace) -> dict:
    cfg, data, steps, encoder = setup(args)
    model = MultitaskModel(encoder, cfg.tasks, 0.1).to(args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(rows: dict) -> None:
        train_step(model, model, optimizer, data, rows, dict.fromkeys(rows, 1.0), 0.25, args.device)

    return measure(step, steps, data, args)


def run_reference(args: argparse.Namespace) -> dict:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    cfg, data, steps, encoder = setup(args)
    folder = str(default_checkpoint())
    hf_tokenizer = BertTokenizerFast.from_pretrained(folder)
    if args.model == "minilm":
        bert = BertModel.from_pretrained(folder, add_pooling_layer=False)
    else:
        bert = BertModel(BertConfig(**BERT_BASE.to_dict()), add_pooling_layer=False)
    ours = MultitaskModel(encoder, cfg.tasks, 0.1)  # borrowed for its pooling and heads only
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

    return measure(step, steps, data, args)


def measure(step, steps: list[dict], data: dict, args: argparse.Namespace) -> dict:
    sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
    for rows in steps[: args.warmup]:
        step(rows)
    sync()
    start = time.perf_counter()
    for rows in steps[args.warmup :]:
        step(rows)
    sync()
    seconds = time.perf_counter() - start
    timed = steps[args.warmup :]
    samples = sum(len(index) for rows in timed for index in rows.values())
    tokens = sum(
        len(data[t].tokens[c][i])
        for rows in timed
        for t, idx in rows.items()
        for c in range(len(data[t].tokens))
        for i in idx
    )
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    return {
        "samples_per_s": round(samples / seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_cuda_gb": peak and round(peak, 2),
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
    parser.add_argument("--only", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps += args.warmup
    torch.set_num_threads(args.threads)
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
