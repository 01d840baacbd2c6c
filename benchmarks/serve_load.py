"""Load on `mtbert serve` over loopback: batched serving against one request at a time, measured in the same run;
with --flood, a flood of the largest requests against a server that sheds load and one that queues everything.

    python benchmarks/serve_load.py [--clients 16] [--requests 960] [--checkpoint DIR] [--data_dir data]
    python benchmarks/serve_load.py --flood [--clients 32] [--texts 16] [--chars 500] [--seconds 30] [--max_queue 64]

A model of the packaged all-MiniLM-L6-v2 (its heads as initialised, or --checkpoint's trained one) is served twice
by `mtbert serve` on 127.0.0.1: batched (--max_batch 64, --batch_window_ms 5) and one request at a time
(--max_batch 1). Each time --clients threads send --requests POST /sentiment requests in all, one SST dev sentence
each, over kept-alive connections. Prints a line per mode and one JSON line: requests/s, p50 and p99 latency,
errors, and the speed-up batched / one at a time. Exits 1 on any error, or past --timeout seconds per mode.

--flood: --clients threads send, for --seconds, requests of --texts texts of --chars characters each (SST dev
sentences joined), a new one as soon as the last is answered (a refused one after its Retry-After seconds, unless
--ignore_retry_after). The server runs twice: shedding load (--max_queue,
the default --request_timeout) and queueing everything (no bound, no deadline). Per mode: the accepted requests'
p50 and p99 latency, the refused (503) ones' p99, failures (any other answer), and the server's peak RSS. Exits 1
on a failure.
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


def run_threads(target, n: int) -> float:
    """Runs `target` in `n` threads at once; returns the seconds until the last ended."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


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

    wall = run_threads(client, clients)
    done = len(latencies)
    return {
        "requests": done,
        "errors": errors[0] + requests - done,
        "seconds": round(wall, 2),
        "requests_per_s": round(done / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
    }


FLOOD_MODES = {
    "sheds load": lambda max_queue: ["--max_queue", str(max_queue)],
    "queues everything": lambda max_queue: ["--max_queue", str(10**9), "--request_timeout", str(10**9)],
}


def flood(port: int, texts: list[str], clients: int, seconds: float, honour_retry: bool = True) -> dict:
    """`clients` threads each sending `texts` as one request again and again for `seconds` (and waiting for the
    answers of requests sent in time); a refused client waits the Retry-After seconds first (`honour_retry`), as
    well-behaved clients do, or sends again at once."""
    answers: dict[int, list[float]] = {}
    lock = threading.Lock()
    body = json.dumps({"texts": texts})
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                conn.request("POST", "/sentiment", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                status, retry = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                status, retry = 0, None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
            with lock:
                answers.setdefault(status, []).append((time.perf_counter() - started) * 1000)
            if status == 503 and honour_retry and retry is not None:
                time.sleep(min(float(retry), max(0.0, stop - time.monotonic())))
        conn.close()

    wall = run_threads(client, clients)
    ok, refused = answers.get(200, []), answers.get(503, [])

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 1) if values else None

    return {
        "accepted": len(ok),
        "accepted_p50_ms": pct(ok, 50),
        "accepted_p99_ms": pct(ok, 99),
        "refused": len(refused),
        "refused_p99_ms": pct(refused, 99),
        "failures": sum(len(v) for k, v in answers.items() if k not in (200, 503)),
        "seconds": round(wall, 1),
    }


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def start_server(folder: Path, precision: str, flags: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "mtbert", "serve", "--checkpoint", str(folder), "--port", str(port)]
    child = subprocess.Popen([*command, "--precision", precision, *flags], stdout=subprocess.DEVNULL)
    wait_until_up(port, child)
    return child, port


def run_flood(args: argparse.Namespace, folder: Path, sentences: list[str]) -> None:
    text = " ".join(sentences)
    texts = [(text[i * 97 :] + text)[: args.chars] for i in range(args.texts)]  # distinct texts of --chars chars
    results = {}
    for mode, flags in FLOOD_MODES.items():
        child, port = start_server(folder, args.precision, ["--max_texts", str(args.texts), *flags(args.max_queue)])
        try:
            flood(port, texts[:1], 1, 2)  # warm-up
            found = flood(port, texts, args.clients, args.seconds, not args.ignore_retry_after)
            results[mode] = found | {"peak_rss_mb": peak_rss_mb(child.pid)}
        finally:
            child.terminate()
            child.wait(timeout=60)
        r = results[mode]
        print(
            f"{mode:>17}: {r['accepted']} accepted (p50 {r['accepted_p50_ms']} ms, p99 {r['accepted_p99_ms']} ms), "
            f"{r['refused']} refused (p99 {r['refused_p99_ms']} ms), {r['failures']} failures, peak RSS "
            f"{r['peak_rss_mb']} MB",
            file=sys.stderr,
        )
    queued, shed = results["queues everything"], results["sheds load"]
    ratio = queued["accepted_p99_ms"] / shed["accepted_p99_ms"] if shed["accepted_p99_ms"] else None
    print(
        json.dumps(
            {
                "clients": args.clients,
                "texts": args.texts,
                "chars": args.chars,
                "max_queue": args.max_queue,
                "honour_retry_after": not args.ignore_retry_after,
                **{m.replace(" ", "_"): r for m, r in results.items()},
                "p99_queued_over_shed": round(ratio, 1) if ratio else None,
            }
        )
    )
    if any(r["failures"] for r in results.values()):
        raise SystemExit(1)


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
    parser.add_argument("--flood", action="store_true", help="the flood: shedding load against queueing everything")
    parser.add_argument("--texts", type=int, default=16, help="--flood: texts per request")
    parser.add_argument("--chars", type=int, default=500, help="--flood: characters per text")
    parser.add_argument("--seconds", type=float, default=30, help="--flood: how long the clients send")
    parser.add_argument("--max_queue", type=int, default=64, help="--flood: the shedding server's --max_queue")
    parser.add_argument("--ignore_retry_after", action="store_true", help="--flood: refused clients send again at once")
    args = parser.parse_args()
    sst = read_examples(Path(args.data_dir) / "ids-sst-dev.csv", ("sentence",), "sentiment", float, True)
    sentences = sst.texts[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoint) if args.checkpoint else packaged_model(Path(tmp) / "model")
        if args.flood:
            return run_flood(args, folder, sentences)
        for mode, flags in MODES.items():
            child, port = start_server(folder, args.precision, flags)
            try:
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
