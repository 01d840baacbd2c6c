"""Training: the loop, the step, optimizers and schedules, checkpoints and resume, processes, precision."""
