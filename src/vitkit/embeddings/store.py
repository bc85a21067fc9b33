"""An embeddings directory: safetensors shards of rows, an index of where each row came from, and the settings.

    OUT/embed_config.json        model, layer, pool, eval transform, rows, shard size (written first)
    OUT/index.csv                row, path, label, shard, row_in_shard
    OUT/shard-00000.safetensors  "embeddings": rows [0, shard_rows), metadata: the key of the run's settings

With pool 'none' on packed images every row is a token grid of its own length: a shard then holds the rows' tokens
one after another, "embeddings" (sum of lengths, D), and "lengths" (rows,).

Shard k always holds rows [k * shard_rows, (k + 1) * shard_rows), whoever computes it, so any number of processes
writes the same files, and a second run finds its finished shards by name and key. Every file is written to a
temporary name and renamed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..choices import EMBED_DTYPES
from ..runtime import atomic_path, write_text

CONFIG_NAME = "embed_config.json"
INDEX_NAME = "index.csv"
TENSOR = "embeddings"
LENGTHS = "lengths"
DTYPES = {name: getattr(torch, dtype) for name, dtype in EMBED_DTYPES.items()}
# settings that fix the rows: a second run into the same directory must match them all
KEY_FIELDS = ("model", "features", "transform", "rows", "names", "shard_rows", "dtype", "precision", "packing")


def shard_path(out: Path, k: int) -> Path:
    return out / f"shard-{k:05d}.safetensors"


def weights_digest(model: nn.Module) -> str:
    """A digest of the model's weights and config: two runs compare it to tell models apart."""
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    digest.update(config.to_json().encode() if config is not None else b"")
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def names_digest(names: list[str]) -> str:
    return hashlib.blake2b("\n".join(names).encode(), digest_size=16).hexdigest()


def run_key(config: dict[str, Any]) -> str:
    """One string for the settings that fix the rows, stored in every shard."""
    fixed = {k: config[k] for k in KEY_FIELDS}
    return hashlib.blake2b(json.dumps(fixed, sort_keys=True).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Layout:
    """Rows cut into shards of `shard_rows`."""

    rows: int
    shard_rows: int

    @property
    def num_shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    def span(self, k: int) -> range:
        return range(k * self.shard_rows, min(self.rows, (k + 1) * self.shard_rows))


def check_or_write_config(out: Path, config: dict[str, Any]) -> None:
    """Write `config`, or check that the one already in `out` was made by the same model with the same settings."""
    path = out / CONFIG_NAME
    config = json.loads(json.dumps(config))  # tuples as the file holds them: lists
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--out {out}: {CONFIG_NAME} is unreadable ({err}); use another --out or delete it") \
                from err
        if old.get("model", {}).get("digest") != config["model"]["digest"]:
            raise ValueError(f"--out {out} holds embeddings of another model ({old.get('model', {}).get('source')}); "
                             "use another --out, or delete it to start over")
        changed = [k for k in KEY_FIELDS if old.get(k) != config[k]]
        if changed:
            raise ValueError(f"--out {out} holds embeddings made with other settings ({', '.join(changed)} differ); "
                             "use another --out, or delete it to start over")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(config, indent=2) + "\n")


def complete(out: Path, layout: Layout, key: str) -> set[int]:
    """Shards already written by a run with this key."""
    done = set()
    for k in range(layout.num_shards):
        path = shard_path(out, k)
        if not path.exists():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                names = f.keys()
                rows = f.get_slice(LENGTHS if LENGTHS in names else TENSOR).get_shape()[0]
        except (OSError, SafetensorError, KeyError):  # a damaged or foreign file: the shard is redone
            continue
        if meta.get("key") == key and rows == len(layout.span(k)):
            done.add(k)
    return done


def write_shard(out: Path, k: int, rows: torch.Tensor | list[torch.Tensor], key: str, dtype: str) -> None:
    """Rows (N, ...) as one tensor, or rows of different lengths (a list of (T_i, D)) as their tokens + lengths."""
    tensors = {TENSOR: rows}
    if isinstance(rows, list):
        tensors = {TENSOR: torch.cat(rows), LENGTHS: torch.tensor([len(r) for r in rows], dtype=torch.int64)}
    tensors[TENSOR] = tensors[TENSOR].to(DTYPES[dtype]).contiguous()
    with atomic_path(shard_path(out, k)) as tmp:
        # one metadata entry: safetensors writes several in a random order, and shards must be byte-identical
        save_file(tensors, str(tmp), metadata={"key": key})


def write_index(out: Path, names: list[str], labels: list[str], layout: Layout) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["row", "path", "label", "shard", "row_in_shard"])
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        writer.writerow([i, name, label, i // layout.shard_rows, i % layout.shard_rows])
    write_text(out / INDEX_NAME, text.getvalue())


@dataclass
class EmbeddingIndex:
    """Where each row came from: its path (or name) and label ('' when unlabelled), and the run's settings."""

    paths: list[str]
    labels: list[str]
    config: dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted({label for label in self.labels if label})


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64}


def _mapped(path: Path, name: str = TENSOR) -> torch.Tensor | None:
    """The shard's tensor `name` over a private memory map of the file (None when absent): pages are read when
    touched, and a write to the tensor never reaches the file. safetensors keeps the data 8-byte aligned after its
    header."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(header_len)).get(name)
    if entry is None:
        return None
    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=path.stat().st_size)
    start = (8 + header_len + entry["data_offsets"][0]) // dtype.itemsize
    return torch.empty(0, dtype=dtype).set_(storage, start, entry["shape"])


def load_embeddings(out: str | Path) -> tuple[torch.Tensor | list[torch.Tensor], EmbeddingIndex]:
    """(rows (N, D) or (N, T, D), index) of an embeddings directory, in row order; rows of different lengths (pool
    'none' on packed images) come as a list of (T_i, D). One shard comes back memory-mapped (its pages read when
    touched); several are concatenated into one tensor in memory."""
    out = Path(out)
    if not (out / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"no embeddings in {out}: {CONFIG_NAME} not found (write them with vitkit embed)")
    config = json.loads((out / CONFIG_NAME).read_text())
    layout = Layout(config["rows"], config["shard_rows"])
    missing = [k for k in range(layout.num_shards) if not shard_path(out, k).is_file()]
    if missing or not (out / INDEX_NAME).is_file():
        raise ValueError(f"{out} is incomplete ({len(missing)} of {layout.num_shards} shards missing); run the same "
                         "vitkit embed command again to finish it")
    parts = [_mapped(shard_path(out, k)) for k in range(layout.num_shards)]
    matrix = parts[0] if len(parts) == 1 else torch.cat(parts)
    lengths = [_mapped(shard_path(out, k), LENGTHS) for k in range(layout.num_shards)]
    if all(n is not None for n in lengths):
        matrix = list(matrix.split(torch.cat(lengths).tolist()))
    with open(out / INDEX_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(matrix):
        raise ValueError(f"{out}: {INDEX_NAME} lists {len(rows)} rows, the shards hold {len(matrix)}")
    return matrix, EmbeddingIndex([r["path"] for r in rows], [r["label"] for r in rows], config)
