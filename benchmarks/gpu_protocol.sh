#!/usr/bin/env bash
# The GPU checks of the speed issue (#4) in one call of at most BUDGET seconds (default 560), planned for about 8
# minutes on an H100; checks are in order of importance, and those left when time runs out are skipped:
#   ../shared/tools/prepare-device-carry.sh          # here: writes .carry/ (the fp16 MiniLM and the data)
#   benchmarks/gpu_protocol.sh "$OUT"                 # there, from the repository root, with carry=['.carry']
# (the device tool's run: one call, timeout_s 600; the logs come back under files_at).
# Each check has its own time limit and its own log in OUT_DIR; a failed one does not stop the rest.
# (The checks of the training and DDP issues, run on an H100 on 2026-11-26, are in the git history of this file.)
set -u
out=${1:?usage: benchmarks/gpu_protocol.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)  # start with an empty compile cache
export TORCH_LOGS=recompiles,perf_hints  # in the logs: any recompilation, and why a graph was not CUDA-graphed
M=$PWD/.carry/minilm D=$PWD/.carry/data
work=$(mktemp -d)

deadline=$((SECONDS + ${BUDGET:-560}))  # all checks end within BUDGET seconds, inside the device's 600 s per call

check() {  # check NAME SECONDS COMMAND...: runs COMMAND in $work, log in $out/NAME.log, prints its last lines,
    #                                    returns COMMAND's exit status (124: out of time)
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
    if ((deadline - SECONDS < 10)); then echo "=== $name: skipped, out of time"; return; fi
    (cd "$work" && timeout "$limit" "$@") >"$out/$name.log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    # progress bars redraw with carriage returns: one line per redraw, and those lines left out
    tr '\r' '\n' <"$out/$name.log" | grep -v '^\s*$' | grep -v 'it/s\]\|s/it\]\|step/s\]\|step\]$' | tail -n "${TAIL:-4}"
    return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

# 1. Our MiniLM training step, eager and compiled: passes of up to 16,384 padded tokens (the default), one pass per
#    step (40,960 tokens), and CUDA graphs (always one pass per step).
B="python3 $PWD/benchmarks/train_speed.py --device cuda --checkpoint $M --data_dir $D"
check step_eager 40 $B --model minilm --steps 60 --warmup 5 --only ours
check step_on 90 $B --model minilm --steps 60 --warmup 5 --only ours --torch_compile on
check step_on_one_pass 45 $B --model minilm --steps 60 --warmup 5 --only ours --torch_compile on --chunk_tokens 40960
check step_graphs 90 $B --model minilm --steps 60 --warmup 5 --only ours --torch_compile cudagraphs
# The fastest of them goes on.
best=$(python3 - "$out" <<'PY'
import json, pathlib, sys
flags = {"step_eager": "--torch_compile off", "step_on": "--torch_compile on",
         "step_on_one_pass": "--torch_compile on --chunk_tokens 40960", "step_graphs": "--torch_compile cudagraphs"}
ms = {}
for name in flags:  # the JSON line of each log that has one (warnings may follow it)
    log = pathlib.Path(sys.argv[1], name + ".log")
    for line in reversed(log.read_text().splitlines() if log.is_file() else []):
        if line.startswith('{"samples_per_s"'):
            ms[name] = json.loads(line)["ms_per_step"]
            break
print(flags[min(ms, key=ms.get)] if ms else "--torch_compile off")
PY
)
echo "=== fastest: $best"
# 2. The original project's baseline protocol (10 epochs x 10,000 samples per task, batch 64, MiniLM) with a compile
#    cache of its own that starts empty; a bert-base-sized encoder against the plain Hugging Face loop; the profiler;
#    the baseline again, with the cache the first run filled; MiniLM against the plain loop.
BASE=(python3 -m mtbert train --use_gpu --model "$M" --data_dir "$D" --option finetune --epochs 10
    --samples_per_epoch 10000 --batch_size 64 --lr 8e-5 --scheduler plateau --clip 0.25 --optimizer adamw)
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
TAIL=16 check baseline_cold 150 "${BASE[@]}" $best
rc=$?
if ((rc != 0 && rc != 124)) && [[ $best != "--torch_compile off" ]]; then
    # the step benchmarks do not evaluate: a compiled mode may still fail in evaluation, so the rest falls back
    fallback="--torch_compile off"
    [[ $best == *cudagraphs* ]] && fallback="--torch_compile on"
    echo "=== the baseline failed with $best: the checks below use $fallback"
    best=$fallback
fi
check speed_bert_base 100 $B --model bert-base --steps 30 --warmup 3 --torch_compile on  # least padding
TAIL=30 check profile 45 $B --model minilm --steps 20 --warmup 5 --profile $best
TAIL=16 check baseline_warm 100 "${BASE[@]}" $best
check speed_minilm 60 $B --model minilm --steps 60 --warmup 5 $best
