"""Opening a vitkit model directory (config.json + model.safetensors) for tools that need exactly that:
every missing piece is named in one error instead of surfacing as a format-detection failure later."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .pretrained import CONFIG_NAME, WEIGHTS_NAME, load_pretrained
from .tags import pretrained_tag

MODEL_DIR_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def check_model_dir(directory: str | os.PathLike, *, argument: str = "checkpoint") -> Path:
    """`directory` as a Path once it holds config.json and model.safetensors; FileNotFoundError naming what
    is missing (and how to make such a directory) otherwise."""
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"{argument} {path} does not exist; pass a vitkit model or run directory")
    if not path.is_dir():
        raise FileNotFoundError(f"{argument} {path} is a file; pass the vitkit model directory that holds "
                                f"{' + '.join(MODEL_DIR_FILES)}")
    missing = [name for name in MODEL_DIR_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{argument} {path} is missing {' and '.join(missing)}; a vitkit model directory holds "
            f"{' + '.join(MODEL_DIR_FILES)} (written by `vitkit train`, `vitkit convert SRC DIR` or "
            "vitkit.save_pretrained)"
        )
    return path


def load_model_dir(directory: str | os.PathLike, *, argument: str = "checkpoint",
                   img_size: int | tuple[int, int] | None = None, attention: str | None = None) -> nn.Module:
    """The model of a vitkit model directory in eval mode, optionally rebuilt at `img_size` (positions
    resampled), on the `attention` kernel (see `load_pretrained`); published weights by name (NAME.TAG) too."""
    if pretrained_tag(directory) is not None:
        return load_pretrained(directory, img_size=img_size, attention=attention)
    return load_pretrained(check_model_dir(directory, argument=argument), img_size=img_size, attention=attention)
