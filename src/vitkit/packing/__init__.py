"""Packed batches (NaViT): images of any size as token sequences whose attention stays inside each image."""

from .batch import PackedBatch, TokenDrop, first_fit_decreasing, image_patches, pack_images, tile_order

__all__ = ["PackedBatch", "TokenDrop", "first_fit_decreasing", "image_patches", "pack_images", "tile_order"]
