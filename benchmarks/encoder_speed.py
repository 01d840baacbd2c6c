"""Our encoder against transformers.BertModel on the same random batches: training and inference samples/s.

    python benchmarks/encoder_speed.py [--device cpu|cuda] [--threads 2] [--batch_size 32] [--seq_len 48]

Both models get the packaged MiniLM weights and identical inputs (random lengths, right-padded). Prints one JSON
line with samples/s of each and the ratios ours / transformers (> 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import BertModel

from mtbert.model.hf import default_checkpoint, load_encoder


def random_batches(n: int, batch_size: int, seq_len: int, vocab: int, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        ids = torch.randint(1000, vocab, (batch_size, seq_len), generator=g)
        lengths = torch.randint(seq_len // 4, seq_len + 1, (batch_size,), generator=g)
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
        batches.append((ids * mask, mask))
    return batches


def timed(step, batches: list[tuple], warmup: int, device: str) -> float:
    """Samples per second of `step` over `batches` after `warmup` untimed calls."""
    for ids, mask in batches[:warmup]:
        step(ids.to(device), mask.to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for ids, mask in batches[warmup:]:
        step(ids.to(device), mask.to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    return sum(len(b[0]) for b in batches[warmup:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = default_checkpoint()
    models = {
        "ours": load_encoder(folder).to(args.device),
        "transformers": BertModel.from_pretrained(str(folder), add_pooling_layer=False).to(args.device),
    }
    forward = {
        "ours": lambda m, ids, mask: m(ids, mask),
        "transformers": lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state,
    }
    batches = random_batches(args.steps + args.warmup, args.batch_size, args.seq_len, 30522)
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
    }
    # Interleave the two models per measurement so that machine noise hits both alike.
    for mode in ("train", "inference"):
        for name, model in models.items():
            model.train(mode == "train")

            def train_step(ids, mask, model=model, name=name):
                forward[name](model, ids, mask).pow(2).mean().backward()
                model.zero_grad(set_to_none=True)

            @torch.inference_mode()
            def infer_step(ids, mask, model=model, name=name):
                forward[name](model, ids, mask)

            step = train_step if mode == "train" else infer_step
            result[f"{name}_{mode}_samples_per_s"] = round(timed(step, batches, args.warmup, args.device), 1)
        result[f"{mode}_ratio"] = round(
            result[f"ours_{mode}_samples_per_s"] / result[f"transformers_{mode}_samples_per_s"], 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
