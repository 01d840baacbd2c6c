"""Work over many trainings, each a call of the one training loop: hyper-parameter search (hpo)."""
