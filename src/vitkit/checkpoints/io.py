"""Reading and writing weights safely: safetensors first, weights-only pickles, atomic writes (runtime.atomic_path)."""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..runtime import atomic_path

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# What torch.load raises on bytes that are not a checkpoint. Its unpickler calls allow-listed functions on
# arguments the file chooses and its legacy reader asserts on the file's layout, so hostile bytes reach far past
# I/O errors; each type here came out of fuzzed files: the unpickler's stack and memo (IndexError, KeyError,
# struct.error, UnicodeDecodeError), allow-listed calls with wrong arguments (TypeError, ValueError,
# AttributeError, OverflowError), torch's archive reader (RuntimeError, EOFError, OSError "Invalid argument" for a
# cut zip), the legacy reader's asserts (AssertionError). The try blocks around torch.load hold nothing else.
TORCH_LOAD_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, LookupError, AttributeError,
    AssertionError, ArithmeticError, struct.error,
)
NPZ_KIND = ".npz archive of arrays"
# What np.load raises on a damaged .npz: its zip reader (BadZipFile, EOFError, zlib.error, NotImplementedError
# for an unknown compression method, RuntimeError for an encrypted member) and its .npy header parser.
NPZ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile,
                                           zlib.error)


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write tensors as safetensors, atomically."""
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def read_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, a .pt/.pth/.bin pickle loaded with weights_only=True, or a JAX .npz.

    A pickle that needs more than tensors and plain containers (custom classes, argparse.Namespace, a whole
    nn.Module) is refused unless `trust_pickle=True`: unpickling it runs code the file chooses, so only do that
    for files you trust. Raises FileNotFoundError for a missing file and ValueError naming the file for anything
    unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint file {path} is empty; re-save or re-download it")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise _unreadable(path, "safetensors file", _reason(err)) from err
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .pt/.pth/.bin or .npz")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _starts_like_torch(path):  # not a pickle at all: no class to trust
            raise _unreadable(path, "PyTorch checkpoint", _reason(err)) from err
        if not trust_pickle:
            raise ValueError(
                f"{path} holds a pickle that needs more than tensors to load, and vitkit never runs untrusted "
                "pickles (unpickling it would run code the file chooses); re-save its state_dict as safetensors, "
                f"or, only if you trust the file, pass trust_pickle=True (CLI: --trust-pickle){_refused(err)}"
            ) from err
        obj = _load_trusted(path)
    except TORCH_LOAD_ERRORS as err:
        raise _unreadable(path, "PyTorch checkpoint", _reason(err)) from err
    return _unwrap(obj, path)


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of a NumPy .npz archive (JAX/Flax checkpoints), never unpickling object arrays.

    bfloat16 arrays, which NumPy saves as 2-byte void, come back as torch.bfloat16.
    """
    if not _head(path).startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):  # np.load would try a pickle
        raise _unreadable(path, NPZ_KIND, "it is not a zip archive, as every .npz is")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except NPZ_ERRORS as err:
        raise _unreadable(path, NPZ_KIND, _reason(err)) from err
    tensors = {}
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):  # a member not saved by NumPy: np.load hands back its raw bytes
            raise ValueError(f"{path}: member {key!r} is not a NumPy array; an .npz checkpoint holds only arrays")
        if array.dtype.kind == "V" and array.dtype.itemsize == 2:
            tensors[key] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        elif array.dtype.kind in "biufc":
            tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
        else:
            raise ValueError(f"{path}: array {key!r} has dtype {array.dtype}, which no tensor holds; an .npz "
                             "checkpoint holds numeric arrays only")
    return tensors


def _unreadable(path: Path, kind: str, reason: str) -> ValueError:
    """The error for a weights file that does not parse as `kind`: the file, what it holds instead when its first
    bytes tell (a web page, a Git LFS pointer, text), else the reader's `reason`; and the fix."""
    why = _looks_like(path) or f"truncated or corrupt? {reason}"
    return ValueError(f"{path} is not a readable {kind} ({why}); re-download or re-save it")


def _looks_like(path: Path) -> str:
    """What the start of `path` shows it holds when that is not weights (failed downloads save web pages and
    LFS pointers under the weights' name); '' for binary data."""
    head = _head(path, 256)
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page, not weights: a download that saved a login or error page?"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights: fetch them with `git lfs pull`"
    if head and all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return f"it is text, not weights: {' '.join(head.decode('ascii').split())[:40]!r}"
    return ""


def _reason(err: BaseException) -> str:
    """'KeyError: 101': the exception's type (the message alone can be a bare number) and its first line."""
    line = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _starts_like_torch(path: Path) -> bool:
    """Whether `path` starts as torch.save writes: a zip archive, or a pickle's PROTO opcode (legacy format)."""
    return _head(path).startswith((b"PK\x03\x04", b"\x80"))


def _head(path: Path, size: int = 8) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


def _refused(err: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler would not build, from torch's message (which goes on to advise
    weights_only=False: not repeated here)."""
    found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(err))
    return f" (it refers to {found.group(1)})" if found else ""


def _load_trusted(path: Path) -> object:
    """A full unpickle, which executes whatever the file says: only reached with trust_pickle=True."""
    warnings.warn(f"loading {path} with trust_pickle=True: unpickling runs any code the file holds", stacklevel=3)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{path} needs code that is not importable here to unpickle: {err}; load it where that "
                         "code is installed and re-save its state_dict as safetensors") from err
    except TORCH_LOAD_ERRORS as err:
        raise _unreadable(path, "PyTorch checkpoint", _reason(err)) from err


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside common training-checkpoint wrappers ({'state_dict': ...}, {'model': ...}), or of a
    whole pickled module (trusted pickles only)."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "module", "model_state"):
        inner = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(inner, dict | torch.nn.Module):
            obj = inner.state_dict() if isinstance(inner, torch.nn.Module) else inner
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ValueError(f"{path} does not hold a state dict of tensors (it holds a {type(obj).__name__}); save "
                         "model.state_dict(), a dict of names to tensors")
    return obj
