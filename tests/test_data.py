"""Data: IDX parsing, checksum verification, the restricted unpickler, subsets, spiral, real MNIST."""

import gzip
import io
import pickle

import numpy as np
import pytest

from dropout_lab.training import data as D


def write_idx(path, a, compress=False):
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    raw = header + a.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def tiny_mnist(rng):
    return {
        "x_train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 5, dtype=np.uint8),
    }


def make_idx_dir(directory, arrays, compress=False):
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in D.IDX_FILES.items():
        write_idx(directory / stem, arrays[key], compress)


def digests_of(arrays):
    return {k: D.sha256(v.reshape(len(v), -1) if v.ndim > 1 else v) for k, v in arrays.items()}


@pytest.mark.parametrize("layout,compress", [("", False), ("MNIST/raw", True)])
def test_idx_files_are_read_and_cached_when_they_verify(tmp_path, layout, compress):
    arrays = tiny_mnist(np.random.default_rng(0))
    make_idx_dir(tmp_path / "src" / layout, arrays, compress)
    cache = tmp_path / "cache"
    path = D.fetch(from_dir=tmp_path / "src", directory=cache, digests=digests_of(arrays), online=False)
    with np.load(path) as z:
        assert np.array_equal(z["x_train"], arrays["x_train"].reshape(12, 784))
        assert np.array_equal(z["y_test"], arrays["y_test"])


def test_a_corrupted_array_fails_and_the_cache_is_not_written(tmp_path):
    arrays = tiny_mnist(np.random.default_rng(1))
    digests = digests_of(arrays)
    arrays["x_test"][2, 5, 5] ^= 1  # one flipped bit
    make_idx_dir(tmp_path / "src", arrays)
    cache = tmp_path / "cache"
    with pytest.raises(D.DataError, match="x_test.*checksum"):
        D.fetch(from_dir=tmp_path / "src", directory=cache, digests=digests, online=False)
    assert not (cache / D.CACHE_FILE).exists()


def _pickle_gz(obj):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        pickle.dump(obj, gz, protocol=3)  # 2 would wrap bytes in _codecs.encode; the py2 file has none
    buf.seek(0)
    return buf


def test_a_well_formed_pickle_is_decoded_like_the_hub_file():
    rng = np.random.default_rng(2)
    k = [rng.integers(0, 256, (n, 784)) for n in (4, 3, 2)]
    y = [rng.integers(0, 10, n).astype(np.int64) for n in (4, 3, 2)]
    obj = tuple((ki.astype(np.float32) / 256, yi) for ki, yi in zip(k, y))
    out = D.from_pickle_gz(_pickle_gz(obj))
    assert np.array_equal(out["x_train"], np.concatenate(k[:2]).astype(np.uint8))  # train + valid, in order
    assert np.array_equal(out["x_test"], k[2].astype(np.uint8))
    assert np.array_equal(out["y_train"], np.concatenate(y[:2]))


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    obj = ((np.zeros((2, 784), np.float32), np.zeros(2, np.int64)), Evil(marker), None)
    with pytest.raises(D.DataError, match="refused.*system"):
        D.from_pickle_gz(_pickle_gz(obj))
    assert not marker.exists()


def test_stratified_split():
    y = np.repeat(np.arange(10), [500, 600, 400, 550, 450, 500, 520, 480, 500, 500])
    train, val = D.split(y, 1000, 300, seed=0)
    assert len(train) == 1000 and len(val) == 300 and not set(train) & set(val)
    share = np.bincount(y) / len(y)
    assert np.all(np.abs(np.bincount(y[train], minlength=10) - 1000 * share) <= 1)
    assert np.all(np.abs(np.bincount(y[val], minlength=10) - 300 * share) <= 1)
    again, _ = D.split(y, 1000, 300, seed=0)
    other, _ = D.split(y, 1000, 300, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    full, none = D.split(y, None, 0, seed=0)
    assert len(full) == len(y) and len(none) == 0
    with pytest.raises(ValueError):
        D.split(y, len(y), 1, seed=0)


def test_spiral_is_deterministic():
    a, b = D.spiral(seed=0), D.spiral(seed=0)
    assert a.x_train.shape == (3000, 2) and a.n_classes == 3
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, D.spiral(seed=1).x_train)
    assert np.bincount(np.concatenate([a.y_train, a.y_test])).tolist() == [2000] * 3


def test_real_mnist_facts(mnist):
    assert mnist.x_train.shape == (60000, 784) and mnist.x_test.shape == (10000, 784)
    assert np.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.x_train.mean() == pytest.approx(0.1307, abs=1e-4)
    assert mnist.x_train.std() == pytest.approx(0.3081, abs=1e-4)
