"""DINOv2 into vitkit: HF Dinov2Model (MLP and SwiGLU), Dinov2WithRegistersModel (registers, LayerScale), at
native and other sizes; and the original facebookresearch layout (mask_token, register_tokens, w12/w3,
chunked blocks), written from a timm DINOv2 by the inverse of timm's own conversion."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import transformers as hf
from safetensors.torch import save_file

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def on_grid(t: torch.Tensor) -> torch.Tensor:
    """`t` rounded to multiples of 2**-12, where sums and differences (|v| < 8) are exact in float32.

    With registers, the converters fold the class position row into the class token at load time, in float32 (as
    timm's own DINOv2 conversion does), while the peer adds the two at run time: in the float64 check the fold
    differs from the peer's sum by float32 rounding (~5e-8 at the class token) unless that sum is exact.
    """
    return torch.round(t * 4096) / 4096


@pytest.mark.parametrize("swiglu", [False, True])
def test_hf_dinov2(tmp_path: Path, swiglu: bool) -> None:
    theirs = realistic_(hf.Dinov2Model(hf.Dinov2Config(**SMALL, use_swiglu_ffn=swiglu)))
    theirs.save_pretrained(tmp_path)
    loaded = load_checkpoint(tmp_path)
    mine = loaded.model
    assert loaded.report.clean and any("mask_token" in d for d in loaded.report.dropped)
    assert mine.config.mlp_layer == ("swiglu_packed" if swiglu else "mlp") and mine.config.init_values is not None
    for x in (images(), images(height=40, width=56)):  # HF DINOv2 always interpolates; so does the converted model
        assert_parity(mine.forward_features, lambda x: theirs(x).last_hidden_state, x, mine, theirs)
        assert_parity(mine, lambda x: theirs(x).pooler_output, x, mine, theirs)


def test_hf_dinov2_with_registers(tmp_path: Path) -> None:
    theirs = realistic_(hf.Dinov2WithRegistersModel(hf.Dinov2WithRegistersConfig(**SMALL, num_register_tokens=4)))
    with torch.no_grad():
        for folded in (theirs.embeddings.cls_token, theirs.embeddings.position_embeddings[:, :1]):
            folded.copy_(on_grid(folded))
    theirs.save_pretrained(tmp_path)
    mine = vitkit.load_pretrained(tmp_path)
    assert (mine.config.reg_tokens, mine.config.no_embed_class, mine.config.pos_embed_antialias) == (4, True, True)
    for x in (images(), images(height=48, width=40)):
        assert_parity(mine.forward_features, lambda x: theirs(x).last_hidden_state, x, mine, theirs)
        assert_parity(mine, lambda x: theirs(x).pooler_output, x, mine, theirs)
        assert_parity(lambda x: mine.forward_hidden_states(x)[-2],
                      lambda x: theirs(x, output_hidden_states=True).hidden_states[-2], x, mine, theirs)


def original_layout(timm_model: torch.nn.Module, chunks: int = 1) -> dict[str, torch.Tensor]:
    """timm DINOv2 -> facebookresearch keys: class row back into the table, register_tokens, mask_token, w12/w3."""
    sd = dict(timm_model.state_dict())
    out: dict[str, torch.Tensor] = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1])}
    if "reg_token" in sd:
        noise = torch.randn(1, 1, sd["cls_token"].shape[-1], generator=torch.Generator().manual_seed(0))
        class_row = on_grid(0.5 * noise)  # a position table's magnitude, as `realistic_` gives
        out["register_tokens"] = sd.pop("reg_token")
        out["cls_token"] = sd.pop("cls_token") - class_row
        out["pos_embed"] = torch.cat([class_row, sd.pop("pos_embed")], dim=1)
    depth = len(timm_model.blocks)
    for key, value in sd.items():
        key = key.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.") if (
            "mlp.fc2" in key or "mlp.fc1" in key) and timm_model.blocks[0].mlp.__class__.__name__ == "SwiGLUPacked" \
            else key
        if chunks > 1 and key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // (depth // chunks)}.{key[len('blocks.'):]}"
        out[key] = value
    return out


@pytest.mark.parametrize(("name", "chunks"), [
    ("vit_small_patch14_dinov2", 1),
    ("vit_small_patch14_reg4_dinov2", 1),
    ("vit_giant_patch14_dinov2", 2),  # SwiGLU (w12/w3), chunked blocks like the giant hub weights
])
def test_original_dinov2_layout(tmp_path: Path, name: str, chunks: int) -> None:
    theirs = realistic_(timm.create_model(name, pretrained=False, img_size=28, embed_dim=96, depth=2, num_heads=4,
                                          num_classes=0))
    with torch.no_grad():
        theirs.cls_token.copy_(on_grid(theirs.cls_token))  # its difference with the class row is exact (`on_grid`)
    save_file({k: v.contiguous() for k, v in original_layout(theirs, chunks).items()}, str(tmp_path / "d.safetensors"))
    loaded = load_checkpoint(tmp_path / "d.safetensors", num_heads=4)
    assert loaded.source_format == "dinov2" and loaded.report.clean
    mine, x = loaded.model, images(height=28, width=28)
    assert_parity(mine.forward_features, theirs.forward_features, x, mine, theirs)
    assert_parity(mine, theirs, x, mine, theirs)
