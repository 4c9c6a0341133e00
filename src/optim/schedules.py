"""Learning-rate schedules not in torch.optim.lr_scheduler, for the optimizer group's ``scheduler``
(stepped once per iteration, src/models/base.py).

:class:`PowerDecay` is lr_n = lr_0 (n + 1)^-power: with power 1/2 the 1/sqrt(n+1) schedule and with 3/4
the (n+1)^-0.75 schedule of Naganuma & Iiduka's sweeps ("Conjugate Gradient Method for Generative
Adversarial Networks", AISTATS 2023). Their other two are torch's ``ExponentialLR(gamma=0.99999)`` and
``StepLR(step_size=10000, gamma=0.9)``.
"""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class PowerDecay(LambdaLR):
    def __init__(self, optimizer: Optimizer, power: float = 0.5, last_epoch: int = -1):
        if not power >= 0:
            raise ValueError(f"power must be >= 0, got {power}")
        self.power = float(power)
        super().__init__(optimizer, self._factor, last_epoch=last_epoch)

    def _factor(self, n: int) -> float:
        return (n + 1) ** -self.power
