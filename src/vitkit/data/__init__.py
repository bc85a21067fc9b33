"""Data for training and evaluation: bundled digits, image folders, transforms, sharded sampling."""

from .augment import Augment
from .datasets import ImageDataset, Splits, digits, image_folder, load_splits, read_image, write_digits_folder
from .mixup import BatchMix
from .sampler import ShardedBatchSampler
from .transforms import DataConfig, SmartResize, eval_transform, naflex_size, smart_resize, train_transform

__all__ = [
    "Augment",
    "BatchMix",
    "DataConfig",
    "ImageDataset",
    "ShardedBatchSampler",
    "SmartResize",
    "Splits",
    "digits",
    "eval_transform",
    "image_folder",
    "load_splits",
    "naflex_size",
    "read_image",
    "smart_resize",
    "train_transform",
    "write_digits_folder",
]
