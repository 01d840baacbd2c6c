"""mtbert.encode against sentence-transformers' encode on the same 10,000 sentences of the data.

    python benchmarks/encode_speed.py [--device cpu|cuda] [--threads 2] [--n 10000] [--checkpoint DIR]

Both use the packaged all-MiniLM-L6-v2 and their default batch sizes; prints one JSON line with sentences/s of
each, the ratio ours / sentence-transformers, and the largest difference between the two embeddings.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mtbert import encode
from mtbert.data.files import read_examples
from mtbert.model.hf import default_checkpoint


def sentences(data_dir: str, n: int) -> list[str]:
    """The first n distinct sentences of the SST, Quora and STS training files, in file order."""
    found: dict[str, None] = {}
    for name, columns in (
        ("quora-train.csv", ("sentence1", "sentence2")),
        ("ids-sst-train.csv", ("sentence",)),
        ("sts-train.csv", ("sentence1", "sentence2")),
    ):
        for column in read_examples(f"{data_dir}/{name}", columns, "-", float, require_labels=False).texts:
            found.update(dict.fromkeys(column))
    return list(found)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=10000, help="number of sentences")
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--checkpoint", help="BERT checkpoint folder (default: the packaged MiniLM)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    texts = sentences(args.data_dir, args.n)
    folder = args.checkpoint or str(default_checkpoint())
    st = SentenceTransformer(folder, device=args.device, model_kwargs={"dtype": torch.float32})  # as ours
    warm = texts[:256]
    st.encode(warm)
    encode(warm, model=folder, device=args.device)

    start = time.perf_counter()
    theirs = st.encode(texts)
    st_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = encode(texts, model=folder, device=args.device)
    our_seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                "threads": args.threads,
                "sentences": len(texts),
                "sentence_transformers_per_s": round(len(texts) / st_seconds, 1),
                "ours_per_s": round(len(texts) / our_seconds, 1),
                "ratio": round(st_seconds / our_seconds, 2),
                "max_abs_diff": float(np.abs(ours - theirs).max()),
            }
        )
    )


if __name__ == "__main__":
    main()
