"""The training step on its own, watched at each `optimizer.step`: the gradient it sees is the current step's
(micro-batches accumulate, steps do not), and the lr it runs at is the warm-up + cosine closed form."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vitkit import create_model
from vitkit.train.optim import build_optimizer
from vitkit.train.step import optimizer_step

Batch = tuple[torch.Tensor, torch.Tensor]


def tiny_model() -> nn.Module:
    """The digits ViT cut down to one narrow block, without stochastic depth or dropout (no randomness)."""
    torch.manual_seed(0)
    return create_model("vit_digits", depth=1, embed_dim=16, num_heads=2, drop_path_rate=0.0)


def digit_batches(count: int, size: int = 4) -> list[Batch]:
    """`count` different batches of random 8x8 one-channel images with random labels."""
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 1, 8, 8, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(count)]


def run_steps(model: nn.Module, batches: Iterator[Batch], steps: int, *, grad_accum: int, lr: float = 1e-2,
              total_steps: int = 10, warmup_steps: int = 3, min_lr: float = 1e-4) -> tuple[list[dict], float]:
    """Run `steps` optimizer steps. Returns, for each, what the optimizer saw as it stepped (lr of each group,
    weights, gradients), and the lr the schedule has left for a step after the last."""
    optimizer, schedule, _ = build_optimizer(model, lr, 0.05, total_steps, warmup_steps, min_lr)
    names = {param: name for name, param in model.named_parameters()}
    seen: list[dict] = []

    def record(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        params = [p for group in opt.param_groups for p in group["params"]]
        seen.append({"lr": [group["lr"] for group in opt.param_groups],
                     "weights": {names[p]: p.detach().clone() for p in params},
                     "grads": {names[p]: p.grad.clone() for p in params}})

    optimizer.register_step_pre_hook(record)
    for _ in range(steps):
        optimizer_step(model, batches, optimizer, schedule, torch.amp.GradScaler("cuda", enabled=False),
                       contextlib.nullcontext(), grad_accum=grad_accum, label_smoothing=0.0,
                       device=torch.device("cpu"))
    assert len(seen) == steps  # one optimizer.step per step, however many micro-batches
    [lr_after] = set(schedule.get_last_lr())
    return seen, lr_after


def reference_grads(model: nn.Module, weights: dict[str, torch.Tensor], micro: list[Batch]) -> dict[str, torch.Tensor]:
    """By hand: the gradient of the mean cross-entropy over the batches `micro`, with the model at `weights`."""
    params = {name: weight.clone().requires_grad_() for name, weight in weights.items()}
    loss = sum(F.cross_entropy(functional_call(model, params, (images,)), labels) for images, labels in micro)
    return dict(zip(params, torch.autograd.grad(loss / len(micro), list(params.values())), strict=True))


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_each_step_sees_only_its_own_micro_batches_gradient(grad_accum: int) -> None:
    model = tiny_model()
    batches = digit_batches(3 * grad_accum)
    seen, _ = run_steps(model, iter(batches), 3, grad_accum=grad_accum)
    for step in range(3):
        micro = batches[step * grad_accum : (step + 1) * grad_accum]
        expected = reference_grads(model, seen[step]["weights"], micro)
        for name, grad in seen[step]["grads"].items():
            torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=1e-4,
                                       msg=lambda m, step=step, name=name: f"step {step + 1}, {name}: {m}")


def test_lr_follows_linear_warmup_then_cosine_to_the_floor() -> None:
    peak, floor, total, warmup = 1e-2, 1e-4, 10, 3

    def closed_form(step: int) -> float:  # step counts from 0
        if step < warmup:
            return peak * (step + 1) / warmup
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    seen, lr_after = run_steps(tiny_model(), iter(digit_batches(total)), total, grad_accum=1, lr=peak,
                               total_steps=total, warmup_steps=warmup, min_lr=floor)
    assert all(len(set(record["lr"])) == 1 for record in seen)  # decayed and undecayed groups share one lr
    used = [record["lr"][0] for record in seen]
    assert used == pytest.approx([closed_form(step) for step in range(total)], rel=1e-12)
    assert used[0] == pytest.approx(peak / warmup)  # the first step already moves, at 1/warmup of the peak
    assert used[warmup - 1] == pytest.approx(peak)  # the warm-up's last step runs at the peak,
    assert used[warmup] == pytest.approx(peak)  # and so does the cosine's first
    assert all(a > b for a, b in pairwise([*used[warmup:], lr_after]))  # then it only decays,
    assert lr_after == pytest.approx(floor)  # reaching the floor as the run ends
