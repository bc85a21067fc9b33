"""The training loop: sharded global batches, accumulation, mixed precision, evaluation, checkpoints, resume.

A run stopped by SIGINT/SIGTERM saves its exact position (epoch, step, optimizer, schedule, RNG) and
a resumed run continues the same loss curve step for step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from ..data import BatchMix, DataConfig, ShardedBatchSampler, load_splits
from ..data.packed import PackCollate
from ..runtime import DistEnv, all_sum, autocast, setup, teardown
from .distributed import full_state, load_full_state, wrap
from .ema import ModelEma
from .evaluate import EvalResult, evaluate
from .model_setup import build_for_run, run_config
from .optim import GroupSummary, build_optimizer
from .options import TrainOptions
from .plots import plot_curves
from .run_dir import RunDir
from .step import optimizer_step


class Reporter(Protocol):
    """Where a run reports progress (the CLI draws it with rich; tests may record it)."""

    def start(self, total_steps: int, done_steps: int, epochs: int, steps_per_epoch: int,
              groups: list[GroupSummary]) -> None: ...
    def step(self, epoch: int, step: int, loss: float, images_per_second: float, data_share: float) -> None: ...
    def epoch(self, record: dict) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunSummary:
    """What a finished (or interrupted) run achieved."""

    run_dir: Path
    epochs: int
    steps: int
    best_top1: float
    last: EvalResult | None
    seconds: float
    images_per_second: float
    interrupted: bool
    skipped: list[Path]  # unreadable files left out (--skip-unreadable)
    best_weights: str  # 'live' or 'ema': which weights model.safetensors holds
    finished_before: bool = False  # a resumed run that had already trained all its epochs: nothing ran


class _StopFlag:
    """Set by SIGINT/SIGTERM while a run is active; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # signals can only be caught in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def default_run_dir(options: TrainOptions) -> Path:
    return Path("runs") / f"{Path(options.pretrained).name if options.pretrained else options.model}-" \
                          f"{time.strftime('%Y%m%d-%H%M%S')}"


def train(options: TrainOptions, *, resume: str | Path | None = None, epochs: int | None = None,
          reporter: Reporter | None = None) -> RunSummary:
    """Train as `options` say, or continue the run in `resume` with its own options (`epochs`: its new total, so a
    finished run trains on, its schedule now an `epochs`-long one). Resuming a run that has trained all its epochs
    runs nothing: the summary says `finished_before`."""
    state = None
    if resume is not None:
        run = RunDir(resume)
        run.check_resumable()
        options = run.options()
        state = run.load_state()
        if epochs is not None:
            if epochs < state["epoch"]:
                raise ValueError(f"--epochs {epochs} is fewer than the {state['epoch']} epochs {run.path} has "
                                 "already trained")
            options = options.replace(epochs=epochs)
        if state["epoch"] >= options.epochs:
            return _finished(run, state)
    elif epochs is not None:
        raise ValueError("epochs= is for a resumed run; a new run takes TrainOptions(epochs=...)")
    else:
        run = RunDir(options.out or default_run_dir(options))
        run.check_new()
    with deterministic_algorithms(options.deterministic):
        env = setup(options.device)
        if resume is not None and env.is_main:
            run.remove_partial_writes()
        try:
            return _Trainer(options, run, env, reporter, state).fit()
        finally:
            teardown()


def _finished(run: RunDir, state: dict) -> RunSummary:
    """The summary of a resumed run with no epoch left to train, from its saved state."""
    return RunSummary(run.path, state["epoch"], state["step"], state["best_top1"], None, 0.0, 0.0, False, [],
                      state.get("best_weights", "live"), finished_before=True)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With `enabled`, torch runs only deterministic kernels (raising for an op that has none) while the
    block runs; the previous setting comes back after it. On CUDA cuBLAS needs a fixed workspace for
    that, so CUBLAS_WORKSPACE_CONFIG is set unless the caller already chose one."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


class _Trainer:
    def __init__(self, options: TrainOptions, run: RunDir, env: DistEnv, reporter: Reporter | None,
                 state: dict | None) -> None:
        """`state`: the saved state of a run being resumed (None for a new run)."""
        self.options, self.run, self.env, self.reporter = options, run, env, reporter
        config = run_config(options)
        self.splits = load_splits(options.data, DataConfig.of(config), val_split=options.val_split, seed=options.seed,
                                  keep_aspect=options.packing, augment=options.augment,
                                  skip_unreadable=options.skip_unreadable)
        torch.manual_seed(options.seed)
        self.model = build_for_run(options, config, len(self.splits.classes)).to(env.device)
        self.ema = ModelEma(self.model, options.model_ema_decay) if options.model_ema else None
        self.mixer = BatchMix(len(self.splits.classes), mixup=options.mixup, cutmix=options.cutmix,
                              prob=options.mixup_prob, switch_prob=options.mixup_switch_prob)
        self.net = wrap(self.model, env, options.fsdp)
        if options.compile:
            self.net = torch.compile(self.net)
        micro = options.batch_size // options.grad_accum  # global samples per forward
        if micro % env.world:
            raise ValueError(f"--batch-size {options.batch_size} / --grad-accum {options.grad_accum} = {micro} "
                             f"must be divisible by the {env.world} processes")
        if len(self.splits.train) < options.batch_size:
            raise ValueError(f"--batch-size {options.batch_size} is larger than the {len(self.splits.train)} "
                             "training images")
        self.sampler = ShardedBatchSampler(len(self.splits.train), micro, rank=env.rank, world=env.world,
                                           seed=options.seed, epoch_keys=True)
        val_sampler = ShardedBatchSampler(len(self.splits.val), micro, rank=env.rank, world=env.world,
                                          shuffle=False, drop_last=False)
        collate = _pack_collate(options, self.model) if options.packing else None
        workers = options.loader_workers()
        # Each iterator a DataLoader starts draws its worker seed from its generator, by default the global RNG
        # that dropout and stochastic depth use: own generators keep that stream where a resumed run expects it.
        loading = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=env.device.type == "cuda",
                       collate_fn=collate)
        self.loader = DataLoader(self.splits.train, batch_sampler=self.sampler, generator=torch.Generator(),
                                 **loading)
        self.val_loader = DataLoader(self.splits.val, batch_sampler=val_sampler, generator=torch.Generator(),
                                     **loading)
        self.steps_per_epoch = len(self.sampler) // options.grad_accum
        total = self.steps_per_epoch * options.epochs
        warmup = min(total, round(options.warmup_epochs * self.steps_per_epoch))
        self.optimizer, self.schedule, self.groups = build_optimizer(
            self.model, options.lr, options.weight_decay, total, max(1, warmup), options.min_lr, options.layer_decay
        )
        self.autocast = autocast(env.device, options.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=options.precision == "fp16" and env.device.type == "cuda")
        self.records: list[dict] = []
        self.best_top1 = -1.0
        self.best_weights = "live"
        self.epoch, self.step_in_epoch, self.step = 0, 0, 0
        self.last: EvalResult | None = None
        if state is not None:
            self._restore(state)
            if env.is_main:  # --epochs may have changed the run's total
                run.write_options(options)
        elif env.is_main:
            run.start(options, self.splits.classes)

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> RunSummary:
        opts, start, images = self.options, time.perf_counter(), 0
        if self.reporter:
            self.reporter.start(self.steps_per_epoch * opts.epochs, self.step, opts.epochs, self.steps_per_epoch,
                                self.groups)
        interrupted = False
        with _StopFlag() as stop:
            while self.epoch < opts.epochs and not interrupted:
                self.sampler.set_epoch(self.epoch, self.step_in_epoch * opts.grad_accum)
                self.loader.generator.manual_seed(opts.seed + self.epoch)  # worker seeds: a function of the epoch
                batches = _Timed(iter(self.loader))
                while self.step_in_epoch < self.steps_per_epoch:
                    tick, batches.waited = time.perf_counter(), 0.0
                    lr = self.schedule.get_last_lr()[-1]  # the head's rate this step (the schedule then advances)
                    loss = optimizer_step(self.net, batches, self.optimizer, self.schedule, self.scaler,
                                          self.autocast, grad_accum=opts.grad_accum,
                                          label_smoothing=opts.label_smoothing, device=self.env.device,
                                          mix=self._mix if self.mixer.active else None, clip_grad=opts.clip_grad)
                    if self.ema is not None:
                        self.ema.update(self.model)
                    loss, stop_votes = self._reduce(loss, stop.requested)
                    self.step += 1
                    self.step_in_epoch += 1
                    images += opts.batch_size
                    seconds = max(time.perf_counter() - tick, 1e-9)
                    self.records.append({"kind": "step", "step": self.step, "epoch": self.epoch, "loss": loss,
                                         "lr": lr,
                                         "epoch_float": self.epoch + self.step_in_epoch / self.steps_per_epoch})
                    if self.reporter:
                        self.reporter.step(self.epoch, self.step, loss, opts.batch_size / seconds,
                                           batches.waited / seconds)
                    if stop_votes:
                        interrupted = True
                        break
                    if opts.save_every and self.step % opts.save_every == 0:
                        self._save_state()
                if interrupted:
                    self._save_state()
                    break
                self._end_epoch()
        if self.reporter:
            self.reporter.close()
        seconds = time.perf_counter() - start
        return RunSummary(self.run.path, self.epoch, self.step, self.best_top1, self.last, seconds,
                          images / max(seconds, 1e-9), interrupted, self.splits.skipped, self.best_weights)

    def _mix(self, images: torch.Tensor, labels: torch.Tensor, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/cutmix of one micro-batch, its randomness a function of (seed, step, micro-batch, rank)."""
        seed = ((self.options.seed * 1_000_003 + self.step) * 1_009 + micro) * 1_013 + self.env.rank
        return self.mixer(images, labels, seed)

    def _reduce(self, loss: float, stop: bool) -> tuple[float, bool]:
        """Mean loss over processes, and whether any process was asked to stop (all stop together)."""
        if self.env.world == 1:
            return loss, stop
        t = all_sum(torch.tensor([loss, float(stop)], dtype=torch.float64), self.env)
        return t[0].item() / self.env.world, bool(t[1].item())

    def _end_epoch(self) -> None:
        """Evaluate the live weights (and the EMA's beside them), keep the best of all epochs, checkpoint."""
        classes = len(self.splits.classes)
        result = evaluate(self.net, self.val_loader, classes, self.env, self.autocast)
        self.last = result
        epoch_steps = [r for r in self.records if r["kind"] == "step" and r["epoch"] == self.epoch]
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.step,
                  "train_loss": sum(r["loss"] for r in epoch_steps) / max(len(epoch_steps), 1),
                  "val_loss": result.loss, "val_top1": result.top1, "val_top5": result.top5,
                  "lr": epoch_steps[-1]["lr"] if epoch_steps else self.schedule.get_last_lr()[-1],
                  "skipped_unreadable": len(self.splits.skipped)}
        candidates = [("live", result.top1)]
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.val_loader, classes, self.env, self.autocast)
            record.update(ema_val_loss=ema.loss, ema_val_top1=ema.top1, ema_val_top5=ema.top5)
            candidates.append(("ema", ema.top1))
        self.records.append(record)
        weights, top1 = max(candidates, key=lambda c: c[1])  # the live weights win a tie
        improved = top1 > self.best_top1
        self.epoch += 1
        self.step_in_epoch = 0
        model_sd, _ = full_state(self.net)
        if improved:
            self.best_top1, self.best_weights = top1, weights
            if self.env.is_main:
                source = self.model if weights == "live" else self.ema.module
                state = model_sd if weights == "live" else self.ema.state_dict()
                self.run.save_best(source, state, {"weights": weights, "epoch": self.epoch, "val_top1": top1})
        self._save_state(model_sd)
        if self.reporter:
            self.reporter.epoch(record)

    # -- state ----------------------------------------------------------------------------------

    def _save_state(self, model_sd: dict | None = None) -> None:
        """Everything needed to continue exactly here; every process gathers, rank 0 writes."""
        full_model, optim_sd = full_state(self.net, self.optimizer)
        if not self.env.is_main:
            return
        state = {
            "model": model_sd if model_sd is not None else full_model,
            "optimizer": optim_sd,
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "best_top1": self.best_top1,
            "best_weights": self.best_weights,
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "records": self.records,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        self.run.save_state(state)
        self.run.write_metrics(self.records)
        plot_curves(self.records, self.run.path / "curves.png")

    def _restore(self, state: dict) -> None:
        load_full_state(self.net, state["model"], self.optimizer, state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch, self.step = state["epoch"], state["step_in_epoch"], state["step"]
        self.best_top1, self.records = state["best_top1"], state["records"]
        self.best_weights = state.get("best_weights", "live")
        if self.ema is not None:
            if not state.get("ema"):
                raise ValueError(f"{self.run.path} was saved without --model-ema; it cannot resume with it")
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class _Timed:
    """An iterator that adds up the seconds its caller waits for each item (`waited`)."""

    def __init__(self, items: Iterator) -> None:
        self.items, self.waited = items, 0.0

    def __iter__(self) -> _Timed:
        return self

    def __next__(self) -> Any:
        tick = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.waited += time.perf_counter() - tick


def _pack_collate(options: TrainOptions, model: torch.nn.Module) -> PackCollate:
    """Batches packed into sequences of `--max-tokens` (default: four full-size or full-budget images)."""
    max_tokens = options.max_tokens or DataConfig.of(model.config).max_tokens(model.num_prefix_tokens)
    return PackCollate.for_model(model, max_tokens)
