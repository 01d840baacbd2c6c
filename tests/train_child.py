"""Runs mtbert.fit() in a child process, for the resume and torchrun tests.

    python tests/train_child.py CONFIG_JSON [KILL_AT]

Prints {"best": ..., "history": ...} as JSON (with MTBERT_CHILD_HESSIANS set, each rank first prints its Sophia
Hessian estimates' sums, {"rank", "hessian_sums"}). With KILL_AT, the process sends itself SIGKILL as its KILL_AT-th
training batch starts: no cleanup runs, as when a job is killed.
"""

import json
import logging
import os
import signal
import sys

import mtbert.train.step as step
from mtbert.config import Config
from mtbert.fitting import fit

if len(sys.argv) > 2:
    kill_at, calls, compute_losses = int(sys.argv[2]), [0], step.compute_losses

    def killing_compute_losses(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return compute_losses(*args, **kwargs)

    step.compute_losses = killing_compute_losses

if os.environ.get("MTBERT_CHILD_HESSIANS"):  # each rank prints the sum of its Sophia Hessian estimates at the end
    import mtbert.train.loop as loop

    finish_run = loop.finish_run

    def reporting_finish_run(run):
        sums = [float(s["hessian"].double().sum()) for s in run.optimizer.state.values() if "hessian" in s]
        sys.stdout.write(json.dumps({"rank": run.world.rank, "hessian_sums": sums}) + "\n")
        finish_run(run)

    loop.finish_run = reporting_finish_run

logging.basicConfig(level=logging.INFO, format="%(message)s")
history: list[dict] = []
cfg = Config.from_settings(json.loads(sys.argv[1]))
best = fit(cfg, report=history.append)
# one write of the whole line: under torchrun both ranks share stdout, and they finish together (an unbuffered print
# writes the text and its newline apart, so two ranks' lines could interleave)
sys.stdout.write(json.dumps({"best": best, "history": history}) + "\n")
