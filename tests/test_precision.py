"""bf16 inference is correct on every kind of tower vitkit builds: run under `torch.autocast` or with the weights
themselves in bf16, dense and packed, its features point where fp32's do (cosine >= 0.999 at a trained model's
magnitudes), through learned tables, RoPE, MAP heads, windows and the patch merger."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import vitkit
from interop_helpers import realistic_

COSINE = 0.999
# name -> changes that keep it small but keep what makes it that kind of tower
TOWERS = {
    "vit_small_patch16_224": dict(depth=4),
    "siglip_base_patch16_224": dict(depth=4),  # MAP head
    "vit_small_patch16_dinov3": dict(depth=4),  # 2D RoPE, registers
    "siglip2_base_patch16_naflex": dict(depth=4),  # a table resized per image
    "qwen2_5_vl_vision_3b": dict(depth=4, full_attention_blocks=(3,), embed_dim=256, num_heads=4,
                                 mlp_hidden_dim=512),  # windows, merger
}


def pictures(model: torch.nn.Module) -> list[torch.Tensor]:
    step = model.patch_embed.patch_size[0] * model.config.merge_size
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, step * h, step * w, generator=gen) for h, w in ((6, 4), (3, 7), (8, 8))]


def rows(model: torch.nn.Module, images: list[torch.Tensor], dtype: torch.dtype, autocast: bool) -> torch.Tensor:
    """The pooled row of each image, packed, in `dtype` (or fp32 weights under autocast to it)."""
    with torch.no_grad(), torch.autocast("cpu", dtype, enabled=autocast):
        batch = model.pack([x.to(dtype if not autocast else torch.float32) for x in images])
        return model.forward_packed(batch, pre_logits=True).float()


@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("mode", ["autocast", "bf16 weights"])
def test_bf16_features_point_where_fp32_does(name: str, mode: str) -> None:
    model = realistic_(vitkit.create_model(name, num_classes=0, dynamic_img_size=True, **TOWERS[name]), seed=2)
    images = pictures(model)
    reference = rows(model, images, torch.float32, autocast=False)
    if mode == "autocast":
        got = rows(model, images, torch.bfloat16, autocast=True)
    else:
        got = rows(copy.deepcopy(model).to(torch.bfloat16), images, torch.bfloat16, autocast=False)
    cosine = F.cosine_similarity(got, reference)
    assert cosine.min() >= COSINE, cosine
    assert not torch.equal(got, reference)  # it did run in bf16


def test_dense_bf16_weights_equal_packed_bf16() -> None:
    model = realistic_(vitkit.create_model("vit_small_patch16_dinov3", num_classes=0, depth=2), seed=2)
    model = model.to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        dense = model(x).float()
        packed = model.forward_packed(model.pack(list(x)), pre_logits=True).float()
    assert F.cosine_similarity(dense, packed).min() >= 0.9999
