"""Where weights come from: a file, a directory (vitkit's, HF-style, OpenCLIP, timm hub), or `hf-hub:org/name`.

Each source yields its tensors plus the JSON files that came with them (`meta`), which converters read for what
the tensors cannot show (head count, activation, eps, pooling)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .io import read_state_dict
from .keymap import StateDict
from .qwen_vl import TOWER_PREFIXES

# Where whole vision-language models keep their vision tower: Qwen-VL (`visual.`, `model.visual.`), DeepSeek-VL2
# (`vision.`). A sharded checkpoint with such keys is read tower only.
VLM_TOWERS = (*TOWER_PREFIXES, "vision.")

HUB_PREFIX = "hf-hub:"
# Weight files of a directory, in order of preference (safetensors first).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "open_clip_pytorch_model.bin",
)
META_FILES = {
    "config": "config.json",
    "preprocessor": "preprocessor_config.json",
    "open_clip": "open_clip_config.json",
    "timm_args": "timm_args.json",
}


@dataclass
class Source:
    """Tensors and their companions. `vitkit_config` is set for vitkit's own directories (config.json with a
    'family'); `meta` holds the other JSON files found beside the weights."""

    label: str
    state_dict: StateDict
    vitkit_config: dict[str, Any] | None
    meta: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def read_meta(directory: Path) -> dict[str, Any]:
    return {key: _read_json(directory / name) for key, name in META_FILES.items() if (directory / name).is_file()}


def inside(directory: Path, name: object, where: Path) -> Path:
    """`directory / name` for a file name read from `where` (a checkpoint's JSON); ValueError when the name is
    absolute or climbs out with '..'. A checkpoint may only point at files in its own directory. Symlinks the
    directory itself holds are followed (the Hugging Face cache is made of them)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} names a file as {name!r}; expected a file name inside {directory}")
    posix = PurePosixPath(name.replace("\\", "/"))  # Windows separators and drives count too
    if posix.is_absolute() or ".." in posix.parts or ":" in name:
        raise ValueError(f"{where} names {name!r}, outside its directory {directory}; a checkpoint may only name "
                         "files inside its own directory, so vitkit does not follow it (fix the file name)")
    return directory / name


def _read_sharded(index: Path, trust_pickle: bool) -> StateDict:
    """Every shard an HF `*.index.json` names (files beside it only), merged. A whole vision-language model's
    safetensors shards are read tower only (`_tower_only`)."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index} has no 'weight_map'; is it a sharded-checkpoint index?")
    shards = sorted({inside(index.parent, shard, index) for shard in weight_map.values()})
    if all(p.suffix == ".safetensors" for p in shards) and any(k.startswith(VLM_TOWERS) for k in weight_map):
        return _tower_only(index.parent, weight_map)
    merged: StateDict = {}
    for shard in shards:
        merged.update(read_state_dict(shard, trust_pickle=trust_pickle))
    return merged


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def tower_shards(weight_map: dict[str, str]) -> list[str]:
    """The shards of a whole VLM's index that hold its vision tower (keys under `VLM_TOWERS`)."""
    return sorted({shard for key, shard in weight_map.items() if key.startswith(VLM_TOWERS)})


def _tower_only(directory: Path, weight_map: dict[str, str]) -> StateDict:
    """The vision tower's tensors (keys under `VLM_TOWERS`) of a whole VLM's safetensors shards. Every other key comes
    as a meta tensor (no data), so the key report still lists what is left out: of its shape when its shard is one
    of the tower's (read from the header), empty when its shard is not read at all (it may not even be here)."""
    out: StateDict = {key: torch.empty(0, device="meta") for key in weight_map}
    for name in tower_shards(weight_map):
        shard = inside(directory, name, directory / "model.safetensors.index.json")
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __contains__ / __iter__)
                    if key.startswith(VLM_TOWERS):
                        out[key] = f.get_tensor(key)
                    else:
                        part = f.get_slice(key)
                        out[key] = torch.empty(part.get_shape(), dtype=_DTYPES.get(part.get_dtype(), torch.float32),
                                               device="meta")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{shard} is not a readable safetensors shard: {err}; download it again") from err
    return out


def _weights_in(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(directory.glob("*.safetensors"))
    if len(candidates) == 1:
        return candidates[0]
    listed = ", ".join(sorted(p.name for p in directory.iterdir())[:10]) or "nothing"
    raise FileNotFoundError(f"{directory} holds no weights vitkit knows ({', '.join(WEIGHT_FILES[:4])}, ...); "
                            f"it has: {listed}")


def _read_weights(path: Path, trust_pickle: bool) -> StateDict:
    if path.name.endswith(".index.json"):
        return _read_sharded(path, trust_pickle)
    return read_state_dict(path, trust_pickle=trust_pickle)


def read_source(source: str | os.PathLike, *, trust_pickle: bool = False) -> Source:
    """The tensors and companion files of `source`; FileNotFoundError / ValueError naming it otherwise.
    `trust_pickle`: see `read_state_dict` (pickles that need more than tensors run code when loaded)."""
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return read_source(fetch_hub(source[len(HUB_PREFIX):]), trust_pickle=trust_pickle)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; pass a vitkit or Hugging Face model directory, a weights "
                                "file (.safetensors, .pt, .pth, .bin) or hf-hub:org/name")
    directory = path if path.is_dir() else path.parent
    meta = read_meta(directory)
    config = meta.get("config")
    vitkit_config = None
    if config is not None and "family" in config:
        vitkit_config = meta.pop("config")
    if path.is_dir() and not meta and not vitkit_config and not any((path / n).is_file() for n in WEIGHT_FILES):
        raise FileNotFoundError(f"{path} has no config.json and no weights file ({', '.join(WEIGHT_FILES[:4])}, "
                                "...); is it a model directory?")
    weights = _weights_in(path) if path.is_dir() else path
    return Source(str(path), _read_weights(weights, trust_pickle), vitkit_config, meta)


def fetch_hub(repo: str) -> Path:
    """The local snapshot of hub repository `org/name[@revision]`, holding its JSON companions (META_FILES) and its
    weights only: safetensors first (WEIGHT_FILES' in order, an index with its shards — of a whole vision-language
    model only those holding its vision tower —, else the one *.safetensors at the top), then pickles. The file
    list is the hub's, or offline the cached snapshot's (`hub.hub_listing`); the files come, verified, through
    `hub.hub_files`."""
    from . import hub

    repo_id, _, revision = repo.partition("@")
    rev = revision or None
    names = hub.hub_listing(repo_id, rev)
    lone = [n for n in names if "/" not in n and n.endswith(".safetensors")]
    order = [n for n in WEIGHT_FILES if "safetensors" in n] + (lone if len(lone) == 1 else []) + list(WEIGHT_FILES)
    weights = next((n for n in order if n in names), None)
    if weights is None:
        raise FileNotFoundError(f"hf-hub:{repo} holds no weights vitkit knows ({', '.join(WEIGHT_FILES[:4])}, ...); "
                                f"it has: {', '.join(names[:10]) or 'nothing'}")
    wanted = [n for n in META_FILES.values() if n in names] + [weights]
    if weights.endswith(".index.json"):
        weight_map = hub.hub_json(repo_id, weights, rev).get("weight_map")
        weight_map = {k: s for k, s in weight_map.items() if isinstance(s, str)} if isinstance(weight_map, dict) else {}
        # a whole VLM's safetensors: only the shards that hold its vision tower
        tower = weights.endswith(".safetensors.index.json") and tower_shards(weight_map)
        shards = tower or sorted(set(weight_map.values()))
        if missing := [s for s in shards if s not in names]:
            raise FileNotFoundError(f"{weights} of hf-hub:{repo} names shards the repository does not have: "
                                    f"{', '.join(missing[:5])}; is the index out of date?")
        wanted += shards
    return hub.hub_files(repo_id, wanted, rev)
