#!/usr/bin/env bash
# The accuracy techniques on the original project's baseline protocol (10 epochs x 10,000 samples per task, batch 64,
# lr 8e-5, plateau, clip 0.25; MiniLM) on one GPU, in one run of at most BUDGET seconds (default 560):
#   1. the plain protocol against the recipe (RECIPE, default "--scheduler cosine"), 3 seeds each, through
#      `mtbert ablate` (seed by seed: a run cut off by the budget leaves whole seeds, and the same command continues);
#   2. with the time left, the screen: each technique alone (the ablation's rows), one seed.
# It expects .carry/minilm and .carry/data (../shared/tools/prepare-device-carry.sh) in the repository root:
#   benchmarks/gpu_accuracy.sh OUT_DIR
# Both parts train in OUT_DIR/ablation (the screen takes the first seed's baseline and recipe runs over); each prints
# its table (mean +- std per row, ablation.md), the second one for the first seed only; the runs' logs stay there.
# DRY_RUN=1 benchmarks/gpu_accuracy.sh OUT_DIR: the same commands on this machine's CPU with --smoketest runs
# (4 batches of 8 per task, the first 32 dev rows), to try the script out before spending device time on it.
set -u
out=${1:?usage: benchmarks/gpu_accuracy.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
M=$PWD/.carry/minilm D=$PWD/.carry/data
RECIPE=${RECIPE:---scheduler cosine}
PROTOCOL=(--use_gpu --option finetune --epochs 10 --samples_per_epoch 10000 --batch_size 64 --lr 8e-5 --clip 0.25)
deadline=$((SECONDS + ${BUDGET:-560}))
if [[ ${DRY_RUN:-} ]]; then PROTOCOL=(--smoketest) deadline=$((SECONDS + ${BUDGET:-1800})); fi

part() {  # part NAME ABLATE_FLAGS...: `mtbert ablate` into OUT_DIR/ablation until the deadline; prints its table
    local name=$1 start=$SECONDS
    shift
    local left=$((deadline - SECONDS))
    if ((left < 60)); then echo "=== $name: skipped, out of time"; return; fi
    timeout "$left" python3 -m mtbert ablate --model "$M" --data_dir "$D" "${PROTOCOL[@]}" \
        --ablate_dir "$out/ablation" "$@" >"$out/$name.log" 2>&1
    echo "=== $name: exit $? after $((SECONDS - start)) s"
    tr '\r' '\n' <"$out/$name.log" | grep "ablation run .* done" | tail -n 12
    [[ -f $out/ablation/ablation.md ]] && cp "$out/ablation/ablation.md" "$out/$name.md" && cat "$out/$name.md"
}

[[ ${DRY_RUN:-} ]] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__)'
part recipe --rows baseline --recipe "$RECIPE" --seeds 3
part screen --rows baseline,layer_lr_decay,ema,task_sampling,cross,pcgrad,smart --recipe "$RECIPE" --seeds 1
