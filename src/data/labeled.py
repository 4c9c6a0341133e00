"""Semi-supervised classification data: a small labeled subset of a classification data module's training
set, balanced across classes, and the unlabeled rest.

``num_labels: 100`` keeps ``num_labels / K`` images per class (the remainder spread over classes chosen by
the seed) drawn with a generator seeded by (``labels_seed`` or the run seed); their indices into the
training set are written to ``<save_dir>/labeled_ids.txt``. The protocol of Salimans et al. 2016
("Improved techniques for training GANs", semi-supervised MNIST with 100 labels).

Train batches: ``{"labeled": (x, y), "unlabeled": (x, y_diagnostic)}`` when ``unlabeled`` is true (the
unlabeled loader still yields the true labels, for diagnostics only: never train on them), else plain
``(x, y)`` labeled batches. Either way an epoch is one pass over the *whole* training set: the labeled
subset is cycled (each labeled image occurs about N / num_labels times per epoch), so a supervised
baseline on the same labels and a semi-supervised model train for the same number of steps (the
unlabeled pool is cycled to the same length, so both loaders have the same batches per epoch). Both loaders
are seeded and resume exactly (src/data/sampling.py). ``num_labels: null`` is the plain data module.

Classes: :class:`LabeledDigitsDataModule`, :class:`LabeledMNISTDataModule`,
:class:`LabeledFashionMNISTDataModule`, :class:`LabeledCIFAR10DataModule` (the base module's arguments
plus ``num_labels``, ``labels_seed``, ``unlabeled``, ``save_dir``).
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from src.data.base import save_labeled_ids
from src.data.cifar10 import CIFAR10DataModule
from src.data.digits import DigitsDataModule
from src.data.mnist import FashionMNISTDataModule, MNISTDataModule
from src.utils.errors import DataError
from src.utils.schema import require

#: added to the run seed for the unlabeled loader's order, so it differs from the labeled loader's
UNLABELED_SEED_OFFSET = 1_000_003
#: salt of the labeled-subset draw (independent of the data order drawn from the same seed)
LABELED_SALT = 0x1AB


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The int64 labels of a classification dataset (TensorDataset, UInt8Images, Subset, ImageFolder)."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    if hasattr(dataset, "tensors"):
        return dataset.tensors[1].long()
    if hasattr(dataset, "labels"):
        return torch.as_tensor(dataset.labels).long()
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets).long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def balanced_subset(labels: torch.Tensor, num_labels: int, seed: int) -> torch.Tensor:
    """Sorted indices of `num_labels` items, as equal a number per class as possible, drawn by `seed`."""
    classes = torch.unique(labels)
    k = len(classes)
    g = torch.Generator().manual_seed(int(seed) * 7919 + LABELED_SALT)
    per_class = torch.full((k,), num_labels // k, dtype=torch.long)
    per_class[torch.randperm(k, generator=g)[: num_labels % k]] += 1
    chosen = []
    for c, n in zip(classes.tolist(), per_class.tolist()):
        pool = torch.nonzero(labels == c).flatten()
        if len(pool) < n:
            raise DataError(f"dataset.num_labels={num_labels}: class {c} has only {len(pool)} training images "
                            f"(needs {n})")
        chosen.append(pool[torch.randperm(len(pool), generator=g)[:n]])
    return torch.cat(chosen).sort().values


class Cycled(Dataset):
    """`indices` of `dataset` repeated to `length` items (position p reads indices[p % n])."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor, length: int):
        self.dataset, self.indices, self.length = dataset, indices.tolist(), int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, position: int):
        if not 0 <= position < self.length:
            raise IndexError(position)
        return self.dataset[self.indices[position % len(self.indices)]]


class LabeledSubsetMixin:
    """Turns a classification data module's ``train_set`` into a labeled subset (+ an unlabeled pool)."""

    def __init__(self, *args, num_labels: int | None = None, labels_seed: int | None = None,
                 unlabeled: bool = True, save_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        require(num_labels is None or (isinstance(num_labels, int) and not isinstance(num_labels, bool)
                                       and num_labels >= 1),
                "dataset.num_labels", f"must be null (every image labeled) or an integer >= 1, got {num_labels!r}")
        self.num_labels, self.labels_seed = num_labels, labels_seed
        self.unlabeled = bool(unlabeled)
        self.save_dir = None if save_dir is None else str(save_dir)
        self.labeled_ids: list[int] = []
        self.labeled_set: Dataset | None = None
        self.unlabeled_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.labeled_set is not None or self.num_labels is None:
            return
        full = self.train_set
        labels = dataset_labels(full)
        require(self.num_labels < len(full), "dataset.num_labels",
                f"{self.num_labels} is not fewer than the {len(full)} training images")
        seed = self.seed if self.labels_seed is None else int(self.labels_seed)
        labeled = balanced_subset(labels, self.num_labels, seed)
        mask = torch.ones(len(full), dtype=torch.bool)
        mask[labeled] = False
        rest = torch.nonzero(mask).flatten()
        length = max(len(full), self.batch_size * self._rank()[1])
        self.labeled_ids = labeled.tolist()
        self.labeled_set = Cycled(full, labeled, length)
        self.unlabeled_set = Cycled(full, rest, length)
        self.train_set = self.labeled_set
        self._save_ids()

    def _save_ids(self) -> None:
        save_labeled_ids(self.save_dir, self.labeled_ids, self._rank()[0])

    def train_dataloader(self):
        if self.num_labels is None or not self.unlabeled:
            return super().train_dataloader()
        return {"labeled": self._train_loader(self.labeled_set),
                "unlabeled": self._train_loader(self.unlabeled_set, seed_offset=UNLABELED_SEED_OFFSET)}


class LabeledDigitsDataModule(LabeledSubsetMixin, DigitsDataModule):
    pass


class LabeledMNISTDataModule(LabeledSubsetMixin, MNISTDataModule):
    pass


class LabeledFashionMNISTDataModule(LabeledSubsetMixin, FashionMNISTDataModule):
    pass


class LabeledCIFAR10DataModule(LabeledSubsetMixin, CIFAR10DataModule):
    pass
