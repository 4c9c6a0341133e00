"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) and Lookahead-minmax (Chavdarova, Pagliardini,
Stich, Fleuret & Jaggi, "Taming GANs with Lookahead-Minmax", ICLR 2021).

Wraps any optimizer -- a per-player one (each player then has its own Lookahead) or a joint game
optimizer (Lookahead-minmax: the k fast steps are joint steps of both players)::

    every step:      fast <- inner.step(...)
    every k-th step: slow <- slow + alpha (fast - slow);  fast <- slow

with the paper's k = 5, alpha = 0.5. The slow weights start at the parameters before the first step.

It is a ``torch.optim.Optimizer`` sharing the inner optimizer's ``param_groups`` (so LR schedulers and
per-player ``lr`` logging see the inner learning rates), forwards ``step(closure)`` (joint optimizers
need the closure), ``stats`` and ``requires_zero_sum``, and its ``state_dict`` is the inner one plus a
``lookahead`` entry (counter, k, alpha, slow weights), so a resume continues exactly.
Built by the factory from ``lookahead: {_target_: src.optim.lookahead.Lookahead, _partial_: true}``.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch.optim import Optimizer


class Lookahead(Optimizer):
    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.k, self.alpha = int(k), float(alpha)
        self.counter = 0
        super().__init__([{"params": g["params"]} for g in optimizer.param_groups], dict(k=self.k, alpha=self.alpha))
        self.optimizer = optimizer
        self._link()
        self.state = defaultdict(dict)  # slow weights, keyed by parameter

    def _link(self) -> None:
        """Share the inner optimizer's param groups (the same dicts: lr changes are seen by both)."""
        self.param_groups = self.optimizer.param_groups
        self.defaults = {**self.optimizer.defaults, "k": self.k, "alpha": self.alpha}

    # ------------------------------------------------------------------------------- forwarding
    @property
    def stats(self) -> dict:
        return getattr(self.optimizer, "stats", {})

    @property
    def requires_zero_sum(self) -> bool:
        return getattr(self.optimizer, "requires_zero_sum", False)

    @property
    def players(self):
        return getattr(self.optimizer, "players", None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        if "optimizer" not in self.__dict__:  # during Optimizer.__init__
            return super().add_param_group(param_group)
        self.optimizer.add_param_group(param_group)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    # ------------------------------------------------------------------------------------- step
    def step(self, closure=None):
        params = self._params()
        if any("slow" not in self.state[p] for p in params):
            with torch.no_grad():
                for p in params:
                    if "slow" not in self.state[p]:
                        self.state[p]["slow"] = p.detach().clone()
        out = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.counter += 1
        if self.counter % self.k == 0:
            with torch.no_grad():
                slow = [self.state[p]["slow"] for p in params]
                torch._foreach_lerp_(slow, [p.detach() for p in params], self.alpha)
                torch._foreach_copy_(params, slow)
        return out

    # ------------------------------------------------------------------------------- state dict
    def state_dict(self) -> dict:
        inner = self.optimizer.state_dict()
        params = self._params()
        slow = {i: self.state[p]["slow"] for i, p in enumerate(params) if "slow" in self.state[p]}
        inner["lookahead"] = {"counter": self.counter, "k": self.k, "alpha": self.alpha, "slow": slow}
        return inner

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("lookahead", None)
        self.optimizer.load_state_dict(state_dict)
        self._link()  # torch's load_state_dict replaces the inner param_groups list
        self.state = defaultdict(dict)
        if extra is not None:
            self.counter = int(extra["counter"])
            self.k, self.alpha = int(extra.get("k", self.k)), float(extra.get("alpha", self.alpha))
            self._link()
            params = self._params()
            for i, t in extra["slow"].items():
                p = params[int(i)]
                self.state[p]["slow"] = t.detach().to(device=p.device, dtype=p.dtype).clone()

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, {self.optimizer!r})"
