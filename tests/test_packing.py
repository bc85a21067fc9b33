"""Packed batches (NaViT): the packer, varlen attention on every backend, and forward_packed == per-image forward."""

from __future__ import annotations

import random

import pytest
import torch

import vitkit
from interop_helpers import cuda_kernel_usable
from vitkit.attention import BackendUnavailableError, Segments, varlen_attention
from vitkit.attention import math as math_backend
from vitkit.models import packed_forward
from vitkit.packing import first_fit_decreasing

SIZES = [(16, 16), (8, 24), (24, 8), (12, 20), (32, 16), (4, 4), (10, 14)]  # incl. non-square, not divisible by 4
CUDA = torch.cuda.is_available()


def tiny(**overrides) -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    kwargs = dict(img_size=16, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=2,
                  dynamic_img_size=True, dynamic_img_pad=True)
    kwargs.update(overrides)
    return vitkit.VisionTransformer(**kwargs).eval()


def images(sizes=SIZES, channels: int = 3, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(channels, h, w, generator=gen) for h, w in sizes]


# -- the packer -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_packer_respects_budget_and_keeps_every_image(seed):
    rng = random.Random(seed)
    sizes = [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(rng.randint(1, 30))]
    max_tokens = rng.randint(110, 200)
    batch = vitkit.pack_images(images(sizes, seed=seed), patch_size=4, max_tokens=max_tokens, num_prefix_tokens=1)
    assert batch.num_images == len(sizes)
    assert sorted(i for members in batch.bins for i in members) == list(range(len(sizes)))  # each image once
    counts = torch.bincount(batch.image_ids[batch.valid], minlength=len(sizes))
    expected = torch.tensor([-(-h // 4) * -(-w // 4) + 1 for h, w in sizes])
    assert torch.equal(counts, expected) and torch.equal(batch.lengths, expected)
    assert batch.seq_len <= max_tokens
    for s, cu in enumerate(batch.cu_seqlens):
        assert int(cu[-1]) <= max_tokens and int(cu[-1]) == int(batch.valid[s].sum())
    rows, cols = batch.rows, batch.cols
    for i, (h, w) in enumerate(sizes):  # every cell of every image's grid once
        cells = rows[batch.image_ids == i] * 1000 + cols[batch.image_ids == i]
        grid = torch.arange(-(-h // 4))[:, None] * 1000 + torch.arange(-(-w // 4))[None, :]
        assert torch.equal(cells, torch.cat([torch.tensor([-1001]), grid.flatten()]))  # prefix slot first
    for i in range(len(sizes)):  # an image's slots are contiguous, starting at its offset
        slots = torch.nonzero(batch.image_ids.view(-1) == i).squeeze(1)
        start = int(batch.sequence[i]) * batch.seq_len + int(batch.offsets[i])
        assert torch.equal(slots, torch.arange(start, start + int(batch.lengths[i])))


def test_first_fit_decreasing_packs_tightly():
    bins = first_fit_decreasing([5, 5, 4, 3, 2, 1], 10)
    assert sorted(sum([5, 5, 4, 3, 2, 1][i] for i in b) for b in bins) == [10, 10]


def test_image_larger_than_max_tokens_is_a_clear_error():
    with pytest.raises(ValueError, match=r"image 1 \(32x32 px, 8x8 patches.*max_tokens=40.*at least 65"):
        vitkit.pack_images(images([(8, 8), (32, 32)]), patch_size=4, max_tokens=40, num_prefix_tokens=1)


def test_size_not_divisible_by_patch_is_padded_or_rejected():
    imgs = images([(10, 13)])
    batch = vitkit.pack_images(imgs, patch_size=4, max_tokens=64)
    assert batch.grid_sizes == ((3, 4),) and batch.image_sizes == ((10, 13),)
    padded = torch.nn.functional.pad(imgs[0], (0, 3, 0, 2))
    assert torch.equal(batch.patches, vitkit.pack_images([padded], patch_size=4, max_tokens=64).patches)
    with pytest.raises(ValueError, match=r"not divisible by patch_size 4x4.*pad_to_patch=True"):
        vitkit.pack_images(imgs, patch_size=4, max_tokens=64, pad_to_patch=False)


@pytest.mark.parametrize(
    ("imgs", "kwargs", "match"),
    [
        ([], {}, "non-empty"),
        ([torch.randn(3, 8)], {}, r"images\[0\] must be a float \(C, H, W\)"),
        ([torch.randn(3, 8, 8), torch.randn(1, 8, 8)], {}, r"images\[1\] is 1-channel"),
        ([torch.randn(3, 8, 8)], {"max_tokens": 0}, "max_tokens must be a positive integer"),
        ([torch.randn(3, 8, 8)], {"num_prefix_tokens": -1}, "num_prefix_tokens"),
    ],
)
def test_bad_pack_arguments(imgs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        vitkit.pack_images(imgs, **{"patch_size": 4, "max_tokens": 64, **kwargs})


def test_patch_size_and_channel_mismatch_with_model():
    model = tiny()
    with pytest.raises(ValueError, match="patch_size"):
        model.forward_packed(vitkit.pack_images(images(), patch_size=2, max_tokens=512))
    with pytest.raises(ValueError, match="channels"):
        model.forward_packed(vitkit.pack_images(images(channels=1), patch_size=4, max_tokens=512))


def test_batch_moves_and_unpacks():
    batch = vitkit.pack_images(images(), patch_size=4, max_tokens=80)
    moved = batch.to("cpu", torch.float64)
    assert moved.patches.dtype == torch.float64 and moved.image_ids.dtype == torch.long
    tokens = torch.arange(batch.num_sequences * batch.seq_len).view(batch.num_sequences, batch.seq_len, 1)
    for i, part in enumerate(batch.unpack(tokens)):
        assert part.shape[0] == int(batch.lengths[i])
        assert (batch.image_ids.view(-1)[part.view(-1)] == i).all()


# -- varlen attention -------------------------------------------------------------------------------


def _per_segment_reference(q, k, v, q_ids, kv_ids):
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for s in q_ids[b].unique().tolist():
            if s < 0:
                continue
            qi, ki = q_ids[b] == s, kv_ids[b] == s
            out[b][:, qi] = torch.nn.functional.scaled_dot_product_attention(q[b][:, qi], k[b][:, ki], v[b][:, ki])
    return out


@pytest.mark.parametrize("backend", ["sdpa", "math", "auto", "sdpa:math"])
def test_varlen_attention_equals_attention_per_segment(backend):
    torch.manual_seed(0)
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, -1, -1], [3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4]])
    q, k, v = (torch.randn(2, 3, 11, 8) for _ in range(3))  # H=3 != N=11
    out = varlen_attention(q, k, v, Segments(ids), backend=backend)
    valid = (ids >= 0)[:, None, :, None].expand_as(out)
    ref = _per_segment_reference(q, k, v, ids, ids)
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(CUDA, reason="checks the CPU error messages")
@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_varlen_cuda_backends_say_why_not_on_cpu(backend):
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(BackendUnavailableError, match=f"'{backend}' cannot run packed attention here.*cuda"):
        varlen_attention(q, q, q, Segments(torch.zeros(1, 4, dtype=torch.long)), backend=backend)


def test_varlen_bad_segments():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="do not match"):
        varlen_attention(q, q, q, Segments(torch.zeros(1, 5, dtype=torch.long)))
    with pytest.raises(TypeError, match="Segments"):
        varlen_attention(q, q, q, torch.zeros(1, 4))


# -- forward_packed == forward per image -----------------------------------------------------------

MODEL_VARIANTS = {
    "token": dict(global_pool="token"),
    "token+reg": dict(global_pool="token", reg_tokens=2),
    "avg": dict(global_pool="avg", class_token=False),
    "avg+cls": dict(global_pool="avg"),
    "map": dict(global_pool="map", class_token=False),
    "map+cls+reg": dict(global_pool="map", reg_tokens=1),
    "max+no_embed_class": dict(global_pool="max", reg_tokens=1, no_embed_class=True),
    "sincos": dict(global_pool="avg", class_token=False, pos_embed="sincos"),
    "norm_linear": dict(global_pool="avg", class_token=False, patch_embed="norm_linear_norm", qk_norm=True),
}


def _check_parity(model, imgs, max_tokens=96):
    batch = model.pack(imgs, max_tokens=max_tokens)
    assert batch.num_sequences > 1  # the test must pack several images per sequence and several sequences
    with torch.no_grad():
        packed = model.forward_packed(batch)
        single = torch.cat([model(x[None]) for x in imgs])
    torch.testing.assert_close(packed, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_forward_packed_equals_single_images(backend, variant):
    _check_parity(tiny(attention_type=backend, **MODEL_VARIANTS[variant]), images())


@pytest.mark.parametrize("variant", ["token+reg", "avg", "map+cls+reg"])
def test_forward_packed_in_chunks_of_sequences_equals_single_images(variant, monkeypatch):
    monkeypatch.setattr(packed_forward, "CHUNK_TOKENS", 1)  # every sequence goes through the blocks on its own
    _check_parity(tiny(**MODEL_VARIANTS[variant]), images())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["map+cls+reg"])  # blocks and the MAP pool: flex compiles each shape (slow)
def test_forward_packed_flex_equals_single_images(variant):
    model = tiny(attention_type="flex", **MODEL_VARIANTS[variant])
    imgs = images(SIZES[:5])
    batch = model.pack(imgs, max_tokens=96)
    with torch.no_grad():
        packed = model.forward_packed(batch)
    model = tiny(attention_type="math", **MODEL_VARIANTS[variant])  # same weights (seeded), reference kernel
    with torch.no_grad():
        single = torch.cat([model(x[None]) for x in imgs])
    torch.testing.assert_close(packed, single, atol=1e-5, rtol=1e-5)


def test_tokens_on_request_equal_forward_features():
    model = tiny(global_pool="avg", reg_tokens=1)
    imgs = images()
    with torch.no_grad():
        pooled, tokens = model.forward_packed(model.pack(imgs, max_tokens=96), return_tokens=True)
        feats = model.forward_packed(model.pack(imgs, max_tokens=96), pre_logits=True)
        for x, t in zip(imgs, tokens, strict=True):
            torch.testing.assert_close(t, model.forward_features(x[None])[0], atol=1e-5, rtol=1e-5)
    assert pooled.shape == (len(imgs), 5) and feats.shape == (len(imgs), 32)


def test_default_packing_is_repacked_for_prefix_tokens_and_forward_takes_batches():
    model = tiny(global_pool="token", reg_tokens=2)
    imgs = images()
    batch = vitkit.pack_images(imgs, patch_size=4, max_tokens=96)  # no prefix slots reserved
    with torch.no_grad():
        torch.testing.assert_close(model(batch), torch.cat([model(x[None]) for x in imgs]), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_tokens", [packed_forward.CHUNK_TOKENS, 1])
def test_gradients_of_packed_batch_equal_sum_over_single_images(chunk_tokens, monkeypatch):
    monkeypatch.setattr(packed_forward, "CHUNK_TOKENS", chunk_tokens)
    model = tiny(global_pool="map", reg_tokens=1).train()  # no dropout configured: train mode is deterministic
    imgs = images()
    labels = torch.arange(len(imgs)) % 5
    loss = torch.nn.functional.cross_entropy(model.forward_packed(model.pack(imgs, max_tokens=96)), labels,
                                             reduction="sum")
    loss.backward()
    packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for x, y in zip(imgs, labels, strict=True):
        torch.nn.functional.cross_entropy(model(x[None]), y[None], reduction="sum").backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(packed[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_no_token_attends_outside_its_image(monkeypatch):
    recorded = []
    original = math_backend.attention_weights

    def record(q, k, attn_mask=None, scale=None):
        weights = original(q, k, attn_mask, scale)
        recorded.append(weights.detach())
        return weights

    monkeypatch.setattr(math_backend, "attention_weights", record)
    model = tiny(attention_type="math", global_pool="map", reg_tokens=1)
    batch = model.pack(images(), max_tokens=96)
    with torch.no_grad():
        model.forward_packed(batch)
    assert len(recorded) == 3  # two blocks + the MAP pool
    ids = batch.image_ids
    same = ids[:, :, None] == ids[:, None, :]
    for weights in recorded[:2]:  # (S, H, T, T)
        assert weights.shape == (batch.num_sequences, 2, batch.seq_len, batch.seq_len)
        assert (weights.masked_fill(same[:, None], 0.0) == 0).all()
        real = (ids >= 0)[:, None, :, None].expand_as(weights)
        torch.testing.assert_close(weights.sum(-1)[real[..., 0]], torch.ones(int(real[..., 0].sum())))
    pool = recorded[2][0]  # (H, I, S*T): latent of each image over patch slots of that image only
    slot_image = torch.full((ids.numel(),), -1)
    slot_image[batch.patch_slots] = batch.patch_image
    order = batch.image_order()
    assert (pool.masked_fill(order[:, None] == slot_image[None, :], 0.0) == 0).all()


# -- token dropping ------------------------------------------------------------------------------------


def test_token_drop_keeps_at_least_one_patch_and_only_in_training():
    model = tiny(global_pool="avg", class_token=False, token_drop=0.5)
    imgs = images()
    batch = model.pack(imgs, max_tokens=96)
    dropped = batch.drop_tokens(0.5, torch.Generator().manual_seed(0))
    counts = torch.bincount(dropped.patch_image, minlength=len(imgs))
    full = torch.bincount(batch.patch_image, minlength=len(imgs))
    assert torch.equal(counts, torch.clamp(torch.round(full * 0.5), min=1).long())
    for i in range(len(imgs)):  # kept patches keep their grid cell, in raster order
        cells = dropped.patch_rows[dropped.patch_image == i] * 100 + dropped.patch_cols[dropped.patch_image == i]
        assert torch.all(cells[1:] > cells[:-1])
    with torch.no_grad():
        evaluated = model.forward_packed(batch)  # eval mode: nothing dropped
        torch.testing.assert_close(evaluated, torch.cat([model(x[None]) for x in imgs]), atol=1e-5, rtol=1e-5)
        model.train()
        assert not torch.allclose(model.forward_packed(batch), evaluated)
        sizes_seen = []
        model.forward_packed(batch, token_drop=lambda h, w: sizes_seen.append((h, w)) or 0.9)
    assert sizes_seen == list(SIZES)


def test_token_drop_rate_is_validated():
    batch = vitkit.pack_images(images(), patch_size=4, max_tokens=96)
    with pytest.raises(ValueError, match=r"token_drop rate must be in \[0, 1\)"):
        batch.drop_tokens(1.0)
    with pytest.raises(ValueError, match="token_drop"):
        vitkit.ViTConfig(token_drop=1.5)


# -- CUDA varlen kernels -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["flash", "xformers", "flex", "sdpa"])
def test_varlen_cuda_kernels_equal_per_segment(backend):
    if not cuda_kernel_usable(backend):
        pytest.skip(f"{backend} is not usable on this machine")
    torch.manual_seed(0)
    ids = torch.tensor([[0] * 40 + [1] * 70 + [2] * 9 + [-1] * 9, [3] * 100 + [4] * 28], device="cuda")
    q, k, v = (torch.randn(2, 3, 128, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    out = varlen_attention(q, k, v, Segments(ids), backend=backend)
    valid = (ids >= 0)[:, None, :, None].expand_as(out)
    ref = _per_segment_reference(q.float(), k.float(), v.float(), ids, ids)
    torch.testing.assert_close(out[valid].float(), ref[valid], atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_forward_packed_cuda_kernels(backend):
    if not cuda_kernel_usable(backend):
        pytest.skip(f"{backend} is not usable on this machine")
    model = tiny(attention_type=backend, global_pool="map", reg_tokens=1, embed_dim=128).cuda().half()
    reference = tiny(attention_type="sdpa", global_pool="map", reg_tokens=1, embed_dim=128).cuda()  # same seed
    imgs = [x.cuda() for x in images()]
    with torch.no_grad():
        packed = model.forward_packed(model.pack([x.half() for x in imgs], max_tokens=96)).float()
        single = torch.cat([reference(x[None]) for x in imgs])
    torch.testing.assert_close(packed, single, atol=2e-2, rtol=2e-2)
