"""Pretrained weights by name: `NAME.TAG` says where a registered model's published weights live and what they are.

Each tag is one entry of `PRETRAINED`: the Hugging Face repository and revision, the files to fetch, their layout
(a `vitkit.checkpoints.FORMATS` name), the license, the classifier's classes, and the data config its origin
publishes (timm's `pretrained_cfg`, the HF processor's settings). `vitkit.create_model("NAME[.TAG]",
pretrained=True)` builds NAME with the tag's settings and loads the files (`hub`); a name alone takes its first tag.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import CLIP_MEAN, CLIP_STD, HALF_MEAN, IMAGENET_MEAN, IMAGENET_STD, ViTConfig, get_config, list_models

HALF = HALF_MEAN
# The files a tag needs: the weights alone (the tag states the config), or for a whole VLM's sharded checkpoint its
# index, which picks the shards that hold the tower.
WEIGHTS = ("model.safetensors",)
VLM_INDEX = ("model.safetensors.index.json",)
# Suffixes of weights files: a missing `vit_base_patch16_224.safetensors` is a path, not a tag.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz", ".json")


@dataclass(frozen=True)
class Pretrained:
    """One tag: `name` (NAME.TAG), where its files are, what they hold, and how its images are prepared."""

    name: str
    repo: str
    files: tuple[str, ...]
    layout: str
    license: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int
    crop_pct: float
    interpolation: str = "bicubic"
    num_classes: int = 0
    labels: str = ""  # the label set of the classifier ("" without one)
    revision: str = "main"
    settings: dict[str, Any] = field(default_factory=dict)  # config fields the weights need beyond the name's

    @property
    def model(self) -> str:
        """The registered model name."""
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    def config_changes(self) -> dict[str, Any]:
        """The fields of the model's config these weights set: classes, data config, the tag's own settings."""
        size = get_config(self.model).img_size
        changes = dict(num_classes=self.num_classes, mean=self.mean, std=self.std, crop_pct=self.crop_pct,
                       interpolation=self.interpolation)
        if (self.img_size, self.img_size) != tuple(size):
            changes["img_size"] = self.img_size
        return {**changes, **self.settings}

    def config(self) -> ViTConfig:
        """The registered model's config with these weights' settings."""
        return get_config(self.model).replace(**self.config_changes())

    @property
    def normalisation(self) -> str:
        """The mean / std in a word where they are a well-known set."""
        return _NORMALISATIONS.get((self.mean, self.std), f"{self.mean} / {self.std}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "repo": self.repo, "revision": self.revision, "files": list(self.files),
                "layout": self.layout, "license": self.license, "num_classes": self.num_classes,
                "labels": self.labels, "mean": list(self.mean), "std": list(self.std), "img_size": self.img_size,
                "crop_pct": self.crop_pct, "interpolation": self.interpolation, "settings": self.settings}


_NORMALISATIONS = {(HALF, HALF): "0.5", (IMAGENET_MEAN, IMAGENET_STD): "imagenet", (CLIP_MEAN, CLIP_STD): "openai clip"}
# timm's label sets: ImageNet-1k, ImageNet-21k (21,843 classes); tags without a classifier have none.
_LABELS = {"in1k": (1000, "imagenet-1k"), "in21k": (21843, "imagenet-21k")}


def _timm(name: str, tag: str, *, timm_name: str | None = None, license: str = "apache-2.0",
          mean: tuple[float, ...] = HALF, std: tuple[float, ...] = HALF, size: int = 224, crop: float = 0.9,
          head: str | None = None) -> Pretrained:
    """A tag of timm's hub (`timm/ARCH.TAG`: model.safetensors + timm's config.json), as timm's pretrained_cfg."""
    classes, labels = _LABELS[head] if head else (0, "")
    return Pretrained(f"{name}.{tag}", f"timm/{timm_name or name}.{tag}", WEIGHTS, "timm", license, mean, std,
                      size, crop, num_classes=classes, labels=labels)


def _augreg(name: str, tags: dict[str, str | None]) -> list[Pretrained]:
    return [_timm(name, tag, head=head) for tag, head in tags.items()]


_AUGREG = {"augreg_in21k_ft_in1k": "in1k", "augreg_in1k": "in1k", "augreg_in21k": "in21k"}
_IN_MEAN = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
_MAE = dict(license="cc-by-nc-4.0", **_IN_MEAN)
_SIGLIP = {"siglip_base_patch16_224": ("vit_base_patch16_siglip_224", 224),
           "siglip_large_patch16_384": ("vit_large_patch16_siglip_384", 384),
           "siglip_so400m_patch14_224": ("vit_so400m_patch14_siglip_224", 224),
           "siglip_so400m_patch14_384": ("vit_so400m_patch14_siglip_384", 384)}
_DINOV3 = dict(license="dinov3-license", size=256, crop=1.0, **_IN_MEAN)
_SAT = dict(_DINOV3, mean=(0.43, 0.411, 0.296), std=(0.213, 0.156, 0.143))  # DINOv3's satellite towers
_EUPE = dict(_DINOV3, license="fair-noncommercial-research-license")

_TAGS: list[Pretrained] = [
    # timm / AugReg ViTs; the first tag of a name is its default, as in timm.
    *_augreg("vit_tiny_patch16_224", {"augreg_in21k_ft_in1k": "in1k", "augreg_in21k": "in21k"}),
    *_augreg("vit_small_patch16_224", _AUGREG),
    _timm("vit_small_patch16_224", "dino", **_IN_MEAN),
    _timm("vit_base_patch16_224", "augreg2_in21k_ft_in1k", head="in1k"),
    *_augreg("vit_base_patch16_224", {**_AUGREG, "orig_in21k_ft_in1k": "in1k", "orig_in21k": None,
                                      "sam_in1k": "in1k"}),
    _timm("vit_base_patch16_224", "dino", **_IN_MEAN),
    _timm("vit_base_patch16_224", "mae", **_MAE),
    *_augreg("vit_base_patch32_224", {**_AUGREG, "orig_in21k": None, "sam_in1k": "in1k"}),
    *_augreg("vit_large_patch16_224", {"augreg_in21k_ft_in1k": "in1k", "augreg_in21k": "in21k", "orig_in21k": None}),
    _timm("vit_large_patch16_224", "mae", **_MAE),
    _timm("vit_huge_patch14_224", "orig_in21k"),
    _timm("vit_huge_patch14_224", "mae", **_MAE),
    # SigLIP towers (timm's ports of big_vision's WebLI weights); v2: SigLIP2's fixed-resolution towers.
    *[_timm(name, tag, timm_name=timm_name, size=size) for name, (timm_name, size) in _SIGLIP.items()
      for tag in ("webli", "v2_webli") if (name, tag) != ("siglip_so400m_patch14_384", "v2_webli")],
    # DeepSeek-VL2's tower: the `vision.` weights of the whole model (only the shards that hold them are fetched);
    # 384 px tiles, the SigLIP preprocessing its processor applies.
    *[Pretrained(f"siglip_so400m_patch14_384.deepseek_vl2{suffix}", f"deepseek-ai/deepseek-vl2{repo}",
                 VLM_INDEX, "deepseek-vl2", "deepseek", HALF, HALF, 384, 1.0,
                 settings={"ignore_head": True})
      for suffix, repo in (("_tiny", "-tiny"), ("_small", "-small"), ("", ""))],
    # SigLIP2 NaFlex towers, transformers' layout (the two-tower model's vision part).
    *[Pretrained(f"siglip2_{size}_patch16_naflex.webli", f"google/siglip2-{size}-patch16-naflex", WEIGHTS,
                 "hf-siglip", "apache-2.0", HALF, HALF, 256, 1.0, "bilinear") for size in ("base", "so400m")],
    # DINOv2 and DINOv3 (timm's hub copies of Meta's weights).
    *[_timm(f"vit_{size}_patch14{reg}_dinov2", "lvd142m", size=518, crop=1.0, **_IN_MEAN)
      for size in ("small", "base", "large") for reg in ("", "_reg4")],
    *[_timm(f"vit_{size}_patch16_dinov3", "lvd1689m", **_DINOV3)
      for size in ("small", "small_plus", "base", "large", "huge_plus", "7b")],
    *[_timm(f"vit_{size}_patch16_dinov3_qkvb", "lvd1689m", **_DINOV3)
      for size in ("small", "small_plus", "base", "large", "huge_plus")],
    *[_timm(name, "sat493m", **_SAT) for name in ("vit_large_patch16_dinov3", "vit_large_patch16_dinov3_qkvb",
                                                  "vit_7b_patch16_dinov3")],
    *[_timm(f"vit_{size}_patch16_dinov3_qkvb", "eupe_lvd1689m", **_EUPE) for size in ("tiny", "small", "base")],
    # EVA-02 (MIM pretrained, no classifier) and RoPE-Mixed ViTs (ImageNet-1k).
    *[_timm(f"eva02_{size}_patch14_224", "mim_in22k", license="mit", mean=CLIP_MEAN, std=CLIP_STD)
      for size in ("tiny", "small", "base", "large")],
    _timm("eva02_large_patch14_224", "mim_m38m", license="mit", mean=CLIP_MEAN, std=CLIP_STD),
    *[_timm(f"vit_{size}_patch16_rope_mixed_224", "naver_in1k", head="in1k", **_IN_MEAN)
      for size in ("small", "base", "large")],
    # The vision towers of Qwen's VLMs: the `visual.` weights of the whole model, transformers' layout.
    *[Pretrained(f"qwen2_5_vl_vision_{size}.instruct", f"Qwen/Qwen2.5-VL-{size.upper()}-Instruct", VLM_INDEX,
                 "hf-qwen2.5-vl", license, CLIP_MEAN, CLIP_STD, 448, 1.0)
      for size, license in (("3b", "qwen-research"), ("7b", "apache-2.0"), ("32b", "apache-2.0"), ("72b", "qwen"))],
    *[Pretrained(f"qwen3_vl_vision_{size}.instruct", f"Qwen/Qwen3-VL-{repo}-Instruct", VLM_INDEX, "hf-qwen3-vl",
                 "apache-2.0", HALF, HALF, 768, 1.0)
      for size, repo in (("2b", "2B"), ("4b", "4B"), ("8b", "8B"), ("32b", "32B"), ("30b_a3b", "30B-A3B"),
                         ("235b_a22b", "235B-A22B"))],
]
PRETRAINED: dict[str, Pretrained] = {t.name: t for t in _TAGS}


def tags_markdown(pattern: str | None = None) -> str:
    """The tags as a markdown table (README's table is this output: `vitkit models --pretrained --markdown`)."""
    lines = ["| name | repository | layout | license | classes | size | crop | mean / std |", "|---" * 8 + "|"]
    for tag in (PRETRAINED[name] for name in list_pretrained(pattern)):
        lines.append(f"| `{tag.name}` | {tag.repo} | {tag.layout} | {tag.license} | {tag.num_classes or '-'} | "
                     f"{tag.img_size} | {tag.crop_pct:g} {tag.interpolation} | {tag.normalisation} |")
    return "\n".join(lines) + "\n"


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Every `NAME.TAG` with published weights, sorted, optionally filtered by a shell-style pattern ('vit_base*')."""
    names = sorted(PRETRAINED)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def default_tag(name: str) -> Pretrained | None:
    """The first tag of a registered name (its default), or None when it has no published weights."""
    return next((t for t in _TAGS if t.model == name), None)


def pretrained_tag(value: str | os.PathLike | None) -> Pretrained | None:
    """The tag a `--pretrained` value names (NAME.TAG, or a registered NAME: its default tag) when it is no file or
    directory here; None for a path (or None). An unknown tag of a registered name is a ValueError naming its tags."""
    if value is None or Path(value).exists() or Path(value).suffix in WEIGHT_SUFFIXES:
        return None  # a path, or the name of a weights file that is not there (read_source says so)
    name = str(value)
    if name.partition(".")[0] in list_models() and (name in PRETRAINED or "." in name or default_tag(name)):
        return get_pretrained(name)
    return None


def get_pretrained(name: str) -> Pretrained:
    """The tag `NAME.TAG`, or NAME's default tag; ValueError naming the tags there are."""
    if not isinstance(name, str):
        raise ValueError(f"a pretrained name is 'NAME' or 'NAME.TAG', got {name!r}")
    model, _, tag = name.partition(".")
    if model not in list_models():
        get_config(model)  # ValueError naming close registered names
    if not tag:
        found = default_tag(model)
        if found is None:
            raise ValueError(f"{model} has no published weights vitkit knows; train it (vitkit train) or load a "
                             "checkpoint with pretrained='PATH'")
        return found
    if name not in PRETRAINED:
        tags = [t.tag for t in _TAGS if t.model == model]
        raise ValueError(f"unknown tag {tag!r} for {model}; its tags: {', '.join(tags) or 'none'} "
                         "(see `vitkit models --pretrained`)")
    return PRETRAINED[name]


def fetch_pretrained(tag: Pretrained) -> Path:
    """The local directory of a tag's files, downloaded into the Hugging Face cache when not there yet (offline:
    from the cache only). A whole VLM's sharded checkpoint brings only the shards that hold its vision tower."""
    from .hub import hub_files
    from .sources import tower_shards

    directory = hub_files(tag.repo, tag.files, tag.revision)
    for name in tag.files:
        if name.endswith(".index.json"):
            weight_map = json.loads((directory / name).read_text()).get("weight_map") or {}
            hub_files(tag.repo, tower_shards(weight_map), tag.revision)
    return directory
