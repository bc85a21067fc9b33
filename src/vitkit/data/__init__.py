"""Data for training and evaluation: bundled digits, image folders, transforms, sharded sampling."""

from .datasets import ImageDataset, Splits, digits, image_folder, load_splits, read_image
from .sampler import ShardedBatchSampler
from .transforms import DataConfig

__all__ = [
    "DataConfig",
    "ImageDataset",
    "ShardedBatchSampler",
    "Splits",
    "digits",
    "image_folder",
    "load_splits",
    "read_image",
]
