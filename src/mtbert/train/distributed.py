"""Data-parallel training across processes: switched on by torchrun's environment variables, off otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtbert.errors import MtbertError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank `rank` of `world_size` processes, computing on `device`.

    Without torchrun it is rank 0 of 1 and every method is a no-op, so the training loop has one shape.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes files."""
        return self.rank == 0

    def shard(self, rows: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """This rank's disjoint share of every task's batch (every world_size-th row from row `rank`), and the
        weight of each task's mean loss on it: its share of the batch times world_size.

        DDP averages gradients over the ranks, so these weights make the result the gradient of the whole batch's
        mean loss, however the batch splits (and 1 in a single process). A rank that a small last batch does not
        reach still computes that task on the batch's first row, with weight 0: every rank then runs the same
        modules, as DDP needs, and adds nothing.
        """
        parts, weights = {}, {}
        for t, r in rows.items():
            share = r[self.rank :: self.world_size]
            parts[t] = share if len(share) else r[:1]
            weights[t] = len(share) * self.world_size / len(r)
        return parts, weights

    def wrap(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        """The model in DistributedDataParallel (which all-reduces gradients in backward) under torchrun, or as is.
        DDP reduces the parameters that require gradients when it is built: wrap again when that set changes.
        `find_unused`: a step may leave some parameters out (a hard-gated mixture's experts without sentences)."""
        if not dist.is_initialized():
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        boxes: list[Any] = [None] * self.world_size
        dist.all_gather_object(boxes, obj)
        return boxes


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA for --use_gpu, else the CPU."""
    if use_gpu and not torch.cuda.is_available():
        raise MtbertError("--use_gpu: CUDA is not available on this machine")
    return torch.device("cuda" if use_gpu else "cpu")


def setup(use_gpu: bool) -> Distributed:
    """Joins the process group when started by torchrun (NCCL on GPUs, gloo on CPUs); one process otherwise.

    Under torchrun even a single process goes through the process group and DDP, so one GPU can check that path.
    """
    device = pick_device(use_gpu)
    if "LOCAL_RANK" not in os.environ:  # set by torchrun
        return Distributed(0, 1, device)
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_gpu:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_gpu else "gloo")
    device = torch.device("cuda", local_rank) if use_gpu else torch.device("cpu")
    return Distributed(dist.get_rank(), world_size, device)


def teardown() -> None:
    """Leaves the process group, all ranks together: a gloo process that tore down its connections while a peer
    was still working (rank 0 writing test predictions) was seen to abort now and then ("terminate called without
    an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Averages tensors over the ranks in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t)
            t.div_(dist.get_world_size())
