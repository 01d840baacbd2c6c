#!/bin/bash
# Multitask training on several GPUs and machines under SLURM, with PyTorch DDP through torchrun.
#
#   sbatch scripts/slurm_ddp.sh [extra `mtbert train` flags]
#
# One torchrun per node starts one process per GPU; the processes meet at the first node's address. --batch_size
# is the global batch, split between all processes. The run saves its full state to --resume every epoch and
# every --save_every steps: after a preemption or a crash, submit the same script again and it continues where the
# last state was saved. --resume must be on a file system that every node sees.
#SBATCH --job-name=mtbert
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=mtbert-%j.out
#SBATCH --requeue
set -euo pipefail

GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-4}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

srun torchrun \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$HEAD_NODE:29500" \
    -m mtbert train --use_gpu \
    --option finetune --optimizer adamw --lr 8e-5 --batch_size 64 --epochs 10 --samples_per_epoch 10000 \
    --resume "checkpoints/mtbert-$SLURM_JOB_NAME" --save_every 200 \
    "$@"
