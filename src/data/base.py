"""The base data module for datasets held as tensors or map-style datasets: seeded, resumable
training order sharded across processes, fixed validation data."""
from __future__ import annotations

from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from src.data.sampling import ResumableBatchSampler, ResumableDataLoader


class Batch(tuple):
    """A batch that is already collated (one tensor per field)."""


class Tensors(TensorDataset):
    """Tensors held in memory, served a batch at a time: the DataLoader hands ``__getitems__`` the batch's
    indices and gets the batch back from one indexing op per tensor, instead of fetching item by item and
    collating (for small models that per-item work costs as much as a training step)."""

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return Batch(t[index] for t in self.tensors)


def collate(batch):
    """PyTorch's default collate, except that a :class:`Batch` passes as it is."""
    return batch if isinstance(batch, Batch) else default_collate(batch)


def images_of(dataset: Dataset, batch_size: int = 500) -> torch.Tensor:
    """Every image (the first field of each item) of a dataset, in order, as one tensor."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return torch.cat([batch[0] for batch in loader])


class ResumableDataModule(pl.LightningDataModule):
    """Subclasses implement :meth:`setup` to set ``self.train_set`` and ``self.val_set`` (and ``self.test_set``
    where the data have a test split for reporting) and declare ``shape`` (the shape of one sample); those
    that read files override :meth:`check`."""

    shape: Sequence[int] = ()
    #: the batch sampler of training loaders (a subclass may e.g. tag each index with the epoch)
    train_batch_sampler_cls: type[ResumableBatchSampler] = ResumableBatchSampler
    #: the collate function of every loader
    collate_fn: Callable = staticmethod(collate)

    def __init__(self, batch_size: int = 64, val_batch_size: int | None = None, num_workers: int = 0,
                 seed: int = 0, shuffle: bool = True, pin_memory: bool = False):
        super().__init__()
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.seed, self.shuffle, self.pin_memory = num_workers, seed, shuffle, pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def has_test_split(self) -> bool:
        """Whether :meth:`test_dataloader` has data (after setup)."""
        return self.test_set is not None

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        # Batches of the current epoch whose training step has finished (checkpoints are written after
        # the step, in on_train_batch_end, before Lightning counts the batch as completed).
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _train_loader(self, dataset: Dataset, seed_offset: int = 0) -> DataLoader:
        """A seeded, resumable, sharded training loader over `dataset`. A second training loader of the
        same run (e.g. over unlabeled data) passes its own `seed_offset` so that its order differs."""
        rank, world = self._rank()
        sampler = self.train_batch_sampler_cls(len(dataset), self.batch_size, shuffle=self.shuffle,
                                               seed=self.seed + seed_offset, drop_last=True, rank=rank,
                                               world_size=world)
        return ResumableDataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                   pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                                   collate_fn=self.collate_fn, progress=self._progress)

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.train_set)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world = self._rank()
        sampler = ResumableBatchSampler(len(dataset), self.val_batch_size, shuffle=False, drop_last=False,
                                        rank=rank, world_size=world)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=self.collate_fn)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            from src.utils.errors import DataError

            raise DataError(f"{type(self).__name__} has no test split (e.g. dataset=scenes with dataset.num_test > 0)")
        return self._eval_loader(self.test_set)

    def check(self) -> object:
        """Fail fast on missing or corrupt data (before any logger or trainer starts): data modules that
        read files check them here; generated data has nothing to check."""
        return None


def save_labeled_ids(save_dir, ids, rank: int = 0) -> None:
    """Write the ids of a run's labeled subset to <save_dir>/labeled_ids.txt (rank 0, atomically)."""
    if save_dir is None or rank != 0:
        return
    import os
    from pathlib import Path

    directory = Path(save_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".labeled_ids.txt.{os.getpid()}"
    tmp.write_text("".join(f"{i}\n" for i in ids))
    tmp.replace(directory / "labeled_ids.txt")
