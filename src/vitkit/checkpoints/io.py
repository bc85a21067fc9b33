"""Reading and writing weights safely: safetensors first, weights-only pickles, atomic writes."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A failure (or a kill) before the rename leaves the old `path` as it was. The temporary file is flushed to
    disk before the rename and the directory after it, so a power cut cannot leave a renamed but empty file.
    The writer creates the file, so it gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # directories cannot be opened for fsync everywhere (Windows)
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}; re-save or "
                             "re-download it") from err
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors, .pt/.pth/.bin or .npz")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise ValueError(
                f"{path} holds a pickle that needs more than tensors to load, and vitkit never runs untrusted "
                "pickles (unpickling it would run code the file chooses); re-save its state_dict as safetensors, "
                f"or, only if you trust the file, pass trust_pickle=True (CLI: --trust-pickle){_refused(err)}"
            ) from err
        obj = _load_trusted(path)
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}; re-save or "
                         "re-download it") from err
    return _unwrap(obj, path)


def read_npz(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of a NumPy .npz archive (JAX/Flax checkpoints), never unpickling object arrays.

    bfloat16 arrays, which NumPy saves as 2-byte void, come back as torch.bfloat16.
    """
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz archive of arrays (truncated or corrupt?): {err}") from err
    tensors = {}
    for key, array in arrays.items():
        if array.dtype.kind == "V" and array.dtype.itemsize == 2:
            tensors[key] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        else:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
    return tensors


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
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from err


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
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (it holds a {type(obj).__name__}); save "
                         "model.state_dict(), a dict of tensors")
    return obj
