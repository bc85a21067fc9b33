"""Checkpoint files: safe reading and writing, and vitkit's own directory format."""

from .io import atomic_path, read_state_dict, save_state_dict
from .pretrained import key_report, load_pretrained, save_pretrained

__all__ = ["atomic_path", "key_report", "load_pretrained", "read_state_dict", "save_pretrained", "save_state_dict"]
