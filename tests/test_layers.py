"""Layers: EfficientAttention, TransformerBlock (pre/post-norm), MLPs, DropPath, LayerScale, pooling,
patch embedding and position embeddings — against hand-written references and timm / vit-pytorch."""

from __future__ import annotations

import functools
import math

import pytest
import timm.layers
import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.attention import BackendUnavailableError
from vitkit.layers import (
    AttentionPoolLatent,
    DropPath,
    EfficientAttention,
    LayerScale,
    Mlp,
    PatchEmbed,
    SwiGLU,
    SwiGLUPacked,
    TransformerBlock,
    create_activation,
    create_norm,
    norm_name,
    pool_segments,
    pool_tokens,
    resample_abs_pos_embed,
    sincos_2d,
)

# Backends that run on a CPU with gradients enabled (flex needs torch.no_grad() there).
CPU_BACKENDS = ["math", "sdpa", "auto", "scaled_dot_product", "torch", "sdpa:math", "sdpa:flash"]
UNAVAILABLE_ON_CPU = ["flash", "flash_attention", "xformers", "sdpa:efficient", "sdpa:cudnn"]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter (norm affines included) non-trivial values so mix-ups show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0  # norm scales around 1
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + offset)
    return module


def reference_attention(attn: EfficientAttention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v written out, on the module's own projections and q/k norms."""
    B, N, _ = x.shape
    H, D = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, N, H * D))


# -- EfficientAttention -------------------------------------------------------------------------


@pytest.mark.parametrize("attention_type", CPU_BACKENDS)
def test_seed_efficient_attention_demo_shape(attention_type: str) -> None:
    """Seed 000's demo: (2, 16, 64) tokens, 8 heads, every backend a CPU can run."""
    layer = EfficientAttention(dim=64, num_heads=8, attention_type=attention_type)
    out = layer(torch.randn(2, 16, 64))
    assert out.shape == (2, 16, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention_type", CPU_BACKENDS)
@pytest.mark.parametrize("qk_norm", [False, True])
def test_efficient_attention_matches_written_out_reference(attention_type: str, qk_norm: bool) -> None:
    torch.manual_seed(0)
    layer = randomize_(EfficientAttention(64, num_heads=4, qkv_bias=True, qk_norm=qk_norm,
                                          attention_type=attention_type))
    x = torch.randn(2, 10, 64)
    assert_close(layer(x), reference_attention(layer, x))


def test_efficient_attention_matches_torch_multihead_attention() -> None:
    """An independent reference: nn.MultiheadAttention with the same fused in-projection (q, k, v order)."""
    torch.manual_seed(0)
    layer = randomize_(EfficientAttention(48, num_heads=6, qkv_bias=True))
    mha = nn.MultiheadAttention(48, 6, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.qkv.weight)
        mha.in_proj_bias.copy_(layer.qkv.bias)
        mha.out_proj.weight.copy_(layer.proj.weight)
        mha.out_proj.bias.copy_(layer.proj.bias)
    x = torch.randn(3, 7, 48)
    expected, _ = mha(x, x, x, need_weights=False)
    assert_close(layer(x), expected)


@pytest.mark.slow
def test_efficient_attention_flex_under_no_grad() -> None:
    torch.manual_seed(0)
    layer = randomize_(EfficientAttention(64, num_heads=8, attention_type="flex")).eval()
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        out = layer(x)
        assert out.shape == (2, 16, 64)
        assert_close(out, reference_attention(layer, x))


@pytest.mark.parametrize("attention_type", UNAVAILABLE_ON_CPU)
def test_explicit_gpu_backend_raises_on_cpu_at_forward(attention_type: str) -> None:
    layer = EfficientAttention(64, num_heads=8, attention_type=attention_type)  # building is fine
    with pytest.raises(BackendUnavailableError, match="cannot run"):
        layer(torch.randn(2, 16, 64))


def test_efficient_attention_unknown_type_is_value_error() -> None:
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'"):
        EfficientAttention(64, num_heads=8, attention_type="bogus")


def test_efficient_attention_dim_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        EfficientAttention(64, num_heads=5)


def test_efficient_attention_explicit_head_dim() -> None:
    """SimpleViT's inner width heads * dim_head may differ from the model width."""
    layer = EfficientAttention(32, num_heads=3, head_dim=16)
    assert layer.qkv.weight.shape == (3 * 48, 32)
    assert layer.proj.weight.shape == (32, 48)
    x = torch.randn(2, 5, 32)
    assert_close(layer(x), reference_attention(layer, x))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_efficient_attention_honours_qkv_bias(qkv_bias: bool) -> None:
    layer = EfficientAttention(64, num_heads=8, qkv_bias=qkv_bias)
    assert (layer.qkv.bias is not None) == qkv_bias


def test_attention_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    layer = EfficientAttention(32, num_heads=4, attn_drop=0.5, proj_drop=0.5)
    x = torch.randn(2, 9, 32)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


# -- TransformerBlock ---------------------------------------------------------------------------


def reference_block(block: TransformerBlock, x: torch.Tensor, pre_norm: bool) -> torch.Tensor:
    """Seed 000's two formulas, on the block's own submodules (LayerScale included)."""
    if pre_norm:
        x = x + block.ls1(block.attn(block.norm1(x)))
        return x + block.ls2(block.mlp(block.norm2(x)))
    x = block.norm1(x + block.ls1(block.attn(x)))
    return block.norm2(x + block.ls2(block.mlp(x)))


@pytest.mark.parametrize("pre_norm", [True, False])
@pytest.mark.parametrize("init_values", [None, 0.3])
def test_block_pre_and_post_norm_formulas(pre_norm: bool, init_values: float | None) -> None:
    torch.manual_seed(0)
    block = randomize_(TransformerBlock(32, num_heads=4, qkv_bias=True, pre_norm=pre_norm,
                                        init_values=init_values)).eval()
    x = torch.randn(2, 6, 32)
    assert_close(block(x), reference_block(block, x, pre_norm))
    # and not the other formula
    assert not torch.allclose(block(x), reference_block(block, x, not pre_norm), atol=1e-3)


def test_block_pre_norm_flag_changes_output_with_same_weights() -> None:
    torch.manual_seed(0)
    pre = randomize_(TransformerBlock(32, num_heads=4, pre_norm=True)).eval()
    post = TransformerBlock(32, num_heads=4, pre_norm=False).eval()
    post.load_state_dict(pre.state_dict())
    x = torch.randn(2, 6, 32)
    assert (pre(x) - post(x)).abs().max() > 1e-2
    # post-norm output rows are norm2 outputs: per-token mean = norm2.bias mean when weight is 1
    with torch.no_grad():
        post.norm2.weight.fill_(1.0)
        post.norm2.bias.zero_()
    out = post(x)
    assert_close(out.mean(-1), torch.zeros(2, 6), atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_block_honours_qkv_bias(qkv_bias: bool) -> None:
    """Seed 000 accepted qkv_bias but ignored it."""
    block = TransformerBlock(32, num_heads=4, qkv_bias=qkv_bias)
    assert (block.attn.qkv.bias is not None) == qkv_bias


@pytest.mark.parametrize(
    ("mlp_layer", "expected"), [("mlp", Mlp), ("swiglu", SwiGLU), ("swiglu_packed", SwiGLUPacked), (SwiGLU, SwiGLU)]
)
def test_block_mlp_layer_choice(mlp_layer: object, expected: type) -> None:
    block = TransformerBlock(32, num_heads=4, mlp_layer=mlp_layer)
    assert type(block.mlp) is expected
    assert block(torch.randn(1, 3, 32)).shape == (1, 3, 32)


def test_block_accepts_seed_style_activation_class() -> None:
    block = TransformerBlock(32, num_heads=4, act_layer=nn.GELU)
    assert isinstance(block.mlp.act, nn.GELU)


def test_block_accepts_seed_style_norm_class() -> None:
    block = TransformerBlock(32, num_heads=4, norm_layer=nn.LayerNorm)
    assert isinstance(block.norm1, nn.LayerNorm) and block.norm1.eps == 1e-5
    block = TransformerBlock(32, num_heads=4, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
    assert block.norm2.eps == 1e-6


def test_block_and_attention_keep_seed_positional_order() -> None:
    attn = EfficientAttention(64, 8, 0.1, 0.2, "scaled_dot_product", True)
    assert (attn.attn_drop, attn.proj_drop.p, attn.attention_type, attn.deterministic) == (0.1, 0.2, "math", True)
    assert attn.qkv.bias is not None  # the seed's qkv Linear always had a bias
    block = TransformerBlock(64, 4, 4.0, True, 0.1, 0.2, 0.3, nn.GELU, nn.LayerNorm, "sdpa", False, False)
    assert block.attn.qkv.bias is not None and block.attn.proj_drop.p == 0.1 and block.attn.attn_drop == 0.2
    assert block.drop_path1.drop_prob == 0.3 and block.attn.attention_type == "sdpa" and not block.pre_norm


def test_block_stochastic_depth_only_in_training() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(32, num_heads=4, drop_path=0.5, drop=0.1)
    x = torch.randn(8, 5, 32)
    block.eval()
    assert torch.equal(block(x), block(x))
    block.train()
    assert not torch.allclose(block(x), block(x))


def test_block_unknown_layers_are_value_errors() -> None:
    with pytest.raises(ValueError, match="act_layer"):
        TransformerBlock(32, num_heads=4, act_layer="bogus")
    with pytest.raises(ValueError, match="mlp_layer"):
        TransformerBlock(32, num_heads=4, mlp_layer="bogus")


# -- MLPs, DropPath, LayerScale, activations, norms ---------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (functools.partial(Mlp, act_layer="gelu"), functools.partial(timm.layers.Mlp, act_layer=nn.GELU)),
        (functools.partial(SwiGLU, act_layer="silu"), functools.partial(timm.layers.SwiGLU, act_layer=nn.SiLU)),
        (functools.partial(SwiGLUPacked, act_layer="silu"), timm.layers.SwiGLUPacked),
    ],
    ids=["mlp", "swiglu", "swiglu_packed"],
)
def test_mlp_layers_match_timm(ours: functools.partial, theirs: functools.partial) -> None:
    torch.manual_seed(0)
    ref = theirs(24, hidden_features=40)
    mine = ours(24, hidden_features=40)
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 5, 24)
    assert_close(mine(x), ref(x))


def test_swiglu_packed_needs_even_hidden() -> None:
    with pytest.raises(ValueError, match="even hidden_features"):
        SwiGLUPacked(8, hidden_features=7)


def test_drop_path_eval_identity_and_train_drops_whole_samples() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.randn(64, 4, 8) + 3.0
    assert torch.equal(layer.eval()(x), x)
    out = layer.train()(x)
    dropped = (out == 0).flatten(1).all(1)
    kept = torch.isclose(out, x / 0.5).flatten(1).all(1)
    assert torch.all(dropped | kept)
    assert dropped.any() and kept.any()
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_layer_scale_multiplies_by_gamma() -> None:
    layer = LayerScale(6, init_values=0.25)
    assert torch.equal(layer.gamma, torch.full((6,), 0.25))
    x = torch.randn(2, 3, 6)
    assert_close(layer(x), x * 0.25)


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
        ("gelu_tanh", lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
        ("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x)),
        ("silu", lambda x: x * torch.sigmoid(x)),
        ("relu", lambda x: x.clamp_min(0)),
    ],
)
def test_activations_by_name(name: str, formula: object) -> None:
    x = torch.linspace(-4, 4, 101)
    assert_close(create_activation(name)(x), formula(x))


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "quick_gelu", "silu", "relu"])
def test_inplace_activation_overwrites_only_what_autograd_does_not_need(name: str) -> None:
    x = torch.randn(4, 33)
    expected = create_activation(name)(x)
    inplace = create_activation(name, inplace=True)
    assert isinstance(inplace, type(create_activation(name)))  # still an nn.GELU / nn.SiLU / ...
    with torch.no_grad():  # nothing will need the input: it becomes the output
        y = x.clone()
        out = inplace(y)
        assert out.data_ptr() == y.data_ptr()
        assert torch.equal(out, expected)
        kept = x.clone()
        create_activation(name)(kept)  # the default never touches its input
        assert torch.equal(kept, x)
    leaf = x.clone().requires_grad_()  # autograd needs it: computed out of place, same gradient
    ref = x.clone().requires_grad_()
    inplace(leaf).square().sum().backward()
    create_activation(name)(ref).square().sum().backward()
    assert torch.equal(leaf.detach(), x)
    assert torch.equal(leaf.grad, ref.grad)


@pytest.mark.parametrize("mlp_layer", ["mlp", "swiglu", "swiglu_packed"])
def test_mlp_inference_equals_training_path(mlp_layer: str) -> None:
    torch.manual_seed(0)
    block = TransformerBlock(48, num_heads=3, mlp_layer=mlp_layer, act_layer="gelu").eval()
    x = torch.randn(2, 5, 48)
    with_grad = block(x)  # parameters need grad: activations run out of place
    with torch.inference_mode():
        assert torch.equal(block(x), with_grad.detach())
    assert with_grad.requires_grad


def test_unknown_activation_is_value_error() -> None:
    with pytest.raises(ValueError, match="act_layer"):
        create_activation("swish2")


def test_norms_by_name_and_partial() -> None:
    assert isinstance(create_norm("layernorm", 8, 1e-6), nn.LayerNorm)
    rms = create_norm("rmsnorm", 8, 1e-6)
    x = torch.randn(2, 8)
    assert_close(rms(x), x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
    assert norm_name(functools.partial(nn.LayerNorm, eps=1e-6)) == ("layernorm", 1e-6)
    assert norm_name(nn.LayerNorm) == ("layernorm", 1e-5)
    with pytest.raises(ValueError, match="norm_layer"):
        norm_name("batchnorm")


# -- patch embedding, position embeddings, pooling ----------------------------------------------


def test_patch_embed_is_strided_conv_flattened_row_major() -> None:
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=(16, 24), patch_size=8, in_chans=3, embed_dim=10)
    x = torch.randn(2, 3, 16, 24)
    expected = F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=8).flatten(2).transpose(1, 2)
    assert_close(embed(x), expected)
    assert embed(x, flatten=False).shape == (2, 2, 3, 10)
    assert embed.grid_size == (2, 3) and embed.num_patches == 6


def test_patch_embed_dynamic_pad_equals_manual_zero_pad() -> None:
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=20, patch_size=8, embed_dim=10, dynamic_img_pad=True)
    x = torch.randn(1, 3, 20, 20)
    assert embed.grid_size == (3, 3)
    expected = F.conv2d(F.pad(x, (0, 4, 0, 4)), embed.proj.weight, embed.proj.bias, stride=8)
    assert_close(embed(x), expected.flatten(2).transpose(1, 2))


def test_patch_embed_crop_remainder_ignores_last_pixels() -> None:
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=20, patch_size=8, embed_dim=10, crop_remainder=True)
    x = torch.randn(1, 3, 20, 20)
    assert embed.grid_size == (2, 2)
    cropped = PatchEmbed(img_size=16, patch_size=8, embed_dim=10)
    cropped.load_state_dict(embed.state_dict())
    assert_close(embed(x), cropped(x[..., :16, :16]))


def test_patch_embed_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        PatchEmbed(img_size=20, patch_size=8)
    embed = PatchEmbed(img_size=16, patch_size=8, embed_dim=4)
    with pytest.raises(ValueError, match=r"\(batch, 3, height, width\)"):
        embed(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="does not match img_size"):
        embed(torch.randn(1, 3, 24, 24))
    loose = PatchEmbed(img_size=16, patch_size=8, embed_dim=4, strict_img_size=False)
    assert loose(torch.randn(1, 3, 24, 16)).shape == (1, 6, 4)
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbed(img_size=16, patch_size=0)


@pytest.mark.parametrize(("h", "w", "dim"), [(4, 4, 32), (3, 5, 16), (2, 7, 64)])
def test_sincos_2d_matches_vit_pytorch(h: int, w: int, dim: int) -> None:
    from vit_pytorch.simple_vit import posemb_sincos_2d

    assert_close(sincos_2d(h, w, dim), posemb_sincos_2d(h, w, dim))


def test_sincos_2d_needs_dim_divisible_by_four() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 30)


@pytest.mark.parametrize(("old", "new", "prefix"), [((4, 4), (6, 3), 1), ((4, 4), (2, 5), 0), ((3, 5), (6, 4), 5)])
def test_resample_abs_pos_embed_matches_timm(old: tuple[int, int], new: tuple[int, int], prefix: int) -> None:
    torch.manual_seed(0)
    table = torch.randn(1, prefix + old[0] * old[1], 16)
    ours = resample_abs_pos_embed(table, new_size=new, old_size=old, num_prefix_tokens=prefix)
    theirs = timm.layers.resample_abs_pos_embed(table, new_size=list(new), old_size=list(old),
                                                num_prefix_tokens=prefix)
    assert ours.shape == (1, prefix + new[0] * new[1], 16)
    assert_close(ours, theirs)
    assert torch.equal(ours[:, :prefix], table[:, :prefix])


def test_resample_abs_pos_embed_same_grid_is_identity() -> None:
    table = torch.randn(1, 17, 8)
    assert resample_abs_pos_embed(table, new_size=(4, 4), num_prefix_tokens=1) is table


@pytest.mark.parametrize("pool_type", ["", "token", "avg", "max", "avgmax"])
def test_pool_tokens(pool_type: str) -> None:
    x = torch.randn(2, 7, 5)
    out = pool_tokens(x, pool_type, num_prefix_tokens=3)
    patches = x[:, 3:]
    expected = {
        "": x,
        "token": x[:, 0],
        "avg": patches.mean(1),
        "max": patches.max(1).values,
        "avgmax": 0.5 * (patches.mean(1) + patches.max(1).values),
    }[pool_type]
    assert_close(out, expected)


@pytest.mark.parametrize("pool_type", ["avg", "max", "avgmax"])
def test_pool_segments_pools_each_image_as_pool_tokens_does(pool_type: str) -> None:
    sizes = [3, 1, 5]  # patches per image, interleaved as packing leaves them
    images = [torch.randn(n, 6) for n in sizes]
    order = torch.tensor([0, 2, 1, 2, 0, 2, 2, 0, 2])
    cursor = [0, 0, 0]
    patches = []
    for i in order.tolist():
        patches.append(images[i][cursor[i]])
        cursor[i] += 1
    out = pool_segments(torch.stack(patches), order, num_images=3, pool_type=pool_type)
    for i, image in enumerate(images):
        assert_close(out[i], pool_tokens(image[None], pool_type, num_prefix_tokens=0)[0])
    with pytest.raises(ValueError, match="token"):
        pool_segments(torch.stack(patches), order, num_images=3, pool_type="token")


@pytest.mark.parametrize("latent_len", [1, 3])
def test_attention_pool_latent_matches_timm(latent_len: int) -> None:
    torch.manual_seed(0)
    ref = timm.layers.AttentionPoolLatent(32, num_heads=4, mlp_ratio=2.0, latent_len=latent_len,
                                          norm_layer=functools.partial(nn.LayerNorm, eps=1e-6)).eval()
    randomize_(ref)
    mine = AttentionPoolLatent(32, num_heads=4, mlp_ratio=2.0, latent_len=latent_len, norm_eps=1e-6).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 9, 32)
    out = mine(x)
    assert out.shape == ((2, 32) if latent_len == 1 else (2, latent_len, 32))
    expected = ref(x)  # timm's pool_type='token' keeps the first latent
    assert_close(out if latent_len == 1 else out[:, 0], expected)


def test_public_layer_names_exported_from_package() -> None:
    assert vitkit.EfficientAttention is EfficientAttention
    assert vitkit.TransformerBlock is TransformerBlock
