"""Every registered name gives the outputs of the model it is named after, on the peer's own weights at realistic
magnitudes: at reduced depth and width, with the name's real patch size, image size, head, pool, activation and
norm eps. The check has teeth: a wrong activation or eps in the name's config fails it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import vit_pytorch
from safetensors.torch import save_file
from torch import nn

import vitkit
from interop_helpers import assert_parity, images, realistic_
from test_naflex import NAFLEX_PEERS
from test_qwen_vl import QWEN_PEERS
from test_rope import ROPE_PEERS

SMALL_VIT: dict[str, Any] = dict(depth=2, embed_dim=64, num_heads=4)
SMALL_SIMPLE: dict[str, Any] = dict(depth=2, embed_dim=64, num_heads=4, mlp_hidden_dim=128, head_dim=16)
# vitkit name -> timm name, for the names timm also builds.
TIMM_PEERS = {
    "vit_tiny_patch16_224": "vit_tiny_patch16_224",
    "vit_small_patch16_224": "vit_small_patch16_224",
    "vit_base_patch16_224": "vit_base_patch16_224",
    "vit_base_patch32_224": "vit_base_patch32_224",
    "vit_large_patch16_224": "vit_large_patch16_224",
    "vit_huge_patch14_224": "vit_huge_patch14_224",
    "siglip_base_patch16_224": "vit_base_patch16_siglip_224",
    "siglip_large_patch16_384": "vit_large_patch16_siglip_384",
    "siglip_so400m_patch14_224": "vit_so400m_patch14_siglip_224",
    "siglip_so400m_patch14_384": "vit_so400m_patch14_siglip_384",
    **{name: name for name in (f"vit_{size}_patch14{reg}_dinov2" for size in ("small", "base", "large")
                               for reg in ("", "_reg4"))},
}
VIT_PYTORCH_PEERS = {"simple_vit_small_patch16_224", "simple_vit_base_patch16_224"}
# vitkit's own model for the bundled digits, named after nothing else.
OWN_MODELS = {"vit_digits"}


def test_every_registered_name_has_a_peer() -> None:
    """A newly registered name must be added to a peer table here (or to OWN_MODELS, saying why); the RoPE towers'
    table, checked against timm's Eva, is test_rope.ROPE_PEERS; SigLIP2's NaFlex towers' is test_naflex.NAFLEX_PEERS;
    the Qwen-VL towers' test_qwen_vl.QWEN_PEERS."""
    assert set(vitkit.list_models()) == (set(TIMM_PEERS) | VIT_PYTORCH_PEERS | OWN_MODELS | set(ROPE_PEERS)
                                         | set(NAFLEX_PEERS) | set(QWEN_PEERS))


def timm_pair(name: str, **vitkit_overrides: Any) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    theirs = realistic_(timm.create_model(TIMM_PEERS[name], pretrained=False, **SMALL_VIT))
    mine = vitkit.create_model(name, **SMALL_VIT, weight_init="skip", **vitkit_overrides).eval()
    mine.load_state_dict(theirs.state_dict())
    height, width = mine.config.img_size
    return theirs, mine, images(height=height, width=width)


@pytest.mark.parametrize("name", list(TIMM_PEERS))
def test_timm_names_give_timm_outputs(name: str) -> None:
    theirs, mine, x = timm_pair(name)
    assert mine.config.global_pool == theirs.global_pool and mine.num_prefix_tokens == theirs.num_prefix_tokens
    assert mine.config.num_classes == theirs.num_classes
    assert (mine.config.mean, mine.config.std) == (theirs.pretrained_cfg["mean"], theirs.pretrained_cfg["std"])
    assert_parity(mine.forward_features, theirs.forward_features, x, mine, theirs)
    assert_parity(mine, theirs, x, mine, theirs)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "siglip_base_patch16_224"])
@pytest.mark.parametrize("mutation", [{"act_layer": "gelu_tanh"}, {"act_layer": "quick_gelu"}, {"norm_eps": 1e-5}])
def test_a_wrong_activation_or_eps_fails_the_check(name: str, mutation: dict[str, Any]) -> None:
    theirs, mine, x = timm_pair(name, **mutation)
    with pytest.raises(AssertionError):
        assert_parity(mine, theirs, x, mine, theirs)


@pytest.mark.parametrize("name", sorted(VIT_PYTORCH_PEERS))
def test_simple_vit_names_give_vit_pytorch_outputs(name: str, tmp_path: Path) -> None:
    mine = vitkit.create_model(name, **SMALL_SIMPLE).eval()
    config = mine.config
    theirs = realistic_(vit_pytorch.SimpleViT(
        image_size=config.img_size, patch_size=config.patch_size, num_classes=config.num_classes,
        channels=config.in_chans, depth=2, dim=64, heads=4, mlp_dim=128, dim_head=16,
    ))
    torch.save(theirs.state_dict(), tmp_path / "simple_vit.pt")
    vitkit.load_pretrained(tmp_path / "simple_vit.pt", model=mine)
    assert_parity(mine, theirs, images(height=config.img_size[0], width=config.img_size[1]), mine, theirs)


def test_deepseek_vl2_tower_settings(tmp_path: Path) -> None:
    """DeepSeek-VL2 builds its tower as timm's so400m/14 at 384 px with `select_layer` blocks and `ignore_head`
    (vLLM and SGLang run timm's model itself): the registered name with those overrides gives timm's first blocks
    and final norm, (B, 729, D) tokens; the weights of the cut block are left out."""
    theirs, _, x = timm_pair("siglip_so400m_patch14_384")
    save_file(theirs.state_dict(), str(tmp_path / "tower.safetensors"))
    mine = vitkit.create_model("siglip_so400m_patch14_384", **SMALL_VIT, select_layer=-2, ignore_head=True).eval()
    vitkit.load_pretrained(tmp_path / "tower.safetensors", model=mine)
    assert len(mine.blocks) == 1

    def tower(pixels: torch.Tensor) -> torch.Tensor:
        return theirs.norm(theirs.blocks[:1](theirs._pos_embed(theirs.patch_embed(pixels))))

    with torch.no_grad():
        assert mine(x).shape == (2, 27 * 27, 64)
    assert_parity(mine, tower, x, mine, theirs)
