"""The one-pass CPU weight update (update.c), compiled on first use and called through ctypes.

update.c does the deepnet SGD step, max-norm and the bf16 copy of the weights in one pass over each row:
22 bytes per weight where torch ops move about 44 (its header says which). It is plain C99 with POSIX
threads, built with the machine's C compiler (`cc`, or $CC) for this CPU (-march=native) and kept in
$DROPOUT_LAB_DATA/kernels (else ~/.cache/dropout-lab/kernels) under a name that hashes the source, the
compiler and the CPU's flags, so a changed file or another machine gets its own build.

Where there is no compiler or the build fails, training falls back to torch ops with the same numbers
but for max-norm's last bit (update.c says why), and says so once, in one line. DROPOUT_LAB_KERNEL=off
turns the kernel off (the tests use it to compare both paths).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("update.c")
# update.c flushes denormals to zero in its threads on x86 (its work() says why); elsewhere it keeps them
FLUSHES_DENORMALS = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-fopenmp"]


class Layer(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("d", ctypes.c_void_p), ("g", ctypes.c_void_p), ("low", ctypes.c_void_p),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("g_bf16", ctypes.c_int32),
                ("decays", ctypes.c_int32)]


_lib: ctypes.CDLL | None = None
_why_not: str | None = None  # set once the kernel is known to be unavailable
_said = False


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build_dir() -> Path:
    root = os.environ.get("DROPOUT_LAB_DATA") or Path.home() / ".cache" / "dropout-lab"
    return Path(root) / "kernels"


def _compile(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_flags()]).encode()).hexdigest()[:16]
    out = _build_dir() / f"update-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{cc} failed: {(r.stderr.strip().splitlines() or ['no message'])[-1]}")
        os.replace(tmp, out)  # atomic: two processes building at once both end with a whole library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (the reason in why_not()) after saying once why it is not used."""
    global _lib, _why_not, _said
    if _lib is not None or _why_not is not None:
        return _lib
    if os.environ.get("DROPOUT_LAB_KERNEL", "on") == "off":
        _why_not = "DROPOUT_LAB_KERNEL=off"
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    try:
        if not cc:
            raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
        lib = ctypes.CDLL(str(_compile(cc)))
        lib.sgd_rows.restype = None
        lib.sgd_rows.argtypes = [ctypes.POINTER(Layer), ctypes.c_int32, ctypes.c_int32, *[ctypes.c_void_p] * 5,
                                 ctypes.c_int32]
        _lib = lib
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _why_not = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not _said:
            _said = True
            print(f"dropout-lab: the one-pass update kernel is not used ({_why_not}); torch ops do the update, "
                  "about 1.5x its time", file=sys.stderr)
    return _lib


def why_not() -> str | None:
    """Why the kernel is not used, or None where it is (or has not been asked for yet)."""
    library()
    return _why_not


def describe() -> str:
    """What does the deepnet rule's CPU update here, for provenance (env.json) and the bench's JSON."""
    return "one pass (update.c)" if why_not() is None else f"torch ops ({why_not()})"


def sgd_rows_(params: Sequence[torch.Tensor], buffers: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
              is_weight: Sequence[bool], lows: Sequence[torch.Tensor | None], lr: Sequence[float],
              m: Sequence[float], wd: Sequence[float], c: Sequence[float], on: Sequence[bool] | None = None) -> None:
    """The deepnet update of (K, rows, cols) parameters in place, each model with its own lr, momentum, L2 and
    max-norm (inf: off), L2 and max-norm on the weights only; lows, where given, receive the bf16 copy of the
    new weights. Grads are fp32 or bf16. on: the models to update (None: all); the others are left as they
    are. Call only where library() is not None."""
    lib = library()
    assert lib is not None
    K = params[0].shape[0]
    for t in (*params, *buffers, *grads, *(x for x in lows if x is not None)):
        if not t.is_contiguous() or t.device.type != "cpu":  # the C side walks raw rows
            raise ValueError("the one-pass update takes contiguous CPU tensors")
    layers = (Layer * len(params))(*[
        Layer(p.data_ptr(), d.data_ptr(), g.data_ptr(), 0 if lo is None else lo.data_ptr(), p.shape[1], p.shape[2],
              int(g.dtype == torch.bfloat16), int(decays))
        for p, d, g, decays, lo in zip(params, buffers, grads, is_weight, lows)])
    per_model = [ctypes.cast((ctypes.c_float * K)(*v), ctypes.c_void_p) for v in (lr, m, wd, c)]
    chosen = None if on is None else ctypes.cast((ctypes.c_int32 * K)(*map(int, on)), ctypes.c_void_p)
    with torch.profiler.record_function("update.c sgd_rows"):  # so that a profile of a step shows it
        lib.sgd_rows(layers, len(params), K, *per_model, chosen, torch.get_num_threads())
