"""--profiler: a few steps under torch.profiler, the trace written under the run's log folder, then it stops."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.train.profiler import StepProfiler


def test_training_writes_a_trace_that_parses_and_logs_the_top_operators(cfg: Config, caplog) -> None:
    cfg = replace(cfg, profiler=True, profiler_steps=2, epochs=2, batch_size=1)  # 8 steps an epoch: 2 skipped,
    # 2 of warm-up, 2 recorded, then the rest and the next epoch unprofiled
    with caplog.at_level(logging.INFO, logger="mtbert"):
        fit(cfg)
    traces = list(Path(cfg.logdir).glob("*/profile/*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events) and len(events) > 100
    assert "top operators by self time" in caplog.text and "Self CPU" in caplog.text
    assert not torch.autograd.profiler._is_profiler_enabled  # profiling stopped after its steps


def test_a_run_shorter_than_the_schedule_writes_what_it_recorded(tmp_path: Path, caplog) -> None:
    profiler = StepProfiler(tmp_path, torch.device("cpu"), active=5, wait=0, warmup=1)
    for _ in range(3):  # 1 of warm-up, 2 of the 5 recorded
        torch.ones(8, 8) @ torch.ones(8, 8)
        profiler.step()
    assert profiler.trace is None
    profiler.finish()
    assert profiler.trace is not None and json.loads(profiler.trace.read_text())["traceEvents"]
    empty = StepProfiler(tmp_path / "none", torch.device("cpu"), active=1, wait=3, warmup=1)
    with caplog.at_level(logging.WARNING, logger="mtbert"):
        empty.finish()
    assert "no trace written" in caplog.text
