"""Data order that is a pure function of (seed, epoch, position) and resumes mid-epoch.

:class:`ResumableBatchSampler` shuffles each epoch with a generator seeded by (seed, epoch) and shards
the permutation across processes itself (so the trainer runs with ``use_distributed_sampler=False``).
:class:`ResumableDataLoader` is *stateful* in Lightning's sense: its ``state_dict`` lands in checkpoints
and, on resume, the epoch continues at the first batch that was not yet trained on.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples < batch_size * world_size and drop_last:
            raise ValueError(
                f"{num_samples} samples make no full batch of {batch_size} on {world_size} process(es); "
                "lower dataset.batch_size"
            )
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.epoch = 0
        self.start_batch = 0  # set by a resume; consumed by the next __iter__

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        per_rank = self.num_samples // self.world_size
        # interleaved shards: batch b of every rank together is global batch b of a 1-process run
        # with world_size times the batch size
        return order[: per_rank * self.world_size].view(-1, self.world_size)[:, self.rank]

    def __len__(self) -> int:
        per_rank = self.num_samples // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        idx = self._indices()
        start, self.start_batch = self.start_batch, 0
        for b in range(start, len(self)):
            yield idx[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` whose state Lightning saves in checkpoints.

    ``progress`` returns how many batches of the current epoch have been trained on; the data module
    wires it to the trainer's loop progress (counting the sampler's own yields would be off by the
    batches Lightning prefetches).
    """

    def __init__(self, *args, progress: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict:
        sampler = self.batch_sampler
        return {"epoch": sampler.epoch, "batches_done": int(self._progress()) if self._progress else 0,
                "seed": sampler.seed, "world_size": sampler.world_size}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.batch_sampler
        if state.get("seed", sampler.seed) != sampler.seed or state.get("world_size", 1) != sampler.world_size:
            # A different seed or process count defines a different data order: start the epoch anew.
            return
        sampler.epoch = state["epoch"]
        sampler.start_batch = state["batches_done"] if state["batches_done"] < len(sampler) else 0
