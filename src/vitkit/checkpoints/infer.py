"""A vitkit config from a state dict in vitkit's layout: shapes first, then the format's hints, then the
caller's overrides. What neither the shapes nor the hints fix is asked for in a ValueError."""

from __future__ import annotations

import math
from typing import Any

from ..models import ViTConfig
from .keymap import Renamed, StateDict, block_count

HEADS_NOTE = "(most ViTs use heads 64 wide, which would be {guess} here; check the model card)"


def _square_side(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n else None


def mlp_ratio_for(hidden: int, dim: int) -> float:
    """A ratio with int(dim * ratio) == hidden exactly (the blocks build their MLP width that way)."""
    ratio = hidden / dim
    while int(dim * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def _need(field: str, what: str, extra: str = "") -> ValueError:
    return ValueError(f"cannot infer {field} from the weights ({what}); pass {field}=... {extra}".rstrip()
                      + ", or model=<a vitkit model built to match> to load into")


def _heads(sd: StateDict, found: dict[str, Any], qkv_key: str) -> None:
    if "num_heads" in found:
        return
    inner = sd[qkv_key].shape[0] // 3
    raise _need("num_heads", f"{qkv_key} is {tuple(sd[qkv_key].shape)}, which fixes heads x head width = {inner} "
                "but not the split", HEADS_NOTE.format(guess=max(inner // 64, 1)))


def _grid(sd: StateDict, found: dict[str, Any], prefix: int, patch: tuple[int, int]) -> None:
    """img_size and no_embed_class from the length of a learned position table."""
    length = sd["pos_embed"].shape[1]
    if "img_size" in found:
        grid = found["img_size"]
        cells = -(-grid[0] // patch[0]) * -(-grid[1] // patch[1]) if found.get("dynamic_img_pad") else (
            (grid[0] // patch[0]) * (grid[1] // patch[1]))
        found.setdefault("no_embed_class", prefix > 0 and length == cells)
        return
    with_prefix, without = _square_side(length - prefix) if length > prefix else None, _square_side(length)
    if "no_embed_class" in found:
        side = without if found["no_embed_class"] else with_prefix
    elif with_prefix is not None:
        side, found["no_embed_class"] = with_prefix, False
    else:
        side, found["no_embed_class"] = without, prefix > 0
    if side is None:
        raise _need("img_size", f"pos_embed has {length} rows, not a square grid (+{prefix} prefix tokens)",
                    "(height, width) in pixels")
    found["img_size"] = (side * patch[0], side * patch[1])


def infer_vit_config(renamed: Renamed, overrides: dict[str, Any], default_size: Any = None) -> ViTConfig:
    """The ViTConfig that `renamed.state_dict` (timm/vitkit layout) fits. `default_size` is the image size to use
    when the weights fix none (no learned position table)."""
    sd, found = renamed.state_dict, {**renamed.hints, **overrides}
    found = {k: tuple(v) if isinstance(v, list) else v for k, v in found.items()}
    if "patch_embed.proj.weight" not in sd:
        raise ValueError("no patch embedding (patch_embed.proj.weight) after conversion: these are not the "
                         "weights of a ViT in this layout")
    proj = sd["patch_embed.proj.weight"]
    dim = proj.shape[0]
    if proj.dim() == 5:  # 3D conv (D, C, frames, ph, pw)
        found.setdefault("temporal_patch_size", proj.shape[2])
    if proj.dim() >= 4:  # conv (D, C, [frames,] ph, pw)
        found.setdefault("in_chans", proj.shape[1])
        found.setdefault("patch_size", tuple(proj.shape[-2:]))
    elif "patch_size" not in found:  # linear (D, C * ph * pw): a square patch of in_chans channels
        chans = found.get("in_chans", 3)
        side = _square_side(proj.shape[1] // chans) if proj.shape[1] % chans == 0 else None
        if side is None:
            raise _need("patch_size", f"a linear patch projection of {proj.shape[1]} inputs, not {chans} channels x "
                        "a square patch")
        found["patch_size"] = side
    patch = found["patch_size"] if isinstance(found["patch_size"], tuple) else (found["patch_size"],) * 2
    found["patch_size"] = patch
    if "img_size" in found and isinstance(found["img_size"], int):
        found["img_size"] = (found["img_size"],) * 2
    depth = block_count(sd)
    if not depth:
        raise ValueError("no transformer blocks (blocks.N.*) after conversion: these are not ViT weights")
    found.update(embed_dim=dim, depth=depth)
    _heads(sd, found, "blocks.0.attn.qkv.weight")
    inner = sd["blocks.0.attn.qkv.weight"].shape[0] // 3
    if inner != dim:
        found.setdefault("head_dim", inner // found["num_heads"])
    class_token = "cls_token" in sd
    reg_tokens = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    found.update(class_token=class_token, reg_tokens=reg_tokens)
    if "pos_embed" in sd:
        found.setdefault("pos_embed", "learn")
        _grid(sd, found, int(class_token) + reg_tokens, patch)
    elif "img_size" not in found and default_size is None:
        raise _need("img_size", "it has no learned position table", "(height, width) in pixels")
    else:
        found.setdefault("img_size", default_size)
        found.setdefault("pos_embed", "none")
    if "blocks.0.mlp.fc1_g.weight" in sd:
        found.setdefault("mlp_layer", "swiglu")
        hidden = sd["blocks.0.mlp.fc1_g.weight"].shape[0]
    else:
        hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
        if sd["blocks.0.mlp.fc2.weight"].shape[1] * 2 == hidden:
            found.setdefault("mlp_layer", "swiglu_packed")
    found.setdefault("mlp_ratio", mlp_ratio_for(hidden, dim))
    found.update(
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        norm_pre="norm_pre.weight" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    found["patch_bias"] = "patch_embed.proj.bias" in sd
    if "merger.fc2.weight" in sd:
        found.setdefault("merge_dim", sd["merger.fc2.weight"].shape[0])
    if "blocks.0.ls1.gamma" in sd:
        found.setdefault("init_values", 1e-5)
    has_norm, has_fc_norm = "norm.weight" in sd, "fc_norm.weight" in sd
    if "attn_pool.latent" in sd:
        found.setdefault("global_pool", "map")
    elif has_fc_norm:
        found.setdefault("global_pool", "avg")
    else:
        found.setdefault("global_pool", "token" if class_token else "avg")
    if found["global_pool"] != "map" or has_fc_norm:
        found.setdefault("fc_norm", has_fc_norm)
    found.setdefault("final_norm", has_norm or has_fc_norm)
    return ViTConfig(**found)
