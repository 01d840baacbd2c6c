"""What --additional_input costs: tagging every train and dev sentence once, then a training epoch with tags from a
warm cache against the same epoch without tags.

    python benchmarks/tagging_speed.py [--data_dir data] [--samples_per_epoch 640] [--limit N]

First, all train and dev sentences of the three tasks are tagged into an empty cache (spaCy, batched, parser and
lemmatizer off): seconds and sentences/s. Then two one-epoch runs of fit() on the packaged MiniLM, the same seed
and batches, with and without --additional_input (its tags read from the now warm cache); the ratio of their
training seconds (tags / none) is printed, with the dev metrics of each. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

from mtbert.config import Config
from mtbert.data.files import read_examples
from mtbert.data.tagging import Tagger
from mtbert.data.task_files import split_file
from mtbert.fitting import fit
from mtbert.model.tasks import TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--samples_per_epoch", type=int, default=640)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="tag only the first N sentences (a smoke run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = Config(data_dir=args.data_dir)
    sentences = []
    for task, spec in TASKS.items():
        for split in ("train", "dev"):
            examples = read_examples(
                split_file(base, task, split),
                spec.text_columns,
                spec.label_column,
                spec.parse_label,
                require_labels=True,
            )
            sentences += [s for column in examples.texts for s in column]
    sentences = list(dict.fromkeys(sentences))[: args.limit]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        tagger = Tagger(cache)
        tagger.words(sentences)
        tag_seconds = time.perf_counter() - started
        runs = {}
        for tags in (False, True):
            cfg = Config.from_settings(
                dict(
                    data_dir=args.data_dir,
                    epochs=1,
                    samples_per_epoch=args.samples_per_epoch,
                    batch_size=args.batch_size,
                    additional_input=tags,
                    tag_cache=cache,
                    save_dir=f"{out}/m",
                    logdir=f"{out}/runs",
                    **{f"{t}_{s}_out": f"{out}/{t}-{s}.csv" for t in TASKS for s in ("dev", "test")},
                )
            )
            history: list[dict] = []
            fit(cfg, report=history.append)
            runs["tags" if tags else "none"] = history[0]
    ratio = runs["tags"]["train_seconds"] / runs["none"]["train_seconds"]
    result = {
        "sentences": len(sentences),
        "tagging_seconds": round(tag_seconds, 1),
        "sentences_per_s": round(len(sentences) / tag_seconds, 1),
        "spacy_calls": tagger.calls,
        "epoch_seconds_tags": round(runs["tags"]["train_seconds"], 1),
        "epoch_seconds_none": round(runs["none"]["train_seconds"], 1),
        "epoch_ratio": round(ratio, 3),
        "dev_tags": {k: round(v, 3) for k, v in runs["tags"].items() if "/" in k},
        "dev_none": {k: round(v, 3) for k, v in runs["none"].items() if "/" in k},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
