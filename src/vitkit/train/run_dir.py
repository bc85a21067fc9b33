"""A run directory: options, labels, weights (best and last), resumable state, metrics and curves.

Every file is written to a temporary name and renamed, so an interrupted write leaves the old file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import save_pretrained, save_state_dict
from ..checkpoints.pretrained import WEIGHTS_NAME
from ..runtime import atomic_path, write_text
from .options import TrainOptions

STATE = "train_state.pt"
OPTIONS = "train_options.json"
LABELS = "labels.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"


class RunDir:
    """Reads and writes the files of one run (rank 0 writes; every rank may read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def check_new(self) -> None:
        """Refuse to train into a directory that already holds a run (nothing is overwritten). A run that failed
        before its first checkpoint left only its options and labels: starting again there is allowed."""
        if (self.path / STATE).exists() or (self.path / WEIGHTS_NAME).exists():
            raise ValueError(f"{self.path} already holds a run; continue it with --resume {self.path}, "
                             "or pick another --out")
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} exists and is not a directory; pick another --out")
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())  # where mkdir would start
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--out {self.path} cannot be created: {existing} is not a writable directory; "
                             "pick another --out")

    def check_resumable(self) -> None:
        if not (self.path / STATE).is_file() or not (self.path / OPTIONS).is_file():
            raise ValueError(f"{self.path} is not a vitkit run directory with a checkpoint to resume "
                             f"(no {STATE} / {OPTIONS})")

    def remove_partial_writes(self) -> None:
        """Delete the temporary files of writes a killed run never finished (their targets are intact)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def start(self, options: TrainOptions, classes: list[str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_options(options)
        write_text(self.path / LABELS, json.dumps(classes, indent=2) + "\n")

    def write_options(self, options: TrainOptions) -> None:
        write_text(self.path / OPTIONS, options.to_json() + "\n")

    def options(self) -> TrainOptions:
        return TrainOptions.from_file(self.path / OPTIONS)

    def labels(self) -> list[str]:
        path = self.path / LABELS
        return json.loads(path.read_text()) if path.is_file() else []

    def save_best(self, model: nn.Module, state_dict: dict[str, torch.Tensor], training: dict[str, Any]) -> None:
        """The best weights as a vitkit model directory (config.json + model.safetensors); config.json's "training"
        says which weights they are (live or EMA), from which epoch, at what accuracy."""
        save_pretrained(model, self.path, state_dict=state_dict, training=training)

    def save_state(self, state: dict[str, Any]) -> None:
        """Resumable state (model, optimizer, schedule, step, RNG, metrics) in one atomic file, plus last weights."""
        with atomic_path(self.path / STATE) as tmp:
            torch.save(state, tmp)
        save_state_dict(state["model"], self.path / LAST)

    def load_state(self) -> dict[str, Any]:
        try:
            return torch.load(self.path / STATE, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            raise ValueError(f"{self.path / STATE} is unreadable ({str(err).splitlines()[0]}): vitkit only ever "
                             "replaces it whole, so something else cut or changed it; this run cannot resume from "
                             "it") from err

    def write_metrics(self, records: list[dict]) -> None:
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))
