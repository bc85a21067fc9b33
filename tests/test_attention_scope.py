"""`vitkit.attention.use(backend, deterministic=...)`: a scoped override of the backend (and flag) that every
`scaled_dot_product_attention` and `varlen_attention` call in the scope runs, whatever its caller passed."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from test_attention import TOL, einsum_reference, qkv
from vitkit.attention import (
    BACKENDS,
    BackendUnavailableError,
    Segments,
    register_backend,
    scaled_dot_product_attention,
    use,
    varlen_attention,
)

Q, K, V = qkv(2, 3, 11, 13, 16, seed=50)  # H=3, N=11, M=13, D=16
SEGMENTS = Segments(torch.tensor([[0] * 6 + [1] * 5] * 2), torch.tensor([[0] * 4 + [1] * 9] * 2))


@pytest.fixture
def ran() -> Iterator[list[tuple[str, bool]]]:
    """(backend, deterministic) of every run of math, sdpa and sdpa:math, dense or packed, in order."""
    calls: list[tuple[str, bool]] = []
    undo = []
    for name in ("math", "sdpa", "sdpa:math"):
        entry = BACKENDS[name]

        def spy(q: Tensor, k: Tensor, v: Tensor, *, _entry=entry, **kw) -> Tensor:
            calls.append((_entry.name, kw["deterministic"]))
            return _entry.run(q, k, v, **kw)

        def spy_varlen(q: Tensor, k: Tensor, v: Tensor, segments: Segments, *, _entry=entry, **kw) -> Tensor:
            calls.append((_entry.name, kw["deterministic"]))
            return _entry.run_varlen(q, k, v, segments, **kw)

        varlen = {"run_varlen": spy_varlen} if entry.run_varlen is not None else {}
        undo.append(register_backend(dataclasses.replace(entry, run=spy, **varlen)))
    yield calls
    for step in reversed(undo):
        step()


def attend(backend: str = "sdpa", deterministic: bool = False) -> Tensor:
    return scaled_dot_product_attention(Q, K, V, backend=backend, deterministic=deterministic)


def attend_packed(backend: str = "sdpa") -> Tensor:
    return varlen_attention(Q, K, V, SEGMENTS, backend=backend)


def test_scope_overrides_both_entry_points(ran: list) -> None:
    with use("math"):
        dense, packed = attend(), attend_packed()
    attend()
    assert ran == [("math", False), ("math", False), ("sdpa", False)]
    torch.testing.assert_close(dense.double(), einsum_reference(Q, K, V), **TOL)
    torch.testing.assert_close(packed, varlen_attention(Q, K, V, SEGMENTS, backend="math"), atol=0, rtol=0)


def test_innermost_scope_wins_and_leaving_restores(ran: list) -> None:
    with use("math"):
        with use("sdpa:math"):
            attend()
            attend_packed()
        attend()
    attend()
    assert [name for name, _ in ran] == ["sdpa:math", "sdpa:math", "math", "sdpa"]


def test_scope_is_restored_after_an_exception(ran: list) -> None:
    with pytest.raises(RuntimeError, match="inside"), use("math"):
        attend()
        raise RuntimeError("inside")
    attend()
    assert [name for name, _ in ran] == ["math", "sdpa"]


@pytest.mark.parametrize("name,exc,match", [
    ("fastest", ValueError, "unknown attention backend 'fastest'; choose one of: auto, math"),
    (None, TypeError, "backend must be a string"),
])
def test_bad_name_fails_on_entry(name: object, exc: type[Exception], match: str) -> None:
    entered = False
    with pytest.raises(exc, match=match), use(name):  # type: ignore[arg-type]
        entered = True
    assert not entered


def test_aliases_name_the_same_backend(ran: list) -> None:
    with use("scaled_dot_product"):
        attend()
    assert ran == [("math", False)]


@pytest.mark.parametrize("scoped,caller,runs", [
    (True, False, True),
    (False, True, False),
    (None, True, True),  # None: the caller's flag stands
    (None, False, False),
])
def test_deterministic_override(ran: list, scoped: bool | None, caller: bool, runs: bool) -> None:
    with use("sdpa", deterministic=scoped):
        attend("math", deterministic=caller)
        varlen_attention(Q, K, V, SEGMENTS, backend="math", deterministic=caller)
    assert ran == [("sdpa", runs), ("sdpa", runs)]


def test_use_auto_lets_auto_choose_for_every_call(ran: list) -> None:
    q = Q.clone().requires_grad_()  # flex has no CPU backward: named, it would raise
    with use("math"), use("auto"):
        scaled_dot_product_attention(q, K, V, backend="flex")
        varlen_attention(q, K, V, SEGMENTS, backend="flex")
    assert [name for name, _ in ran] == ["sdpa", "sdpa"]


def test_a_scoped_backend_that_cannot_run_still_raises(ran: list) -> None:
    with use("flash"):
        with pytest.raises(BackendUnavailableError, match=r"'flash' cannot run here: it needs a cuda device.*fix:"):
            attend("math")
        with pytest.raises(BackendUnavailableError, match=r"'flash' cannot run packed attention here"):
            attend_packed("math")
        with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
            attend("nope")  # the caller's own name is still checked
    assert ran == []


def test_scope_belongs_to_its_thread(ran: list) -> None:
    entered, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        with use("math"):
            entered.set()
            done.wait(timeout=60)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert entered.wait(timeout=60)
        attend()  # while the other thread is inside its scope
    finally:
        done.set()
        thread.join()
    assert ran == [("sdpa", False)]


def test_compiled_code_follows_the_scope() -> None:
    """Dynamo guards on the scope: entering one recompiles instead of reusing the graph, with no graph break."""
    torch._dynamo.reset()
    graphs: list[set[str]] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[Tensor]):
        graphs.append({getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function"})
        return gm.forward

    fn = torch.compile(lambda q, k, v: scaled_dot_product_attention(q, k, v, backend="sdpa"), backend=record,
                       fullgraph=True)
    plain = fn(Q, K, V)
    with use("math"):
        scoped = fn(Q, K, V)
    fn(Q, K, V)
    assert len(graphs) == 2  # the third call reuses the first graph
    assert "scaled_dot_product_attention" in graphs[0] and "scaled_dot_product_attention" not in graphs[1]
    for out in (plain, scoped):
        torch.testing.assert_close(out.double(), einsum_reference(Q, K, V), **TOL)
