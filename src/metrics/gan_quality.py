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
from typing import Sequence

import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from src.metrics.backbones import FeatureBackbone, atomic_save, load_backbone, mark_cache_dir, safe_load
from src.utils.errors import UserError
from src.utils.schema import require

log = logging.getLogger(__name__)

WHICH = ("fid", "kid", "is")


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
    modes = {"fid": "min", "kid": "min", "kid_std": "min", "is": "max", "is_std": "min"}

    """FID / KID / IS of generated images against the real validation images (update(x, real) / compute()).

    Args:
        backbone: digits_cnn | mnist_cnn | fashion_mnist_cnn | cifar10_cnn | imagenet_cnn | inception |
            inception_tf (src/metrics/backbones.py), or a FeatureBackbone instance.
        which: the metrics to compute, a subset of [fid, kid, is].
        checkpoint: a classifier run's checkpoint (or a backbone file) to use instead of the preset's cached
            network.
        inception_weights: local Inception-v3 weights (backbone inception / inception_tf).
        cache_dir: where backbones and real-feature statistics are cached (paths.cache_dir).
        data_root: the dataset root, to train a preset backbone that needs one.
        auto_train: train a missing preset backbone (on first use, once).
        kid_subsets, kid_subset_size: KID's number of subsets and their size (capped by the sample counts).
        is_splits: IS splits of the generated set.
        max_real: use at most this many real images (the first ones); null: all validation images.
        on_missing: error (default) or warn: when the backbone is not available (no weights file, a preset
            that is never trained implicitly), fail before training, or log a warning and compute nothing.
        seed: the seed of the KID subsets and IS split order.
    """

    def __init__(self, backbone: str | FeatureBackbone = "digits_cnn", which: Sequence[str] = WHICH,
                 checkpoint: str | None = None,
                 inception_weights: str | None = None, cache_dir: str | None = None, data_root: str | None = None,
                 auto_train: bool = True, kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                 max_real: int | None = None, on_missing: str = "error", seed: int = 0):
        super().__init__()
        which = [which] if isinstance(which, str) else list(which)
        unknown = [w for w in which if w not in WHICH]
        require(bool(which) and not unknown, "metrics.quality.which",
                f"choose from {list(WHICH)}, got {which}")
        require(kid_subsets >= 1 and kid_subset_size >= 2, "metrics.quality.kid_subsets",
                "kid_subsets must be >= 1 and kid_subset_size >= 2")
        require(is_splits >= 1, "metrics.quality.is_splits", f"must be >= 1, got {is_splits}")
        self.which, self.seed = which, int(seed)
        self.kid_subsets, self.kid_subset_size, self.is_splits = int(kid_subsets), int(kid_subset_size), int(is_splits)
        self.max_real = max_real
        self.cache_dir = None if cache_dir is None else Path(os.path.expanduser(str(cache_dir)))
        require(on_missing in ("error", "warn"), "metrics.quality.on_missing", f"error or warn, got {on_missing!r}")
        try:
            bb = backbone if isinstance(backbone, FeatureBackbone) else load_backbone(
                backbone, checkpoint=checkpoint, inception_weights=inception_weights, cache_dir=cache_dir,
                data_root=data_root, auto_train=auto_train)
        except UserError as err:
            if on_missing == "error":
                raise
            log.warning("GAN metrics disabled (FID / KID / IS not computed): %s", err)
            bb = None
        # Not a registered submodule: the frozen backbone stays out of the model's state_dict and
        # checkpoints (and out of parameter counts); _apply keeps it on the module's device.
        object.__setattr__(self, "_backbone", bb)
        self.disabled = bb is None
        d, k = (bb.feature_dim, bb.num_classes) if bb is not None else (1, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
            self.fid = FrechetInceptionDistance(feature=PassThrough(d), sync_on_compute=False)
            self.kid = KernelInceptionDistance(feature=PassThrough(d), subsets=self.kid_subsets,
                                               subset_size=self.kid_subset_size, sync_on_compute=False)
            self.inception_score = InceptionScore(feature=PassThrough(k), splits=self.is_splits,
                                                  sync_on_compute=False)
        self._real_batches: list[Tensor] = []
        self._real_hash = hashlib.sha256()
        self._fake_features: list[Tensor] = []
        self._fake_logits: list[Tensor] = []
        self._resize = "none"
        self._real_cache: tuple[str, Tensor] | None = None  # (key, features) of the last real set
        self.protocol: dict = {}

    @property
    def backbone(self) -> FeatureBackbone:
        return self._backbone

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._backbone is not None:
            probe = fn(torch.zeros(()))
            self._backbone.to(device=probe.device)  # device only: the backbone stays float32
        return self

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        self._real_batches, self._real_hash = [], hashlib.sha256()
        self._fake_features, self._fake_logits = [], []
        for metric in (self.fid, self.kid, self.inception_score):
            metric.reset()

    def update(self, x: Tensor, real: bool) -> None:
        if self.disabled:
            return
        x = x.detach()
        if real:
            if self.max_real is not None:
                room = self.max_real - sum(len(b) for b in self._real_batches)
                if room <= 0:
                    return
                x = x[:room]
            cpu = x.float().cpu().contiguous()
            self._real_hash.update(str(tuple(cpu.shape)).encode())
            self._real_hash.update(cpu.numpy().tobytes())
            self._real_batches.append(cpu)
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
    def _real_key(self) -> str:
        h = self._real_hash.copy()
        h.update(self._backbone.weights_sha256.encode())
        h.update(repr(self._backbone.input_shape).encode())
        return h.hexdigest()

    def _cache_file(self, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "gan_metrics" / f"real-{self._backbone.name}-{key[:24]}.pt"

    def _real_features(self) -> tuple[Tensor, str, str]:
        """Features of this validation's real images: (features, key, where they came from)."""
        key = self._real_key()
        if self._real_cache is not None and self._real_cache[0] == key:
            return self._real_cache[1], key, "memory"
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
                return features, key, origin
        real = torch.cat(self._real_batches)
        features = torch.cat([self._features(chunk)[0].cpu() for chunk in real.split(250)])
        if path is not None:
            mark_cache_dir(self.cache_dir)
            atomic_save({"features": features, "num_real": len(real), "weights_sha256": self._backbone.weights_sha256,
                         "shape": list(real.shape[1:])}, path)
        self._real_cache = (key, features)
        return features, key, "computed" + (f" -> {path}" if path is not None else "")

    def compute(self) -> dict[str, Tensor]:
        if self.disabled:
            return {}
        n_real = sum(len(b) for b in self._real_batches)
        n_fake = sum(len(f) for f in self._fake_features)
        nan = torch.tensor(float("nan"))
        if n_fake < 2 or ("is" not in self.which and n_real < 2):
            log.warning("GAN metrics: need >= 2 real and generated images (got %d real, %d generated)", n_real, n_fake)
            return {k: nan for k in self._keys()}
        fake_f, fake_l = torch.cat(self._fake_features), torch.cat(self._fake_logits)
        out: dict[str, Tensor] = {}
        protocol = {"metric": "GANQuality", "keys": [f"val/{k}" for k in self._keys()], **self._backbone.describe(),
                    "num_fake": n_fake, "resize": self._resize, "seed": self.seed,
                    "torchmetrics": torchmetrics.__version__}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if n_real >= 2 and ("fid" in self.which or "kid" in self.which):
                real_f, key, _ = self._real_features()
                real_f = real_f.to(fake_f.device)
                cache = self._cache_file(key)
                protocol.update(num_real=n_real, real_stats_key=key[:24],
                                real_stats_cache=None if cache is None else str(cache))
                if "fid" in self.which:
                    self.fid.reset()
                    self.fid.update(real_f, real=True)
                    self.fid.update(fake_f, real=False)
                    out["fid"] = self.fid.compute().float()
                if "kid" in self.which:
                    size = min(self.kid_subset_size, n_real, n_fake)
                    self.kid.subset_size = size
                    self.kid.reset()
                    self.kid.update(real_f, real=True)
                    self.kid.update(fake_f, real=False)
                    mean, std = self.kid.compute()
                    out["kid"], out["kid_std"] = mean.float(), std.float()
                    protocol["kid"] = {"subsets": self.kid_subsets, "subset_size": size, "kernel": "cubic polynomial"}
            if "is" in self.which:
                self.inception_score.reset()
                self.inception_score.update(fake_l)
                mean, std = self.inception_score.compute()
                out["is"], out["is_std"] = mean.float(), std.float()
                protocol["is"] = {"splits": self.is_splits, "classes": self._backbone.num_classes}
        self.protocol = protocol
        return out

    def _keys(self) -> list[str]:
        keys = []
        for w in self.which:
            keys += {"fid": ["fid"], "kid": ["kid", "kid_std"], "is": ["is", "is_std"]}[w]
        return keys

    def extra_repr(self) -> str:
        return f"backbone={getattr(self._backbone, 'name', None)}, which={self.which}"

