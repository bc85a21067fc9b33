"""Process-group setup under torchrun, DDP / FSDP2 wrapping, and full (unsharded) state dicts for saving."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


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
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, env: DistEnv, fsdp: bool) -> nn.Module:
    """DDP across processes, or FSDP2 (`fully_shard` per block, then the root) with `fsdp`."""
    if fsdp:
        if env.world == 1:
            raise ValueError("--fsdp shards across processes: launch with torchrun --nproc-per-node N (N > 1)")
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        return fully_shard(model)
    if env.world > 1:
        device_ids = [env.device] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def all_mean(value: float, env: DistEnv) -> float:
    """Mean of a float over processes."""
    if env.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / env.world


def all_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.world > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Unsharded CPU state dicts of the model (and optimizer), the same under DDP, FSDP2 or neither."""
    model_sd = get_model_state_dict(model, options=_FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_FULL) if optimizer is not None else None
    return model_sd, optim_sd


def load_full_state(model: nn.Module, model_sd: dict, optimizer: torch.optim.Optimizer | None = None,
                    optim_sd: dict | None = None) -> None:
    set_model_state_dict(model, model_sd, options=StateDictOptions(full_state_dict=True))
    if optimizer is not None and optim_sd is not None:
        set_optimizer_state_dict(model, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
