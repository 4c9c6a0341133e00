"""The adversarial GAN LightningModule (Goodfellow et al. 2014): generator vs discriminator, trained
with one optimizer per player (n_critic discriminator steps per generator step) or one joint game
optimizer (CGD, extragradient, ...), chosen by the `optimizer` config group."""
from __future__ import annotations

from typing import Mapping

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from src.losses.adversarial import get_adversarial_loss, gradient_penalty
from src.models.adversarial import TwoPlayerModule
from src.utils.schema import require


class GAN(TwoPlayerModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer: DictConfig | None = None,
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
        g = torch.Generator().manual_seed(self.seed + 12345)
        # Fixed noise: the sample grids and evaluation samples of every validation use the same z.
        self.register_buffer("fixed_z", torch.randn(max(num_eval_samples, num_fixed_samples), latent_dim, generator=g))
        self.num_fixed_samples = num_fixed_samples

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def on_fit_start(self) -> None:
        if self.joint:
            opt = self.plan_optimizers().optimizers["joint"]
            require(self.n_critic == 1, "model.n_critic",
                    f"a joint game optimizer ({type(opt).__name__}) updates both players every step; set n_critic=1")
            if getattr(opt, "requires_zero_sum", False):
                require(self.loss.zero_sum, "model.loss",
                        f"{type(opt).__name__} needs a zero-sum game; use loss=minimax or loss=wgan, not {self.loss.name!r}")

    # ----------------------------------------------------------------------------------------- sample
    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def noise(self, n: int, stream: int = 0) -> Tensor:
        """The step's latent codes for this process's share of the global batch."""
        return self.step_randn(n, self.latent_dim, stream=stream)

    @torch.no_grad()
    def sample_fixed(self, n: int | None = None) -> Tensor:
        """Samples from the fixed noise, in eval mode (BatchNorm running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        out = torch.cat([self.generator(z) for z in self.fixed_z[: n or self.num_fixed_samples].split(500)])
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------ train
    def _real(self, batch) -> Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        eps = self.step_randn(real.shape[0], *([1] * (real.dim() - 1)), stream=2, uniform=True)
        return gradient_penalty(self.discriminator, real, fake, eps=eps)

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        loss = self.loss.discriminator(real_logits, fake_logits)
        if self.loss.gradient_penalty and self.gp_weight > 0:
            gp = self.penalty(real, fake)
            self.log("train/gradient_penalty", gp.detach(), on_step=True, on_epoch=False)
            loss = loss + self.gp_weight * gp
        return loss, real_logits, fake_logits

    def training_step(self, batch, batch_idx: int) -> None:
        real = self._real(batch)
        n = real.shape[0]
        if self.joint:
            self._joint_training_step(real)
            return
        # Discriminator: every batch. The generator's output is detached while D trains.
        fake = self.generator(self.noise(n)).detach()
        d_loss, real_logits, fake_logits = self.discriminator_loss(real, fake)
        self.player_step("discriminator", d_loss)
        self._log_train(d_loss=d_loss, real_logits=real_logits, fake_logits=fake_logits)
        # Generator: every n_critic-th batch, on fresh noise.
        if int(self.batches_seen) % self.n_critic == 0:
            g_loss = self.loss.generator(self.discriminator(self.generator(self.noise(n, stream=1))))
            self.player_step("generator", g_loss)
            self.log("train/g_loss", g_loss.detach(), on_step=True, on_epoch=True, prog_bar=True)

    def _joint_training_step(self, real: Tensor) -> None:
        z = self.noise(real.shape[0])
        zero_sum = getattr(self.plan_optimizers().optimizers["joint"], "requires_zero_sum", False)
        cache: dict[str, Tensor] = {}

        def closure():
            fake = self.generator(z)
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            cache.update(real_logits=real_logits.detach(), fake_logits=fake_logits.detach())
            if zero_sum:
                f = self.loss.value(real_logits, fake_logits)
                return f, -f
            d_loss = self.loss.discriminator(real_logits, fake_logits)
            if self.loss.gradient_penalty and self.gp_weight > 0:
                d_loss = d_loss + self.gp_weight * self.penalty(real, fake)
            return self.loss.generator(fake_logits), d_loss

        g_loss, d_loss = self.joint_step(closure)
        self.log("train/g_loss", g_loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        self._log_train(d_loss=d_loss, real_logits=cache["real_logits"], fake_logits=cache["fake_logits"])

    def _log_train(self, d_loss: Tensor, real_logits: Tensor, fake_logits: Tensor) -> None:
        self.log("train/d_loss", d_loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/d_real", self.loss.output(real_logits.detach()).mean(), on_step=True, on_epoch=True)
        self.log("train/d_fake", self.loss.output(fake_logits.detach()).mean(), on_step=True, on_epoch=True)

    # ------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

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
        if not self.metrics:
            return
        fake = self.sample_fixed(self.num_eval_samples)
        for name, metric in self.metrics.items():
            metric.update(fake, real=False)
            for key, value in metric.compute().items():
                self.log(f"val/{key}", value, on_epoch=True, sync_dist=False)
