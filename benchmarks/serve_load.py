"""Load on `mtbert serve` over loopback: batched serving against one request at a time, measured in the same run.

    python benchmarks/serve_load.py [--clients 16] [--requests 960] [--checkpoint DIR] [--data_dir data]

A model of the packaged all-MiniLM-L6-v2 (its heads as initialised, or --checkpoint's trained one) is served twice
by `mtbert serve` on 127.0.0.1: batched (--max_batch 64, --batch_window_ms 5) and one request at a time
(--max_batch 1). Each time --clients threads send --requests POST /sentiment requests in all, one SST dev sentence
each, over kept-alive connections. Prints a line per mode and one JSON line: requests/s, p50 and p99 latency,
errors, and the speed-up batched / one at a time. Exits 1 on any error, or past --timeout seconds per mode.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mtbert.config import Config
from mtbert.data.files import read_examples
from mtbert.inference.saved import save_model
from mtbert.train.setup import setup_model

MODES = {"batched": ["--max_batch", "64", "--batch_window_ms", "5"], "one at a time": ["--max_batch", "1"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def packaged_model(folder: Path) -> Path:
    """The packaged MiniLM with the three heads as initialised, saved as a model folder."""
    model, tokenizer = setup_model(Config())
    save_model(folder, model, tokenizer, {})
    return folder


def wait_until_up(port: int, child: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"mtbert serve exited with {child.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mtbert serve did not start")


def load(port: int, sentences: list[str], clients: int, requests: int, timeout: float) -> dict:
    """`requests` one-sentence requests from `clients` threads; latencies in ms, errors, wall time."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + timeout

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        for n in counter:  # shared: each request number once, over all threads
            if time.monotonic() > deadline:
                break
            body = json.dumps({"texts": [sentences[n % len(sentences)]]})
            started = time.perf_counter()
            try:
                conn.request("POST", "/sentiment", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                ok = response.status == 200 and len(json.loads(response.read())["results"]) == 1
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                errors[0] += not ok
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done = len(latencies)
    return {
        "requests": done,
        "errors": errors[0] + requests - done,
        "seconds": round(wall, 2),
        "requests_per_s": round(done / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=960, help="requests per mode, over all clients")
    parser.add_argument(
        "--checkpoint", default=None, help="a model folder (default: the packaged MiniLM, untrained heads)"
    )
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per mode at most")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="the server's")
    args = parser.parse_args()
    sst = read_examples(Path(args.data_dir) / "ids-sst-dev.csv", ("sentence",), "sentiment", float, True)
    sentences = sst.texts[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoint) if args.checkpoint else packaged_model(Path(tmp) / "model")
        for mode, flags in MODES.items():
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "mtbert",
                "serve",
                "--checkpoint",
                str(folder),
                "--port",
                str(port),
                "--precision",
                args.precision,
                *flags,
            ]
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            try:
                wait_until_up(port, child)
                load(port, sentences, args.clients, min(args.clients * 2, args.requests), args.timeout)  # warm-up
                results[mode] = load(port, sentences, args.clients, args.requests, args.timeout)
            finally:
                child.terminate()
                child.wait(timeout=30)
            r = results[mode]
            print(
                f"{mode:>13}: {r['requests_per_s']:7.1f} requests/s, p50 {r['p50_ms']:6.1f} ms, p99 "
                f"{r['p99_ms']:6.1f} ms, {r['errors']} errors ({r['requests']} requests, {args.clients} clients)",
                file=sys.stderr,
            )
    speedup = results["batched"]["requests_per_s"] / results["one at a time"]["requests_per_s"]
    print(
        json.dumps(
            {
                "clients": args.clients,
                **{m.replace(" ", "_"): r for m, r in results.items()},
                "speedup": round(speedup, 2),
            }
        )
    )
    if any(r["errors"] for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
