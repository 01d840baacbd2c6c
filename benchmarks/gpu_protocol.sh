#!/usr/bin/env bash
# The GPU checks of the speed issue (#4) in one call, about 6 minutes planned on an H100:
#   ../shared/tools/prepare-device-carry.sh && benchmarks/gpu_protocol.sh OUT_DIR
# on a machine with CUDA, from the repository root, with .carry/ (the fp16 MiniLM and the data) beside the code.
# Each check has its own time limit and its own log in OUT_DIR; a failed one does not stop the rest.
# (The checks of the training and DDP issues, run on an H100 on 2026-11-26, are in the git history of this file.)
set -u
out=${1:?usage: benchmarks/gpu_protocol.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)  # a cold compile cache to start with, so both costs are seen
M=$PWD/.carry/minilm D=$PWD/.carry/data
work=$(mktemp -d)

check() {  # check NAME SECONDS COMMAND...: runs COMMAND in $work, log in $out/NAME.log, prints its last lines
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    (cd "$work" && timeout "$limit" "$@") >"$out/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s"
    grep -v '^\s*$' "$out/$name.log" | grep -v 'it/s\]\|s/it\]\|step/s\]' | tail -n "${TAIL:-4}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

# 1. The original project's baseline protocol (10 epochs x 10,000 samples per task, batch 64, MiniLM) with
#    compiled layers: first with an empty compile cache, then again with the cache the first run filled.
BASE=(python3 -m mtbert train --use_gpu --model "$M" --data_dir "$D" --option finetune --epochs 10
    --samples_per_epoch 10000 --batch_size 64 --lr 8e-5 --scheduler plateau --clip 0.25 --optimizer adamw)
TAIL=16 check baseline_compile_cold 200 "${BASE[@]}" --compile
TAIL=16 check baseline_compile_warm 150 "${BASE[@]}" --compile
# 2. Training step against the plain Hugging Face loop, MiniLM and a bert-base-sized encoder, compiled layers.
B="python3 $PWD/benchmarks/train_speed.py --device cuda --checkpoint $M --data_dir $D"
check speed_minilm 100 $B --model minilm --steps 60 --warmup 5 --compile
check speed_bert_base 120 $B --model bert-base --steps 30 --warmup 3 --compile
# 3. One pass per step (320 sentences: --chunk_tokens 40960 / 128), and what the profiler shows is left.
check one_pass 60 $B --model minilm --steps 60 --warmup 5 --only ours --compile --chunk_tokens 40960
TAIL=30 check profile 60 $B --model minilm --steps 20 --warmup 5 --profile --compile
# 4. The eager baseline on the same machine, for comparison (45.1 s of training on an H100 before).
TAIL=16 check baseline_eager 120 "${BASE[@]}"
