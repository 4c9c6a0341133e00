"""The adversarial GAN (Goodfellow et al. 2014): generator vs discriminator.

The game: the discriminator minimises ``loss.discriminator(D(x), D(G(z)))`` (+ ``gp_weight`` times the
gradient penalty for ``wgan_gp``), the generator minimises ``loss.generator(D(G(z)))``; for the zero-sum
losses (minimax, wgan) the value is f = ``loss.value(D(x), D(G(z)))``, which G minimises and D maximises
(src/losses/adversarial.py). The update rule comes from the optimizer group (src/models/adversarial.py):
by default alternating, the discriminator first, with fresh noise for the generator's update, and the
generator updated every ``n_critic``-th iteration.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from src.data.base import images_of
from src.losses.adversarial import get_adversarial_loss, gradient_penalty
from src.metrics.gan_quality import GANQuality
from src.models.adversarial import AdversarialModule
from src.optim.factory import OptimizerGroup
from src.utils.schema import require

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


class GAN(AdversarialModule):
    update_order = (DISCRIMINATOR, GENERATOR)

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: OptimizerGroup | Mapping | None = None,
        loss: str = "ns",
        n_critic: int = 1,
        gp_weight: float = 10.0,
        latent_dim: int = 64,
        num_eval_samples: int = 1000,
        num_fixed_samples: int = 64,
        metrics: Mapping[str, nn.Module] | None = None,
        seed: int = 0,
        monitor: Mapping | None = None,
    ):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        require(isinstance(n_critic, int) and n_critic >= 1, "model.n_critic", f"must be an integer >= 1, got {n_critic!r}")
        require(gp_weight >= 0, "model.gp_weight", f"must be >= 0, got {gp_weight}")
        require(getattr(generator, "latent_dim", latent_dim) == latent_dim, "model.latent_dim",
                "differs from the generator's latent_dim")
        self.generator, self.discriminator = generator, discriminator
        self.loss = get_adversarial_loss(loss)
        self.n_critic, self.gp_weight, self.latent_dim = n_critic, float(gp_weight), latent_dim
        self.num_eval_samples = num_eval_samples
        self.metrics = nn.ModuleDict(dict(metrics or {}))
        for metric in self.metrics.values():
            self.metric_modes.update({f"val/{k}": v for k, v in metric.modes.items()})
        g = torch.Generator().manual_seed(self.seed + 12345)
        # Fixed noise: the sample grids and evaluation samples of every validation use the same z.
        self.register_buffer("fixed_z", torch.randn(max(num_eval_samples, num_fixed_samples), latent_dim, generator=g))
        self.num_fixed_samples = num_fixed_samples

    @property
    def players(self) -> dict[str, nn.Module]:
        return {GENERATOR: self.generator, DISCRIMINATOR: self.discriminator}

    @property
    def update_every(self) -> dict[str, int]:
        return {GENERATOR: self.n_critic}

    def zero_sum_error(self) -> str | None:
        if self.loss.zero_sum:
            return None
        return f"model.loss={self.loss.name} is not zero-sum; use model.loss=wgan or model.loss=minimax"

    # ----------------------------------------------------------------------------------------- sample
    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def noise(self, n: int) -> Tensor:
        """The update's latent codes for this process's share of the global batch."""
        return self.step_randn(n, self.latent_dim)

    @torch.no_grad()
    def sample_fixed(self, n: int | None = None) -> Tensor:
        """Samples from the fixed noise, in eval mode (BatchNorm running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        out = torch.cat([self.generator(z) for z in self.fixed_z[: n or self.num_fixed_samples].split(500)])
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------- game
    @staticmethod
    def _real(batch) -> Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        eps = self.step_randn(real.shape[0], *([1] * (real.dim() - 1)), stream=2, uniform=True)
        return gradient_penalty(self.discriminator, real, fake, eps=eps)

    def _fake(self, n: int, players: Sequence[str]) -> Tensor:
        """G(z) on the update's noise, with a graph only when the generator is being updated."""
        with torch.set_grad_enabled(GENERATOR in players and torch.is_grad_enabled()):
            return self.generator(self.noise(n))

    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        real = self._real(batch)
        fake = self._fake(real.shape[0], players)
        out: dict[str, Tensor] = {}
        fake_logits = None
        if DISCRIMINATOR in players:
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            d_loss = self.loss.discriminator(real_logits, fake_logits)
            if self.loss.gradient_penalty and self.gp_weight > 0:
                gp = self.penalty(real, fake)
                self.record(gradient_penalty=gp)
                d_loss = d_loss + self.gp_weight * gp
            out[DISCRIMINATOR] = d_loss
            self.record(d_loss=d_loss, d_real=self.loss.output(real_logits.detach()).mean(),
                        d_fake=self.loss.output(fake_logits.detach()).mean())
        if GENERATOR in players:
            out[GENERATOR] = self.loss.generator(self.discriminator(fake) if fake_logits is None else fake_logits)
            self.record(g_loss=out[GENERATOR])
        return out

    def value(self, batch) -> Tensor:
        real = self._real(batch)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(self.generator(self.noise(real.shape[0])))
        self.record(d_real=self.loss.output(real_logits.detach()).mean(),
                    d_fake=self.loss.output(fake_logits.detach()).mean())
        return self.loss.value(real_logits, fake_logits)

    # ------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
            if isinstance(metric, GANQuality) and metric.needs_reference:  # FID against the training set
                metric.set_reference(images_of(self.trainer.datamodule.train_set))

    def validation_step(self, batch, batch_idx: int) -> None:
        real = self._real(batch)
        fake = self.sample_fixed(real.shape[0])
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        self.log("val/d_loss", self.loss.discriminator(real_logits, fake_logits), on_epoch=True)
        self.log("val/d_real", self.loss.output(real_logits).mean(), on_epoch=True)
        self.log("val/d_fake", self.loss.output(fake_logits).mean(), on_epoch=True)
        for metric in self.metrics.values():
            metric.update(real, real=True)

    def on_validation_epoch_end(self) -> None:
        if self.metrics:
            fake = self.sample_fixed(self.num_eval_samples)
            for metric in self.metrics.values():
                metric.update(fake, real=False)
                for key, value in metric.compute().items():
                    self.log(f"val/{key}", value, on_epoch=True, sync_dist=False)
        super().on_validation_epoch_end()
