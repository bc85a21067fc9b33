"""Helpers every converter shares: regex renames, prefix handling, q/k/v fusion, and the result they return."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]
_QKV = re.compile(r"^(.*)\.attn\.([qkv])\.(weight|bias)$")


@dataclass
class Renamed:
    """A foreign state dict in vitkit's layout, plus what the format itself says about the config.

    `hints`: config fields the format or its config.json fixes (act_layer, norm_eps, num_heads, ...).
    `dropped`: keys left out on purpose, each with why (text towers, mask tokens, HF's pooler).
    `assumed`: fields the weights cannot show, set to the producing library's default, with why.
    `required`: fields the weights cannot show and no default settles, with what to pass; asked for in the error.
    """

    state_dict: StateDict
    hints: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    assumed: dict[str, str] = field(default_factory=dict)
    required: dict[str, str] = field(default_factory=dict)


def rename(state_dict: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """Rename each key by the first regex rule that matches it; keys no rule matches pass through unchanged
    (they then show up as unexpected in the key report rather than vanishing)."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out: StateDict = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            if pattern.search(key):
                key = pattern.sub(repl, key, count=1)
                break
        out[key] = value
    return out


def take_prefix(state_dict: StateDict, prefix: str, why: str) -> tuple[StateDict, list[str]]:
    """(keys under `prefix` with it stripped, a 'dropped' line for the keys outside it)."""
    if not prefix:
        return dict(state_dict), []
    kept = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    others = sorted(k for k in state_dict if not k.startswith(prefix))
    return kept, ([f"{len(others)} keys outside '{prefix}' ({why}), e.g. {others[0]}"] if others else [])


def drop_keys(state_dict: StateDict, pattern: str, why: str, dropped: list[str]) -> StateDict:
    """`state_dict` without the keys matching `pattern`; each dropped key is recorded with `why`."""
    regex = re.compile(pattern)
    gone = sorted(k for k in state_dict if regex.search(k))
    dropped.extend(f"{k} ({why})" for k in gone)
    return {k: v for k, v in state_dict.items() if k not in gone}


def fuse_qkv(state_dict: StateDict) -> StateDict:
    """`*.attn.{q,k,v}.{weight,bias}` -> `*.attn.qkv.{weight,bias}` by concatenation along the output dim
    (3 x (D, D) -> (3D, D)); a block with only some of q/k/v is left alone for the key report to name."""
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    out: StateDict = {}
    for key, value in state_dict.items():
        match = _QKV.match(key)
        if match:
            groups.setdefault((match[1], match[3]), {})[match[2]] = value
        else:
            out[key] = value
    for (block, kind), parts in groups.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        else:
            out.update({f"{block}.attn.{name}.{kind}": t for name, t in parts.items()})
    return out


def split_qkv(state_dict: StateDict, key: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The q, k, v thirds of a fused qkv weight (3D, D) or bias (3D,)."""
    q, k, v = state_dict[key].chunk(3, dim=0)
    return q, k, v


def block_count(state_dict: StateDict, pattern: str = r"^blocks\.(\d+)\.") -> int:
    """1 + the highest block index the keys name (0 when there are no blocks)."""
    regex = re.compile(pattern)
    indices = [int(m[1]) for k in state_dict if (m := regex.match(k))]
    return max(indices) + 1 if indices else 0
