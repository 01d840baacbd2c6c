"""The training profiler (--profiler, and benchmarks/train_speed.py --profile): torch.profiler over a few steps, on a
schedule of steps skipped, of warm-up and recorded; the trace written as Chrome trace JSON; then it stops."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, schedule, tensorboard_trace_handler

log = logging.getLogger(__name__)


def sort_key(device: torch.device) -> str:
    """The profiler's self-time column of the device's work."""
    return "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"


class StepProfiler:
    """Profiles training steps: call `step()` after each. The first `wait` steps are not profiled, the next `warmup`
    are profiled but dropped (the profiler's own start-up), the `active` ones after them recorded. Then the trace
    goes to `trace_dir` (`WORKER.TIME.pt.trace.json`, which Perfetto, chrome://tracing and TensorBoard's profiler
    plugin open), the top operators by self time to the log, and profiling stops (later steps run unprofiled).
    `finish()` ends it early (an epoch shorter than the schedule: its recorded steps so far are written)."""

    def __init__(
        self,
        trace_dir: str | Path,
        device: torch.device,
        active: int = 5,
        wait: int = 2,
        warmup: int = 2,
        worker: str = "mtbert",
        rows: int = 15,
    ):
        self.trace_dir, self.device, self.rows = Path(trace_dir), device, rows
        self.wait, self.warmup = wait, warmup
        self.trace: Path | None = None  # the trace file, once written
        self.averages = None  # the recorded steps' operator statistics (torch.autograd.profiler_util.EventList)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.handler = tensorboard_trace_handler(str(self.trace_dir), worker_name=worker)
        self.prof = torch.profiler.profile(
            activities=activities,
            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=self._ready,
        )
        self.running = True
        self.prof.start()

    def _ready(self, prof: torch.profiler.profile) -> None:
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        before = set(self.trace_dir.glob("*.pt.trace.json"))
        self.handler(prof)
        written = sorted(set(self.trace_dir.glob("*.pt.trace.json")) - before)
        self.trace = written[-1] if written else None
        self.averages = prof.key_averages()

    def step(self) -> None:
        """Marks the end of a training step; stops profiling once the recorded steps are written."""
        if not self.running:
            return
        self.prof.step()
        if self.trace is not None:
            self.finish()

    def finish(self) -> None:
        """Stops profiling (writing what was recorded, if any) and logs the top operators."""
        if not self.running:
            return
        self.running = False
        self.prof.stop()
        if self.averages is None:
            log.warning(
                "--profiler: the epoch ended before any step was recorded (%d steps skipped and %d of warm-up "
                "come first); no trace written",
                self.wait,
                self.warmup,
            )
            return
        table = self.averages.table(sort_by=sort_key(self.device), row_limit=self.rows)
        log.info(
            "profiler: trace %s (open it in https://ui.perfetto.dev); top operators by self time:\n%s",
            self.trace,
            table,
        )
