"""Global batches split across ranks, so N processes see exactly the batches one process would."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedBatchSampler(Sampler[list[int] | list[tuple[int, int]]]):
    """Yields this rank's slice of each global batch of a seeded, per-epoch permutation.

    Rank r of w takes positions [r*b, (r+1)*b) of every global batch of w*b samples, so the union
    over ranks of step k is the single-process batch k. `start_batch` skips batches already done
    (mid-epoch resume). With `epoch_keys` each sample is yielded as (epoch, index): the dataset learns the
    epoch from the key, which reaches persistent workers too.
    """

    def __init__(self, num_samples: int, global_batch: int, *, rank: int = 0, world: int = 1, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, epoch_keys: bool = False) -> None:
        if global_batch <= 0:
            raise ValueError(f"batch size must be positive, got {global_batch}")
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} must be divisible by the {world} processes")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.local_batch = global_batch // world
        self.rank = rank
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch_keys = epoch_keys
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        for batch in range(self.start_batch, len(self)):
            chunk = order[batch * self.global_batch : (batch + 1) * self.global_batch]
            # the last, short batch (eval only) is split as evenly as it goes
            per_rank = -(-len(chunk) // (self.global_batch // self.local_batch))
            mine = chunk[self.rank * per_rank : (self.rank + 1) * per_rank]
            if len(mine):
                yield [(self.epoch, i) for i in mine.tolist()] if self.epoch_keys else mine.tolist()
