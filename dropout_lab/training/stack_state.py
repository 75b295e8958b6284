"""One model's slice of a stack's state: everything that decides its future numbers (weights, optimiser state,
generators, the epoch's order and running sums), saved and loaded per model so that a run resumes exactly
whichever stack it resumes in. A part of train.StackTrainer, written apart."""

from __future__ import annotations

import torch

from ..store.results import CHECKPOINT_FORMAT


class CheckpointState:
    """Checkpoint methods of train.StackTrainer (they read its params, state, generators and order)."""

    def _generators(self, k: int) -> list[torch.Generator]:
        return [self.order_gens[k], *(d.generators[k] for d in [self.model.drop_in, *self.model.drops])]

    def _optim_tensors(self) -> list[torch.Tensor]:
        return [t for st in self.state for t in (st if isinstance(st, tuple) else (st,))]

    def model_state(self, k: int) -> dict:
        cpu = lambda t: t[k].detach().to("cpu", copy=True)  # noqa: E731
        flat = self._optim_tensors()
        return {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "step": self.step, "s": self.s,
                "params": [cpu(p) for p in self.params], "optim": [cpu(t) for t in flat],
                "rng": [g.get_state() for g in self._generators(k)],
                "order": None if self.order is None else cpu(self.order),
                "loss_sum": cpu(self.loss_sum), "wrong": cpu(self.wrong)}

    @torch.no_grad()
    def load_model_state(self, k: int, st: dict) -> None:
        if (st["epoch"], st["step"], st["s"]) != (self.epoch, self.step, self.s) and k > 0:
            raise ValueError("models of one stack must resume from the same step")
        self.epoch, self.step, self.s = st["epoch"], st["step"], st["s"]
        flat = self._optim_tensors()
        sign = -1.0 if st.get("format") == 2 and self.optimizer == "sgd" else 1.0  # format 2 held v = -D
        for dst, src in zip(self.params, st["params"]):
            dst[k].copy_(src)
        for dst, src in zip(flat, st["optim"]):
            dst[k].copy_(src).mul_(sign)
        for g, state in zip(self._generators(k), st["rng"]):
            g.set_state(state)
        if st["order"] is not None:
            if self.order is None:
                self.order = torch.zeros(self.K, self.n_train, dtype=torch.long, device=self.device)
            self.order[k] = st["order"]
        self.loss_sum[k], self.wrong[k] = st["loss_sum"], st["wrong"]
