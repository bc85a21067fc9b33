"""Image preprocessing from a model's data config, on torchvision.transforms.v2.

Evaluation follows timm's `create_transform(is_training=False)`: the shorter side resized to
`img_size / crop_pct`, then a centre crop. Training draws every random choice of a sample from a stream
seeded by (seed, epoch, sample index), so a sample's view is the same however the data is sharded,
batched, loaded by workers or resumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .augment import INTERPOLATIONS, Augment, auto_augment

if TYPE_CHECKING:
    from ..models import ViTConfig

Transform = Callable[[Any], torch.Tensor]


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input images, and how evaluation frames them (timm's data config)."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    patch_size: tuple[int, int] = (16, 16)
    max_patches: int | None = None  # NaFlex: packed images sized to this many patches (see `naflex_size`)
    min_pixels: int | None = None  # Qwen-VL: packed images sized to between min_pixels and max_pixels pixels,
    max_pixels: int | None = None  # each side a multiple of `resize_factor` (see `smart_resize`)
    resize_factor: int | None = None  # patch x merge_size; None: the patch size

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.in_chans):
                raise ValueError(
                    f"the model's {name} has {len(getattr(self, name))} values but it takes {self.in_chans} channels; "
                    f"give {name} one value per channel (or a single value) in its config"
                )
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1] (the share of the resized image kept), got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.max_patches is not None and (isinstance(self.max_patches, bool) or not isinstance(
                self.max_patches, int) or self.max_patches < 1):
            raise ValueError(f"max_patches must be a positive integer (a patch budget), got {self.max_patches!r}")
        self._check_pixel_rule()

    def _check_pixel_rule(self) -> None:
        """Qwen-VL's bounds: positive integers, both or neither, min <= max, sides whole patches, not with NaFlex."""
        for name in ("min_pixels", "max_pixels", "resize_factor"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer (or None: off), got {value!r}")
        if (self.min_pixels is None) != (self.max_pixels is None):
            raise ValueError("min_pixels and max_pixels go together (Qwen-VL's sizing rule needs both); "
                             "set both or neither")
        if self.min_pixels is None:
            return
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels}); "
                             "swap them or raise max_pixels")
        if self.max_patches is not None:
            raise ValueError("max_patches (SigLIP2's NaFlex budget) and min_pixels / max_pixels (Qwen-VL's bounds) are "
                             "two sizing rules for the same images; set one of them")
        factor = self._factor
        if factor % self.patch_size[0] or factor % self.patch_size[1]:
            raise ValueError(f"resize_factor ({factor}) must be a multiple of the patch size {tuple(self.patch_size)}, "
                             "so that every side is whole patches; give patch x merge_size")

    @property
    def _factor(self) -> int:
        """The multiple each side is rounded to under Qwen-VL's rule: `resize_factor`, else the patch size."""
        return self.patch_size[0] if self.resize_factor is None else self.resize_factor

    @classmethod
    def of(cls, config: ViTConfig, max_patches: int | None = None) -> DataConfig:
        """The data config of a model's ViTConfig; `max_patches` replaces the model's own sizing rule (its patch
        budget, or its Qwen-VL pixel bounds)."""
        min_pixels, max_pixels = getattr(config, "min_pixels", None), getattr(config, "max_pixels", None)
        if max_patches is not None:
            min_pixels = max_pixels = None
        return cls(tuple(config.img_size), config.in_chans, tuple(config.mean), tuple(config.std),
                   config.crop_pct, config.interpolation, tuple(config.patch_size),
                   config.max_patches if max_patches is None else max_patches,
                   min_pixels, max_pixels, config.patch_size[0] * getattr(config, "merge_size", 1))

    def fit(self, interpolation: v2.InterpolationMode) -> Transform:
        """How a packed image is sized: to its NaFlex grid under `max_patches`, to Qwen-VL's `smart_resize` size
        under `min_pixels` / `max_pixels`, else its longer side capped at the model's image size; the aspect ratio
        kept (as nearly as whole patches allow) every way."""
        if self.max_patches is not None:
            return NaFlexResize(self.patch_size, self.max_patches, interpolation)
        if self.min_pixels is not None and self.max_pixels is not None:
            return SmartResize(self._factor, self.min_pixels, self.max_pixels, interpolation)
        return FitWithin(max(self.img_size), interpolation)

    def max_tokens(self, num_prefix_tokens: int) -> int:
        """Tokens per packed sequence by default: room for four images of the model's full size (or budget, or
        `max_pixels`)."""
        if self.max_patches is not None:
            return 4 * (self.max_patches + num_prefix_tokens)
        if self.max_pixels is not None:
            return 4 * (self.max_pixels // (self.patch_size[0] * self.patch_size[1]) + num_prefix_tokens)
        side = max(self.img_size)
        return 4 * (-(-side // self.patch_size[0]) * -(-side // self.patch_size[1]) + num_prefix_tokens)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) or (B, C, H, W) in [0, 1] -> normalised by mean/std (broadcast when one value)."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def _to_float(self) -> list[Transform]:
        """uint8 image -> float in [0, 1] -> normalised; one mean/std value is used for every channel."""
        return [v2.ToImage(), _Normalize(self.mean, self.std)]


class _Normalize:
    """uint8 (C, H, W) -> (x / 255 - mean) / std in float32: timm's ToTensor + Normalize, the same operations in the
    same order (so the same bits), in place on one fresh tensor."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)


def eval_transform(data: DataConfig, *, keep_aspect: bool = False) -> v2.Compose:
    """A PIL image or uint8 (C, H, W) tensor -> normalised float (C, *img_size): timm's centre-crop evaluation.
    With `keep_aspect` (packed batches) the image keeps its aspect ratio (`DataConfig.fit`)."""
    interpolation = INTERPOLATIONS[data.interpolation]
    if keep_aspect:
        return v2.Compose([data.fit(interpolation), *data._to_float()])
    height, width = data.img_size
    scale_size = (math.floor(height / data.crop_pct), math.floor(width / data.crop_pct))
    if scale_size[0] == scale_size[1]:
        resize: Transform = v2.Resize(scale_size[0], interpolation=interpolation, antialias=True)
    else:
        resize = _ShorterSideTo(scale_size, interpolation)
    return v2.Compose([resize, v2.CenterCrop(data.img_size), *data._to_float()])


class _ShorterSideTo:
    """Resize keeping the aspect ratio until the image covers `size` (timm's `ResizeKeepRatio`)."""

    def __init__(self, size: tuple[int, int], interpolation: v2.InterpolationMode) -> None:
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Any) -> Any:
        height, width = TF.get_size(image)
        ratio = min(height / self.size[0], width / self.size[1])
        return TF.resize(image, [round(height / ratio), round(width / ratio)], interpolation=self.interpolation,
                         antialias=True)


def train_transform(data: DataConfig, augment: Augment, *, keep_aspect: bool = False) -> v2.Compose:
    """The training view of an image: random-resized crop (or, with `keep_aspect`, a crop of the image's own aspect
    capped at the model's size), flip, auto-augment, colour jitter, normalisation, random erasing."""
    interpolation = INTERPOLATIONS[data.interpolation]
    if keep_aspect:
        crop: list[Transform] = [RandomAspectCrop(), data.fit(interpolation)]
    else:
        crop = [v2.RandomResizedCrop(data.img_size, scale=augment.scale, ratio=augment.ratio,
                                     interpolation=interpolation, antialias=True)]
    steps = [*crop, v2.RandomHorizontalFlip(augment.hflip)] if augment.hflip else [*crop]
    aa = auto_augment(augment.aa)
    if aa is not None:
        steps.append(aa)
    if augment.color_jitter:
        steps.append(v2.ColorJitter(*(augment.color_jitter,) * 3))
    steps += data._to_float()
    if augment.reprob:  # timm's default 'pixel' mode: the erased box gets normal noise per pixel
        steps.append(v2.RandomErasing(p=augment.reprob, value="random"))
    return v2.Compose(steps)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random stream in one epoch."""
    return (seed * 1_000_003 + epoch) * 1_000_033 + index


def seeded(transform: Callable[..., Any], *inputs: Any, seed: int) -> Any:
    """`transform(*inputs)` with torch's CPU random stream set to `seed`, and the caller's stream left as it was.
    (Only the CPU generator is touched: `torch.manual_seed` would also queue seeds for CUDA/XPU/MTIA, a stack
    capture each, which cost more than a small image's whole augmentation.)"""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return transform(*inputs)
    finally:
        generator.set_state(state)


class RandomAspectCrop:
    """A random crop of `scale` of the area with the image's own aspect ratio (NaViT-style packed training)."""

    def __init__(self, scale: tuple[float, float] = (0.35, 1.0)) -> None:
        self.scale = scale

    def __call__(self, image: Any) -> Any:
        height, width = TF.get_size(image)
        side = torch.empty(()).uniform_(*self.scale).item() ** 0.5
        h, w = max(1, round(height * side)), max(1, round(width * side))
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        return TF.crop(image, top, left, h, w)


class FitWithin:
    """Shrink so that the longer side is at most `max_side`, aspect ratio kept (never enlarged)."""

    def __init__(self, max_side: int, interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR) -> None:
        self.max_side, self.interpolation = max_side, interpolation

    def __call__(self, image: Any) -> Any:
        height, width = TF.get_size(image)
        longest = max(height, width)
        if longest <= self.max_side:
            return image
        size = [max(1, round(height * self.max_side / longest)), max(1, round(width * self.max_side / longest))]
        return TF.resize(image, size, interpolation=self.interpolation, antialias=True)


def naflex_size(height: int, width: int, patch_size: int | tuple[int, int], max_patches: int,
                eps: float = 1e-5) -> tuple[int, int]:
    """SigLIP2's NaFlex target size for a height x width image: the largest scale whose size, each side rounded up
    to a whole number of patches (at least one), gives at most `max_patches` patches; found by the same binary
    search as transformers' `get_image_size_for_max_num_patches`, so the same sizes."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size

    def scaled(scale: float, size: int, patch: int) -> int:
        return int(max(patch, math.ceil(size * scale / patch) * patch))

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        if (scaled(scale, height, ph) / ph) * (scaled(scale, width, pw) / pw) <= max_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height, ph), scaled(low, width, pw)


class NaFlexResize:
    """Resize to the image's NaFlex size (`naflex_size`): aspect ratio kept, whole patches, at most `max_patches`;
    antialiased, on the uint8 pixels as a tensor: SigLIP2's processor, to the bit."""

    def __init__(self, patch_size: tuple[int, int], max_patches: int,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR) -> None:
        self.patch_size, self.max_patches, self.interpolation = patch_size, max_patches, interpolation

    def __call__(self, image: Any) -> Any:
        if isinstance(image, Image.Image):  # resize the decoded pixels as a tensor, as SigLIP2's processor does
            image = TF.pil_to_tensor(image)
        size = naflex_size(*TF.get_size(image), self.patch_size, self.max_patches)
        return TF.resize(image, list(size), interpolation=self.interpolation, antialias=True)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL's target size for a height x width image: each side rounded to a multiple
    of `factor` (patch x merge_size), then, if the pixel count falls outside [min_pixels, max_pixels], both sides
    scaled by one factor (floored to fit under the maximum, ceiled to reach the minimum); the same arithmetic as
    transformers' `qwen2_vl.image_processing_qwen2_vl.smart_resize`, so the same sizes, overshoots included (a side
    is never below `factor`, so a very long thin image can exceed max_pixels). Aspect ratios over 200 are refused,
    as there."""
    if min(height, width) < 1:
        raise ValueError(f"an image to resize must have positive sides, got {height} x {width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a {height} x {width} image has an aspect ratio of "
                         f"{max(height, width) / min(height, width):g}, over the 200 Qwen-VL's smart_resize allows; "
                         "crop or pad it to at most 200:1")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class SmartResize:
    """Resize to the image's Qwen-VL size (`smart_resize`): sides multiples of `factor`, between `min_pixels` and
    `max_pixels` pixels; antialiased bicubic on the uint8 pixels as a tensor, before any rescaling: Qwen2-VL's
    (torchvision) image processor, to the bit."""

    def __init__(self, factor: int, min_pixels: int, max_pixels: int,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BICUBIC) -> None:
        self.factor, self.min_pixels, self.max_pixels = factor, min_pixels, max_pixels
        self.interpolation = interpolation

    def __call__(self, image: Any) -> Any:
        if isinstance(image, Image.Image):  # resize the decoded pixels as a tensor, as Qwen2-VL's processor does
            image = TF.pil_to_tensor(image)
        size = smart_resize(*TF.get_size(image), self.factor, self.min_pixels, self.max_pixels)
        return TF.resize(image, list(size), interpolation=self.interpolation, antialias=True)


def pil_to_tensor(image: Image.Image, in_chans: int) -> torch.Tensor:
    """A PIL image -> (C, H, W) float in [0, 1], converted to grey or RGB to match `in_chans`."""
    array = np.asarray(image.convert(pil_mode(in_chans)), dtype=np.float32) / 255.0
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def pil_mode(in_chans: int) -> str:
    """The PIL mode of a model's input: grey ('L') or 'RGB'."""
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ValueError(f"images can be read for in_chans 1 (grey) or 3 (RGB), not {in_chans}")
    return mode


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, *size), bilinear with antialiasing when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
