"""AdamW with decoupled weight decay kept off norms, biases, position tables and learned tokens, per-layer learning
rates (layer decay), warm-up + cosine; and which parameters train at all (freezing, linear probes)."""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

# Parameters of the input end (patch embedding, positions, prefix tokens): layer 0 of layer decay.
_STEM = ("patch_embed.", "pos_embed", "cls_token", "reg_token", "norm_pre.")
# What a linear probe trains: the classifier and the norm on the pooled features.
PROBE = ("head.", "fc_norm.")


def layer_id(name: str, depth: int) -> int:
    """The layer-decay depth of a parameter, as timm/BEiT count: stem 0, block i -> i + 1, everything after the
    blocks (final norm, pooling, head) depth + 1."""
    if name.startswith(_STEM):
        return 0
    block = re.match(r"blocks\.(\d+)\.", name)
    return int(block.group(1)) + 1 if block else depth + 1


@dataclass(frozen=True)
class GroupSummary:
    """One optimizer parameter group, for the table a run prints at its start."""

    layer: str  # 'stem', 'block K' or 'head' with layer decay; 'all' without (one rate for every layer)
    decays: bool  # matrices decay; norms, biases, position tables and tokens do not
    tensors: int
    params: int
    lr_scale: float
    weight_decay: float

    @property
    def name(self) -> str:
        """What the group holds: 'decay' / 'no decay', after the layer when layer decay splits them ('block 3,
        decay')."""
        kind = "decay" if self.decays else "no decay"
        return kind if self.layer == "all" else f"{self.layer}, {kind}"


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """Groups by (layer, decay or not): matrices decay; 1-D tensors (norm scales, biases) and `no_weight_decay()`
    names do not. With `layer_decay` d, a layer at depth k of L + 1 gets lr scale d ** (L + 1 - k): the head 1.0,
    the last block d, the patch and position embedding d ** (L + 1). Frozen parameters are left out."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    depth = len(model.blocks) if hasattr(model, "blocks") else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, depth) if layer_decay is not None else depth + 1
        decays = not (param.ndim <= 1 or name in skip)
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        group = groups.setdefault((layer, decays), {"params": [], "lr_scale": scale, "layer": layer,
                                                    "decays": decays, "weight_decay": weight_decay if decays else 0.0})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def summarize(groups: list[dict], depth: int, layer_decay: float | None = None) -> list[GroupSummary]:
    """`param_groups`' groups as table rows; without `layer_decay` every group spans all layers."""
    names = {0: "stem"} | {k: f"block {k - 1}" for k in range(1, depth + 1)} | {depth + 1: "head"}
    return [GroupSummary(names.get(g["layer"], str(g["layer"])) if layer_decay is not None else "all", g["decays"],
                         len(g["params"]), sum(p.numel() for p in g["params"]), g["lr_scale"], g["weight_decay"])
            for g in groups]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_steps: int,
                    min_lr: float, layer_decay: float | None = None,
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, list[GroupSummary]]:
    """AdamW over `param_groups` (each group's peak lr = lr x its scale) with warm-up + cosine to `min_lr`."""
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"--layer-decay must be in (0, 1], got {layer_decay}")
    groups = param_groups(model, weight_decay, layer_decay)
    if not groups:
        raise ValueError("no parameter trains: --freeze / --linear-probe left every parameter frozen")
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, warmup_steps, min(1.0, min_lr / lr))
    )
    return optimizer, schedule, summarize(groups, len(getattr(model, "blocks", ())), layer_decay)


def freeze(model: nn.Module, patterns: list[str], *, linear_probe: bool = False) -> list[str]:
    """Stop the gradients of parameters whose names match any shell-style pattern (e.g. 'blocks.[0-5].*',
    'patch_embed.*'); with `linear_probe`, of all but the head and fc_norm. Returns the frozen names."""
    frozen = []
    for name, param in model.named_parameters():
        if (linear_probe and not name.startswith(PROBE)) or any(fnmatch.fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _ in model.named_parameters())]
    if unmatched:
        raise ValueError(f"--freeze {', '.join(unmatched)} matches no parameter; names look like "
                         "'blocks.0.attn.qkv.weight' (patterns: 'blocks.[0-5].*', 'patch_embed.*')")
    return frozen
