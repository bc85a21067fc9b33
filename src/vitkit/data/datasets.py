"""Datasets: scikit-learn's bundled 8x8 digits (no download) and folders of images, one folder per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .packed import fit_within, random_aspect_crop
from .transforms import DataConfig, pil_to_tensor, random_resized_crop, resize, sample_generator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageDataset(Dataset):
    """Images + labels, preprocessed for one model; training views are augmented per (seed, epoch, index).

    `images` is either a (N, C, H, W) float tensor in [0, 1] (digits) or a list of file paths. With
    `keep_aspect` (packed training) images keep their own size and aspect ratio, the longer side capped
    at the model's size, instead of being resized to it.
    """

    def __init__(self, images: torch.Tensor | list[Path], labels: list[int], data: DataConfig, *,
                 train: bool = False, seed: int = 0, keep_aspect: bool = False) -> None:
        self.images = images
        self.labels = labels
        self.data = data
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.keep_aspect = keep_aspect
        # In-memory images are not augmented: preprocess them all once, not per sample and epoch.
        self._ready = (
            [data.normalize(self._sized(x)) for x in images] if isinstance(images, torch.Tensor) else None
        )

    def _sized(self, x: torch.Tensor) -> torch.Tensor:
        return fit_within(x, max(self.data.img_size)) if self.keep_aspect else resize(x, self.data.img_size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # Files get random crops and flips in training; the in-memory 8x8 digits are too small for
        # either (a 1-pixel shift is 12% of the image, and it cost accuracy), so they go in as they are.
        if self._ready is not None:
            return self._ready[index], self.labels[index]
        x = read_image(self.images[index], self.data.in_chans)
        if self.train and self.keep_aspect:
            x = random_aspect_crop(x, sample_generator(self.seed, self.epoch, index))
        elif self.train:
            x = random_resized_crop(x, self.data.img_size, sample_generator(self.seed, self.epoch, index))
        return self.data.normalize(self._sized(x)), self.labels[index]


def read_image(path: Path, in_chans: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return pil_to_tensor(image, in_chans)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


@dataclass
class Splits:
    """Train and validation sets and the class names, index = label."""

    train: ImageDataset
    val: ImageDataset
    classes: list[str]


def digits(data: DataConfig, *, val_fraction: float = 0.2, seed: int = 0, keep_aspect: bool = False) -> Splits:
    """scikit-learn's 1,797 handwritten 8x8 digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if data.in_chans != 1:
        raise ValueError(f"the digits data is greyscale: the model needs in_chans=1, it has {data.in_chans}")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    train_idx, val_idx = train_test_split(
        range(len(bunch.target)), test_size=val_fraction, stratify=bunch.target, random_state=0
    )
    labels = bunch.target.tolist()
    return Splits(
        ImageDataset(images[train_idx], [labels[i] for i in train_idx], data, train=True, seed=seed,
                     keep_aspect=keep_aspect),
        ImageDataset(images[val_idx], [labels[i] for i in val_idx], data, keep_aspect=keep_aspect),
        [str(d) for d in range(10)],
    )


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of root/<class>/<image>; errors name the folder at fault."""
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class folders; expected {root}/<class>/<image files>")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ValueError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += found
        labels += [label] * len(found)
    for path in files:  # open headers now: a bad file fails here with its name, not mid-epoch
        try:
            Image.open(path).close()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
    return files, labels, classes


def image_folder(root: str | Path, data: DataConfig, *, val_split: float | None = None, seed: int = 0,
                 keep_aspect: bool = False) -> Splits:
    """root/train/<class>/* and root/val/<class>/*, or root/<class>/* split by `val_split` (stratified)."""
    root = Path(root)
    if (root / "train").is_dir():
        files, labels, classes = scan_folder(root / "train")
        if not (root / "val").is_dir():
            raise FileNotFoundError(f"{root} has train/ but no val/; add it, or point at one folder with --val-split")
        val_files, val_labels, val_classes = scan_folder(root / "val")
        if val_classes != classes:
            raise ValueError(f"{root}/val classes {val_classes} differ from train classes {classes}")
    else:
        if not val_split:
            if not root.is_dir():
                raise FileNotFoundError(f"data directory not found: {root}")
            raise ValueError(f"{root} has no train/ and val/ folders; give --val-split (e.g. 0.2) to split it")
        all_files, all_labels, classes = scan_folder(root)
        from sklearn.model_selection import train_test_split

        train_idx, val_idx = train_test_split(
            range(len(all_labels)), test_size=val_split, stratify=all_labels, random_state=seed
        )
        files, labels = [all_files[i] for i in train_idx], [all_labels[i] for i in train_idx]
        val_files, val_labels = [all_files[i] for i in val_idx], [all_labels[i] for i in val_idx]
    return Splits(
        ImageDataset(files, labels, data, train=True, seed=seed, keep_aspect=keep_aspect),
        ImageDataset(val_files, val_labels, data, keep_aspect=keep_aspect),
        classes,
    )


def load_splits(source: str, data: DataConfig, *, val_split: float | None = None, seed: int = 0,
                keep_aspect: bool = False) -> Splits:
    """'digits' (bundled) or a folder path; `keep_aspect` for packed batches (see `ImageDataset`)."""
    if source == "digits":
        return digits(data, seed=seed, keep_aspect=keep_aspect)
    return image_folder(source, data, val_split=val_split, seed=seed, keep_aspect=keep_aspect)
