"""Datasets: scikit-learn's bundled 8x8 digits (no download) and folders of images, one folder per class."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; PIL decodes everything when it is gone
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a torchvision without image decoding
    decode_image = None

from ..runtime import atomic_path
from .augment import INTERPOLATIONS, Augment
from .transforms import (
    DataConfig,
    Transform,
    eval_transform,
    pil_mode,
    pil_to_tensor,
    resize,
    sample_seed,
    seeded,
    train_transform,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageDataset(Dataset):
    """Images + labels, each turned into the model's input by `transform`.

    `images` is a (N, C, H, W) float tensor in [0, 1] (the digits, preprocessed once) or a list of file paths.
    With `train`, an item is asked for by an (epoch, index) key (`ShardedBatchSampler(epoch_keys=True)`) and its
    random view is drawn from a stream seeded by (seed, epoch, index): the same in any worker, persistent or not.
    With `skip_unreadable`, a file that fails to decode mid-run is replaced by the next readable one (warned).
    """

    def __init__(self, images: torch.Tensor | list[Path], labels: list[int], transform: Transform, *, in_chans: int,
                 train: bool = False, seed: int = 0, skip_unreadable: bool = False) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.in_chans, self.train, self.seed, self.skip_unreadable = in_chans, train, seed, skip_unreadable
        # In-memory images are not augmented: preprocess them all once, not per sample and epoch.
        self._ready = [transform(x) for x in images] if isinstance(images, torch.Tensor) else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self._ready is not None:
            return self._ready[index], self.labels[index]
        for tries in range(len(self)):
            at = (index + tries) % len(self)
            try:  # evaluation decodes with PIL, so that its resize is timm's to the bit
                image = (read_pixels if self.train else open_image)(self.images[at], self.in_chans)
            except ValueError:
                if not self.skip_unreadable:
                    raise
                warnings.warn(f"skipped unreadable image {self.images[at]}", stacklevel=1)
                continue
            if self.train:
                return seeded(self.transform, image, seed=sample_seed(self.seed, epoch, index)), self.labels[at]
            return self.transform(image), self.labels[at]
        raise ValueError(f"none of the {len(self)} images of this dataset can be read")


# What torchvision.io decodes itself; other files (BMP, TIFF) go through PIL.
_TV_DECODES = {".jpg", ".jpeg", ".png", ".webp"}


def read_pixels(path: Path, in_chans: int) -> torch.Tensor:
    """The image at `path` as uint8 (C, H, W), grey or RGB to match `in_chans`, decoded by torchvision.io: with the
    training transforms on its tensors it measured 1.2-2x PIL's speed on this project's CPU. ValueError names the
    file when it cannot be read."""
    if decode_image is None or Path(path).suffix.lower() not in _TV_DECODES:
        return TF.pil_to_tensor(open_image(path, in_chans))
    mode = ImageReadMode.GRAY if pil_mode(in_chans) == "L" else ImageReadMode.RGB
    try:
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the deprecation is handled by the fallback above
            pixels = decode_image(data, mode=mode)
    except (RuntimeError, OSError, ValueError) as err:  # its message starts with the C++ source location: drop that
        reason = re.sub(r"^\w+, \S+:\d+, ", "", str(err).splitlines()[0])
        raise ValueError(f"cannot read image {path}: {reason}") from err
    return pixels if pixels.shape[0] == in_chans else TF.pil_to_tensor(open_image(path, in_chans))  # grey WebP


def open_image(path: Path, in_chans: int) -> Image.Image:
    """The decoded image at `path`, grey or RGB to match `in_chans`; ValueError naming the file when unreadable."""
    mode = pil_mode(in_chans)
    try:
        with Image.open(path) as image:
            return image.convert(mode)  # a decoded copy (also when already in `mode`), the file closed
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def read_image(path: Path, in_chans: int) -> torch.Tensor:
    """The image at `path` as (C, H, W) float in [0, 1]."""
    return pil_to_tensor(open_image(path, in_chans), in_chans)


@dataclass
class Splits:
    """Train and validation sets, the class names (index = label), and the files skipped as unreadable."""

    train: ImageDataset
    val: ImageDataset
    classes: list[str]
    skipped: list[Path] = field(default_factory=list)


def digits(data: DataConfig, *, seed: int = 0, keep_aspect: bool = False) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, split 80/20 stratified with a fixed seed.

    They go in as they are, resized to the model (an 8x8 image is too small for crops: a 1-pixel shift is 12% of it
    and it cost accuracy); for augmentation, write them out as a folder with `write_digits_folder`.
    """
    if data.in_chans != 1:
        raise ValueError(f"the digits data is greyscale: the model needs in_chans=1, it has {data.in_chans}")
    images, labels, (train_idx, val_idx) = _digits()
    sized = data.fit(INTERPOLATIONS["bilinear"]) if keep_aspect else (lambda x: resize(x, data.img_size))

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return data.normalize(sized(x))

    return Splits(
        ImageDataset(images[train_idx], [labels[i] for i in train_idx], prepare, in_chans=1, train=True, seed=seed),
        ImageDataset(images[val_idx], [labels[i] for i in val_idx], prepare, in_chans=1),
        [str(d) for d in range(10)],
    )


def _digits() -> tuple[torch.Tensor, list[int], tuple[list[int], list[int]]]:
    """(images (N, 1, 8, 8) in [0, 1], labels, (train indices, val indices)) of the fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    train_idx, val_idx = train_test_split(
        range(len(bunch.target)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    return images, bunch.target.tolist(), (list(train_idx), list(val_idx))


def write_digits_folder(root: str | Path, *, size: int = 32, quality: int = 95) -> Path:
    """The digits as root/train/<digit>/*.jpg and root/val/<digit>/*.jpg (the same fixed 80/20 split), upscaled to
    `size` x `size` RGB JPEGs: a small real folder to fine-tune on with augmentation. Returns `root`."""
    root = Path(root)
    images, labels, (train_idx, val_idx) = _digits()
    for split, indices in (("train", train_idx), ("val", val_idx)):
        for i in indices:
            folder = root / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (resize(images[i], (size, size))[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            with atomic_path(folder / f"{i:04d}.jpg") as tmp:
                Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp, format="JPEG", quality=quality)
    return root


def scan_folder(root: Path, *, skip_unreadable: bool = False) -> tuple[list[Path], list[int], list[str], list[Path]]:
    """(files, labels, classes, skipped) of root/<class>/<image>; errors name the folder or file at fault.

    Every file's header is opened now, so a file that is no image fails here with its name, not mid-epoch; with
    `skip_unreadable` it is left out and listed in `skipped` instead.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class folders; expected {root}/<class>/<image files>")
    files, labels, skipped = [], [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in found:
            try:
                Image.open(path).close()
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                if not skip_unreadable:
                    raise ValueError(f"cannot read image {path}: {err} (--skip-unreadable leaves such files "
                                     "out)") from err
                skipped.append(path)
                continue
            files.append(path)
            labels.append(label)
        if label not in labels[-1:]:
            raise ValueError(f"class folder {root / name} holds no readable images")
    return files, labels, classes, skipped


def image_folder(root: str | Path, data: DataConfig, *, val_split: float | None = None, seed: int = 0,
                 keep_aspect: bool = False, augment: Augment | None = None, skip_unreadable: bool = False) -> Splits:
    """root/train/<class>/* and root/val/<class>/*, or root/<class>/* split by `val_split` (stratified).

    Training views are `augment`ed (default: timm's random-resized crop and flip); evaluation views are timm's
    centre crop of `data.crop_pct`.
    """
    root = Path(root)
    if (root / "train").is_dir():
        files, labels, classes, skipped = scan_folder(root / "train", skip_unreadable=skip_unreadable)
        if not (root / "val").is_dir():
            raise FileNotFoundError(f"{root} has train/ but no val/; add it, or point at one folder with --val-split")
        val_files, val_labels, val_classes, val_skipped = scan_folder(root / "val", skip_unreadable=skip_unreadable)
        skipped += val_skipped
        if val_classes != classes:
            raise ValueError(f"{root}/val classes {val_classes} differ from train classes {classes}")
    else:
        if not val_split:
            if not root.is_dir():
                raise FileNotFoundError(f"data directory not found: {root}")
            raise ValueError(f"{root} has no train/ and val/ folders; give --val-split (e.g. 0.2) to split it")
        all_files, all_labels, classes, skipped = scan_folder(root, skip_unreadable=skip_unreadable)
        from sklearn.model_selection import train_test_split

        train_idx, val_idx = train_test_split(
            range(len(all_labels)), test_size=val_split, stratify=all_labels, random_state=seed
        )
        files, labels = [all_files[i] for i in train_idx], [all_labels[i] for i in train_idx]
        val_files, val_labels = [all_files[i] for i in val_idx], [all_labels[i] for i in val_idx]
    train = train_transform(data, augment or Augment(), keep_aspect=keep_aspect)
    return Splits(
        ImageDataset(files, labels, train, in_chans=data.in_chans, train=True, seed=seed,
                     skip_unreadable=skip_unreadable),
        ImageDataset(val_files, val_labels, eval_transform(data, keep_aspect=keep_aspect), in_chans=data.in_chans,
                     skip_unreadable=skip_unreadable),
        classes,
        skipped,
    )


def load_splits(source: str, data: DataConfig, *, val_split: float | None = None, seed: int = 0,
                keep_aspect: bool = False, augment: Augment | None = None, skip_unreadable: bool = False) -> Splits:
    """'digits' (bundled, in memory) or a folder path; `keep_aspect` for packed batches (see `ImageDataset`)."""
    if source == "digits":
        if augment is not None and augment.colour_or_aa:
            raise ValueError("the bundled 8x8 digits are used as they are: --aa, --color-jitter and --reprob need "
                             "an image folder (vitkit.data.write_digits_folder writes the digits as one)")
        return digits(data, seed=seed, keep_aspect=keep_aspect)
    return image_folder(source, data, val_split=val_split, seed=seed, keep_aspect=keep_aspect, augment=augment,
                        skip_unreadable=skip_unreadable)
