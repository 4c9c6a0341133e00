"""Analytic two-player zero-sum games min_x max_y f(x, y), for checking game optimizers against known
dynamics. Player 0 ("x") minimises f, player 1 ("y") maximises it; each is a module holding one
parameter vector of size ``dim``.

Games (the equilibrium is (0, 0) in each):

* ``bilinear``: f = x^T A y. Simultaneous gradient descent-ascent spirals out, alternating GDA cycles,
  extragradient / optimistic / CGD converge (Daskalakis et al. 2018; Gidel et al. 2019; Schaefer &
  Anandkumar 2019: CGD contracts by exactly 1 / sqrt(1 + eta^2 a^2) per step when A = a I).
* ``quadratic_cg``: f = sum_i (1 + x_i^2)(100 - y_i^2), the toy game of the conjugate-gradient GAN study
  (Naganuma & Iiduka 2023): a local Nash equilibrium at (0, 0) with curvatures 200 in x, -2 in y.
* ``convex_concave``: f = mu/2 |x|^2 + x^T A y - mu/2 |y|^2, strongly convex-concave (strongly
  monotone): GDA converges linearly for small steps.

A = a I (``matrix: scalar``) or a seeded Gaussian matrix scaled by a / sqrt(dim) (``matrix: random``).

The update rule comes from the optimizer group (src/models/adversarial.py): a joint game optimizer (CGD,
ACGD, extragradient, consensus, ...) gets f; per-player optimizers (SGD: gradient descent-ascent;
optimistic; ...) step each player on its own loss (x: f, y: -f), by default both gradients at the same
point (``optimizer.update=simultaneous``) or x first, then y at the new x (``optimizer.update=alternating``).
Logged every step: train/f (at the start of the step) and train/distance_to_equilibrium (|(x, y)| after
the step); at validation val/f and val/distance_to_equilibrium.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from omegaconf import ListConfig
from torch import Tensor, nn

from src.models.adversarial import AdversarialModule
from src.utils.schema import choose, require

GAMES = ("bilinear", "quadratic_cg", "convex_concave")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Player(nn.Module):
    """One player's strategy: a parameter vector."""

    def __init__(self, init: Tensor):
        super().__init__()
        self.weight = nn.Parameter(init.clone())

    def forward(self) -> Tensor:
        return self.weight


def _vector(value, dim: int, dtype: torch.dtype, key: str) -> Tensor:
    if isinstance(value, (list, tuple, ListConfig)):
        require(len(value) == dim, key, f"has {len(value)} entries; model.dim is {dim}")
        return torch.tensor([float(v) for v in value], dtype=dtype)
    return torch.full((dim,), float(value), dtype=dtype)


class Game(AdversarialModule):
    default_update = "simultaneous"
    data_kinds = ("none",)

    def __init__(self, optimizer=None, game: str = "bilinear", dim: int = 1, a: float = 1.0,
                 matrix: str = "scalar", mu: float = 1.0, x0: float | Sequence[float] = 1.0,
                 y0: float | Sequence[float] = 1.0, dtype: str = "float64",
                 seed: int = 0, monitor: Mapping | None = None):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        self.game = choose(game, GAMES, "model.game")
        choose(matrix, ("scalar", "random"), "model.matrix")
        choose(dtype, tuple(DTYPES), "model.dtype")
        require(isinstance(dim, int) and dim >= 1, "model.dim", f"must be an integer >= 1, got {dim!r}")
        require(mu >= 0, "model.mu", f"must be >= 0, got {mu}")
        self.dim, self.a, self.mu = dim, float(a), float(mu)
        dt = DTYPES[dtype]
        if matrix == "scalar":
            A = self.a * torch.eye(dim, dtype=dt)
        else:
            g = torch.Generator().manual_seed(self.seed + 777)
            A = torch.randn(dim, dim, generator=g, dtype=torch.float64).to(dt) * (self.a / math.sqrt(dim))
        self.register_buffer("A", A)
        self.x = Player(_vector(x0, dim, dt, "model.x0"))
        self.y = Player(_vector(y0, dim, dt, "model.y0"))

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"x": self.x, "y": self.y}

    def zero_sum_error(self) -> str | None:
        return None

    @property
    def headline_metrics(self) -> list[str]:
        return ["val/distance_to_equilibrium", "val/f"]

    # ------------------------------------------------------------------------------------------ game
    def f(self, x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """f(x, y) at the players' strategies (or at the given ones); x minimises, y maximises."""
        x = self.x.weight if x is None else x
        y = self.y.weight if y is None else y
        if self.game == "bilinear":
            return x @ self.A @ y
        if self.game == "quadratic_cg":
            return ((1 + x**2) * (100 - y**2)).sum()
        return 0.5 * self.mu * (x @ x) + x @ self.A @ y - 0.5 * self.mu * (y @ y)

    def value(self, batch) -> Tensor:
        f = self.f()
        self.record(f=f)
        return f

    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        f = self.value(batch)
        return {p: f if p == "x" else -f for p in players}

    def distance_to_equilibrium(self) -> Tensor:
        with torch.no_grad():
            return torch.sqrt(self.x.weight.pow(2).sum() + self.y.weight.pow(2).sum())

    def train_iteration(self, batch) -> None:
        super().train_iteration(batch)
        self.record(distance_to_equilibrium=self.distance_to_equilibrium())

    progress_keys = ("distance_to_equilibrium",)

    def validation_step(self, batch, batch_idx: int) -> None:
        with torch.no_grad():
            self.log("val/f", self.f(), on_epoch=True)
        self.log("val/distance_to_equilibrium", self.distance_to_equilibrium(), on_epoch=True)
