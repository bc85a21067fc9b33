"""What `vitkit embed` reads: an image folder (class folders give labels), a list of files, the bundled digits, or
images already prepared as tensors. Each becomes a dataset of (image, label) with a stable row order and a name per
row for the index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data import DataConfig, ImageDataset, digits, eval_transform
from ..data.datasets import IMAGE_SUFFIXES, scan_folder

SPLITS = ("train", "val")


@dataclass
class Source:
    """Rows to embed: `dataset[i]` is (image, label index or -1), `names[i]` its path (or name), `classes` the
    label names (empty when unlabelled)."""

    dataset: Dataset
    names: list[str]
    labels: list[int]
    classes: list[str]
    description: str

    def label_name(self, i: int) -> str:
        return self.classes[self.labels[i]] if self.labels[i] >= 0 else ""


class _Tensors(Dataset):
    """Prepared images: a (N, C, H, W) tensor or a list of (C, H, W) tensors of any sizes."""

    def __init__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], -1


def tensor_source(images: torch.Tensor | Sequence[torch.Tensor]) -> Source:
    """Images already resized and normalised for the model (no transform is applied)."""
    if isinstance(images, torch.Tensor) and images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or a list of (C, H, W) tensors, got shape {tuple(images.shape)}")
    if not isinstance(images, torch.Tensor) and not all(isinstance(x, torch.Tensor) and x.dim() == 3 for x in images):
        raise ValueError("images must be (N, C, H, W) or a list of (C, H, W) tensors")
    if not len(images):
        raise ValueError("no images to embed: the tensor or list is empty")
    return Source(_Tensors(images), [str(i) for i in range(len(images))], [-1] * len(images), [], "tensors")


def _listed_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(root: Path) -> bool:
    """Whether `root` holds class folders: subfolders with images, and no images of its own."""
    subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
    return bool(subfolders) and not loose


def open_source(data: str | Path | Sequence[str | Path], config: DataConfig, *, split: str | None = None,
                packing: bool = False) -> Source:
    """`data`: 'digits' (the bundled set; `split` picks train or val), a folder (class folders give labels; one
    with train/ and val/ needs `split`), or a list of image files. Images get the eval transform of `config`
    (timm's centre crop; with `packing`, aspect ratio kept)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(data, (str, Path)) and str(data) == "digits":
        if split is None:
            raise ValueError("--data digits has a train and a val split: pass --split train or --split val")
        splits = digits(config, keep_aspect=packing)
        dataset = splits.train if split == "train" else splits.val  # in-memory digits are never augmented
        names = [f"digits/{split}/{i:04d}" for i in range(len(dataset))]
        return Source(dataset, names, list(dataset.labels), splits.classes, f"digits ({split})")
    transform = eval_transform(config, keep_aspect=packing)
    if not isinstance(data, (str, Path)):
        files = [Path(p) for p in data]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"image not found: {missing[0]}")
        if not files:
            raise ValueError("no images to embed: the file list is empty")
        return Source(ImageDataset(files, [-1] * len(files), transform, in_chans=config.in_chans),
                      [str(p) for p in files], [-1] * len(files), [], f"{len(files)} files")
    root = Path(data)
    if root.is_file():
        raise ValueError(f"--data {root} is a file: --data takes a folder; give image files as arguments instead")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        if split is None:
            raise ValueError(f"{root} has train/ and val/ folders: pass --split train or --split val")
        root = root / split
    elif split is not None:
        raise ValueError(f"--split {split} needs {root}/train and {root}/val folders; drop --split")
    if _class_folders(root):
        files, labels, classes, _ = scan_folder(root)
    else:
        files, labels, classes = _listed_files(root), [], []
        labels = [-1] * len(files)
        if not files:
            raise ValueError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point --data at a "
                             "folder of images or class folders")
    return Source(ImageDataset(files, labels, transform, in_chans=config.in_chans), [str(p) for p in files],
                  labels, classes, str(root))
