"""The measuring stick of `dropout-lab bench`: the FLOPs one model's training step computes, and the
peak this machine reaches in each arithmetic (a GEMM probe, beside the peaks vendors publish), so that
every trainer's rate is also a fraction of a measured peak."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

# dense peaks (TFLOP/s) that vendors publish, recorded beside the measured ones
PEAKS = {"H100": {"fp32": 67.0, "tf32": 495.0, "bf16": 990.0}, "H200": {"fp32": 67.0, "tf32": 495.0, "bf16": 990.0},
         "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}}
BATCH = 100
# (m, k, n) of the probe's GEMMs: a 1024-wide layer at batch 100, as a step runs it, and a square one
PROBE_SHAPES = ((BATCH, 1024, 1024), (1024, 1024, 1024))
PROBE_SECONDS = 0.5  # timed per shape; a shape whose single call would take longer than 2 s is skipped
FLOPS_COUNTED = ("per example and layer a->b: forward 2ab + b (bias); weight gradient 2ab, bias gradient b; "
                 "input gradient 2ab for every layer but the first (its input is the data, which needs none); "
                 "elementwise work (ReLU, dropout, softmax) and the per-step update are not counted")


def sync(device: torch.device) -> None:
    """Waits for the device's queued work: every clock read is bracketed by one."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_model_step(sizes: Sequence[int], batch: int = BATCH) -> float:
    """The FLOPs of one model's training step, counted as they are computed (see FLOPS_COUNTED).

    6 x params x batch would also count the first layer's input gradient, which autograd never
    computes: for 784-256-256-10 that overstates the work by 33%.
    """
    layers = list(zip(sizes[:-1], sizes[1:]))
    per_example = sum(4 * a * b + 2 * b for a, b in layers) + sum(2 * a * b for a, b in layers[1:])
    return float(per_example * batch)


def gemm_probe(device: torch.device, precision: str) -> dict:
    """The best TFLOP/s torch.mm reaches on this device in one arithmetic, over PROBE_SHAPES.

    bf16 is probed as bf16 tensors, whatever kernels torch has for them: on a CPU without bf16
    instructions that is the scalar fallback, which is why step.py emulates bf16 there.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    shapes: dict[str, float | None] = {}
    rate = None  # FLOP/s of the last shape timed: a larger shape that would take over 2 s a call is skipped
    for m, k, n in PROBE_SHAPES:
        name = f"{m}x{k}x{n}"
        if rate is not None and 2 * m * k * n / rate > 2.0:
            shapes[name] = None
            continue
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)  # the warm-up call also sizes the repeats
        sync(device)
        once = time.perf_counter() - t
        if once > 2.0:
            shapes[name] = None  # too slow to time in the probe's budget
            continue
        reps = max(1, min(200, int(PROBE_SECONDS / max(once, 1e-6))))
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync(device)
        rate = 2 * m * k * n * reps / (time.perf_counter() - t)
        shapes[name] = rate / 1e12
    timed = [v for v in shapes.values() if v is not None]
    return {"tflops": max(timed) if timed else None, "shapes_tflops": shapes,
            "what": f"torch.mm of {dtype} tensors" + (" with TF32 allowed" if precision == "tf32" else "")}


def best_probe(a: dict, b: dict) -> dict:
    shapes = {k: max((v for v in (a["shapes_tflops"][k], b["shapes_tflops"][k]) if v is not None), default=None)
              for k in a["shapes_tflops"]}
    timed = [v for v in shapes.values() if v is not None]
    return {**a, "tflops": max(timed) if timed else None, "shapes_tflops": shapes,
            "passes": "the best of two, before and after the trainers"}


def published_peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for key, peaks in PEAKS.items() if key in name), None)


# ----------------------------------------------------------------------------------------------
# the roofline floor of a step: its GEMMs at the probed peak, then the memory its other phases must move

BANDWIDTH_MIB = 256  # the probe's array: far past any cache of the CPUs here, so it measures memory
FLOOR_COUNTED = (
    "floor = GEMM time + memory time, one after the other as the step's phases run. GEMM time: the FLOPs "
    "counted (flops_counted) at the GEMM probe's peak for the arithmetic. Memory time: the bytes below at the "
    "bandwidth probe's rate. Update: one pass over every parameter that reads the weight, its gradient and "
    "the momentum buffer and writes the weight and the buffer, 5 x 4 bytes, and in bf16 also writes the "
    "bf16 copy the next step's GEMMs read, 2 bytes (max-norm folded into the same pass). Activations: per "
    "hidden unit and example, its pre-activation and its input gradient each written by a GEMM and read "
    "once (4 x 2 bytes in bf16, 4 x 4 in fp32), and its dropout mask written and read (2 x 1 byte). The "
    "GEMMs' own operand reads are in the GEMM time.")


def bandwidth_probe(device: torch.device) -> dict:
    """GB/s of copying a large fp32 array (bytes read + written), the best of 5: the rate at which a step's
    elementwise phases can move memory that does not fit in a cache."""
    n = BANDWIDTH_MIB * 2**20 // 4
    a = torch.ones(n, device=device)
    b = torch.empty_like(a)
    b.copy_(a)  # faults the pages in: the copies timed below move memory, not page faults
    sync(device)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = max(best, 2 * 4 * n / (time.perf_counter() - t))
    return {"gb_per_s": best / 1e9, "what": f"Tensor.copy_ of a {BANDWIDTH_MIB} MiB fp32 array, bytes read + "
                                            "written, the best of 5"}


def step_bytes(sizes: Sequence[int], precision: str, batch: int = BATCH) -> dict:
    """The bytes one model's step must move outside its GEMMs (FLOOR_COUNTED says what is counted)."""
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    low = precision == "bf16"
    update = params * (5 * 4 + (2 if low else 0))
    activations = batch * sum(sizes[1:-1]) * (4 * (2 if low else 4) + 2)
    return {"update": update, "activations": activations, "total": update + activations}


def floor(sizes: Sequence[int], precision: str, tflops: float | None, gb_per_s: float, batch: int = BATCH) -> dict:
    """The roofline floor of one model's step in seconds, with its two parts and its byte count."""
    bytes_ = step_bytes(sizes, precision, batch)
    gemm = flops_per_model_step(sizes, batch) / (tflops * 1e12) if tflops else None
    memory = bytes_["total"] / (gb_per_s * 1e9)
    return {"precision": precision, "gemm_seconds": gemm, "memory_seconds": memory,
            "seconds": None if gemm is None else gemm + memory, "bytes": bytes_}
