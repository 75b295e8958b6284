"""Section 9.1 (dropout on linear regression = ridge with Γ²) against exact enumeration, Monte Carlo and lstsq.

`q` is the drop probability; the paper's retention probability is p = 1 - q. Everything here is float64.
"""

import csv
import json

import numpy as np
import pytest

from dropout_lab.beyond import ridge
from dropout_lab.training import data as data_mod


def design(seed, n=30, d=4, scales=(0.2, 1.0, 3.0, 0.5)):
    """Columns of very different energy, so ||Γw||² and a uniform ||w||² penalty disagree."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array(scales[:d]) + 0.3 * rng.normal(size=(n, 1))  # correlated columns
    y = X @ rng.normal(size=d) + 0.5 * rng.normal(size=n)
    return X, y, rng.normal(size=d) / np.array(scales[:d])


def test_closed_form_equals_exact_enumeration():
    # all 2^12 masks of a 3x4 design, each weighted by its probability: the expectation with no sampling error
    X, y, w = design(0, n=3)
    bits = (np.arange(2**12)[:, None] >> np.arange(12)) & 1
    masks = bits.reshape(-1, 3, 4).astype(float)
    for q in (0.2, 0.5, 0.7):
        prob = np.prod(np.where(masks == 1, 1 - q, q), axis=(1, 2))
        for scaling, scale in (("inverted", 1 / (1 - q)), ("weight", 1.0)):
            losses = np.sum((y - (masks * X * scale) @ w) ** 2, axis=1)
            assert np.isclose(prob @ losses, ridge.expected_loss(X, y, w, q, scaling), rtol=1e-12)


@pytest.mark.parametrize("scaling", ["inverted", "weight"])
@pytest.mark.parametrize("q,seed", [(0.2, 1), (0.5, 2), (0.8, 3)])
def test_monte_carlo_matches_closed_form(q, seed, scaling):
    X, y, w = design(seed)
    est, se = ridge.mc_loss(X, y, w, q, scaling, 20_000, np.random.default_rng(seed))
    assert abs(est - ridge.expected_loss(X, y, w, q, scaling)) < 4 * se


def test_monte_carlo_rejects_wrong_penalties():
    # the same 4-standard-error check, on a design where the alternatives differ, rejects each of them
    X, y, w = design(4)
    g2 = ridge.gamma_sq(X)
    for q in (0.2, 0.5):
        p, lam = 1 - q, ridge.ridge_lambda(q)
        fit_inv, fit_wgt = np.sum((y - X @ w) ** 2), np.sum((y - p * X @ w) ** 2)
        wrong = {
            "inverted": {"plain ||w||²": fit_inv + lam * np.sum(w**2),
                         "uniform mean(Γ²)||w||²": fit_inv + lam * g2.mean() * np.sum(w**2),
                         "λ = q, not q/(1-q)": fit_inv + q * np.sum(g2 * w**2)},
            "weight": {"plain ||w||²": fit_wgt + p * (1 - p) * np.sum(w**2),
                       "uniform mean(Γ²)||w||²": fit_wgt + p * (1 - p) * g2.mean() * np.sum(w**2),
                       "p² not p(1-p)": fit_wgt + p**2 * np.sum(g2 * w**2)},
        }
        for scaling, alternatives in wrong.items():
            est, se = ridge.mc_loss(X, y, w, q, scaling, 20_000, np.random.default_rng(5))
            assert abs(est - ridge.expected_loss(X, y, w, q, scaling)) < 4 * se
            for name, value in alternatives.items():
                if scaling == "weight" and name.startswith("p²") and q == 0.5:
                    continue  # p² = p(1-p) at p = 1/2: no design tells them apart
                assert abs(est - value) > 4 * se, f"{scaling}, q={q}: {name} not rejected"


@pytest.mark.parametrize("scaling", ["inverted", "weight"])
@pytest.mark.parametrize("q", [0.2, 0.5])
def test_minimiser_matches_lstsq_on_augmented_system(q, scaling):
    # dropout's objective is least squares on X stacked over sqrt(penalty)·Γ with zero targets
    X, y, _ = design(6)
    p, G = 1 - q, np.diag(np.sqrt(ridge.gamma_sq(X)))
    if scaling == "inverted":
        A = np.vstack([X, np.sqrt(ridge.ridge_lambda(q)) * G])
    else:
        A = np.vstack([p * X, np.sqrt(p * (1 - p)) * G])
    w_ls = np.linalg.lstsq(A, np.concatenate([y, np.zeros(X.shape[1])]), rcond=None)[0]
    np.testing.assert_allclose(ridge.minimiser(X, y, q, scaling), w_ls, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scaling", ["inverted", "weight"])
def test_monte_carlo_gradient_vanishes_at_minimiser_only(scaling):
    # the sampled dropout gradient is ~0 at w* and clearly not at least squares or at the plain-L2 solution
    X, y, _ = design(7)
    q = 0.5
    w_star = ridge.minimiser(X, y, q, scaling)
    g, se = ridge.mc_grad(X, y, w_star, q, scaling, 20_000, np.random.default_rng(8))
    assert np.all(np.abs(g) < 4.5 * se), g / se
    scale = 1 / (1 - q) if scaling == "weight" else 1.0  # weight scaling's w* is the inverted one over p
    w_ols = np.linalg.lstsq(X, y, rcond=None)[0] * scale
    lam_uniform = ridge.ridge_lambda(q) * ridge.gamma_sq(X).mean()
    w_l2 = np.linalg.solve(X.T @ X + lam_uniform * np.eye(X.shape[1]), X.T @ y) * scale
    for w in (w_ols, w_l2):
        g, se = ridge.mc_grad(X, y, w, q, scaling, 20_000, np.random.default_rng(9))
        assert np.max(np.abs(g) / se) > 10


def test_sgd_on_dropout_objective_converges_to_minimiser():
    # training with sampled masks (what dropout does) finds the ridge solution, not least squares
    X, y, _ = design(10, n=40)
    q = 0.5
    w_star, w_ols = ridge.minimiser(X, y, q), np.linalg.lstsq(X, y, rcond=None)[0]
    rng, w, avg = np.random.default_rng(11), np.zeros(X.shape[1]), np.zeros(X.shape[1])
    steps = 6000
    lr0 = 0.5 / np.linalg.eigvalsh(X.T @ X + ridge.ridge_lambda(q) * np.diag(ridge.gamma_sq(X))).max()
    for t in range(steps):
        Xt = ridge._masked(X, q, "inverted", 1, rng)[0]
        w -= lr0 / (1 + t / 500) * (-2 * Xt.T @ (y - Xt @ w))
        if t >= steps // 2:
            avg += w / (steps - steps // 2)  # Polyak average: the mean of the noisy iterates
    assert np.linalg.norm(avg - w_star) < 0.1 * np.linalg.norm(w_ols - w_star)


def test_bad_arguments_are_refused():
    X, y, w = design(0)
    with pytest.raises(ValueError, match="drop probability"):
        ridge.expected_loss(X, y, w, 1.0)
    with pytest.raises(ValueError, match="scaling"):
        ridge.minimiser(X, y, 0.5, "paper")


def test_experiment_quick_writes_its_files(tmp_path, monkeypatch):
    # a small synthetic stand-in for MNIST: checks the files and the summary, not the numbers
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 20))

    def fake(n):
        y = rng.integers(0, 10, n)
        return np.clip(0.5 + 0.3 * centers[y] + 0.3 * rng.normal(size=(n, 20)), 0, 1).astype(np.float32), y

    (xa, ya), (xt, yt) = fake(2500), fake(300)
    monkeypatch.setattr(data_mod, "load", lambda name: data_mod.Dataset("mnist", xa, ya, xt, yt))
    summary = ridge.experiment(tmp_path, quick=True, seeds=(0, 1), command="dropout-lab beyond ridge --quick")
    with open(tmp_path / "ridge.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 7 and set(rows[0]) == {"method", "q", "seed", "test_error", "train_error", "seconds"}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["env"]["command"] == "dropout-lab beyond ridge --quick"
    assert {(s["method"], s["q"]) for s in summary["results"]} == {("none", 0.0)} | {
        (m, q) for m in ("dropout", "gamma_l2", "plain_l2") for q in (0.2, 0.5)}
    assert all(s["n_seeds"] == 2 and 0 <= s["test_error_mean"] < 0.5 for s in summary["results"])
    assert (tmp_path / "ridge.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ridge.csv", "ridge.png", "summary.json"]  # no temps
