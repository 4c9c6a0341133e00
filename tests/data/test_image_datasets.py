"""Real image datasets read from a local root: tiny fixtures written in each dataset's real on-disk
format (IDX files, CIFAR-10 python-2 pickles, an ImageFolder tree of JPEG/PNG), loaded with the right
shapes, ranges and labels; missing or corrupt data gives a DataError naming the path, the expected
layout and how to point at the data; the yaml composes, builds and a GAN trains on the MNIST fixture."""
from __future__ import annotations

import gzip
import io
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.cifar10 import CIFAR10DataModule, read_batch
from src.data.imagenet import ImageNetDataModule
from src.data.mnist import FashionMNISTDataModule, MNISTDataModule, read_idx
from src.utils.errors import DataError

N_TRAIN, N_TEST = 40, 20  # MNIST fixture
CIFAR_PER_BATCH, CIFAR_TEST = 4, 6


# --------------------------------------------------------------------------------------- fixture writers
def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file as distributed: magic 0x0000 08 NN (unsigned bytes, NN dims), big-endian uint32
    dims, the data; gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as fh:
        fh.write(data)
    return path


def mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel (0, 0) encodes the label (label * 25), the rest random."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels * 25
    images[0, 27, 27], images[1, 27, 27] = 0, 255  # both ends of the range
    return images, labels


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False) -> Path:
    raw = root / folder / "raw"
    ext = ".gz" if gz else ""
    for prefix, n, seed in (("train", N_TRAIN, 1), ("t10k", N_TEST, 2)):
        images, labels = mnist_arrays(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return raw


class Py2Pickler(pickle._Pickler):
    """Pickles bytes the way Python 2's cPickle pickled str (SHORT_BINSTRING / BINSTRING), as in the
    distributed CIFAR-10 batches (read back with encoding='bytes')."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj, path: Path) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # the originals were written by numpy 1, whose arrays reconstruct from numpy.core.multiarray
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def cifar_batch(n: int, seed: int, name: bytes) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 255, 0, 128  # image 0: R=255, G=0, B=128
    data[0, 1] = 7  # red channel, row 0, column 1 (row-major)
    labels = [int(v) for v in (np.arange(n) + seed) % 10]
    return {b"batch_label": name, b"labels": labels, b"data": data,
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def write_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        py2_pickle(cifar_batch(CIFAR_PER_BATCH, i, b"training batch %d of 5" % i), folder / f"data_batch_{i}")
    py2_pickle(cifar_batch(CIFAR_TEST, 0, b"testing batch 1 of 1"), folder / "test_batch")
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    py2_pickle({b"num_cases_per_batch": CIFAR_PER_BATCH, b"label_names": names, b"num_vis": 3072},
               folder / "batches.meta")
    return folder


COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fish": (0, 0, 255)}


def write_image_folder(root: Path) -> Path:
    """train/{cat,dog,fish} (JPEG and PNG, non-square), val/{dog,fish} only: labels follow train's classes."""
    for split, classes, per_class in (("train", ["cat", "dog", "fish"], 3), ("val", ["dog", "fish"], 2)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = Image.new("RGB", (48 + 8 * i, 40), COLORS[c])
                if i % 2:
                    img.save(d / f"{c}_{i}.png")
                else:
                    img.save(d / f"{c}_{i}.JPEG", format="JPEG", quality=95)
    Image.new("L", (40, 40), 128).save(root / "train" / "cat" / "gray.png")  # grayscale -> RGB
    return root


@pytest.fixture
def mnist_root(tmp_path) -> Path:
    write_mnist(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------------------------- MNIST
def test_read_idx_plain_and_gz_roundtrip(tmp_path):
    images, labels = mnist_arrays(5, 0)
    for ext in ("", ".gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / f"i{ext}", images)), images)
        assert np.array_equal(read_idx(write_idx(tmp_path / f"l{ext}", labels)), labels)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("cls,folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_idx_datamodule_loads(tmp_path, cls, folder, gz):
    write_mnist(tmp_path, folder, gz=gz)
    dm = cls(root=tmp_path, batch_size=8)
    dm.setup()
    assert len(dm.train_set) == N_TRAIN and len(dm.val_set) == N_TEST  # validation = the test split
    x, y = dm.train_set[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x[0, 27, 27] == -1 and dm.train_set[1][0][0, 27, 27] == 1  # 0 -> -1, 255 -> 1
    images, labels = mnist_arrays(N_TRAIN, 1)
    for i in range(N_TRAIN):
        xi, yi = dm.train_set[i]
        assert yi == labels[i] and torch.isclose(xi[0, 0, 0], torch.tensor(int(labels[i]) * 25 / 127.5 - 1), atol=1e-6)
    batches = list(dm.train_dataloader())
    assert len(batches) == N_TRAIN // 8
    xb, yb = batches[0]
    assert xb.shape == (8, 1, 28, 28) and yb.shape == (8,) and xb.min() >= -1 and xb.max() <= 1
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(labels.tolist())  # a permutation
    assert dm.shape == (1, 28, 28) and dm.num_classes == 10


def test_mnist_resize_and_fixed_val_subset(mnist_root):
    dm = MNISTDataModule(root=mnist_root, size=32, num_val=7, batch_size=4)
    dm.setup()
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 1, 32, 32) and xb.min() >= -1 and xb.max() <= 1 and dm.shape == (1, 32, 32)
    val = [dm.val_set[i][1].item() for i in range(len(dm.val_set))]
    assert len(val) == 7
    other = MNISTDataModule(root=mnist_root, num_val=7, seed=123)  # the run seed does not move the split
    other.setup()
    assert val == [other.val_set[i][1].item() for i in range(7)]
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape[1:] == (1, 32, 32)


def test_mnist_root_may_name_the_raw_folder(mnist_root):
    dm = MNISTDataModule(root=mnist_root / "MNIST" / "raw")
    dm.setup()
    assert len(dm.train_set) == N_TRAIN


def test_missing_mnist_names_path_layout_and_fix(tmp_path):
    dm = MNISTDataModule(root=tmp_path / "nowhere")
    with pytest.raises(DataError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert f"<root>/MNIST/raw/{name}" in msg
    assert "dataset.root=" in msg and "DATA_DIR" in msg and ".env" in msg
    with pytest.raises(DataError):
        dm.check()  # check() alone says the same, before any loading


def test_partial_mnist_names_the_missing_file(mnist_root):
    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        MNISTDataModule(root=mnist_root).setup()


@pytest.mark.parametrize("damage", ["truncated", "truncated_gz", "bad_magic", "garbage_gz", "wrong_shape"])
def test_corrupt_idx_names_the_file(tmp_path, damage):
    raw = write_mnist(tmp_path, gz=damage.endswith("_gz"))
    name = "train-images-idx3-ubyte" + (".gz" if damage.endswith("_gz") else "")
    path = raw / name
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-100])
    elif damage == "truncated_gz":
        path.write_bytes(gzip.compress(data)[:-40])
    elif damage == "bad_magic":
        path.write_bytes(b"\x12\x34" + data[2:])
    elif damage == "garbage_gz":
        path.write_bytes(b"not gzip at all" * 10)
    else:  # a labels file where images belong
        write_idx(path, np.zeros(N_TRAIN, dtype=np.uint8))
    with pytest.raises(DataError) as err:
        MNISTDataModule(root=tmp_path).setup()
    assert str(path) in str(err.value)


# -------------------------------------------------------------------------------------------- CIFAR-10
def test_cifar10_loads_python2_batches(tmp_path):
    write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=tmp_path, batch_size=4)
    dm.setup()
    assert len(dm.train_set) == 5 * CIFAR_PER_BATCH and len(dm.val_set) == CIFAR_TEST
    assert dm.classes[0] == "airplane" and dm.classes[9] == "truck" and dm.shape == (3, 32, 32)
    x, y = dm.train_set[0]  # image 0 of data_batch_1
    assert x.shape == (3, 32, 32) and y == 1  # labels of batch i: (arange + i) % 10
    assert torch.all(x[0].flatten()[2:] == 1) and torch.all(x[1] == -1)  # channel order R, G, B
    assert torch.allclose(x[2], torch.full((32, 32), 128 / 127.5 - 1), atol=1e-6)
    assert torch.isclose(x[0, 0, 1], torch.tensor(7 / 127.5 - 1), atol=1e-6)  # row-major within a channel
    assert [dm.train_set[i][1].item() for i in range(4, 8)] == [2, 3, 4, 5]  # data_batch_2 follows
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.int64 and -1 <= xb.min() <= xb.max() <= 1
    assert next(iter(dm.val_dataloader()))[0].shape[1:] == (3, 32, 32)


def test_cifar10_root_may_name_the_batches_folder(tmp_path):
    folder = write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=folder, size=64)  # and resizes
    dm.setup()
    assert dm.train_set[0][0].shape == (3, 64, 64)


def test_missing_cifar10_names_path_layout_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(root=tmp_path / "nowhere").setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert f"<root>/cifar-10-batches-py/{name}" in msg
    assert "dataset.root=" in msg and "DATA_DIR" in msg


def test_partial_cifar10_names_the_missing_batch(tmp_path):
    (write_cifar(tmp_path) / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        CIFAR10DataModule(root=tmp_path).setup()


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no_labels", "wrong_shape", "not_a_dict", "code"])
def test_corrupt_cifar10_batch_names_the_file(tmp_path, damage):
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_2"
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "no_labels":
        batch = cifar_batch(4, 2, b"x")
        del batch[b"labels"]
        py2_pickle(batch, path)
    elif damage == "wrong_shape":
        py2_pickle({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, path)
    elif damage == "not_a_dict":
        py2_pickle([1, 2, 3], path)
    else:  # a pickle that would run a command: refused, never executed
        path.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError) as err:
        CIFAR10DataModule(root=tmp_path).setup()
    assert str(path) in str(err.value)
    if damage == "code":
        assert "refusing to load" in str(err.value)


def test_read_batch_returns_images_and_labels(tmp_path):
    folder = write_cifar(tmp_path)
    images, labels = read_batch(folder / "test_batch")
    assert images.shape == (CIFAR_TEST, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64


# -------------------------------------------------------------------------------------------- ImageNet
def test_imagenet_folder_loads_with_train_classes(tmp_path):
    write_image_folder(tmp_path)
    dm = ImageNetDataModule(root=tmp_path, size=32, batch_size=4)
    dm.setup()
    assert dm.classes == ["cat", "dog", "fish"] and dm.shape == (3, 32, 32)
    assert len(dm.train_set) == 10 and len(dm.val_set) == 4
    for i in range(len(dm.val_set)):  # val lacks "cat": dog is still 1 and fish 2
        x, y = dm.val_set[i]
        assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
        assert y == dm.classes.index(Path(dm.val_set.samples[i][0]).parent.name) and y in (1, 2)
        assert x[y].mean() > 0.9 and x[[c for c in range(3) if c != y]].mean() < -0.9  # its class's colour
    gray = [i for i, (p, _) in enumerate(dm.train_set.samples) if p.endswith("gray.png")][0]
    assert dm.train_set[gray][0].shape == (3, 32, 32)  # grayscale converted to RGB
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.int64


def test_missing_imagenet_names_path_layout_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        ImageNetDataModule(root=tmp_path / "nowhere").setup()
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "<root>/train/<class>/" in msg and "<root>/val/<class>/" in msg
    assert "dataset.root=" in msg and "DATA_DIR" in msg
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "val"))):
        ImageNetDataModule(root=tmp_path).setup()


def test_imagenet_layout_problems(tmp_path):
    write_image_folder(tmp_path)
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="class folders that train/ lacks: bird"):
        ImageNetDataModule(root=tmp_path).setup()
    (tmp_path / "val" / "bird").rmdir()
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        ImageNetDataModule(root=tmp_path).setup()


def test_flat_imagenet_val_gets_a_hint(tmp_path):
    write_image_folder(tmp_path)
    for d in list((tmp_path / "val").iterdir()):
        for f in d.iterdir():
            f.rename(tmp_path / "val" / f"{d.name}_{f.name}")
        d.rmdir()
    with pytest.raises(DataError, match="sort them into one folder per class"):
        ImageNetDataModule(root=tmp_path).setup()


def test_corrupt_image_names_the_file(tmp_path):
    write_image_folder(tmp_path)
    bad = tmp_path / "val" / "dog" / "dog_9.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dm = ImageNetDataModule(root=tmp_path, size=32, batch_size=4)
    dm.setup()
    index = [i for i, (p, _) in enumerate(dm.val_set.samples) if p == str(bad)][0]
    with pytest.raises(DataError, match=re.escape(str(bad))):
        dm.val_set[index]
    with pytest.raises(DataError, match=re.escape(str(bad))):  # through a loader, as in training
        list(dm.val_dataloader())
    dm.num_workers = 1
    with pytest.raises(DataError) as err:  # from a worker process: our message, not the worker's traceback
        list(dm.val_dataloader())
    assert str(err.value).startswith(str(bad)) and "Traceback" not in str(err.value)


# ------------------------------------------------------------------------------------- configs and CLI
def _fixture_for(name: str, tmp_path: Path) -> tuple[Path, Path]:
    """(DATA_DIR, the dataset's root) with the dataset written in its real layout."""
    if name == "mnist":
        write_mnist(tmp_path, gz=True)
    elif name == "fashion_mnist":
        write_mnist(tmp_path, "FashionMNIST")
    elif name == "cifar10":
        write_cifar(tmp_path)
    else:
        write_image_folder(tmp_path / "imagenet")
        return tmp_path, tmp_path / "imagenet"
    return tmp_path, tmp_path


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "imagenet"])
def test_yaml_composes_builds_and_loads(name, tmp_path):
    from omegaconf import OmegaConf

    from src.train import build_datamodule, build_model
    from src.utils.schema import validate_config
    from tests.helpers import compose

    _, root = _fixture_for(name, tmp_path / "data")
    size = ["dataset.size=32"] if name == "imagenet" else []
    cfg = compose([f"dataset={name}", f"dataset.root={root}", "dataset.num_workers=0", "dataset.batch_size=2",
                   *size], output_dir=tmp_path / "out")
    validate_config(cfg)
    assert OmegaConf.select(cfg, "dataset.meta.num_classes") in (10, 1000)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    xb, yb = next(iter(dm.train_dataloader()))
    assert list(xb.shape[1:]) == list(cfg.dataset.meta.shape) == list(dm.shape)
    assert -1 <= xb.min() <= xb.max() <= 1 and yb.dtype == torch.int64
    model = build_model(cfg)  # the DCGAN accepts the dataset's shape
    assert model.generator(torch.randn(2, model.latent_dim)).shape == xb.shape


@pytest.mark.parametrize("name,sub", [("mnist", ""), ("cifar10", ""), ("imagenet", "imagenet")])
def test_data_dir_moves_the_root(name, sub, tmp_path, monkeypatch):
    from tests.helpers import compose

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    cfg = compose([f"dataset={name}"], output_dir=tmp_path)
    assert Path(cfg.dataset.root) == tmp_path / "elsewhere" / sub


def test_cli_trains_a_gan_on_the_mnist_fixture(cli, tmp_path):
    data, _ = _fixture_for("mnist", tmp_path / "data")
    result = cli("dataset=mnist", f"dataset.root={data}", "dataset.batch_size=8", "dataset.val_batch_size=10",
                 "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
                 "model.num_eval_samples=64", "logger=csv", f"paths.log_dir={tmp_path / 'logs'}")
    assert result.returncode == 0, result.output[-3000:]
    s = result.summary
    assert s["status"] == "finished" and s["choices"]["dataset"] == "mnist"
    assert "val/mmd" in s["metrics"] and "train/d_loss" in s["metrics"]


def test_cli_without_the_data_says_where_and_how(cli, tmp_path):
    result = cli("dataset=cifar10", f"dataset.root={tmp_path / 'nowhere'}", "debug=fast_dev_run", "logger=csv",
                 f"paths.log_dir={tmp_path / 'logs'}")
    assert result.returncode == 2, result.output[-3000:]
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and str(tmp_path / "nowhere" / "cifar-10-batches-py") in result.stderr
    assert "<root>/cifar-10-batches-py/data_batch_1" in result.stderr and "DATA_DIR" in result.stderr


@pytest.mark.parametrize("kwargs,key", [({"size": 0}, "dataset.size"), ({"num_val": 0}, "dataset.num_val"),
                                        ({"root": ""}, "dataset.root")])
def test_bad_arguments_name_the_key(kwargs, key, tmp_path):
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key)):
        MNISTDataModule(**{"root": tmp_path, **kwargs})
