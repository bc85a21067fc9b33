"""Checkpoints: safe file I/O, vitkit's own directory format, and converters for every major ViT family."""

from ..runtime import atomic_path  # re-exported: a public name of this package before runtime existed
from .convert import Conversion, convert_state_dict
from .detect import FORMATS, detect_format
from .io import read_state_dict, save_state_dict
from .model_dir import check_model_dir, load_model_dir
from .pretrained import (
    KeyReport,
    Loaded,
    create_model,
    key_report,
    load_checkpoint,
    load_config,
    load_pretrained,
    save_pretrained,
)
from .tags import PRETRAINED, Pretrained, get_pretrained, list_pretrained

__all__ = [
    "FORMATS",
    "PRETRAINED",
    "Conversion",
    "KeyReport",
    "Loaded",
    "Pretrained",
    "atomic_path",
    "check_model_dir",
    "convert_state_dict",
    "create_model",
    "detect_format",
    "get_pretrained",
    "key_report",
    "list_pretrained",
    "load_checkpoint",
    "load_config",
    "load_model_dir",
    "load_pretrained",
    "read_state_dict",
    "save_pretrained",
    "save_state_dict",
]
