"""The processes one run is made of under DistributedDataParallel, and the few collectives the engine needs.

A run is one process unless a launcher started several: ``torchrun`` (or ``attnbench train trainer.devices=N``,
which starts torchrun) and SLURM tasks through submitit both leave ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
in the environment, and ``init`` joins the process group from there: ``nccl`` with one GPU per rank (the
GPU of ``LOCAL_RANK``), ``gloo`` on the CPU. Every helper here is a no-op in a one-process run, so the trainer
calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank among the processes of this machine: which GPU it drives

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run directory, checkpoints and W&B."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """The world a launcher announced in the environment (torchrun's variables, also exported for submitit
    tasks); a single process when there are none."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    return World(int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def current() -> World:
    """The process group this process has joined (a single process when it has joined none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def uses_cuda(device: str) -> bool:
    """Whether ``trainer.device`` puts this run on CUDA (``auto`` does when a GPU is visible)."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def cuda_index(world: World) -> int:
    """The GPU of this rank: ``LOCAL_RANK`` among the visible GPUs, or the one GPU SLURM bound to the task."""
    count = torch.cuda.device_count()
    if world.local_rank < count:
        return world.local_rank
    if count == 1 and "SLURM_PROCID" in os.environ:  # --gpus-per-task: each task sees its own GPU as cuda:0
        return 0
    raise UserError(f"rank {world.rank} needs GPU {world.local_rank} but {count} GPU(s) are visible: start at most "
                    f"one process per GPU (torchrun --nproc_per_node, trainer.devices), or train on the CPU with "
                    f"trainer.device=cpu")


def init(world: World, device: str) -> None:
    """Join the process group (``env://``: the launcher set MASTER_ADDR/MASTER_PORT): ``nccl`` when the run
    trains on CUDA, each rank on its own GPU; ``gloo`` on the CPU."""
    if not world.distributed or dist.is_initialized():
        return
    if uses_cuda(device):
        index = cuda_index(world)
        torch.cuda.set_device(index)  # "cuda" now means this rank's GPU (trainer.device=auto, object collectives)
        dist.init_process_group("nccl", rank=world.rank, world_size=world.size, device_id=torch.device("cuda", index))
    else:
        dist.init_process_group("gloo", rank=world.rank, world_size=world.size)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not current().distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not current().distributed:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def reduce(tensor: Tensor, op: str = "mean") -> Tensor:
    """``tensor`` summed (``sum``), averaged (``mean``) or maximised (``max``) over the ranks, on every rank."""
    if not current().distributed:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return out / dist.get_world_size() if op == "mean" else out


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), so that evaluations on all ranks
    see the same model and compute the same numbers (without SyncBatchNorm each rank's statistics come from
    its own shard)."""
    if not current().distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
