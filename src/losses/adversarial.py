"""Adversarial losses on discriminator logits.

Each loss gives the discriminator's loss, the generator's loss and, where the game is zero-sum, the
game value f(G, D) that the generator minimises and the discriminator maximises (what competitive
gradient descent needs). References: minimax and non-saturating (Goodfellow et al. 2014), WGAN
(Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al. 2017), hinge (Lim & Ye 2017; Miyato et al. 2018),
least squares (Mao et al. 2017).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from src.utils.schema import choose


class AdversarialLoss:
    name: str = ""
    zero_sum: bool = False       # d_loss == -value and g_loss == value up to terms constant in G
    gradient_penalty: bool = False
    probabilistic: bool = False  # logits are log-odds: D(x) = sigmoid(logit)

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def value(self, real: Tensor, fake: Tensor) -> Tensor:
        """The zero-sum game value f(G, D): the generator minimises it, the discriminator maximises it."""
        raise NotImplementedError(f"the {self.name!r} loss is not a zero-sum game")

    def output(self, logits: Tensor) -> Tensor:
        """What is reported as D(x): a probability for log-odds losses, the raw critic value otherwise."""
        return torch.sigmoid(logits) if self.probabilistic else logits


class Minimax(AdversarialLoss):
    """The original zero-sum GAN: f = E log D(x) + E log(1 - D(G(z)))."""

    name, zero_sum, probabilistic = "minimax", True, True

    def discriminator(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def generator(self, fake):
        return -F.softplus(fake).mean()

    def value(self, real, fake):
        return -self.discriminator(real, fake)


class NonSaturating(Minimax):
    """The generator maximises log D(G(z)) instead (Goodfellow et al. 2014, section 3)."""

    name, zero_sum = "ns", False

    def generator(self, fake):
        return F.softplus(-fake).mean()

    value = AdversarialLoss.value


class Wasserstein(AdversarialLoss):
    """WGAN critic loss, f = E D(x) - E D(G(z)), with no penalty or clipping (as used by ACGD)."""

    name, zero_sum = "wgan", True

    def discriminator(self, real, fake):
        return fake.mean() - real.mean()

    def generator(self, fake):
        return -fake.mean()

    def value(self, real, fake):
        return real.mean() - fake.mean()


class WassersteinGP(Wasserstein):
    """WGAN with a gradient penalty on interpolates (Gulrajani et al. 2017); the penalty makes it
    non-zero-sum."""

    name, zero_sum, gradient_penalty = "wgan_gp", False, True
    value = AdversarialLoss.value


class Hinge(AdversarialLoss):
    name = "hinge"

    def discriminator(self, real, fake):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator(self, fake):
        return -fake.mean()


class LeastSquares(AdversarialLoss):
    name = "lsgan"

    def discriminator(self, real, fake):
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()

    def generator(self, fake):
        return 0.5 * ((fake - 1.0) ** 2).mean()


LOSSES: dict[str, type[AdversarialLoss]] = {
    cls.name: cls for cls in (Minimax, NonSaturating, Wasserstein, WassersteinGP, Hinge, LeastSquares)
}


def get_adversarial_loss(name: str, key: str = "model.loss") -> AdversarialLoss:
    return LOSSES[choose(name, LOSSES, key)]()


def gradient_penalty(discriminator, real: Tensor, fake: Tensor, eps: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
    """E[(|grad_x D(x_hat)| - 1)^2] on interpolates x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per
    sample (Gulrajani et al. 2017); `eps` may be given (shape (N, 1, ...))."""
    if eps is None:
        shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        eps = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = discriminator(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
