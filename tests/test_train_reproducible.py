"""Nothing lost, nothing left to chance: a seeded deterministic run repeats bit for bit, and a run killed with
SIGKILL at a random step, then resumed, ends with the weights of a run never interrupted."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitkit.checkpoints import read_state_dict
from vitkit.train import TrainOptions, train
from vitkit.train.loop import deterministic_algorithms

SRC = str(Path(__file__).resolve().parents[1] / "src")
# 1,437 digits / 256 = 5 steps an epoch; stochastic depth on, so the RNG stream matters.
TINY = dict(batch_size=256, drop_path=0.1, warmup_epochs=1.0)


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: read_state_dict(run / name) for name in ("model.safetensors", "last.safetensors")}


def assert_bit_identical(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys()
        different = [k for k in a[name] if not torch.equal(a[name][k], b[name][k])]
        assert not different, f"{name}: {different}"


class Watch:
    """A reporter that records whether torch ran in deterministic mode during the steps."""

    def __init__(self) -> None:
        self.modes: set[bool] = set()

    def start(self, *args: object) -> None: ...
    def epoch(self, record: dict) -> None: ...
    def close(self) -> None: ...

    def step(self, *args: object) -> None:
        self.modes.add(torch.are_deterministic_algorithms_enabled())


@pytest.mark.slow
def test_deterministic_runs_are_bit_identical(tmp_path: Path) -> None:
    watch = Watch()
    before = torch.are_deterministic_algorithms_enabled()
    for name in ("a", "b"):
        train(TrainOptions(out=str(tmp_path / name), epochs=2, seed=3, deterministic=True, **TINY), reporter=watch)
    assert watch.modes == {True} and torch.are_deterministic_algorithms_enabled() == before  # on for the run only
    assert_bit_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    train(TrainOptions(out=str(tmp_path / "c"), epochs=2, seed=4, deterministic=True, **TINY))
    other = weights(tmp_path / "c")["last.safetensors"]
    assert not all(torch.equal(v, other[k]) for k, v in weights(tmp_path / "a")["last.safetensors"].items())


def test_deterministic_mode_is_restored_after_an_error() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="boom"), deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        raise RuntimeError("boom")
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    options = dict(epochs=3, save_every=2, **TINY)  # 15 steps; checkpoints every 2 and at each epoch end
    train(TrainOptions(out=str(tmp_path / "straight"), **options))

    # The killed run is a real process, on as many threads as this one so that every kernel matches.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(torch.get_num_threads()), "MKL_NUM_THREADS": str(torch.get_num_threads())}
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "vitkit", "train", "--epochs", "3", "--save-every", "2", "--batch-size", "256",
            "--drop-path", "0.1", "--warmup-epochs", "1", "--out", str(run)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (run / "train_state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(random.uniform(0.0, 1.0))  # somewhere after the first checkpoint: mid-step, mid-write, ...
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed
        proc.wait()
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert 0 < state["step"] < 15, state["step"]  # a genuine mid-run checkpoint

    resumed = train(TrainOptions(), resume=run)
    assert not resumed.interrupted and resumed.steps == 15
    assert not list(run.glob(".*.tmp"))  # a write the kill cut short leaves no debris after the resume
    assert_bit_identical(weights(run), weights(tmp_path / "straight"))
