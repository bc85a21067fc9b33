"""SimpleViT (seed 003): a VisionTransformer configuration with seed 003's keyword arguments. use_flash on/off,
attention backends, parity with seed 003 (vit-pytorch's simple_flash_attn_vit) and vit-pytorch's SimpleViT, what
the one model gives it (gradient checkpointing, packing), and checkpoints of the earlier SimpleViT class."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import vit_pytorch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import vitkit
from interop_helpers import assert_parity, images, randomize_, realistic_
from vitkit.attention import AttentionChoice, BackendUnavailableError
from vitkit.layers import TransformerBlock, sincos_2d
from vitkit.models import ViTConfig, config_from_dict, saved_attention, simple_vit_config

# Seed 003's keyword arguments, small.
SEED_KW: dict[str, Any] = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4,
                               mlp_dim=128, channels=3, dim_head=16)

# vit-pytorch SimpleViT key -> vitkit key, written out (see the task's mapping).
KEY_RULES: list[tuple[str, str]] = [
    (r"^to_patch_embedding\.1\.", "patch_embed.norm_in."),
    (r"^to_patch_embedding\.2\.", "patch_embed.proj."),
    (r"^to_patch_embedding\.3\.", "patch_embed.norm."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.to_out\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^linear_head\.", "head."),
]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def map_key(key: str) -> str:
    for pattern, replacement in KEY_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(f"no mapping for vit-pytorch key {key!r}")


def small_simple_vit(**overrides: Any) -> vitkit.SimpleViT:
    torch.manual_seed(0)
    return vitkit.SimpleViT(**{**SEED_KW, **overrides})


# -- seed 003 keyword arguments -----------------------------------------------------------------


def test_seed_003_keyword_arguments() -> None:
    model = vitkit.SimpleViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=3, heads=4,
                             mlp_dim=96, channels=1, dim_head=8, use_flash=True)
    assert isinstance(model, vitkit.VisionTransformer) and isinstance(model.config, ViTConfig)
    assert len(model.blocks) == 3
    block = model.blocks[0]
    assert block.attn.qkv.weight.shape == (3 * 4 * 8, 64)  # heads * dim_head, independent of dim
    assert block.attn.qkv.bias is None and block.attn.proj.bias is None  # SimpleViT has no qkv/out bias
    assert block.mlp.fc1.out_features == 96 and model.config.mlp_width == 96
    assert model.patch_embed.norm_in.normalized_shape == (8 * 8 * 1,)
    assert model.cls_token is None and model.config.global_pool == "avg" and model.config.pos_embed == "sincos"
    assert model(images(channels=1)).shape == (2, 10)


def test_positional_arguments_in_seed_order() -> None:
    model = vitkit.SimpleViT(32, 8, 10, 64, 2, 4, 128, 3, 16, False)
    assert model.config == simple_vit_config(**SEED_KW) and model.attention_backend == "math"


def test_default_initialisation_is_pytorchs_as_in_seed_003() -> None:
    """Seed 003 (and vit-pytorch) keep PyTorch's default init: Linear weights uniform in +-1/sqrt(fan_in)."""
    model = small_simple_vit()
    assert model.config.weight_init == "skip"
    fc1 = model.blocks[0].mlp.fc1.weight
    assert fc1.abs().max() <= 64**-0.5 and fc1.std() > 0.5 * 64**-0.5 / 3**0.5


@pytest.mark.parametrize(
    ("image_size", "patch_size", "grid"), [(224, 16, (14, 14)), ((32, 48), 8, (4, 6)), ((48, 32), (16, 8), (3, 4))]
)
def test_demo_shapes_and_grids(image_size: Any, patch_size: Any, grid: tuple[int, int]) -> None:
    model = vitkit.SimpleViT(image_size=image_size, patch_size=patch_size, num_classes=1000, dim=64, depth=1,
                             heads=2, mlp_dim=128).eval()
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
        assert model.forward_features(x).shape == (1, grid[0] * grid[1], 64)
    assert model.pos_embed.shape == (1, grid[0] * grid[1], 64)
    assert_close(model.pos_embed[0], sincos_2d(*grid, 64))


def test_use_flash_true_and_false_give_the_same_output() -> None:
    """Seed 003's use_flash=False crashed (einsum not imported, wrong equation); here it is the math path."""
    flash = randomize_(small_simple_vit(use_flash=True)).eval()
    plain = small_simple_vit(use_flash=False).eval()
    plain.load_state_dict(flash.state_dict())
    assert flash.attention_backend == "sdpa" and plain.attention_backend == "math"
    assert flash.config == plain.config  # the kernel is not architecture
    x = images()
    with torch.no_grad():
        assert_close(plain(x), flash(x))


@pytest.mark.parametrize("attention_type", ["math", "sdpa", "auto", "scaled_dot_product", "sdpa:flash"])
def test_attention_type_overrides_use_flash(attention_type: str) -> None:
    reference = randomize_(small_simple_vit(use_flash=False)).eval()
    model = small_simple_vit(use_flash=True, attention_type=attention_type).eval()
    model.load_state_dict(reference.state_dict())
    assert model.attention_backend == vitkit.attention.canonical_name(attention_type)
    x = images()
    with torch.no_grad():
        assert_close(model(x), reference(x))


@pytest.mark.parametrize("attention_type", ["flash", "xformers"])
def test_gpu_only_attention_type_raises_on_cpu(attention_type: str) -> None:
    model = small_simple_vit(attention_type=attention_type)
    with pytest.raises(BackendUnavailableError):
        model(images())


@pytest.mark.parametrize("head_norm", ["pooled", "tokens"])
def test_forward_head_pre_logits_and_no_classifier(head_norm: str) -> None:
    model = randomize_(small_simple_vit(head_norm=head_norm)).eval()
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        if head_norm == "pooled":  # seed 003: LayerNorm after the mean; the tokens are not normalised
            assert isinstance(model.norm, nn.Identity)
            assert_close(pooled, model.fc_norm(features.mean(1)))
        else:  # vit-pytorch SimpleViT: the tokens are normalised, their mean is the feature
            assert isinstance(model.fc_norm, nn.Identity)
            assert_close(pooled, features.mean(1))
        assert_close(model(x), model.head(pooled))
    headless = small_simple_vit(num_classes=0, head_norm=head_norm)
    assert headless(x).shape == (2, 64)


# -- parity: seed 003 and vit-pytorch -----------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # its torch.backends.cuda.sdp_kernel is deprecated
@pytest.mark.parametrize("image_size", [32, (32, 48)])
def test_default_constructor_gives_seed_003_outputs(image_size: Any) -> None:
    """vit-pytorch's simple_flash_attn_vit is seed 003 (only use_flash=True runs there). Its head is LayerNorm
    *after* mean-pooling (`linear_head = LN, Linear`): vitkit.SimpleViT's default, head_norm='pooled'."""
    from vit_pytorch import simple_flash_attn_vit

    config = dict(SEED_KW, image_size=image_size)
    reference = realistic_(simple_flash_attn_vit.SimpleViT(**config, use_flash=True))
    head_keys = {"linear_head.0.weight": "fc_norm.weight", "linear_head.0.bias": "fc_norm.bias",
                 "linear_head.1.weight": "head.weight", "linear_head.1.bias": "head.bias"}
    state = {head_keys.get(k) or map_key(k): v for k, v in reference.state_dict().items()}
    model = vitkit.SimpleViT(**config).eval()
    model.load_state_dict(state, strict=True)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = images(height=h, width=w)
    assert_parity(model, reference, x, model, reference, atol=1e-5)
    tokens_first = vitkit.SimpleViT(**config, head_norm="tokens").eval()
    tokens_first.load_state_dict({k.replace("fc_norm.", "norm."): v for k, v in state.items()}, strict=True)
    with torch.no_grad():
        assert not torch.allclose(tokens_first(x), reference(x), atol=1e-3)


def port_from_vit_pytorch(reference: nn.Module, config: dict[str, Any]) -> vitkit.SimpleViT:
    state = {map_key(k): v for k, v in reference.state_dict().items()}
    model = vitkit.SimpleViT(**config, head_norm="tokens").eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("image_size", [32, (32, 48)])
@pytest.mark.parametrize("use_flash", [True, False])
def test_head_norm_tokens_matches_vit_pytorch_simple_vit(image_size: Any, use_flash: bool) -> None:
    config = dict(SEED_KW, image_size=image_size)
    reference = realistic_(vit_pytorch.SimpleViT(**config))
    model = port_from_vit_pytorch(reference, dict(config, use_flash=use_flash))
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert_parity(model, reference, images(height=h, width=w), model, reference, atol=1e-5)


def test_matches_vit_pytorch_simple_vit_wide_heads_and_grayscale() -> None:
    """heads * dim_head != dim, one channel, rectangular patches."""
    config = dict(image_size=(24, 32), patch_size=(8, 4), num_classes=5, dim=32, depth=2, heads=3, mlp_dim=40,
                  channels=1, dim_head=24)
    reference = realistic_(vit_pytorch.SimpleViT(**config))
    model = port_from_vit_pytorch(reference, config)
    assert_parity(model, reference, images(height=24, width=32, channels=1), model, reference, atol=1e-5)


# -- what the one model gives SimpleViT ---------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    plain = randomize_(small_simple_vit()).train()
    recomputed = small_simple_vit().train()
    recomputed.load_state_dict(plain.state_dict())
    recomputed.set_grad_checkpointing(True)
    assert recomputed.num_recomputing_layers == len(recomputed.blocks) == 2
    x = images()
    for model in (plain, recomputed):
        model(x).square().sum().backward()
    grads = {n: p.grad for n, p in recomputed.named_parameters()}
    for name, p in plain.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert_close(grads[name], p.grad, atol=1e-5)


def test_packed_batch_equals_each_image_alone() -> None:
    model = randomize_(small_simple_vit(dynamic_img_size=True)).eval()
    pictures = [images(1, h, w, seed=i)[0] for i, (h, w) in enumerate([(32, 32), (16, 40), (24, 8), (8, 8)])]
    batch = model.pack(pictures, max_tokens=24)
    assert batch.num_sequences > 1  # several images share a sequence, and there is more than one sequence
    with torch.no_grad():
        packed = model(batch)
        for i, picture in enumerate(pictures):
            assert_close(packed[i], model(picture[None])[0])


def test_torch_export_runs_the_same_model() -> None:
    model = randomize_(small_simple_vit()).eval()
    x = images()
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert_close(program.module()(x), model(x))


# -- errors, config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 30}, "image_size"),
        ({"dim": 30, "heads": 2}, "dim"),
        ({"heads": 0}, "heads"),
        ({"depth": -1}, "depth"),
        ({"mlp_dim": 0}, "mlp_dim"),
        ({"channels": 0}, "channels"),
        ({"dim_head": 0}, "dim_head"),
        ({"attention_type": "fastest"}, "attention backend"),
        ({"num_classes": -2}, "num_classes"),
        ({"dropout": 0.1}, "dropout"),
        ({"use_flash": "yes"}, "use_flash"),
        ({"head_norm": "both"}, "head_norm"),
        ({"embed_dim": 32}, "SimpleViT sets embed_dim"),
        ({"qkv_bias": True}, "SimpleViT sets qkv_bias"),
    ],
)
def test_bad_arguments_are_value_errors(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vitkit.SimpleViT(**{**SEED_KW, **overrides})


@pytest.mark.parametrize(("shape", "match"), [((2, 1, 32, 32), "images must be"),
                                              ((2, 3, 64, 64), "does not match img_size 32x32")])
def test_wrong_input_is_value_error(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_simple_vit()(torch.randn(*shape))


def test_config_round_trip_and_rebuild() -> None:
    model = small_simple_vit(image_size=(32, 48), attention_type="scaled_dot_product")
    assert model.attention_backend == "math"
    again = config_from_dict(model.config.to_dict())
    assert again == model.config and isinstance(again, ViTConfig)
    rebuilt = vitkit.VisionTransformer(again)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert "pos_embed" not in model.state_dict()  # fixed sin-cos table, rebuilt not saved


@settings(max_examples=10, deadline=None, database=None)
@given(
    heads=st.integers(1, 3),
    dim_head=st.sampled_from([4, 8]),
    dim=st.sampled_from([8, 16, 32]),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    patch=st.sampled_from([2, 4]),
    num_classes=st.integers(0, 4),
    use_flash=st.booleans(),
)
def test_random_small_configs_run(heads: int, dim_head: int, dim: int, grid: tuple[int, int], patch: int,
                                  num_classes: int, use_flash: bool) -> None:
    size = (grid[0] * patch, grid[1] * patch)
    model = vitkit.SimpleViT(image_size=size, patch_size=patch, num_classes=num_classes, dim=dim, depth=1,
                             heads=heads, mlp_dim=2 * dim, dim_head=dim_head, use_flash=use_flash).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes or dim)


# -- directories written by earlier vitkit versions ---------------------------------------------


class OldSimpleViT(nn.Module):
    """vitkit's SimpleViT before it became a VisionTransformer configuration, as far as its weights and outputs
    go: its own norm-linear-norm patch projection, the same blocks, one `norm` on the tokens ('tokens') or on
    their mean ('pooled'), a `head`."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        (H, W), (p1, p2), dim = config["image_size"], config["patch_size"], config["dim"]
        self.patch, self.head_norm = (p1, p2), config["head_norm"]
        patch_dim = config["channels"] * p1 * p2
        self.patch_embed = nn.Module()
        self.patch_embed.norm_in, self.patch_embed.proj = nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim)
        self.patch_embed.norm = nn.LayerNorm(dim)
        self.register_buffer("pos", sincos_2d(H // p1, W // p2, dim)[None], persistent=False)
        self.blocks = nn.Sequential(*[
            TransformerBlock(dim, num_heads=config["heads"], head_dim=config["dim_head"],
                             mlp_hidden_dim=config["mlp_dim"], qkv_bias=False, proj_bias=False)
            for _ in range(config["depth"])
        ])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        (p1, p2), pe = self.patch, self.patch_embed
        x = x.reshape(B, C, H // p1, p1, W // p2, p2).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, p1 * p2 * C)
        x = self.blocks(pe.norm(pe.proj(pe.norm_in(x))) + self.pos)
        if self.head_norm == "tokens":
            return self.head(self.norm(x).mean(1))
        return self.head(self.norm(x.mean(1)))


OLD_CONFIG: dict[str, Any] = dict(
    family="simple_vit", image_size=[32, 48], patch_size=[8, 8], num_classes=10, dim=64, depth=2, heads=4,
    mlp_dim=96, channels=3, dim_head=16, use_flash=True, attention_type=None, head_norm="tokens",
    check_finite=False, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
)


def old_directory(path: Path, head_norm: str) -> OldSimpleViT:
    """A vitkit directory as the earlier SimpleViT wrote it (config.json and weights), and that model."""
    config = dict(OLD_CONFIG, head_norm=head_norm)
    old = realistic_(OldSimpleViT(config))
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path / "model.safetensors"))
    return old


@pytest.mark.parametrize("head_norm", ["tokens", "pooled"])
def test_a_simple_vit_directory_of_an_earlier_version_loads(tmp_path: Path, head_norm: str) -> None:
    old = old_directory(tmp_path / "old", head_norm)
    loaded = vitkit.load_pretrained(tmp_path / "old")
    assert isinstance(loaded, vitkit.VisionTransformer)
    kwargs = {k: v for k, v in OLD_CONFIG.items() if k not in ("family", "head_norm", "mean", "std")}
    kernel = {k: kwargs.pop(k) for k in ("use_flash", "attention_type")}
    assert loaded.config == simple_vit_config(**kwargs, head_norm=head_norm)
    assert loaded.attention_choice == AttentionChoice("sdpa", fallback=True)  # use_flash: a preference now
    x = images(height=32, width=48)
    assert_parity(loaded, old, x, loaded, old, atol=1e-5)
    new = vitkit.SimpleViT(**kwargs, **kernel, head_norm=head_norm).eval()
    new.load_state_dict(loaded.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(new(x), loaded(x))
    vitkit.save_pretrained(loaded, tmp_path / "new")  # written again, it is a ViTConfig directory
    assert json.loads((tmp_path / "new" / "config.json").read_text())["family"] == "vit"


def test_an_old_simple_vit_config_reads_as_its_vit_config() -> None:
    data = {k: v for k, v in OLD_CONFIG.items() if k not in ("use_flash", "attention_type", "head_norm")}
    config = config_from_dict(data)
    assert config.fc_norm is False  # head_norm defaulted to 'tokens' then
    assert (config.img_size, config.embed_dim, config.num_heads, config.head_dim, config.mlp_width) == (
        (32, 48), 64, 4, 16, 96)
    assert saved_attention(data) == ("sdpa", False)  # use_flash=True, its default: the kernel it ran, kept apart
    with pytest.raises(ValueError, match="never had: embed_dim"):
        config_from_dict({**OLD_CONFIG, "embed_dim": 64})
    with pytest.raises(ValueError, match="lacks required fields: mlp_dim"):
        config_from_dict({k: v for k, v in OLD_CONFIG.items() if k != "mlp_dim"})
