"""Writes a binary SST task (SST-2) from the SST-5 files of the data folder: labels 0-1 negative, 3-4 positive, the
neutral 2 left out, in the CS224N layout that `--tasks examples/sst2.yaml` reads.

    python examples/make_sst2.py [DATA_DIR]     (default: data)
"""

import csv
import sys
from pathlib import Path

NAMES = {"0": "negative", "1": "negative", "3": "positive", "4": "positive"}


def main(data_dir: Path) -> None:
    for split in ("train", "dev"):
        source, dest = data_dir / f"ids-sst-{split}.csv", data_dir / f"sst2-{split}.csv"
        with source.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        header, body = rows[0], rows[1:]
        at = {name.strip(): i for i, name in enumerate(header)}
        kept = [r for r in body if len(r) == len(header) and r[at["sentiment"]].strip() in NAMES]
        with dest.open("w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, delimiter="\t", lineterminator="\n")
            out.writerow(["", "id", "sentence", "polarity"])
            for n, r in enumerate(kept):
                out.writerow([n, r[at["id"]], r[at["sentence"]], NAMES[r[at["sentiment"]].strip()]])
        print(f"wrote {dest}: {len(kept)} of {len(body)} rows (neutral left out)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
