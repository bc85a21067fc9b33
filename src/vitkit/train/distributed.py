"""DDP / FSDP2 wrapping for training, and full (unsharded) state dicts for saving and resuming.

Process-group setup and the collectives live in `vitkit.runtime`, which every tool shares.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..runtime import DistEnv

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


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


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Unsharded CPU state dicts of the model (and optimizer), the same under DDP, FSDP2 or neither."""
    model_sd = get_model_state_dict(model, options=_FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_FULL) if optimizer is not None else None
    return model_sd, optim_sd


def load_full_state(model: nn.Module, model_sd: dict, optimizer: torch.optim.Optimizer | None = None,
                    optim_sd: dict | None = None) -> None:
    """Load full state dicts (as `full_state` returns them) into a model and optimizer, sharded or not."""
    set_model_state_dict(model, model_sd, options=StateDictOptions(full_state_dict=True))
    if optimizer is not None and optim_sd is not None:
        set_optimizer_state_dict(model, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))
