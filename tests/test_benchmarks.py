"""The benchmarks still run (they import training internals and drift when those change): each on a few steps of
the first rows of the real data files and the packaged MiniLM, printing its JSON line. Their timings are for
docs/speed.md, not checked here; graph_steps_check's verdict is."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# script (and flags) -> its arguments for a few steps, and a key of the JSON line it prints
BENCHMARKS = {
    "train_speed.py": (["--steps", "1", "--warmup", "1", "--batch_size", "4"], "samples_ratio"),  # ours and HF's
    "train_speed.py --only ours --graph_steps --unpad": (
        ["--steps", "2", "--warmup", "1", "--batch_size", "4"],
        "step_shapes",
    ),
    "train_speed.py --profile": (["--steps", "2", "--warmup", "1", "--batch_size", "4"], "busy_fraction"),
    "graph_steps_check.py": (["--steps", "2", "--batch_size", "4"], "same"),
    "sophia_speed.py": (["--steps", "1", "--hess_interval", "1", "--batch_size", "4"], "sophiah_time_ratio"),
    "same_results.py": (["--epochs", "1", "--samples_per_epoch", "8", "--batch_size", "4"], "plain"),
    "encode_speed.py": (["--n", "40"], "ratio"),
    "padding.py": (["--steps", "2", "--batch_size", "4"], "graph_steps_unpadded"),
    "encoder_speed.py": (["--steps", "1", "--warmup", "1", "--batch_size", "4", "--seq_len", "16"], "train_ratio"),
    "tagging_speed.py": (["--limit", "50", "--samples_per_epoch", "8", "--batch_size", "4"], "epoch_ratio"),
    "serve_load.py": (["--clients", "4", "--requests", "24"], "speedup"),
    "serve_load.py --flood": (
        ["--clients", "6", "--texts", "4", "--chars", "200", "--seconds", "3", "--max_queue", "8"],
        "p99_queued_over_shed",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs(script: str, first_rows: Path, tmp_path: Path) -> None:
    args, key = BENCHMARKS[script]
    name, *flags = script.split()
    argv = [sys.executable, str(REPO / "benchmarks" / name), *flags, *args]
    if name != "encoder_speed.py":  # random batches, no data
        argv += ["--data_dir", str(first_rows)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert key in result, result
    if "--profile" in flags:  # the training profiler's trace and table
        assert list((tmp_path / "runs" / "profile").glob("*.pt.trace.json")) and "Self CPU" in done.stderr
    if name == "graph_steps_check.py":  # its verdict: the recorded (here: unrecorded) steps equal the eager ones
        assert result["same"] is True, result


@pytest.mark.gpu
@pytest.mark.slow
def test_recorded_cuda_graph_steps_equal_eager_steps(first_rows: Path, tmp_path: Path) -> None:
    """On CUDA, --graph_steps records whole steps as CUDA graphs: 20 replayed steps give the eager steps' losses
    and weights (graph_steps_check.py exits 1 otherwise)."""
    argv = [
        sys.executable,
        str(REPO / "benchmarks" / "graph_steps_check.py"),
        "--device",
        "cuda",
        "--data_dir",
        str(first_rows),
        "--batch_size",
        "8",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["recorded"] is True and result["same"] is True, result
