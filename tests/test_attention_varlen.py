"""Packed (variable-length) attention through the backend table: every CPU backend against a per-segment
reference, the varlen runners of the CUDA kernels on CPU stand-ins of their packages, `auto`'s packed
order, the shared error text and the packed usability report."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from test_attention import TOL, einsum_reference, qkv
from vitkit.attention import (
    AUTO_ORDER,
    BACKENDS,
    VARLEN_AUTO_ORDER,
    BackendUnavailableError,
    Capability,
    Request,
    Segments,
    backend_report,
    choose,
    choose_varlen,
    flash,
    register_backend,
    scaled_dot_product_attention,
    varlen_attention,
    xformers,
)

# Self-attention over packed images (row 0 ends in padding), and latents attending to images as a MAP
# pool does (2 queries per segment, padding queries in row 1). B=2, H=3, N=11 or 6, M=11, D=8.
SELF_IDS = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, -1, -1], [3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4]])
CROSS_Q_IDS = torch.tensor([[0, 0, 1, 1, 2, 2], [3, 3, 4, 4, -1, -1]])
CASES = {"self": (SELF_IDS, SELF_IDS), "cross": (CROSS_Q_IDS, SELF_IDS)}
EAGER_CPU = ("math", "sdpa", "sdpa:math", "sdpa:flash", "auto")


def packed_inputs(case: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, ...]:
    q_ids, kv_ids = CASES[case]
    q, _, _ = qkv(2, 3, q_ids.shape[1], kv_ids.shape[1], 8, seed=seed, dtype=dtype)
    _, k, v = qkv(2, 3, q_ids.shape[1], kv_ids.shape[1], 8, seed=seed + 1, dtype=dtype)
    return q, k, v, q_ids, kv_ids


def per_segment_reference(q: Tensor, k: Tensor, v: Tensor, q_ids: Tensor, kv_ids: Tensor,
                          scale: float | None = None) -> Tensor:
    """Each segment's queries attend to that segment's keys alone (float64); padding rows stay zero."""
    out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for s in q_ids[b][q_ids[b] >= 0].unique().tolist():
            qi, ki = q_ids[b] == s, kv_ids[b] == s
            out[b, :, qi] = einsum_reference(q[b, None, :, qi], k[b, None, :, ki], v[b, None, :, ki], scale=scale)[0]
    return out


def assert_matches_reference(out: Tensor, q: Tensor, k: Tensor, v: Tensor, q_ids: Tensor, kv_ids: Tensor,
                             scale: float | None = None) -> None:
    """Real query rows equal the per-segment reference; padding rows are ignored."""
    assert out.shape == (*q.shape[:3], v.shape[-1]) and out.dtype == q.dtype
    valid = (q_ids >= 0)[:, None, :, None].expand_as(out)
    want = per_segment_reference(q, k, v, q_ids, kv_ids, scale)
    torch.testing.assert_close(out[valid].double(), want[valid], **TOL)


# ---------------------------------------------------------------- every CPU backend


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", EAGER_CPU)
def test_cpu_backends_match_per_segment_reference(backend: str, case: str, scale: float | None) -> None:
    q, k, v, q_ids, kv_ids = packed_inputs(case, seed=EAGER_CPU.index(backend))
    out = varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend=backend, scale=scale)
    assert_matches_reference(out, q, k, v, q_ids, kv_ids, scale)


@pytest.mark.slow
def test_flex_block_mask_matches_per_segment_reference() -> None:
    torch._dynamo.reset()
    q, k, v, q_ids, kv_ids = packed_inputs("self", seed=7)
    with torch.no_grad():
        out = varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend="flex", scale=0.3)
    assert_matches_reference(out, q, k, v, q_ids, kv_ids, 0.3)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_gradients_match_the_per_segment_reference(case: str, backend: str, dtype: torch.dtype) -> None:
    """sdpa's per-segment path keeps one output buffer for backward and calls SDPA's own backward kernels."""
    q, k, v, q_ids, kv_ids = packed_inputs(case, seed=3, dtype=dtype)
    valid = (q_ids >= 0)[:, None, :, None]  # padding rows' outputs are meaningless: no gradient from them
    upstream = torch.randn(q.shape[:-1] + v.shape[-1:], generator=torch.Generator().manual_seed(5), dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = varlen_attention(*leaves, Segments(q_ids, kv_ids), backend=backend, scale=0.4)
    (out * valid * upstream).sum().backward()
    want = [t.clone().requires_grad_() for t in (q, k, v)]
    (per_segment_reference(*want, q_ids, kv_ids, 0.4) * valid * upstream).sum().backward()
    assert_matches_reference(out.detach(), q, k, v, q_ids, kv_ids, 0.4)
    for got, ref in zip(leaves, want, strict=True):
        torch.testing.assert_close(got.grad.double(), ref.grad.double(), **TOL)


# ---------------------------------------------------------------- CUDA kernels' runners, on CPU stand-ins


def _per_sequence(q: Tensor, k: Tensor, v: Tensor, q_lens: list[int], kv_lens: list[int],
                  scale: float | None) -> Tensor:
    """(total, H, D) tokens split into sequences -> each sequence's attention, concatenated."""
    outs = []
    for qs, ks, vs in zip(q.split(q_lens), k.split(kv_lens), v.split(kv_lens), strict=True):
        outs.append(einsum_reference(*(t.transpose(0, 1)[None] for t in (qs, ks, vs)), scale=scale)[0].transpose(0, 1))
    return torch.cat(outs).to(q.dtype)


def _fake_flash_attn() -> SimpleNamespace:
    """flash_attn (FA2) with its signatures, computed by the float64 reference: checks vitkit's layouts."""

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        assert not causal and dropout_p == 0.0
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, S, H, D) -> (B, H, S, D)
        return einsum_reference(q, k, v, scale=softmax_scale).to(q.dtype).transpose(1, 2)

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                               alibi_slopes=None, deterministic=False, return_attn_probs=False, block_table=None):
        assert not causal and dropout_p == 0.0
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32 and q.dim() == k.dim() == 3
        q_lens, kv_lens = cu_seqlens_q.diff().tolist(), cu_seqlens_k.diff().tolist()
        assert (max_seqlen_q, max_seqlen_k) == (max(q_lens), max(kv_lens))
        assert cu_seqlens_q[-1] == q.shape[0] and cu_seqlens_k[-1] == k.shape[0]
        return _per_sequence(q, k, v, q_lens, kv_lens, softmax_scale)

    return SimpleNamespace(flash_attn_func=flash_attn_func, flash_attn_varlen_func=flash_attn_varlen_func)


def _fake_xformers_ops() -> SimpleNamespace:
    """xformers.ops with memory_efficient_attention's (B, M, H, K) layout and BlockDiagonalMask.from_seqlens."""

    @dataclasses.dataclass
    class BlockDiagonalMask:
        q_seqlen: list[int]
        kv_seqlen: list[int]

        @classmethod
        def from_seqlens(cls, q_seqlen, kv_seqlen=None):
            return cls(list(q_seqlen), list(q_seqlen if kv_seqlen is None else kv_seqlen))

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, *, op=None,
                                   output_dtype=None):
        assert p == 0.0
        if isinstance(attn_bias, BlockDiagonalMask):
            assert query.shape[0] == 1, "a BlockDiagonalMask takes the sequences as one batch row"
            return _per_sequence(query[0], key[0], value[0], attn_bias.q_seqlen, attn_bias.kv_seqlen, scale)[None]
        assert attn_bias is None
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (B, M, H, K) -> (B, H, M, K)
        return einsum_reference(q, k, v, scale=scale).to(q.dtype).transpose(1, 2)

    attn_bias = SimpleNamespace(BlockDiagonalMask=BlockDiagonalMask)
    fmha = SimpleNamespace(attn_bias=attn_bias)
    return SimpleNamespace(fmha=fmha, memory_efficient_attention=memory_efficient_attention)


@pytest.fixture
def cuda_kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`flash` and `xformers` entries that run on CPU, backed by stand-ins of their packages."""
    monkeypatch.setattr(flash, "fa2", _fake_flash_attn)
    monkeypatch.setattr(flash, "fa3", lambda: None)
    monkeypatch.setattr(xformers, "ops", _fake_xformers_ops)
    cpu = Capability(devices=("cpu",), masks=frozenset())
    undo = [register_backend(dataclasses.replace(BACKENDS[name], capability=cpu)) for name in ("flash", "xformers")]
    yield
    for step in reversed(undo):
        step()


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_cuda_varlen_runners_match_per_segment_reference(cuda_kernels_on_cpu: None, backend: str, case: str,
                                                         scale: float | None) -> None:
    q, k, v, q_ids, kv_ids = packed_inputs(case, seed=11)
    out = varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend=backend, scale=scale)
    assert_matches_reference(out, q, k, v, q_ids, kv_ids, scale)
    assert (out[(q_ids < 0)[:, None, :, None].expand_as(out)] == 0).all()  # padding rows are zeros, not garbage


@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_cuda_dense_runners_match_reference(cuda_kernels_on_cpu: None, backend: str) -> None:
    q, k, v = qkv(2, 3, 11, 13, 8, seed=12)
    out = scaled_dot_product_attention(q, k, v, backend=backend, scale=0.3)
    torch.testing.assert_close(out.double(), einsum_reference(q, k, v, scale=0.3), **TOL)


# ---------------------------------------------------------------- `auto` for packed attention


def test_auto_orders_keep_their_meaning() -> None:
    assert AUTO_ORDER["cuda"] == ("flash", "sdpa", "xformers", "flex", "math")
    assert AUTO_ORDER["cpu"] == ("sdpa", "flex", "math")
    assert VARLEN_AUTO_ORDER["cuda"] == ("flash", "xformers", "sdpa", "flex", "math")
    assert VARLEN_AUTO_ORDER["cpu"] == ("sdpa", "math")  # flex recompiles per packed shape: never auto on CPU
    assert AUTO_ORDER["*"] == VARLEN_AUTO_ORDER["*"] == ("sdpa", "math")


def test_auto_on_cpu_packs_with_sdpa() -> None:
    q, k, v, q_ids, kv_ids = packed_inputs("self")
    assert choose_varlen(q, k, v) == "sdpa" and choose_varlen(q, k, v, dropout_p=0.1) == "sdpa"
    segments = Segments(q_ids, kv_ids)
    torch.testing.assert_close(varlen_attention(q, k, v, segments), varlen_attention(q, k, v, segments,
                               backend="sdpa"), atol=0, rtol=0)


@pytest.mark.parametrize("installed,dense,packed", [
    ((), "sdpa", "sdpa"),
    (("flash",), "flash", "flash"),
    (("xformers",), "sdpa", "xformers"),  # dense: SDPA's fused kernels first; packed: the varlen kernel first
    (("flash", "xformers"), "flash", "flash"),
])
def test_auto_on_cuda_prefers_varlen_kernels_for_packed(installed: tuple[str, ...], dense: str, packed: str) -> None:
    def missing(req: Request) -> str:
        return "needs its package, which is not installed"

    undo = [register_backend(dataclasses.replace(BACKENDS[name], extra_reason=None if name in installed else missing))
            for name in ("flash", "xformers")]
    try:
        req = Request("cuda", torch.bfloat16, 64, compute_capability=(9, 0))
        assert (choose(req), choose(req, packed=True)) == (dense, packed)
        fp32 = dataclasses.replace(req, dtype=torch.float32)  # flash takes half precision only
        assert choose(fp32, packed=True) == ("xformers" if "xformers" in installed else "sdpa")
    finally:
        for step in reversed(undo):
            step()


# ---------------------------------------------------------------- one error text, one report


def test_dense_and_packed_share_the_error_text() -> None:
    q, k, v, q_ids, kv_ids = packed_inputs("self")
    tail = "it has no attention dropout (inputs: torch.float32 on cpu, head_dim 8); fix: " + BACKENDS["flex"].fix
    with pytest.raises(BackendUnavailableError) as dense:
        scaled_dot_product_attention(q, k, v, backend="flex", dropout_p=0.1)
    with pytest.raises(BackendUnavailableError) as packed:
        varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend="flex", dropout_p=0.1)
    assert str(dense.value) == f"attention backend 'flex' cannot run here: {tail}"
    assert str(packed.value) == f"attention backend 'flex' cannot run packed attention here: {tail}"


@pytest.mark.parametrize("backend,why", [
    ("flash_attention", "'flash' cannot run packed attention here: it needs a cuda device"),
    ("sdpa:flash", "'sdpa:flash' cannot run packed attention here: it has no attention dropout on CPU"),
    ("xformers", "'xformers' cannot run packed attention here: it needs a cuda device"),
])
def test_explicit_packed_backend_raises_instead_of_substituting(backend: str, why: str) -> None:
    q, k, v, q_ids, kv_ids = packed_inputs("cross")
    with pytest.raises(BackendUnavailableError, match=why + ".*fix:"):
        varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend=backend, dropout_p=0.2)


def test_packed_report_says_how_each_backend_packs() -> None:
    rows = {row.name: row for row in backend_report("cpu", torch.float32, 8, packed=True)}
    assert list(rows) == list(BACKENDS) and [name for name, row in rows.items() if row.chosen] == ["sdpa"]
    assert rows["sdpa"].usable and "varlen kernel" in rows["sdpa"].reason  # one SDPA call per segment
    assert rows["math"].usable and "dense block-diagonal mask" in rows["math"].reason  # the reference
    assert rows["flex"].usable and "varlen kernel" in rows["flex"].reason
    assert not rows["flash"].usable and "cuda" in rows["flash"].reason and "fix:" in rows["flash"].reason
    with pytest.raises(ValueError, match="segments"):
        backend_report("cpu", packed=True, mask="bool")


def test_dense_mask_fallback_is_checked_as_a_masked_call() -> None:
    """SDPA's CUDA flash kernel takes no mask: it runs dense attention there, but not packed attention."""
    dense = {row.name: row for row in backend_report("cuda", torch.bfloat16, 64)}
    packed = {row.name: row for row in backend_report("cuda", torch.bfloat16, 64, packed=True)}
    assert dense["sdpa:flash"].usable
    assert not packed["sdpa:flash"].usable and "takes no attention mask on CUDA" in packed["sdpa:flash"].reason


@pytest.mark.parametrize("dropout", [False, True])
def test_packed_report_agrees_with_explicit_calls(dropout: bool) -> None:
    q, k, v, q_ids, kv_ids = packed_inputs("self", seed=5)
    segments = Segments(q_ids, kv_ids)
    for row in backend_report("cpu", torch.float32, 8, dropout=dropout, packed=True):
        if row.name == "flex" and row.usable:
            continue  # compiled: covered by the slow flex test
        kw = {"backend": row.name, "dropout_p": 0.3 if dropout else 0.0}
        if row.usable:
            assert varlen_attention(q, k, v, segments, **kw).shape == q.shape
        else:
            with pytest.raises(BackendUnavailableError):
                varlen_attention(q, k, v, segments, **kw)


def test_bad_packed_inputs_raise() -> None:
    q, k, v, q_ids, kv_ids = packed_inputs("self")
    with pytest.raises(TypeError, match="Segments"):
        varlen_attention(q, k, v, q_ids)
    with pytest.raises(ValueError, match="do not match"):
        varlen_attention(q, k, v, Segments(q_ids[:, :5]))
    with pytest.raises(ValueError, match="share dtype"):
        varlen_attention(q, k.double(), v, Segments(q_ids, kv_ids))
    with pytest.raises(ValueError, match="dropout_p"):
        varlen_attention(q, k, v, Segments(q_ids, kv_ids), dropout_p=1.0)
    with pytest.raises(ValueError, match="unknown attention backend 'fastest'"):
        varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend="fastest")
