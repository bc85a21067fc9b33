"""Peak bytes of live tensors on any device, for CPU where the allocator keeps no statistics."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """Counts the storage of every tensor an operator returns inside the mode until that storage is freed.

    `peak` is the most bytes alive at once, not counting tensors made before the mode started (inputs,
    weights), nor their views and aliases made inside it (`x.to(x.dtype)` is `x`). Kernels' private scratch
    buffers are invisible; on CPU they are small next to the tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._sizes:  # in-place results share a counted storage
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key)

    supports_higher_order_operators = True  # flex attention: its outputs count, its insides are the kernel's

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        schema = getattr(func, "_schema", None)  # higher-order operators have none
        if schema is not None and schema.is_mutable:  # in-place and out= operators write into others' storage
            return out
        inputs = {_storage(t) for t in tree_flatten((args, kwargs))[0] if _real(t)}
        for item in tree_flatten(out)[0]:
            if _real(item) and _storage(item) not in inputs:  # an output sharing an input's storage is a view
                self._track(item)
        return out


def _real(item: object) -> bool:
    return isinstance(item, torch.Tensor) and item.device.type != "meta"


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()
