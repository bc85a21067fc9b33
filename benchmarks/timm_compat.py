"""A fix for timm's RandAugment on Pillow >= 12, applied by the benchmarks that run timm's augmentation.

timm's `PosterizeIncreasing` keeps 4 - int(level * 4 / 10) bits: 0 at magnitude 10, which `mstd` reaches. Older Pillow
turned 0 bits into a black image; Pillow 12+ raises "bits must be between or equal to 1 and 8" and stops the loader.
Keeping at least 1 bit is the nearest image Pillow still makes.
"""

from __future__ import annotations


def patch_timm_posterize() -> None:
    from PIL import ImageOps
    from timm.data import auto_augment

    def posterize(img, bits_to_keep, **__):
        return img if bits_to_keep >= 8 else ImageOps.posterize(img, max(1, bits_to_keep))

    old = auto_augment.posterize
    auto_augment.posterize = posterize
    for name, op in auto_augment.NAME_TO_OP.items():  # the op table holds the function itself
        if op is old:
            auto_augment.NAME_TO_OP[name] = posterize
