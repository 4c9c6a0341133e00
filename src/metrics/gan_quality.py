"""FID, KID and Inception Score of generated images on a feature extractor, computed by torchmetrics.

* FID, the Fréchet distance between Gaussians fitted to real and generated features (Heusel et al. 2017,
  "GANs trained by a two time-scale update rule converge to a local Nash equilibrium"): logged as
  ``val/fid``.
* KID, the unbiased squared MMD with the cubic polynomial kernel, averaged over random subsets (Bińkowski et
  al. 2018, "Demystifying MMD GANs"): ``val/kid`` (mean over subsets) and ``val/kid_std``.
* IS, exp E[KL(p(y|x) || p(y))] over splits of the generated set (Salimans et al. 2016, "Improved
  techniques for training GANs"): ``val/is`` and ``val/is_std``.

The numbers come from torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` /
``InceptionScore`` built with ``feature=<nn.Module>`` (the download-free path): each image goes once through
the backbone (src/metrics/backbones.py: Inception-v3 from a local file, or a classifier the framework trains
on the data itself), and its penultimate features (FID, KID) and logits (IS) are fed to the torchmetrics
objects through a pass-through feature module.

Real-image features are computed once per (backbone, real images, preprocessing) and cached, in memory
between validations and on disk under ``<cache_dir>/gan_metrics/`` (keyed by the SHA-256 of the backbone's
weights, its input size and the real images' bytes; written atomically). Randomness (KID subsets, IS split
order) comes from a generator seeded by ``seed`` and never touches the global RNG, so a checkpoint evaluated again gives the
same numbers.

:attr:`GANQuality.protocol` describes how the last numbers were made (backbone, its checkpoint's hash,
sample counts, resizing, KID/IS settings); summary.json stores it under ``metric_protocols`` beside the
numbers.

Under DDP each process evaluates its own shard of the validation images against all generated samples
(rank 0's numbers are logged); use one process for numbers to publish.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from src.metrics.backbones import (FeatureBackbone, atomic_save, check_backbone, load_backbone, mark_cache_dir,
                                   safe_load)
from src.metrics.manifold import manifold_metrics
from src.utils.errors import UserError
from src.utils.schema import require

log = logging.getLogger(__name__)

WHICH = ("fid", "kid", "is", "pr", "dc")
REFERENCES = ("val", "train")


class PassThrough(nn.Module):
    """The torchmetrics 'feature extractor' for features computed beforehand: returns its input."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) with scipy's matrix square root (a reference)."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class GANQuality(nn.Module):
    #: direction of each key compute() returns
    modes = {"fid": "min", "kid": "min", "kid_std": "min", "is": "max", "is_std": "min", "precision": "max",
             "recall": "max", "density": "max", "coverage": "max"}
    #: the keys an end-of-run table shows
    headline = ("fid", "kid", "is", "precision", "recall", "density", "coverage")

    """FID / KID / IS and the manifold metrics (improved precision and recall, density and coverage;
    src/metrics/manifold.py) of generated images against a reference set, in one feature space
    (update(x, real) / compute()).

    Args:
        backbone: digits_cnn | mnist_cnn | fashion_mnist_cnn | cifar10_cnn | imagenet_cnn | inception |
            inception_tf (src/metrics/backbones.py), or a FeatureBackbone instance.
        which: the metrics to compute, a subset of [fid, kid, is, pr, dc] (pr: precision and recall, dc:
            density and coverage).
        reference: ``val`` -- the real images given to update(x, real=True), i.e. the validation images; or
            ``train`` -- the whole training set, given once by the model (:meth:`set_reference`), as FID is
            usually computed (the features are cached on disk).
        checkpoint: a classifier run's checkpoint (or a backbone file) to use instead of the preset's cached
            network.
        inception_weights: local Inception-v3 weights (backbone inception / inception_tf).
        cache_dir: where backbones and real-feature statistics are cached (paths.cache_dir).
        data_root: the dataset root, to train a preset backbone that needs one.
        auto_train: train a missing preset backbone (at its first use, once: the first validation, not
            before training).
        kid_subsets, kid_subset_size: KID's number of subsets and their size (capped by the sample counts).
        is_splits: IS splits of the generated set.
        k_pr, k_dc: the neighbourhood sizes of precision / recall (3) and density / coverage (5).
        max_real: use at most this many real images (the first ones); null: all of them.
        on_missing: error (default) or warn: when the backbone is not available (no weights file, a preset
            that is never trained implicitly), fail before training, or log a warning and compute nothing.
        seed: the seed of the KID subsets and IS split order.
    """

    def __init__(self, backbone: str | FeatureBackbone = "digits_cnn", which: Sequence[str] = ("fid", "kid", "is"),
                 reference: str = "val", checkpoint: str | None = None,
                 inception_weights: str | None = None, cache_dir: str | None = None, data_root: str | None = None,
                 auto_train: bool = True, kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                 k_pr: int = 3, k_dc: int = 5, max_real: int | None = None, on_missing: str = "error",
                 seed: int = 0):
        super().__init__()
        which = [which] if isinstance(which, str) else list(which)
        unknown = [w for w in which if w not in WHICH]
        require(bool(which) and not unknown, "metrics.quality.which",
                f"choose from {list(WHICH)}, got {which}")
        require(reference in REFERENCES, "metrics.quality.reference",
                f"choose from {list(REFERENCES)}, got {reference!r}")
        require(kid_subsets >= 1 and kid_subset_size >= 2, "metrics.quality.kid_subsets",
                "kid_subsets must be >= 1 and kid_subset_size >= 2")
        require(is_splits >= 1, "metrics.quality.is_splits", f"must be >= 1, got {is_splits}")
        require(k_pr >= 1 and k_dc >= 1, "metrics.quality.k_pr", f"k_pr and k_dc must be >= 1, got {k_pr}, {k_dc}")
        self.which, self.reference, self.seed = which, reference, int(seed)
        self.kid_subsets, self.kid_subset_size, self.is_splits = int(kid_subsets), int(kid_subset_size), int(is_splits)
        self.k_pr, self.k_dc = int(k_pr), int(k_dc)
        self.max_real = max_real
        self.cache_dir = None if cache_dir is None else Path(os.path.expanduser(str(cache_dir)))
        require(on_missing in ("error", "warn"), "metrics.quality.on_missing", f"error or warn, got {on_missing!r}")
        self.on_missing = on_missing
        self._spec = {"name": backbone, "checkpoint": checkpoint, "inception_weights": inception_weights,
                      "cache_dir": cache_dir, "data_root": data_root, "auto_train": auto_train}
        self.disabled = False
        if not isinstance(backbone, FeatureBackbone):
            try:  # what would fail to load fails now; a preset that trains on first use trains then
                check_backbone(backbone, checkpoint=checkpoint, inception_weights=inception_weights,
                               cache_dir=cache_dir, auto_train=auto_train)
            except UserError as err:
                if on_missing == "error":
                    raise
                log.warning("GAN metrics disabled (FID / KID / IS not computed): %s", err)
                self.disabled = True
        # Not a registered submodule: the frozen backbone stays out of the model's state_dict and
        # checkpoints (and out of parameter counts); _apply keeps it on the module's device.
        object.__setattr__(self, "_backbone", backbone if isinstance(backbone, FeatureBackbone) else None)
        self._device = torch.device("cpu")
        self._reference: Tensor | None = None
        self._ref_hash = None
        self._real_batches: list[Tensor] = []
        self._real_hash = hashlib.sha256()
        self._fake_features: list[Tensor] = []
        self._fake_logits: list[Tensor] = []
        self._resize = "none"
        self._real_cache: tuple[str, Tensor] | None = None  # (key, features) of the last real set
        self.protocol: dict = {}

    def _load(self) -> FeatureBackbone | None:
        """The backbone, loaded (or trained) at its first use."""
        if self._backbone is None and not self.disabled:
            try:
                object.__setattr__(self, "_backbone", load_backbone(**self._spec))
                self._backbone.to(device=self._device)
            except UserError as err:
                if self.on_missing == "error":
                    raise
                log.warning("GAN metrics disabled (FID / KID / IS not computed): %s", err)
                self.disabled = True
        return self._backbone

    @property
    def backbone(self) -> FeatureBackbone | None:
        return self._load()

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self._device = fn(torch.zeros(())).device
        if self._backbone is not None:
            self._backbone.to(device=self._device)  # device only: the backbone stays float32
        return self

    # ------------------------------------------------------------------------------------------ state
    @property
    def needs_reference(self) -> bool:
        """Whether the model should hand over the training set (:meth:`set_reference`)."""
        return self.reference == "train" and self._reference is None and not self.disabled

    def set_reference(self, images: Tensor) -> None:
        """The reference set for ``reference: train``: every training image (capped by max_real)."""
        self._reference = images[: self.max_real] if self.max_real is not None else images
        self._ref_hash = None

    def reset(self) -> None:
        self._real_batches, self._real_hash = [], hashlib.sha256()
        self._fake_features, self._fake_logits = [], []

    def _add_real(self, x: Tensor) -> None:
        if self.max_real is not None:
            room = self.max_real - sum(len(b) for b in self._real_batches)
            if room <= 0:
                return
            x = x[:room]
        cpu = x.float().cpu().contiguous()
        self._real_hash.update(str(tuple(cpu.shape)).encode())
        self._real_hash.update(cpu.numpy().tobytes())
        self._real_batches.append(cpu)

    def update(self, x: Tensor, real: bool) -> None:
        if self.disabled or self._load() is None:
            return
        x = x.detach()
        if real:
            if self.reference == "val":
                self._add_real(x)
            return
        for chunk in x.split(250):
            features, logits = self._features(chunk)
            self._fake_features.append(features)
            self._fake_logits.append(logits)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        device = next(iter(self._backbone.parameters()), torch.zeros(())).device
        adapted, self._resize = self._backbone.adapt(x.to(device).float())
        with torch.no_grad():
            return self._backbone.extract(adapted)

    # ---------------------------------------------------------------------------------------- compute
    def _real_sets(self) -> tuple[Callable[[], Iterable[Tensor]], "hashlib._Hash", int]:
        """(the real images as an iterable of batches, their hash (backbone included), their number)."""
        if self.reference == "train":
            if self._reference is None:
                raise UserError("GAN metrics with reference=train: the model gave no training images")
            ref = self._reference
            batches = lambda: ref.split(500)  # noqa: E731
            if self._ref_hash is None:
                self._ref_hash = hashlib.sha256()
                for b in batches():
                    cpu = b.float().cpu().contiguous()
                    self._ref_hash.update(str(tuple(cpu.shape)).encode())
                    self._ref_hash.update(cpu.numpy().tobytes())
            h, n = self._ref_hash.copy(), len(ref)
        else:
            kept = list(self._real_batches)
            batches = lambda: kept  # noqa: E731
            h, n = self._real_hash.copy(), sum(len(b) for b in kept)
        h.update(self._backbone.weights_sha256.encode())
        h.update(repr(self._backbone.input_shape).encode())
        return batches, h, n

    def _cache_file(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "gan_metrics" / f"real-{self._backbone.name}-{key[:24]}.pt"

    def _real_features(self) -> tuple[Tensor, str, str, int]:
        """Features of the real images: (features, key, where they came from, their number)."""
        batches, h, n = self._real_sets()
        key = h.hexdigest()
        if self._real_cache is not None and self._real_cache[0] == key:
            return self._real_cache[1], key, "memory", n
        path = self._cache_file(key)
        if path is not None and path.is_file():
            try:
                blob = safe_load(path, "GAN metric statistics")
                features, origin = blob["features"], str(path)
            except Exception as err:  # noqa: BLE001 - a damaged cache file is recomputed
                log.warning("GAN metrics: ignoring unreadable cache %s (%s)", path, err)
                features = None
            if features is not None:
                self._real_cache = (key, features)
                return features, key, origin, n
        features = torch.cat([self._features(chunk)[0].cpu() for b in batches() for chunk in b.split(250)])
        if path is not None:
            mark_cache_dir(self.cache_dir)
            atomic_save({"features": features, "num_real": n, "weights_sha256": self._backbone.weights_sha256},
                        path)
        self._real_cache = (key, features)
        return features, key, "computed" + (f" -> {path}" if path is not None else ""), n

    def compute(self) -> dict[str, Tensor]:
        if self.disabled or self._load() is None:
            return {}
        n_fake = sum(len(f) for f in self._fake_features)
        nan = torch.tensor(float("nan"))
        needs_real = any(w in self.which for w in ("fid", "kid", "pr", "dc"))
        real_f, key, n_real, origin = None, None, 0, None
        if needs_real:
            real_f, key, origin, n_real = self._real_features()
        if n_fake < 2 or (needs_real and n_real < 2):
            log.warning("GAN metrics: need >= 2 real and generated images (got %d real, %d generated)", n_real, n_fake)
            return {k: nan for k in self._keys()}
        fake_f, fake_l = torch.cat(self._fake_features).cpu(), torch.cat(self._fake_logits).cpu()
        out: dict[str, Tensor] = {}
        protocol = {"metric": "GANQuality", "keys": [f"val/{k}" for k in self._keys()], **self._backbone.describe(),
                    "num_fake": n_fake, "resize": self._resize, "seed": self.seed, "reference": self.reference,
                    "torchmetrics": torchmetrics.__version__}
        if needs_real:
            cache = self._cache_file(key)
            protocol.update(num_real=n_real, real_stats_key=key[:24], real_features=origin,
                            real_stats_cache=None if cache is None else str(cache))
        d, k = fake_f.shape[1], fake_l.shape[1]
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics: "will save all extracted features in buffer"
            torch.manual_seed(self.seed)
            if "fid" in self.which:
                fid = FrechetInceptionDistance(feature=PassThrough(d), sync_on_compute=False)
                fid.update(real_f, real=True)
                fid.update(fake_f, real=False)
                out["fid"] = fid.compute().float()
            if "kid" in self.which:
                size = min(self.kid_subset_size, n_real, n_fake)
                kid = KernelInceptionDistance(feature=PassThrough(d), subsets=self.kid_subsets, subset_size=size,
                                              sync_on_compute=False)
                kid.update(real_f, real=True)
                kid.update(fake_f, real=False)
                mean, std = kid.compute()
                out["kid"], out["kid_std"] = mean.float(), std.float()
                protocol["kid"] = {"subsets": self.kid_subsets, "subset_size": size, "kernel": "cubic polynomial"}
            if "is" in self.which:
                score = InceptionScore(feature=PassThrough(k), splits=self.is_splits, sync_on_compute=False)
                score.update(fake_l)
                mean, std = score.compute()
                out["is"], out["is_std"] = mean.float(), std.float()
                protocol["is"] = {"splits": self.is_splits, "classes": self._backbone.num_classes}
            if "pr" in self.which or "dc" in self.which:
                manifold = manifold_metrics(real_f, fake_f, k_pr=self.k_pr, k_dc=self.k_dc)
                if "pr" in self.which:
                    out["precision"], out["recall"] = manifold["precision"], manifold["recall"]
                if "dc" in self.which:
                    out["density"], out["coverage"] = manifold["density"], manifold["coverage"]
                protocol["manifold"] = {"k_pr": self.k_pr, "k_dc": self.k_dc,
                                        "method": "Kynkaanniemi et al. 2019; Naeem et al. 2020"}
        self.protocol = protocol
        return out

    def _keys(self) -> list[str]:
        keys = []
        for w in self.which:
            keys += {"fid": ["fid"], "kid": ["kid", "kid_std"], "is": ["is", "is_std"],
                     "pr": ["precision", "recall"], "dc": ["density", "coverage"]}[w]
        return keys

    def extra_repr(self) -> str:
        return f"backbone={self._spec['name']}, which={self.which}, reference={self.reference}"
