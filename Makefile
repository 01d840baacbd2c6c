# Two commands do all set-up on a fresh clone: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Where `make` takes the data sets from: a local copy at ../shared/data when there is one, else a download from
# the original project's repository (once; `make train DATA_SOURCE=DIR` points it at a local copy instead).
SHARED_DATA ?= ../shared/data
DATA_SOURCE ?= $(if $(wildcard $(SHARED_DATA)/*.csv),$(SHARED_DATA),)
DATA_DIR ?= data
# torch is pinned in the same pip command: an unpinned torch pulls a multi-GB CUDA build on this machine.
TORCH := torch==2.13.0

.PHONY: train test data lint bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) -e '.[test,families,tagging,hpo,synth,serve,report]'
	touch $(STAMP)

# Copies (or downloads) the data sets into $(DATA_DIR), validating every file.
data: $(STAMP)
	@if [ -n "$(DATA_SOURCE)" ]; then $(PY) -m mtbert data fetch --source $(DATA_SOURCE) --dest $(DATA_DIR); \
	elif [ ! -f $(DATA_DIR)/.fetched ]; then $(PY) -m mtbert data fetch --dest $(DATA_DIR) && touch $(DATA_DIR)/.fetched; fi

# The short default (README, Results; docs/experiments.md for why the STS loss counts 3 times). `make train
# OPTIMIZER=sophiah` (or sophiag) trains the same default with Sophia, at its own default learning rate.
OPTIMIZER ?= adamw
TRAIN_ARGS ?= --epochs 4 --samples_per_epoch 3000 --head_lr 1e-3 --hidden_dropout_prob 0.1 --sts_loss_weight 3 \
	--batch_size 64

# glibc raises its mmap threshold as large blocks are freed, so activations of changing shapes pile up on a
# fragmenting heap; a fixed 4 MiB threshold keeps the peak memory lower at the same speed (docs/speed.md).
# `make train ARGS="--moe --moe_gate hard"` adds flags to the default.
ARGS ?=
train: data
	MALLOC_MMAP_THRESHOLD_=4194304 $(PY) -m mtbert train --data_dir $(DATA_DIR) --optimizer $(OPTIMIZER) $(TRAIN_ARGS) \
		$(ARGS)

# Every tier this machine can run; `$(PY) -m pytest -m "not slow"` is the quick one.
test: data
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks multitask_classifier.py
	$(VENV)/bin/ruff format --check src tests benchmarks multitask_classifier.py

bench: $(STAMP)
	$(PY) benchmarks/encoder_speed.py
