"""`vitkit bench`: vitkit on each attention backend and each peer library, one subprocess each, same inputs.

The parent runs the candidates one after another and turns their raw step times into rows: median and
spread, peak memory, FLOPs (from the config, and as counted on the candidate), achieved FLOP/s,
efficiency against the rate of same-shape matrix products (measured by each worker right after its
timed steps, so under the same load), and the throughput ratio against the first peer that ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..attention import BACKENDS, canonical_name
from ..models import get_config
from ..models.config import ViTConfig
from ..runtime import inference_precision
from .candidates import PEERS, Unsupported, compute_dtype, vitkit_attention
from .flops import analytic_flops
from .machine import machine_info
from .measure import resolve_device, summarize, torch_threads
from .settings import BenchSettings, check_ints
from .spec import MODES, CandidateSpec

MODE_CHOICES = {"infer": ("infer",), "train": ("train",), "both": ("infer", "train")}
Progress = Callable[[str], None]


def bench_config(model: str, img_size: int | None = None) -> ViTConfig:
    """The registered config of `model`, at `img_size` when given."""
    config = get_config(model)
    return config if img_size is None else config.replace(img_size=img_size)


def resolve_attention(names: Sequence[str]) -> tuple[str, ...]:
    """Backend names for the vitkit rows: 'auto', 'all' (every backend) or a list; aliases resolved."""
    if list(names) == ["all"]:
        return tuple(BACKENDS)
    if not names:
        raise ValueError("attention needs at least one backend name, 'auto' or 'all'")
    return tuple(dict.fromkeys(canonical_name(name) for name in names))


def resolve_peers(names: Sequence[str]) -> tuple[str, ...]:
    """Peer names: 'all', 'none' (vitkit alone) or a list of known peers, in the order given."""
    if list(names) == ["all"]:
        return tuple(PEERS)
    if list(names) in ([], ["none"]):
        return ()
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; choose from: {', '.join(PEERS)}, all, none")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ModelBenchSettings(BenchSettings):
    """What `vitkit bench` measures; validated on creation (ValueError naming the argument)."""

    model: str = "vit_small_patch16_224"
    mode: str = "infer"
    batch_size: int = 16
    img_size: int | None = None
    attention: tuple[str, ...] = ("auto",)
    peers: tuple[str, ...] = tuple(PEERS)
    compile: bool = False
    grad_checkpointing: int = 0
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"mode must be one of {', '.join(MODE_CHOICES)}, got {self.mode!r}")
        super().__post_init__()
        check_ints(self, {"batch_size": 1, "rounds": 1, "grad_checkpointing": 0})
        if self.img_size is not None and (not isinstance(self.img_size, int) or self.img_size < 1):
            raise ValueError(f"img_size must be a positive integer, got {self.img_size!r}")
        if self.compile and self.warmup < 1:
            raise ValueError("compile needs warmup >= 1: the first step compiles and must not be timed")
        object.__setattr__(self, "attention", resolve_attention(self.attention))
        object.__setattr__(self, "peers", resolve_peers(self.peers))
        depth = self.config.depth
        if self.grad_checkpointing > depth:
            raise ValueError(f"grad_checkpointing must be at most the model's depth ({depth}), "
                             f"got {self.grad_checkpointing}")

    def check_precision(self) -> None:
        """Inference's precisions (INFERENCE_PRECISIONS, 'auto' resolved here for the device); training runs each
        as its nearest autocast precision, and has none for int8."""
        chosen, _ = inference_precision(self.precision, resolve_device(self.device))
        object.__setattr__(self, "precision", chosen.name)
        if "train" in MODE_CHOICES[self.mode] and chosen.training is None:
            raise ValueError(f"precision {chosen.name} is for inference; benchmark it with --mode infer")

    @property
    def config(self) -> ViTConfig:
        return bench_config(self.model, self.img_size)

    @property
    def modes(self) -> tuple[str, ...]:
        return MODE_CHOICES[self.mode]

    def spec(self, candidate: str, attention: str = "auto") -> CandidateSpec:
        """The worker's orders for one candidate."""
        return CandidateSpec(
            candidate=candidate, config=self.config.to_dict(), modes=self.modes, attention=attention,
            batch_size=self.batch_size, precision=self.precision, device=str(resolve_device(self.device)),
            compile=self.compile, grad_checkpointing=self.grad_checkpointing, steps=self.steps,
            warmup=self.warmup, seed=self.seed, threads=self.threads,
        )


@dataclass
class Row:
    """One candidate in one mode. Metrics are None unless `status` is 'ok'."""

    candidate: str
    mode: str
    status: str  # ok | skipped | failed
    library: str = ""
    reason: str = ""
    notes: str = ""
    params: int | None = None
    img_per_s: float | None = None
    img_per_s_min: float | None = None
    img_per_s_max: float | None = None
    ms_per_step: float | None = None
    ms_per_step_min: float | None = None
    ms_per_step_max: float | None = None
    spread_pct: float | None = None
    peak_mem_mb: float | None = None  # CUDA: peak allocated; CPU: the process's peak resident set
    base_mem_mb: float | None = None  # the same measure before the model was built (interpreter + libraries)
    tensor_mem_mb: float | None = None  # most memory held by tensors during a step (None under --compile)
    gflops_per_image: float | None = None  # the model's work, from the config
    gflops_counted: float | None = None  # what FlopCounterMode counted on this candidate, per image
    gflops_per_s: float | None = None  # achieved: gflops_per_image x img/s
    ceiling_gflops_per_s: float | None = None  # same-shape matrix products, timed right after the steps
    efficiency: float | None = None  # achieved / ceiling
    ratio: float | None = None  # img/s over the baseline's (the first peer that ran)


@dataclass
class ModelBenchReport:
    settings: dict[str, Any]
    machine: dict[str, Any]
    rows: list[Row]
    baselines: dict[str, str | None] = field(default_factory=dict)  # mode -> candidate the ratio is against

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": "model", "settings": self.settings, "machine": self.machine,
                "baselines": self.baselines,
                "rows": [dataclasses.asdict(row) for row in self.rows]}


def _child_env() -> dict[str, str]:
    """This environment, with the directory vitkit was imported from first on PYTHONPATH."""
    import vitkit

    env = dict(os.environ)
    root = str(Path(vitkit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_worker(spec: CandidateSpec) -> dict[str, Any]:
    """Run one candidate in a fresh `python -m vitkit.bench.worker`; a crash becomes 'failed' modes."""
    proc = subprocess.run(
        [sys.executable, "-m", "vitkit.bench.worker"], input=json.dumps(spec.to_dict()), capture_output=True,
        text=True, env=_child_env(), check=False,
    )
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            pass
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    why = f"worker exited with status {proc.returncode}: {lines[-1] if lines else 'no output'}"
    return {"library": spec.candidate, "params": None,
            "modes": {mode: {"status": "failed", "reason": why} for mode in spec.modes}}


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One candidate's rounds as one result: step times pooled, memory peaks maxed, the ceilings' median.
    A mode that failed in any round is reported failed."""
    modes: dict[str, Any] = {}
    for mode in results[0]["modes"]:
        outcomes = [result["modes"][mode] for result in results]
        bad = next((o for o in outcomes if o["status"] != "ok"), None)
        if bad is not None:
            modes[mode] = bad
            continue
        merged = dict(outcomes[0], step_s=[s for o in outcomes for s in o["step_s"]])
        for key in ("peak_mem_mb", "tensor_mem_mb"):
            values = [o[key] for o in outcomes if o[key] is not None]
            merged[key] = max(values) if values else None
        merged["ceiling_gflops_per_s"] = statistics.median(o["ceiling_gflops_per_s"] for o in outcomes)
        modes[mode] = merged
    return {**results[0], "modes": modes}


def _skips(spec: CandidateSpec, settings: ModelBenchSettings, device: torch.device) -> dict[str, str]:
    """Modes this candidate cannot run here, with why, found without starting a process."""
    config = settings.config
    if spec.candidate in PEERS:
        return PEERS[spec.candidate].skips(config, spec)
    skips = {}
    for mode in spec.modes:
        try:
            vitkit_attention(config, spec.attention, device, compute_dtype(spec.precision, mode), mode == "train")
        except Unsupported as err:
            skips[mode] = str(err)
    return skips


def _rows(name: str, result: dict[str, Any], settings: ModelBenchSettings) -> list[Row]:
    rows = []
    for mode, outcome in result["modes"].items():
        row = Row(name, mode, outcome["status"], library=result["library"], reason=outcome.get("reason", ""),
                  notes=outcome.get("notes", ""), params=result["params"])
        if row.status == "ok":
            for key, value in summarize(outcome["step_s"], settings.batch_size).items():
                setattr(row, key, value)
            row.peak_mem_mb, row.base_mem_mb = outcome["peak_mem_mb"], outcome["base_mem_mb"]
            row.tensor_mem_mb = outcome["tensor_mem_mb"]
            row.gflops_per_image = analytic_flops(settings.config, train=mode == "train") / 1e9
            counted = outcome["flops_counted"]
            row.gflops_counted = None if counted is None else counted / 1e9
            row.gflops_per_s = row.gflops_per_image * row.img_per_s
            row.ceiling_gflops_per_s = outcome["ceiling_gflops_per_s"]
            row.efficiency = row.gflops_per_s / row.ceiling_gflops_per_s
        rows.append(row)
    return rows


def _ratios(rows: list[Row], modes: Sequence[str], peers: Sequence[str]) -> dict[str, str | None]:
    """Fill the ratio column; return the baseline per mode (the first peer that ran, else the first row)."""
    baselines: dict[str, str | None] = {}
    for mode in modes:
        ran = [row for row in rows if row.mode == mode and row.status == "ok"]
        base = next((row for row in ran if row.candidate in peers), ran[0] if ran else None)
        baselines[mode] = base.candidate if base else None
        for row in ran:
            row.ratio = row.img_per_s / base.img_per_s
    return baselines


def vitkit_name(attention: str) -> str:
    return "vitkit" if attention == "auto" else f"vitkit:{attention}"


def run_model_bench(settings: ModelBenchSettings, progress: Progress | None = None) -> ModelBenchReport:
    """Every candidate in its own process, one after another; see the module docstring.

    With `rounds` > 1 the candidates run in turn that many times (A B C, A B C, ...) and each one's step
    times are pooled, so a change in machine load over the run falls on every candidate alike.
    """
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    with torch_threads(settings.threads):
        machine = machine_info(device)
    rows: list[Row] = []
    jobs = [(vitkit_name(a), settings.spec("vitkit", a)) for a in settings.attention]
    jobs += [(peer, settings.spec(peer)) for peer in settings.peers]
    runnable: dict[str, CandidateSpec] = {}
    for name, spec in jobs:
        skips = _skips(spec, settings, device)
        library = PEERS[spec.candidate].dist if spec.candidate in PEERS else "vitkit"
        rows += [Row(name, mode, "skipped", library=library, reason=why) for mode, why in skips.items()]
        modes = tuple(mode for mode in spec.modes if mode not in skips)
        if modes:
            runnable[name] = dataclasses.replace(spec, modes=modes)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runnable}
    for round_index in range(settings.rounds):
        for name, spec in runnable.items():
            turn = f" (round {round_index + 1}/{settings.rounds})" if settings.rounds > 1 else ""
            say(f"{name}: {', '.join(spec.modes)}{turn}")
            results[name].append(run_worker(spec))
    for name, outcomes in results.items():
        rows += _rows(name, merge_rounds(outcomes), settings)
    order = [name for name, _ in jobs]
    rows.sort(key=lambda row: (MODES.index(row.mode), order.index(row.candidate)))
    baselines = _ratios(rows, settings.modes, settings.peers)
    settings_dict = {**settings.record(device), "modes": list(settings.modes)}
    return ModelBenchReport(settings_dict, machine, rows, baselines)
