"""A new backend is one `Backend(...)` entry plus its kernel: registered, it gets the usability report,
`auto`'s choice, both entry points and the packed path; undone, the table is as it was."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from test_attention import TOL, einsum_reference, qkv
from test_attention_varlen import assert_matches_reference, packed_inputs
from vitkit.attention import (
    AUTO_ORDER,
    BACKEND_NAMES,
    BACKENDS,
    VARLEN_AUTO_ORDER,
    Backend,
    BackendUnavailableError,
    Capability,
    Request,
    Segments,
    backend_report,
    canonical_name,
    choose,
    choose_varlen,
    math,
    register_backend,
    scaled_dot_product_attention,
    use,
    varlen_attention,
)

TOY_FIX = "give the toy float64 inputs on a CPU"


class ToyKernel:
    """The toy backend's kernel file: the math kernel, counting its dense and packed calls."""

    def __init__(self) -> None:
        self.dense_calls = 0
        self.packed_calls = 0

    def run(self, q: Tensor, k: Tensor, v: Tensor, **kw: object) -> Tensor:
        self.dense_calls += 1
        return math.run(q, k, v, **kw)  # type: ignore[arg-type]

    def run_varlen(self, q: Tensor, k: Tensor, v: Tensor, segments: Segments, *, dropout_p: float,
                   scale: float | None, deterministic: bool) -> Tensor:
        """One segment at a time: a varlen path that never builds the dense mask."""
        self.packed_calls += 1
        out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype)
        for b in range(q.shape[0]):
            q_ids, kv_ids = segments.q_ids[b], segments.kv_ids[b]
            for s in q_ids[q_ids >= 0].unique().tolist():
                qi, ki = q_ids == s, kv_ids == s
                out[b, :, qi] = math.run(q[b, None, :, qi], k[b, None, :, ki], v[b, None, :, ki], attn_mask=None,
                                         dropout_p=dropout_p, scale=scale, deterministic=deterministic)[0]
        return out


@pytest.fixture(params=["own_varlen", "dense_mask"])
def toy(request: pytest.FixtureRequest) -> Iterator[ToyKernel]:
    """A backend usable on CPU for float64 only, ranked first there; with its own varlen path or without one."""
    kernel = ToyKernel()
    undo = register_backend(Backend(
        "toy",
        Capability(devices=("cpu",), dtypes=(torch.float64,)),
        kernel.run,
        TOY_FIX,
        "a counting math kernel",
        run_varlen=kernel.run_varlen if request.param == "own_varlen" else None,
        auto_rank={"cpu": -1},
        varlen_rank={"cpu": -1},
    ))
    yield kernel
    undo()


def test_toy_is_in_the_report(toy: ToyKernel) -> None:
    fp64 = {row.name: row for row in backend_report("cpu", torch.float64, 16)}
    assert fp64["toy"].usable and fp64["toy"].chosen and fp64["toy"].reason == "a counting math kernel"
    fp32 = {row.name: row for row in backend_report("cpu", torch.float32, 16)}
    assert not fp32["toy"].usable and fp32["sdpa"].chosen
    assert fp32["toy"].reason == f"takes float64 only, and the inputs are float32; fix: {TOY_FIX}"
    cuda = {row.name: row for row in backend_report("cuda", torch.float64, 16)}
    assert not cuda["toy"].usable and "needs a cpu device" in cuda["toy"].reason
    packed = {row.name: row for row in backend_report("cpu", torch.float64, 16, packed=True)}
    assert packed["toy"].usable and packed["toy"].chosen


def test_auto_picks_toy_for_float64_on_cpu_only(toy: ToyKernel) -> None:
    assert AUTO_ORDER["cpu"][0] == VARLEN_AUTO_ORDER["cpu"][0] == "toy" and "toy" not in AUTO_ORDER["cuda"]
    assert choose(Request("cpu", torch.float64, 16)) == "toy"
    assert choose(Request("cpu", torch.float32, 16)) == "sdpa"
    q, k, v = qkv(2, 3, 11, 13, 16, seed=40, dtype=torch.float64)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), einsum_reference(q, k, v), **TOL)
    assert toy.dense_calls == 1
    scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert toy.dense_calls == 1  # float32: not the toy's


def test_toy_by_name_matches_math(toy: ToyKernel) -> None:
    q, k, v = qkv(3, 2, 7, 5, 40, seed=41, dtype=torch.float64)  # H=2, N=7, M=5, D=40
    out = scaled_dot_product_attention(q, k, v, backend="toy", scale=0.3)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, backend="math", scale=0.3),
                               **TOL)
    assert toy.dense_calls == 1 and canonical_name("toy") == "toy" and "toy" in BACKEND_NAMES


def test_toy_by_name_on_float32_raises_its_reason_and_fix(toy: ToyKernel) -> None:
    q, k, v = qkv(2, 3, 11, 13, 16, seed=42)
    with pytest.raises(BackendUnavailableError, match=r"'toy' cannot run here: it takes float64 only") as err:
        scaled_dot_product_attention(q, k, v, backend="toy")
    assert str(err.value).endswith(f"fix: {TOY_FIX}")
    with pytest.raises(BackendUnavailableError, match=r"'toy' cannot run packed attention here: it takes float64"):
        varlen_attention(q, k, v, Segments(torch.zeros(2, 11, dtype=torch.long), torch.zeros(2, 13, dtype=torch.long)),
                         backend="toy")
    assert toy.dense_calls == toy.packed_calls == 0


@pytest.mark.parametrize("backend", ["auto", "toy"])
@pytest.mark.parametrize("case", ["self", "cross"])
def test_toy_packed_path(toy: ToyKernel, backend: str, case: str) -> None:
    q, k, v, q_ids, kv_ids = packed_inputs(case, seed=43, dtype=torch.float64)
    assert choose_varlen(q, k, v) == "toy" and choose_varlen(q.float(), k.float(), v.float()) == "sdpa"
    out = varlen_attention(q, k, v, Segments(q_ids, kv_ids), backend=backend, scale=0.3)
    assert_matches_reference(out, q, k, v, q_ids, kv_ids, 0.3)
    own = BACKENDS["toy"].run_varlen is not None
    assert (toy.packed_calls, toy.dense_calls) == ((1, 0) if own else (0, 1))  # what the entry declares ran


def test_use_auto_hands_explicit_calls_to_the_toy(toy: ToyKernel) -> None:
    q, k, v = qkv(2, 3, 11, 13, 16, seed=44, dtype=torch.float64)
    with use("auto"):
        scaled_dot_product_attention(q, k, v, backend="math")
    assert toy.dense_calls == 1


def test_registration_is_undone() -> None:
    before = (dict(BACKENDS), dict(AUTO_ORDER), dict(VARLEN_AUTO_ORDER), list(BACKEND_NAMES))
    req = Request("cpu", torch.float64, 16)
    assert choose(req) == "sdpa"  # memoised before the table changes
    undo = register_backend(Backend("toy", Capability(devices=("cpu",)), math.run, "", "", auto_rank={"cpu": -1}))
    assert choose(req) == "toy"  # the memoised choice was dropped
    undo()
    assert (dict(BACKENDS), dict(AUTO_ORDER), dict(VARLEN_AUTO_ORDER), list(BACKEND_NAMES)) == before
    assert all(BACKENDS[name] is entry for name, entry in before[0].items())
    assert choose(req) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend 'toy'"):
        canonical_name("toy")


def test_replacing_an_entry_is_undone_to_the_original() -> None:
    original = BACKENDS["flex"]
    undo = register_backend(dataclasses.replace(original, auto_rank={"cpu": -1}))
    assert BACKENDS["flex"] is not original and AUTO_ORDER["cpu"][0] == "flex" and list(BACKENDS)[4] == "flex"
    undo()
    assert BACKENDS["flex"] is original and AUTO_ORDER["cpu"] == ("sdpa", "flex", "math")


@pytest.mark.parametrize("name", ["auto", "flash_attention", "scaled_dot_product"])
def test_names_taken_by_auto_and_aliases_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="names something else"):
        register_backend(dataclasses.replace(BACKENDS["math"], name=name))
    assert name not in BACKENDS
