"""Two-player games and their update rules.

A model states its game once (GAN, adversarial segmentation, semi-supervised GAN, analytic games):

* :attr:`players` -- ``{name: network}``; the order is the model's update order, and in zero-sum games
  player 0 minimises the game value and player 1 maximises it;
* :meth:`losses` -- each player's loss on a batch, for the players being updated (each player minimises
  its own loss);
* :meth:`value` -- for zero-sum games, the game value f (CGD and ACGD need it); :meth:`zero_sum_error`
  says why a game is not zero-sum (naming the config key that makes it so).

This base owns the update rules and picks one from the `optimizer` group (src/optim/factory.py):

* ``alternating`` -- one player after the other (``optimizer.order``, default the model's order), each
  on its own loss evaluated after the previous player's step; a player can update every k-th iteration
  only (:attr:`update_every`, e.g. the GAN's ``n_critic``);
* ``simultaneous`` -- every player's gradient at the same point (one evaluation of the game), then every
  player steps;
* joint -- a game optimizer (CGD, ACGD, extragradient, consensus, ...) takes both players' losses (or the
  game value) in a closure it may evaluate several times, and updates both players at once.

``optimizer.update`` null means the model's own rule (:attr:`default_update`). The i-th update of an
iteration draws its randomness from phase i (src/models/base.py), so a game optimizer that evaluates the
game twice sees the same noise both times, and alternating players see independent noise.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

from torch import Tensor

from src.models.base import TrainingModule
from src.optim.factory import JOINT, UPDATES
from src.utils.errors import ConfigError


class AdversarialModule(TrainingModule):
    #: the rule used when ``optimizer.update`` is null
    default_update: ClassVar[str] = "alternating"
    #: the alternating rule's order when ``optimizer.order`` is null (None: the order of ``players``)
    update_order: ClassVar[tuple[str, ...] | None] = None

    # --------------------------------------------------------------------------------------- the game
    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        """Each of `players`' loss on `batch` at the current parameters (only those asked for)."""
        raise NotImplementedError

    def value(self, batch) -> Tensor:
        """The game value f: player 0 minimises it, player 1 maximises it (zero-sum games only)."""
        raise NotImplementedError(f"{type(self).__name__}: {self.zero_sum_error()}")

    def zero_sum_error(self) -> str | None:
        """None if the game is zero-sum (:meth:`value` is defined), else why not, naming the config key."""
        return f"{type(self).__name__}'s game is not zero-sum"

    @property
    def update_every(self) -> dict[str, int]:
        """Players that update every k-th iteration only (k > 1), e.g. ``{"generator": n_critic}``."""
        return {}

    # -------------------------------------------------------------------------------------- the rules
    @property
    def player_names(self) -> list[str]:
        return list(self.players)

    @property
    def rule(self) -> str:
        """alternating | simultaneous | joint, from the optimizer group (or the model's default)."""
        group = self.optimizer_group
        if group is not None and group.joint:
            return JOINT
        update = group.update if group is not None and group.update is not None else self.default_update
        if update not in UPDATES:
            raise ConfigError(f"optimizer.update: unknown value {update!r}; choose one of: {', '.join(UPDATES)}")
        return update

    @property
    def order(self) -> list[str]:
        order = self.optimizer_group.order if self.optimizer_group is not None else None
        if order is None:
            return list(self.update_order or self.player_names)
        if sorted(order) != sorted(self.player_names):
            raise ConfigError(f"optimizer.order: {list(order)} must name each of this model's players once: "
                              f"{self.player_names}")
        return list(order)

    def check_training(self) -> None:
        super().check_training()
        rule, plan = self.rule, self.plan_optimizers()
        self.order  # noqa: B018 - validates optimizer.order
        if rule == JOINT:
            optimizer = plan.optimizers[JOINT]
            every = {p: k for p, k in self.update_every.items() if k != 1}
            if every:
                raise ConfigError(f"a joint game optimizer ({self.optimizer_group.name}) updates both players every "
                                  f"iteration; {self.update_every_key} must be 1, got {every}")
            if optimizer.requires_zero_sum and self.zero_sum_error() is not None:
                raise ConfigError(f"optimizer: {self.optimizer_group.name} needs a zero-sum game: "
                                  f"{self.zero_sum_error()}")

    #: the config key behind :attr:`update_every` (for error messages)
    update_every_key: ClassVar[str] = "model.n_critic"

    def on_fit_start(self) -> None:
        self.check_training()

    def _updating(self) -> list[str]:
        """The players that update in this iteration (in order)."""
        every = self.update_every
        return [p for p in self.order if (self.iteration + 1) % every.get(p, 1) == 0]

    def train_iteration(self, batch) -> None:
        rule = self.rule
        if rule == JOINT:
            self._joint(batch)
        elif rule == "simultaneous":
            self._simultaneous(batch)
        else:
            self._alternating(batch)

    def _alternating(self, batch) -> None:
        updating = set(self._updating())
        for phase, name in enumerate(self.order):
            if name not in updating:
                continue
            self._phase = phase
            self.update(name, self.losses(batch, [name])[name])

    def _simultaneous(self, batch) -> None:
        updating = self._updating()
        losses = self.losses(batch, updating)
        for i, name in enumerate(updating):
            self.gradients(name, losses[name], retain_graph=i < len(updating) - 1)
        for name in updating:
            self.apply(name)

    def _joint(self, batch) -> None:
        optimizer = self.plan_optimizers().optimizers[JOINT]
        names = self.player_names

        if optimizer.requires_zero_sum:
            def closure():
                f = self.value(batch)
                self.check_finite({"game value": f})
                self.record(value=f)
                return f, -f
        else:
            def closure():
                losses = self.losses(batch, names)
                self.check_finite({f"{n} loss": losses[n] for n in names})
                return tuple(losses[n] for n in names)

        optimizer.step(closure=closure)
