"""Trains one run per line of a grid file through the one train(), and prints each run's best dev metrics.

    python scripts/sweep.py GRID [common training flags...]

Each non-empty line of GRID (# starts a comment) holds training flags, added to the common ones; a later flag
overrides an earlier one. Every run prints one JSON line {"flags", "best", "epochs", "seconds"}, so a grid
can be run where the GPU is and read back.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time

from mtbert.accel.modes import speed_for
from mtbert.cli import train_parser
from mtbert.config import config_from_args
from mtbert.train.loop import train


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = train_parser("sweep")
    with open(sys.argv[1], encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f]
    for flags in filter(None, lines):
        argv = sys.argv[2:] + shlex.split(flags)
        cfg = config_from_args(parser, parser.parse_args(argv))
        started = time.perf_counter()
        history: list[dict[str, float]] = []
        best = train(cfg, report=history.append, speed=speed_for(cfg))
        epochs = [{k: round(v, 4) for k, v in h.items() if "/" in k} for h in history]
        seconds = round(time.perf_counter() - started, 1)
        print(json.dumps({"flags": flags, "best": best, "epochs": epochs, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
