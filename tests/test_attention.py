"""Behaviour of vitkit.attention: every backend against references, `auto`, the report, and its errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitkit.attention import (
    ALIASES,
    BACKENDS,
    BackendUnavailableError,
    Request,
    attention_weights,
    backend_report,
    canonical_name,
    choose,
    dispatch,
    register_backend,
)
from vitkit.attention import scaled_dot_product_attention as attend

Tensor = torch.Tensor
EAGER_CPU = ("math", "sdpa", "sdpa:flash", "sdpa:math")  # usable on CPU, with a CPU backward
CUDA_ONLY = ("flash", "xformers", "sdpa:efficient", "sdpa:cudnn")
# (B, H, N, M, D): all five sizes distinct within a set, so any swapped axis changes a shape or a value.
SHAPES = [(2, 3, 11, 13, 16), (3, 2, 7, 5, 40)]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def qkv(b: int, h: int, n: int, m: int, d: int, *, dv: int | None = None, seed: int = 0,
        dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = ((b, h, n, d), (b, h, m, d), (b, h, m, dv or d))
    return tuple(torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes)  # type: ignore[return-value]


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def bool_mask(shape: tuple[int, ...], seed: int = 1) -> Tensor:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.4
    mask[..., 0] = True  # every query keeps a key: fully masked rows are tested on their own
    return mask


def make_mask(kind: str, b: int, h: int, n: int, m: int) -> Tensor | None:
    """None, a bool mask of the named broadcast shape, or an additive float bias."""
    if kind == "none":
        return None
    if kind.startswith("bool"):
        return bool_mask({"bool_B1NM": (b, 1, n, m), "bool_NM": (n, m), "bool_1H1M": (1, h, 1, m)}[kind])
    bias = 2.0 * torch.randn(b, 1, n, m, generator=torch.Generator().manual_seed(2))
    return bias.masked_fill(~bool_mask((b, 1, 1, m), seed=3), float("-inf"))  # padding keys at -inf


MASK_KINDS = ("none", "bool_B1NM", "bool_NM", "bool_1H1M", "additive")


def einsum_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                     scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) v in float64, written independently of vitkit."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask.double()
    return torch.einsum("bhnm,bhme->bhne", scores.softmax(-1), v)


def grads(backend: str, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
          learn_bias: bool = True, **kw: object) -> list[Tensor]:
    """Gradients of a fixed random projection of the output wrt q, k, v (and a float mask: a learnable bias)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if learn_bias and attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.detach().clone().requires_grad_()
        leaves.append(attn_mask)
    out = attend(*leaves[:3], backend=backend, attn_mask=attn_mask, **kw)  # type: ignore[arg-type]
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out * cotangent).sum().backward()
    return [t.grad for t in leaves]  # type: ignore[misc]


def report(*args: object, **kw: object) -> dict[str, dispatch.BackendStatus]:
    return {row.name: row for row in backend_report(*args, **kw)}  # type: ignore[arg-type]


# ---------------------------------------------------------------- numerics of the CPU backends


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", EAGER_CPU)
def test_forward_matches_math_and_einsum(backend: str, shape: tuple[int, ...], mask_kind: str,
                                         scale: float | None) -> None:
    b, h, n, m, d = shape
    q, k, v = qkv(*shape, seed=10 * EAGER_CPU.index(backend) + MASK_KINDS.index(mask_kind))
    mask = make_mask(mask_kind, b, h, n, m)
    out = attend(q, k, v, backend=backend, attn_mask=mask, scale=scale)
    assert out.shape == (b, h, n, d) and out.dtype == torch.float32
    torch.testing.assert_close(out, attend(q, k, v, backend="math", attn_mask=mask, scale=scale), **TOL)
    torch.testing.assert_close(out.double(), einsum_reference(q, k, v, mask, scale), **TOL)


@pytest.mark.parametrize("mask_kind", ["none", "bool_B1NM", "additive"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("backend", ["sdpa", "sdpa:flash", "sdpa:math"])
def test_gradients_match_math(backend: str, shape: tuple[int, ...], mask_kind: str) -> None:
    q, k, v = qkv(*shape, seed=11)
    # SDPA's CPU flash kernel has no gradient for the mask itself (it raises BackendUnavailableError)
    kw = {"attn_mask": make_mask(mask_kind, *shape[:4]), "scale": 0.2, "learn_bias": backend != "sdpa:flash"}
    for got, want in zip(grads(backend, q, k, v, **kw), grads("math", q, k, v, **kw), strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", EAGER_CPU)
def test_noncontiguous_qkv_from_fused_projection(backend: str) -> None:
    b, h, n, d = 2, 3, 11, 16
    fused = torch.randn(b, n, 3, h, d, generator=torch.Generator().manual_seed(5))
    q, k, v = fused.permute(2, 0, 3, 1, 4).unbind(0)  # the layout a ViT block hands over
    assert not q.is_contiguous()
    want = einsum_reference(q, k, v)
    torch.testing.assert_close(attend(q, k, v, backend=backend).double(), want, **TOL)


@pytest.mark.parametrize("backend", EAGER_CPU)
def test_mask_true_means_attend(backend: str) -> None:
    """With one allowed key per query, each output row is exactly that key's value."""
    n, m = SHAPES[0][2:4]
    q, k, v = qkv(*SHAPES[0], seed=3)
    target = torch.arange(n) * 5 % m  # query i may only see key target[i]
    mask = torch.zeros(n, m, dtype=torch.bool)
    mask[torch.arange(n), target] = True
    torch.testing.assert_close(attend(q, k, v, backend=backend, attn_mask=mask), v[:, :, target], **TOL)


@pytest.mark.parametrize("backend", EAGER_CPU)
def test_scale_zero_averages_values(backend: str) -> None:
    q, k, v = qkv(*SHAPES[0], seed=4)
    out = attend(q, k, v, backend=backend, scale=0.0)
    torch.testing.assert_close(out, v.mean(dim=2, keepdim=True).expand_as(out), **TOL)


@settings(max_examples=30, deadline=None, database=None)
@given(dims=st.tuples(*[st.integers(1, 9)] * 4), d=st.sampled_from([1, 8, 24]), seed=st.integers(0, 99),
       backend=st.sampled_from(EAGER_CPU))
def test_any_shape_matches_einsum(dims: tuple[int, int, int, int], d: int, seed: int, backend: str) -> None:
    q, k, v = qkv(*dims, d, seed=seed)
    torch.testing.assert_close(attend(q, k, v, backend=backend).double(), einsum_reference(q, k, v), **TOL)


@pytest.mark.parametrize("backend", [
    "math", "sdpa", "sdpa:math", "sdpa:flash",
])
def test_fully_masked_rows_are_zero_like_torch_sdpa(backend: str) -> None:
    q, k, v = qkv(*SHAPES[0], seed=8)
    mask = bool_mask((SHAPES[0][2], SHAPES[0][3]))
    mask[2] = False  # query 2 sees no key
    out = attend(q, k, v, backend=backend, attn_mask=mask)
    assert torch.isfinite(out).all()
    assert (out[:, :, 2] == 0).all()


# ---------------------------------------------------------------- half precision, dropout, determinism


@pytest.mark.parametrize("backend", EAGER_CPU)
def test_bf16_matches_fp32_reference(backend: str) -> None:
    q, k, v = qkv(*SHAPES[0], seed=9, dtype=torch.bfloat16)
    mask = make_mask("bool_B1NM", *SHAPES[0][:4])
    out = attend(q, k, v, backend=backend, attn_mask=mask)
    assert out.dtype == torch.bfloat16
    want = attend(q.float(), k.float(), v.float(), backend="math", attn_mask=mask)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)


def test_math_softmax_runs_in_fp32_for_half_inputs() -> None:
    q, k, _ = qkv(*SHAPES[0], seed=10, dtype=torch.bfloat16)
    weights = attention_weights(q * 8, k)  # sharp logits: a bf16 softmax would be visibly off
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.double(), einsum_reference(q * 8, k, torch.eye(13).expand(2, 3, 13, 13)),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa", "sdpa:math", "auto"])
def test_dropout_is_random_seeded_and_unbiased(backend: str) -> None:
    q, k, v = qkv(*SHAPES[0], seed=12)
    plain = attend(q, k, v, backend=backend)

    def dropped(seed: int) -> Tensor:
        torch.manual_seed(seed)
        return attend(q, k, v, backend=backend, dropout_p=0.4)

    assert not torch.allclose(dropped(0), plain, atol=1e-3)
    assert torch.equal(dropped(0), dropped(0))
    assert not torch.equal(dropped(0), dropped(1))
    many = [t.expand(512, *t.shape[1:]).contiguous() for t in (q[:1], k[:1], v[:1])]
    torch.manual_seed(0)
    mean = attend(*many, backend=backend, dropout_p=0.4).mean(0)
    torch.testing.assert_close(mean, plain[0], atol=0.15, rtol=0)  # inverted dropout keeps the mean


@pytest.mark.parametrize("backend", EAGER_CPU)
def test_no_dropout_is_deterministic(backend: str) -> None:
    q, k, v = qkv(*SHAPES[1], seed=13)
    torch.manual_seed(0)
    first = attend(q, k, v, backend=backend, deterministic=True)
    torch.manual_seed(1)
    assert torch.equal(first, attend(q, k, v, backend=backend, deterministic=True))


# ---------------------------------------------------------------- auto, explicit backends, the report


def test_auto_on_cpu_chooses_sdpa() -> None:
    assert choose(Request("cpu", torch.float32, 64)) == "sdpa"
    chosen = [row.name for row in backend_report("cpu", torch.float32, 64) if row.chosen]
    assert chosen == ["sdpa"]
    q, k, v = qkv(*SHAPES[0])
    torch.testing.assert_close(attend(q, k, v), attend(q, k, v, backend="sdpa"), atol=0, rtol=0)


@pytest.fixture
def flex_first() -> Iterator[None]:
    """`auto` on CPU tries flex first, so only flex's own limits keep it out."""
    flex = BACKENDS["flex"]
    undo = register_backend(dataclasses.replace(flex, auto_rank={**flex.auto_rank, "cpu": -1}))
    yield
    undo()


@pytest.mark.parametrize("dropout,needs_grad", [(True, False), (False, True), (True, True)])
def test_auto_never_picks_flex_for_dropout_or_cpu_grads(flex_first: None, dropout: bool, needs_grad: bool) -> None:
    assert choose(Request("cpu", torch.float32, 64)) == "flex"  # the reordering took effect
    assert choose(Request("cpu", torch.float32, 64, dropout=dropout, needs_grad=needs_grad)) == "sdpa"


AUTO_CASES = {
    "float64": {"dtype": torch.float64},
    "float16": {"dtype": torch.float16},
    "head_dim_300": {"d": 300},
    "value_dim_differs": {"dv": 24},
    "bf16_with_fp32_bias": {"dtype": torch.bfloat16, "mask": "additive"},
    "grad_deterministic_mask": {"grad": True, "mask": "bool_1H1M"},
}


@pytest.mark.parametrize("case", AUTO_CASES.values(), ids=AUTO_CASES.keys())
def test_auto_runs_wherever_math_runs(case: dict) -> None:
    b, h, n, m, d = SHAPES[0]
    q, k, v = qkv(b, h, n, m, case.get("d", d), dv=case.get("dv"), seed=14, dtype=case.get("dtype", torch.float32))
    kw = {"attn_mask": make_mask(case.get("mask", "none"), b, h, n, m), "deterministic": True}
    if case.get("grad"):
        for got, want in zip(grads("auto", q, k, v, **kw), grads("math", q, k, v, **kw), strict=True):
            torch.testing.assert_close(got, want, **TOL)
        return
    out, want = attend(q, k, v, **kw), attend(q, k, v, backend="math", **kw)
    assert out.dtype == q.dtype
    half = q.dtype in (torch.float16, torch.bfloat16)
    torch.testing.assert_close(out, want, **({"atol": 2e-2, "rtol": 2e-2} if half else TOL))


def test_auto_on_a_device_without_fused_kernels_falls_back_to_math() -> None:
    q, k, v = (t.to("meta") for t in qkv(*SHAPES[0]))
    assert choose(Request.of(q, k, v)) == "math"
    assert attend(q, k, v).shape == q.shape


@pytest.mark.parametrize("backend,kw,why", [
    *[(name, {}, "needs a cuda device, and the inputs are on cpu") for name in (*CUDA_ONLY, "flash_attention")],
    ("flex", {"dropout_p": 0.1}, "has no attention dropout"),
    ("sdpa:flash", {"dropout_p": 0.1}, "has no attention dropout on CPU"),
    ("flex", {"dtype": torch.float64}, "the inputs are float64"),
    ("sdpa:flash", {"d": 300}, "head_dim <= 256"),
    ("sdpa:flash", {"dv": 24}, "no usable kernel"),  # only PyTorch knows: caught at run time, still no substitution
])
@pytest.mark.filterwarnings("ignore:.*[Ff]lash attention:UserWarning")  # PyTorch explains its refusal
def test_explicit_backend_raises_instead_of_substituting(backend: str, kw: dict, why: str) -> None:
    b, h, n, m, d = SHAPES[0]
    q, k, v = qkv(b, h, n, m, kw.get("d", d), dv=kw.get("dv"), dtype=kw.get("dtype", torch.float32))
    with pytest.raises(BackendUnavailableError, match=why) as err:
        attend(q, k, v, backend=backend, dropout_p=kw.get("dropout_p", 0.0))
    assert f"'{canonical_name(backend)}'" in str(err.value) and "fix:" in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backend_report_on_cpu(dtype: torch.dtype) -> None:
    rows = report("cpu", dtype, 64)
    assert set(rows) == set(BACKENDS)
    assert {name for name, row in rows.items() if row.usable} == {"math", "sdpa", "flex", "sdpa:flash", "sdpa:math"}
    for name in CUDA_ONLY:
        assert "cuda" in rows[name].reason and "fix:" in rows[name].reason
    assert [name for name, row in rows.items() if row.chosen] == ["sdpa"]


@pytest.mark.parametrize("kw,unusable", [
    ({"dropout": True}, {"flex": "dropout", "sdpa:flash": "dropout"}),
    ({"needs_grad": True}, {"flex": "backward"}),
    ({"dtype": torch.float64}, {"flex": "float64"}),
    ({"head_dim": 300}, {"sdpa:flash": "256"}),
])
def test_backend_report_reasons(kw: dict, unusable: dict[str, str]) -> None:
    rows = report("cpu", **{"dtype": torch.float32, "head_dim": 64, **kw})
    for name, word in unusable.items():
        assert not rows[name].usable and word in rows[name].reason
    assert rows["math"].usable and rows["sdpa"].chosen


@pytest.mark.parametrize("mask", [None, "bool", "additive"])
@pytest.mark.parametrize("dropout", [False, True])
def test_report_agrees_with_explicit_calls(mask: str | None, dropout: bool) -> None:
    rows = report("cpu", torch.float32, 16, mask=mask, dropout=dropout)
    q, k, v = qkv(*SHAPES[0])
    attn_mask = {None: None, "bool": make_mask("bool_NM", *SHAPES[0][:4]),
                 "additive": make_mask("additive", *SHAPES[0][:4])}[mask]
    for name, row in rows.items():
        if name == "flex" and row.usable:
            continue  # compiled: covered by the slow flex tests
        kw = {"backend": name, "attn_mask": attn_mask, "dropout_p": 0.3 if dropout else 0.0}
        if row.usable:
            assert attend(q, k, v, **kw).shape == q.shape
        else:
            with pytest.raises(BackendUnavailableError):
                attend(q, k, v, **kw)


# ---------------------------------------------------------------- validation and names


def _bad(q: tuple = (2, 3, 11, 16), k: tuple = (2, 3, 13, 16), v: tuple = (2, 3, 13, 16),
         dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    return torch.zeros(q, dtype=dtype), torch.zeros(k), torch.zeros(v)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: (_bad(q=(3, 11, 16)), {}), ValueError, "q must be 4-D"),
    (lambda: (_bad(v=(2, 3, 13)), {}), ValueError, "v must be 4-D"),
    (lambda: (_bad(k=(2, 4, 13, 16)), {}), ValueError, "disagree"),
    (lambda: (_bad(v=(2, 3, 12, 16)), {}), ValueError, "disagree"),
    (lambda: (_bad(k=(2, 3, 13, 8)), {}), ValueError, "disagree"),
    (lambda: (_bad(dtype=torch.float64), {}), ValueError, "share dtype"),
    (lambda: ((torch.zeros(2, 3, 11, 16, dtype=torch.int64),) * 3, {}), TypeError, "floating-point"),
    (lambda: (([[1.0]], *_bad()[1:]), {}), TypeError, "q must be a torch.Tensor"),
    (lambda: (_bad(), {"attn_mask": torch.ones(12, 13, dtype=torch.bool)}), ValueError, "attn_mask"),
    (lambda: (_bad(), {"attn_mask": torch.ones(1, 1, 1, 11, 13)}), ValueError, "attn_mask"),
    (lambda: (_bad(), {"attn_mask": torch.ones(11, 13, dtype=torch.int64)}), TypeError, "attn_mask"),
    (lambda: (_bad(), {"dropout_p": 1.5}), ValueError, "dropout_p"),
    (lambda: (_bad(), {"dropout_p": -0.1}), ValueError, "dropout_p"),
    (lambda: (_bad(), {"backend": "fastest"}), ValueError, "unknown attention backend 'fastest'.*math.*flex"),
    (lambda: (_bad(), {"backend": None}), TypeError, "backend must be a string"),
])
def test_invalid_inputs_raise(make: Callable[[], tuple[tuple, dict]], exc: type[Exception], match: str) -> None:
    args, kw = make()
    with pytest.raises(exc, match=match):
        attend(*args, **kw)


def test_aliases_resolve_and_run() -> None:
    assert canonical_name("scaled_dot_product") == "math" and canonical_name("flash_attention") == "flash"
    assert canonical_name("auto") == "auto" and all(canonical_name(a) in BACKENDS for a in ALIASES)
    q, k, v = qkv(*SHAPES[0])
    assert torch.equal(attend(q, k, v, backend="scaled_dot_product"), attend(q, k, v, backend="math"))


# ---------------------------------------------------------------- optional packages stay optional

_LAZY = """
import importlib.abc, json, sys
import torch
OPTIONAL, tried, block = ("flash_attn", "flash_attn_interface", "xformers"), [], [False]
class Watch(importlib.abc.MetaPathFinder):  # records imports of the optional kernels; once blocking, hides them
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            tried.append(name)
            if block[0]:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Watch())
import vitkit.attention as A
at_import, loaded = list(tried), sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)
block[0] = True
cuda = {r.name: r.reason for r in A.backend_report("cuda", torch.bfloat16, 64) if not r.usable}
cpu = {r.name: r.reason for r in A.backend_report("cpu", torch.float32, 64) if not r.usable}
q = torch.randn(1, 2, 5, 8)
auto, ref = A.scaled_dot_product_attention(q, q, q), A.scaled_dot_product_attention(q, q, q, backend="math")
ok = torch.allclose(auto, ref, atol=1e-5)
print(json.dumps({"at_import": at_import, "loaded": loaded, "tried": tried, "cuda": cuda, "cpu": cpu, "ok": ok}))
"""


def test_optional_kernels_are_imported_lazily_and_may_be_absent() -> None:
    src = str(Path(dispatch.__file__).resolve().parents[2])  # wherever this process found vitkit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_LAZY)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["at_import"] == [] and got["loaded"] == []
    assert "flash_attn" in got["tried"] and "xformers" in got["tried"]  # the report did look, lazily
    assert "not installed" in got["cuda"]["flash"] or "compute capability" in got["cuda"]["flash"]
    assert "xformers package, which is not installed" in got["cuda"]["xformers"]
    assert "needs a cuda device" in got["cpu"]["flash"] and "needs a cuda device" in got["cpu"]["xformers"]
    assert got["ok"]


# ---------------------------------------------------------------- flex (compiled; one shape set)

FLEX_CASES = [("none", None), ("bool_B1NM", None), ("bool_NM", None), ("bool_1H1M", None), ("additive", None),
              ("none", 0.3)]


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Each flex test compiles from scratch, so its result does not depend on which ran before."""
    torch._dynamo.reset()
    yield


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind,scale", FLEX_CASES)
def test_flex_matches_math(fresh_dynamo: None, mask_kind: str, scale: float | None) -> None:
    q, k, v = qkv(*SHAPES[0], seed=20)
    mask = make_mask(mask_kind, *SHAPES[0][:4])
    out = attend(q, k, v, backend="flex", attn_mask=mask, scale=scale)
    torch.testing.assert_close(out, attend(q, k, v, backend="math", attn_mask=mask, scale=scale), **TOL)


def test_learnable_bias_counts_as_needing_grad() -> None:
    q, k, v = qkv(*SHAPES[0])
    bias = torch.zeros(1, 3, 11, 13, requires_grad=True)
    assert Request.of(q, k, v, attn_mask=bias).needs_grad
    with pytest.raises(BackendUnavailableError, match="backward"):
        attend(q, k, v, backend="flex", attn_mask=bias)


def test_flex_refuses_cpu_grads_and_dropout() -> None:
    q, k, v = qkv(*SHAPES[0], seed=21)
    with pytest.raises(BackendUnavailableError, match=r"no backward pass on cpu.*fix:"):
        attend(q.requires_grad_(), k, v, backend="flex")
    with pytest.raises(BackendUnavailableError, match="dropout"):
        attend(q.detach(), k, v, backend="flex", dropout_p=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("requires_grad", [False, True])
def test_flex_runs_under_no_grad(fresh_dynamo: None, requires_grad: bool) -> None:
    q, k, v = (t.requires_grad_(requires_grad) for t in qkv(*SHAPES[0], seed=22))
    with torch.no_grad():
        out = attend(q, k, v, backend="flex")
    torch.testing.assert_close(out, attend(q, k, v, backend="math").detach(), **TOL)


@pytest.mark.slow
def test_flex_second_broadcast_mask_in_one_process(fresh_dynamo: None) -> None:
    q, k, v = qkv(*SHAPES[0], seed=23)
    for kind in ("bool_NM", "bool_1H1M"):
        mask = make_mask(kind, *SHAPES[0][:4])
        want = attend(q, k, v, backend="math", attn_mask=mask)
        torch.testing.assert_close(attend(q, k, v, backend="flex", attn_mask=mask), want, **TOL)


# ---------------------------------------------------------------- CUDA kernels (skipped without a GPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["flash", "xformers", "sdpa:flash", "sdpa:efficient", "flex"])
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_kernels_match_math_in_bf16(backend: str, masked: bool) -> None:
    b, h, n, m, d = 2, 3, 37, 45, 64
    row = report("cuda", torch.bfloat16, d, mask="bool" if masked else None)[backend]
    if not row.usable:
        pytest.skip(f"{backend}: {row.reason}")
    q, k, v = (t.cuda() for t in qkv(b, h, n, m, d, seed=30, dtype=torch.bfloat16))
    mask = bool_mask((b, 1, n, m)).cuda() if masked else None
    out = attend(q, k, v, backend=backend, attn_mask=mask)
    assert out.shape == (b, h, n, d) and out.dtype == torch.bfloat16
    want = attend(q.float(), k.float(), v.float(), backend="math", attn_mask=mask)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)
