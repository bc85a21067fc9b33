"""Checkpoints: safe file I/O, vitkit's own directory format, and converters for every major ViT family."""

from .convert import Conversion, convert_state_dict
from .detect import FORMATS, detect_format
from .io import atomic_path, read_state_dict, save_state_dict
from .pretrained import KeyReport, Loaded, key_report, load_checkpoint, load_pretrained, save_pretrained

__all__ = [
    "FORMATS",
    "Conversion",
    "KeyReport",
    "Loaded",
    "atomic_path",
    "convert_state_dict",
    "detect_format",
    "key_report",
    "load_checkpoint",
    "load_pretrained",
    "read_state_dict",
    "save_pretrained",
    "save_state_dict",
]
