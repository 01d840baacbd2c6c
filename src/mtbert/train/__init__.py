"""Training: the loop (loop.py), its setup (setup.py), the step, optimizers and schedules, what a run writes
(records.py), the training state and resume (checkpoint.py), processes, unfreezing, the profiler."""
