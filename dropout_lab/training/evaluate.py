"""Evaluations of trained nets beyond the clean pass of every epoch.

- Monte-Carlo model averaging: the mean predicted distribution of k thinned nets (dropout kept on at
  test time), against weight scaling, the paper's one-pass approximation (section 7.5, Figure 11).
- What the prediction says about itself: its entropy on right and on wrong answers, and its expected
  calibration error, for weight scaling and for the largest k (MC dropout as an uncertainty estimate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..nets.model import derive_seed, generator

STREAM_MC = 4  # a random stream of its own: MC masks never shift the training masks
ECE_BINS = 15
# Test examples per MC pass, fixed so that no model's masks depend on its stack: the masks for
# block b come from generators seeded by (model seed, STREAM_MC, repeat, layer, b), and a block size
# chosen from K or the widths would move the block boundaries, and with them every mask. 256 is the
# smallest chunk the K-dependent sizing ever chose, so a pass never holds more than it did then.
MC_BLOCK = 256


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each predicted distribution: (..., C) -> (...)."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """ECE (Guo et al. 2017): confidence against accuracy in equal-width confidence bins, weighted by
    each bin's share of examples. probs (K, N, C), y (N,) -> (K,)."""
    conf, pred = probs.max(dim=-1)  # (K, N)
    right = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=probs.device)
    which = torch.bucketize(conf, edges[1:-1], right=True)  # bin b holds (edges[b], edges[b+1]]
    n = conf.shape[1]
    ece = torch.zeros(conf.shape[0], device=probs.device)
    for b in range(bins):
        inside = (which == b).float()
        count = inside.sum(dim=1)
        gap = ((conf - right) * inside).sum(dim=1).abs()  # |sum(conf) - sum(right)| = count * |mean gap|
        ece += torch.where(count > 0, gap, 0.0) / n
    return ece


def uncertainty(probs: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Per model: error, mean NLL, ECE, and mean entropy on correct and on wrong test examples."""
    right = probs.argmax(dim=-1) == y
    ent = entropy(probs)
    nll = -torch.log(probs.gather(-1, y.expand(probs.shape[0], -1).unsqueeze(-1)).squeeze(-1).clamp_min(1e-12))
    ece = expected_calibration_error(probs, y)
    out = []
    for k in range(probs.shape[0]):
        r = right[k]
        out.append({"test_error": 1.0 - r.float().mean().item(), "nll": nll[k].mean().item(),
                    "ece": ece[k].item(),
                    "entropy_correct": ent[k][r].mean().item() if r.any() else float("nan"),
                    "entropy_wrong": ent[k][~r].mean().item() if (~r).any() else float("nan")})
    return out


@torch.no_grad()
def mc_evaluate(trainer, ks: Sequence[int], repeats: int, seeds: Sequence[int]) -> list[dict]:
    """Weight scaling and MC averages of k = each of `ks` thinned nets, `repeats` times, per model.

    One repeat draws max(ks) nets and reads the running average at each k, so a repeat costs max(ks)
    passes instead of sum(ks); repeats are independent, so the spread over them is each k's spread.
    A model's masks are a function of its seed, the repeat, the layer, the net j and the test example
    alone: every MC_BLOCK examples reseed its generators, so its results are the same in any stack.
    """
    model, x, y = trainer.model, trainer.x_test, trainer.y_test
    K, n, kmax = trainer.K, x.shape[0], max(ks)
    layers = [model.drop_in, *model.drops]
    blocks = range(0, n, MC_BLOCK)
    model.eval()
    # the clean pass has no noise, but the same K-free blocks keep its row counts per matmul the same in
    # any stack too
    ws = torch.cat([F.softmax(model(x[i:i + MC_BLOCK]), dim=-1) for i in blocks], dim=1)

    train_gens = [d.generators for d in layers]
    mc_gens = [[generator(0, x.device) for _ in seeds] for _ in layers]  # reseeded for every block below
    wrong = torch.zeros(repeats, len(ks), K)
    last = None  # repeat 0's average of kmax nets, for the uncertainty numbers
    try:
        for d, gens in zip(layers, mc_gens):
            d.generators = gens
        model.set_mc(True)
        for r in range(repeats):
            kept = []
            for b, i in enumerate(blocks):
                for li, gens in enumerate(mc_gens):
                    for g, s in zip(gens, seeds):
                        g.manual_seed(derive_seed(s, STREAM_MC, r, li, b))
                xs, ys = x[i:i + MC_BLOCK], y[i:i + MC_BLOCK]
                total = torch.zeros(K, xs.shape[0], ws.shape[-1], device=x.device)
                for j in range(1, kmax + 1):
                    total += F.softmax(model(xs), dim=-1)
                    if j in ks:
                        wrong[r, ks.index(j)] += (total.argmax(dim=-1) != ys).sum(dim=1).cpu()
                if r == 0:
                    kept.append(total / kmax)
            if r == 0:
                last = torch.cat(kept, dim=1)
    finally:
        model.set_mc(False)
        for d, gens in zip(layers, train_gens):
            d.generators = gens
    errors = wrong / n  # (repeats, len(ks), K)
    ws_u, mc_u = uncertainty(ws, y), uncertainty(last, y)
    out = []
    for k in range(K):
        e = errors[:, :, k]
        out.append({
            "weight_scaling": ws_u[k],
            "mc": [{"k": kk, "errors": e[:, j].tolist(), "mean": e[:, j].mean().item(),
                    "std": e[:, j].std(unbiased=True).item() if repeats > 1 else 0.0}
                   for j, kk in enumerate(ks)],
            "mc_uncertainty": {"k": kmax, **mc_u[k]},
            "repeats": repeats,
        })
    return out


class CleanEvaluation:
    """The clean test passes of train.StackTrainer (they read its model, K and device): a part of it, written
    apart."""

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean pass (dropout off, weight scaling on where chosen): (loss, error), each (K,).

        x is (N, D) shared by all models or (K, N, D); chunked so K x chunk x width stays small.
        """
        self.model.eval()
        n = x.shape[-2]
        chunk = max(256, min(n, (1 << 24) // (self.K * max(self.model.sizes))))
        loss = torch.zeros(self.K, device=self.device)
        wrong = torch.zeros(self.K, device=self.device)
        for i in range(0, n, chunk):
            xs, ys = x[..., i:i + chunk, :], y[..., i:i + chunk]
            logits = self.model(xs)
            ys = ys.expand(self.K, -1) if ys.dim() == 1 else ys
            loss += F.cross_entropy(logits.transpose(1, 2), ys, reduction="none").sum(dim=1)
            wrong += (logits.argmax(dim=-1) != ys).sum(dim=1)
        return loss / n, wrong / n

    def epoch_metrics(self) -> dict[str, torch.Tensor]:
        test_loss, test_error = self.evaluate(self.x_test, self.y_test)
        out = {"test_loss": test_loss, "test_error": test_error}
        if self.y_val.shape[1]:
            _, out["val_error"] = self.evaluate(self.x_val, self.y_val)
        return out
