"""Process groups under torchrun and the small collectives every tool needs (training, evaluation, embedding)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job; world 1 when not launched by torchrun."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None) -> DistEnv:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1, and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is visible; use --device cpu")
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, dev)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of a tensor over processes (a copy; `t` itself is left as it was)."""
    if env.world > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t
