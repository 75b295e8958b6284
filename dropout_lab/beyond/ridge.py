"""Paper section 9.1: is dropout just L2? Input dropout on linear regression, in closed form, and on MNIST.

Conventions. In code `q` is the DROP probability (as `p` everywhere else in this project); the paper's p is
the RETENTION probability, p = 1 - q. Masks R_ij ~ Bernoulli(1 - q) keep input j of example i.

For squared error the expectation over masks is exact (paper eq. in 9.1, Γ = diag(XᵀX)^{1/2}):
  weight scaling (the paper's form: train on R*X, test on p X):
      E_R ||y - (R*X) w||² = ||y - p X w||² + p(1-p) ||Γ w||²
  inverted scaling (this project's default: kept inputs times 1/(1-q), test on X):
      E_R ||y - (R*X) w / (1-q)||² = ||y - X w||² + λ ||Γ w||²,  λ = q/(1-q)
so dropout is ridge regression with a data-dependent penalty: each weight is shrunk in proportion to the
energy of its input. The minimisers are w* = (XᵀX + λΓ²)^{-1} Xᵀy (inverted) and that divided by p (weight).

For logistic/softmax regression the equivalence holds only to second order (Wager, Wang & Liang 2013,
"Dropout training as adaptive regularization"): the quadratic term of the noise is weighted by the model's
prediction variance, π(1-π) per class, which the squared-error penalty above does not have. `experiment`
trains softmax regression on MNIST with dropout, with the squared-error penalty λ||Γw||², and with plain L2 of
the same total strength; a gap between dropout and its "equivalent" penalty is expected, and is the answer.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..store.results import atomic_write, env_info, save_figure

SCALINGS = ("inverted", "weight")


def _check(q: float, scaling: str) -> float:
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q = {q}: the drop probability must be in [0, 1) (the paper's retention p = 1 - q)")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling = {scaling!r}: allowed {', '.join(SCALINGS)}")
    return 1.0 - q


def gamma_sq(X: np.ndarray) -> np.ndarray:
    """Γ² as a vector: diag(XᵀX)_j = Σ_i X_ij², the energy of input j (a sum, not a mean)."""
    return np.einsum("ij,ij->j", X, X)


def ridge_lambda(q: float) -> float:
    """λ = q/(1-q): the penalty of inverted dropout with drop probability q (= (1-p)/p in the paper's terms)."""
    return q / (1.0 - q)


def expected_loss(X: np.ndarray, y: np.ndarray, w: np.ndarray, q: float, scaling: str = "inverted") -> float:
    """E_R ||y - X̃ w||² in closed form, X̃ the dropped-out X (see the module docstring for both scalings)."""
    p = _check(q, scaling)
    g2 = gamma_sq(X)
    if scaling == "weight":
        return float(np.sum((y - p * X @ w) ** 2) + p * (1 - p) * np.sum(g2 * w**2))
    return float(np.sum((y - X @ w) ** 2) + ridge_lambda(q) * np.sum(g2 * w**2))


def _masked(X: np.ndarray, q: float, scaling: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """m dropped-out copies of X, shape (m, n, d): keep w.p. 1 - q, kept inputs scaled by 1/(1-q) if inverted."""
    keep = rng.random((m, *X.shape)) >= q
    scale = 1.0 / (1.0 - q) if scaling == "inverted" else 1.0
    return keep * (X * scale)


def mc_loss(X: np.ndarray, y: np.ndarray, w: np.ndarray, q: float, scaling: str, n_samples: int,
            rng: np.random.Generator, chunk: int = 4096) -> tuple[float, float]:
    """Monte-Carlo estimate of E_R ||y - X̃ w||² from n_samples masks: (mean, standard error of the mean)."""
    _check(q, scaling)
    losses = []
    for start in range(0, n_samples, chunk):
        Xt = _masked(X, q, scaling, min(chunk, n_samples - start), rng)
        losses.append(np.sum((y - Xt @ w) ** 2, axis=1))
    losses = np.concatenate(losses)
    return float(losses.mean()), float(losses.std(ddof=1) / np.sqrt(n_samples))


def mc_grad(X: np.ndarray, y: np.ndarray, w: np.ndarray, q: float, scaling: str, n_samples: int,
            rng: np.random.Generator, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo gradient of the dropout objective, -2 X̃ᵀ(y - X̃w) averaged over masks: (mean, std. error)."""
    _check(q, scaling)
    grads = []
    for start in range(0, n_samples, chunk):
        Xt = _masked(X, q, scaling, min(chunk, n_samples - start), rng)
        r = y - Xt @ w  # (m, n)
        grads.append(-2.0 * np.einsum("mnd,mn->md", Xt, r))
    grads = np.concatenate(grads)
    return grads.mean(0), grads.std(0, ddof=1) / np.sqrt(n_samples)


def minimiser(X: np.ndarray, y: np.ndarray, q: float, scaling: str = "inverted") -> np.ndarray:
    """argmin_w of the expected dropout loss: (XᵀX + λΓ²)^{-1}Xᵀy, λ = q/(1-q); divided by p for weight scaling.

    (Weight scaling: minimise ||y - pXw||² + p(1-p)||Γw||², i.e. (pXᵀX + (1-p)Γ²) w = Xᵀy, the same w/p.)
    """
    p = _check(q, scaling)
    A = X.T @ X + ridge_lambda(q) * np.diag(gamma_sq(X))
    w = np.linalg.solve(A, X.T @ y)
    return w / p if scaling == "weight" else w


# ----------------------------------------------------------------------------------------------
# MNIST softmax regression: dropout against its squared-error penalty and against plain L2

METHODS = ("none", "dropout", "gamma_l2", "plain_l2")
LABELS = {"none": "no regularisation", "dropout": "input dropout (inverted)",
          "gamma_l2": "λ‖Γw‖² (dropout's ridge)", "plain_l2": "λ·mean(Γ²)‖w‖² (plain L2)"}


def train_softmax(x: torch.Tensor, y: torch.Tensor, method: str, q: float, seed: int, epochs: int,
                  batch: int = 100, lr: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression (W, b) by Adam on mean cross-entropy, minibatches; seeded masks and order.

    Γ² = diag(XᵀX)/N on the training set: a per-example mean, because the loss is a mean over examples.
    """
    n, d = x.shape
    k = int(y.max()) + 1
    g = torch.Generator().manual_seed(seed)
    W = torch.zeros(d, k, requires_grad=True)  # convex: zero init, so seeds differ by order and masks only
    b = torch.zeros(k, requires_grad=True)
    lam = ridge_lambda(q)
    g2 = (x * x).mean(0)  # Γ²/N
    coef = {"gamma_l2": lam * g2, "plain_l2": lam * g2.mean() * torch.ones(d)}.get(method)
    opt = torch.optim.Adam([W, b], lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch):
            xb = x[idx]
            if method == "dropout":  # inverted: keep w.p. 1-q, kept inputs times 1/(1-q)
                xb = xb * (torch.rand(xb.shape, generator=g) >= q) / (1.0 - q)
            loss = torch.nn.functional.cross_entropy(xb @ W + b, y[idx])
            if coef is not None:
                loss = loss + (coef[:, None] * W * W).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return W.detach(), b.detach()


def _error(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x @ W + b).argmax(1) != y).float().mean())


def _plot(stats: list[dict], settings: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    base = next(s for s in stats if s["method"] == "none")
    ax.axhline(100 * base["test_error_mean"], color="0.3", lw=1.2, label=LABELS["none"])
    ax.axhspan(100 * (base["test_error_mean"] - base["test_error_std"]),
               100 * (base["test_error_mean"] + base["test_error_std"]), color="0.85")
    qs = settings["qs"]
    for j, method in enumerate(METHODS[1:]):
        rows = [next(s for s in stats if s["method"] == method and s["q"] == q) for q in qs]
        xs = np.arange(len(qs)) + (j - 1) * 0.18
        ax.errorbar(xs, [100 * r["test_error_mean"] for r in rows], yerr=[100 * r["test_error_std"] for r in rows],
                    fmt="o", capsize=4, ms=7, label=LABELS[method])
    ax.set_xticks(range(len(qs)), [f"drop q = {q}\n(paper p = {1 - q:g})" for q in qs])
    ax.set_xlim(-0.6, len(qs) - 0.4)
    ax.set_ylabel("test error (%)")
    ax.set_title(f"Softmax regression, MNIST {settings['n_train']} train images, {settings['epochs']} epochs "
                 f"Adam: mean ± std of {len(settings['seeds'])} seeds\nshort CPU run", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _runs(ds, settings: dict, seeds, x_test: torch.Tensor, y_test: torch.Tensor) -> list[dict]:
    """One row per (seed, method, q); the unregularised run once per seed (it has no q, written as 0)."""
    from ..training import data as data_mod

    train_softmax(x_test[:500], y_test[:500], "dropout", 0.5, 0, 1)  # warm-up, so no run's seconds pay for it
    rows = []
    for seed in seeds:
        idx, _ = data_mod.split(ds.y_train, settings["n_train"], 0, seed)
        x, y = torch.as_tensor(ds.x_train[idx], dtype=torch.float32), torch.as_tensor(ds.y_train[idx])
        runs = [("none", 0.0)] + [(m, q) for q in settings["qs"] for m in METHODS[1:]]
        for method, q in runs:
            t0 = time.perf_counter()
            W, b = train_softmax(x, y, method, q, seed, settings["epochs"], settings["batch"], settings["lr"])
            rows.append({"method": method, "q": q, "seed": seed, "test_error": _error(W, b, x_test, y_test),
                         "train_error": _error(W, b, x, y), "seconds": round(time.perf_counter() - t0, 3)})
    return rows


def experiment(out: Path, quick: bool = False, seeds=(0, 1, 2), command: str = "") -> dict:
    """Train (a) none, (b) input dropout, (c) λ||Γw||², (d) plain L2, for q in {0.2, 0.5}; write to `out`.

    Files: ridge.csv (method, q, seed, test_error, train_error, seconds; errors as fractions), summary.json
    (mean and std over seeds, settings, provenance) and ridge.png. The training subset is drawn per seed
    (data.split), so the std counts both the subset and the minibatch order/masks. Returns the summary.
    """
    from ..training import data as data_mod

    out = Path(out)
    settings = {"dataset": "mnist", "n_train": 2000 if quick else 10_000, "epochs": 10 if quick else 30,
                "batch": 100, "optimizer": "adam", "lr": 1e-3, "qs": [0.2, 0.5], "seeds": list(seeds),
                "q_meaning": "drop probability (the paper's retention p = 1 - q)",
                "gamma_sq": "diag(XᵀX)/N on the training subset", "torch_threads": 1, "quick": quick}
    ds = data_mod.load("mnist")
    x_test, y_test = torch.as_tensor(ds.x_test, dtype=torch.float32), torch.as_tensor(ds.y_test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 100x784 matmuls: a second thread only contends on a shared 2-core machine
    try:
        env = env_info(torch.device("cpu"))  # here: the start time, and the 1 thread the runs have
        rows = _runs(ds, settings, seeds, x_test, y_test)
    finally:
        torch.set_num_threads(threads)
    stats = []
    for method, q in dict.fromkeys((r["method"], r["q"]) for r in rows):
        sel = [r for r in rows if r["method"] == method and r["q"] == q]
        s = {"method": method, "q": q, "label": LABELS[method], "n_seeds": len(sel)}
        for key in ("test_error", "train_error", "seconds"):
            v = np.array([r[key] for r in sel])
            s[f"{key}_mean"] = float(v.mean())
            s[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        stats.append(s)
    env["command"] = command
    summary = {"experiment": "ridge: is dropout just L2? (paper section 9.1)", "settings": settings,
               "results": stats, "env": env}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "q", "seed", "test_error", "train_error", "seconds"])
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "ridge.csv", buf.getvalue())
    _plot(stats, settings, out / "ridge.png")
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
