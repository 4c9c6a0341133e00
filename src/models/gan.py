"""The adversarial GAN (Goodfellow et al. 2014): generator vs discriminator.

The game: the discriminator minimises ``loss.discriminator(D(x), D(G(z)))`` (+ ``gp_weight`` times the
gradient penalty for ``wgan_gp``, + ``gead_weight`` times the GEAD term), the generator minimises
``loss.generator(D(G(z)))``; for the zero-sum losses (minimax, wgan) the value is
f = ``loss.value(D(x), D(G(z)))``, which G minimises and D maximises (src/losses/adversarial.py). The
update rule comes from the optimizer group (src/models/adversarial.py): by default alternating, the
discriminator first, with fresh noise for the generator's update, and the generator updated every
``n_critic``-th iteration.

Options researchers expect of an image GAN:

* ``num_classes``: a class-conditional GAN (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR
  2018): the batches are (x, y); G(z, y) and D(x, y) take the labels (conditional BatchNorm / projection,
  src/networks/sngan.py); generated images get labels drawn uniformly, the fixed samples cycle the classes.
  :meth:`generate` makes images of chosen classes.
* ``ema_decay``: an exponential moving average of G's weights (Karras et al. 2018; Yazici et al., "The
  Unusual Effectiveness of Averaging in GAN Training", ICLR 2019), theta_ema <- d theta_ema + (1 - d) theta
  after every generator update from iteration ``ema_start`` on (a copy of G before it); BatchNorm
  statistics are copied from G. Samples, sample grids and metrics come from the EMA generator when it is
  on; it is part of the checkpoint, so a resume continues it exactly.
* ``diffaugment``: DiffAugment (Zhao et al., NeurIPS 2020; src/networks/diffaugment.py), the same random
  differentiable augmentation of real and generated images before every D call, in both players' losses,
  its randomness drawn from the step's seeded generators (resumes exactly).
* ``gead_weight``: the seed-003 regulariser (GEAD): D's loss + w * mean((D(G(z)) - D(x))^2) over the batch's
  logits paired by position (the seed's code: w = 1e-4); G's loss unchanged. Not zero-sum.
* ``r1_weight``: the R1 penalty (Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually
  Converge?", ICML 2018): D's loss + gamma / 2 * E ||grad_x D(x)||^2 on the real batch, which makes
  the game locally convergent; ``r1_every`` > 1 applies it lazily, every k-th discriminator update at k times
  the weight (Karras et al., StyleGAN2, CVPR 2020). Not zero-sum.
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from src.data.base import images_of
from src.losses.adversarial import get_adversarial_loss, gradient_penalty
from src.metrics.gan_quality import GANQuality
from src.models.adversarial import AdversarialModule
from src.networks.diffaugment import diff_augment, parse_policy
from src.optim.factory import OptimizerGroup
from src.utils.schema import require

GENERATOR, DISCRIMINATOR = "generator", "discriminator"
#: the step-generator streams of one update (the phase is added by the base): noise, labels, gradient
#: penalty, augmentation of the real and of the generated batch
NOISE, LABELS, PENALTY, AUGMENT_REAL, AUGMENT_FAKE = 0, 7, 2, 3, 4


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
        gead_weight: float = 0.0,
        r1_weight: float = 0.0,
        r1_every: int = 1,
        latent_dim: int = 64,
        num_classes: int | None = None,
        ema_decay: float | None = None,
        ema_start: int = 0,
        diffaugment: str | Sequence[str] | None = None,
        num_eval_samples: int = 1000,
        num_fixed_samples: int = 64,
        metrics: Mapping[str, nn.Module] | None = None,
        seed: int = 0,
        monitor: Mapping | None = None,
    ):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        require(isinstance(n_critic, int) and n_critic >= 1, "model.n_critic", f"must be an integer >= 1, got {n_critic!r}")
        require(gp_weight >= 0, "model.gp_weight", f"must be >= 0, got {gp_weight}")
        require(gead_weight >= 0, "model.gead_weight", f"must be >= 0, got {gead_weight}")
        require(r1_weight >= 0, "model.r1_weight", f"must be >= 0, got {r1_weight}")
        require(isinstance(r1_every, int) and r1_every >= 1, "model.r1_every", f"must be an integer >= 1, got {r1_every!r}")
        require(getattr(generator, "latent_dim", latent_dim) == latent_dim, "model.latent_dim",
                "differs from the generator's latent_dim")
        require(ema_decay is None or 0.0 <= ema_decay < 1.0, "model.ema_decay",
                f"must be null (no EMA) or in [0, 1), got {ema_decay}")
        require(isinstance(ema_start, int) and ema_start >= 0, "model.ema_start", f"must be an integer >= 0, got {ema_start!r}")
        require(num_classes is None or (isinstance(num_classes, int) and num_classes >= 2), "model.num_classes",
                f"must be null (unconditional) or an integer >= 2, got {num_classes!r}")
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            got = getattr(net, "num_classes", None)
            require(got == num_classes, f"model.{name}.num_classes",
                    f"{got} differs from model.num_classes {num_classes} (a conditional GAN needs conditional networks, "
                    "e.g. src.networks.sngan)")
        try:
            self.augment = parse_policy(diffaugment or "")
        except ValueError as err:
            require(False, "model.diffaugment", str(err))
        self.generator, self.discriminator = generator, discriminator
        self.loss = get_adversarial_loss(loss)
        self.n_critic, self.gp_weight, self.gead_weight = n_critic, float(gp_weight), float(gead_weight)
        self.r1_weight, self.r1_every = float(r1_weight), r1_every
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.ema_decay, self.ema_start = ema_decay, int(ema_start)
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema_decay is not None else None
        self.num_eval_samples = num_eval_samples
        # a metric set to null in the config (dataset.meta.metrics.<name>=null) is left out
        self.metrics = nn.ModuleDict({k: v for k, v in (metrics or {}).items() if v is not None})
        for metric in self.metrics.values():
            self.metric_modes.update({f"val/{k}": v for k, v in metric.modes.items()})
        g = torch.Generator().manual_seed(self.seed + 12345)
        # Fixed noise (and labels): the sample grids and evaluation samples of every validation use the same.
        count = max(num_eval_samples, num_fixed_samples)
        self.register_buffer("fixed_z", torch.randn(count, latent_dim, generator=g))
        self.register_buffer("fixed_y", torch.arange(count) % num_classes if num_classes else torch.zeros(0))
        self.num_fixed_samples = num_fixed_samples

    @property
    def players(self) -> dict[str, nn.Module]:
        return {GENERATOR: self.generator, DISCRIMINATOR: self.discriminator}

    @property
    def data_kinds(self) -> tuple[str, ...]:
        return ("labeled_images",) if self.num_classes is not None else ("labeled_images", "points")

    @property
    def headline_metrics(self) -> list[str]:
        return [f"val/{k}" for metric in self.metrics.values() for k in metric.headline]

    @property
    def update_every(self) -> dict[str, int]:
        return {GENERATOR: self.n_critic}

    def zero_sum_error(self) -> str | None:
        if not self.loss.zero_sum:
            return f"model.loss={self.loss.name} is not zero-sum; use model.loss=wgan or model.loss=minimax"
        if self.gead_weight > 0:
            return "model.gead_weight > 0 adds a term to the discriminator's loss only: the game is not zero-sum"
        if self.r1_weight > 0:
            return "model.r1_weight > 0 adds a term to the discriminator's loss only: the game is not zero-sum"
        return None

    # ----------------------------------------------------------------------------------------- sample
    @property
    def sampler(self) -> nn.Module:
        """The generator that makes samples: the EMA copy when it is on."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def _g(self, net: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
        return net(z) if y is None else net(z, y)

    def _d(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.discriminator(x) if y is None else self.discriminator(x, y)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self._g(self.sampler, z, y)

    def noise(self, n: int) -> Tensor:
        """The update's latent codes for this process's share of the global batch."""
        return self.step_randn(n, self.latent_dim, stream=NOISE)

    def fake_labels(self, n: int) -> Tensor | None:
        """The update's labels of generated images (uniform over the classes), None if unconditional."""
        if self.num_classes is None:
            return None
        u = self.step_randn(n, stream=LABELS, uniform=True)
        return (u * self.num_classes).long().clamp_max(self.num_classes - 1)

    @torch.no_grad()
    def sample_fixed(self, n: int | None = None) -> Tensor:
        """Samples from the fixed noise (and labels), in eval mode (BatchNorm running statistics)."""
        n = n or self.num_fixed_samples
        ys = self.fixed_y[:n].split(500) if self.num_classes else [None] * len(self.fixed_z[:n].split(500))
        return self._sample(self.fixed_z[:n].split(500), ys)

    @torch.no_grad()
    def generate(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images of the given classes (a conditional GAN), from noise drawn by `generator`."""
        require(self.num_classes is not None, "model.num_classes", "generate(labels) needs a class-conditional GAN")
        z = torch.randn(len(labels), self.latent_dim, generator=generator).to(self.device)
        return self._sample(z.split(500), labels.to(self.device).split(500))

    def _sample(self, zs, ys) -> Tensor:
        net = self.sampler
        was_training = net.training
        net.eval()
        out = torch.cat([self._g(net, z, y) for z, y in zip(zs, ys)])
        net.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------- game
    def _batch(self, batch) -> tuple[Tensor, Tensor | None]:
        """(real images, their labels or None for an unconditional GAN)."""
        if not isinstance(batch, (list, tuple)):
            return batch, None
        return batch[0], (batch[1] if self.num_classes is not None else None)

    def _augment(self, x: Tensor, stream: int) -> Tensor:
        if not self.augment:
            return x
        return diff_augment(x, self.augment, generator=self.step_generator(stream))

    def penalty(self, real: Tensor, fake: Tensor, y_real: Tensor | None) -> Tensor:
        eps = self.step_randn(real.shape[0], *([1] * (real.dim() - 1)), stream=PENALTY, uniform=True)
        critic = self.discriminator if y_real is None else (lambda x: self.discriminator(x, y_real))
        return gradient_penalty(critic, real, fake, eps=eps)

    def _fake(self, n: int, players: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        """G(z, y) on the update's noise and labels, with a graph only when the generator is being updated."""
        y = self.fake_labels(n)
        with torch.set_grad_enabled(GENERATOR in players and torch.is_grad_enabled()):
            return self._g(self.generator, self.noise(n), y), y

    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        real, y_real = self._batch(batch)
        fake, y_fake = self._fake(real.shape[0], players)
        out: dict[str, Tensor] = {}
        fake_logits = None
        if DISCRIMINATOR in players:
            real_in = self._augment(real, AUGMENT_REAL)
            r1_now = self.r1_weight > 0 and self.iteration % self.r1_every == 0
            if r1_now:
                real_in = real_in.detach().requires_grad_(True)
            real_logits = self._d(real_in, y_real)
            fake_logits = self._d(self._augment(fake, AUGMENT_FAKE), y_fake)
            d_loss = self.loss.discriminator(real_logits, fake_logits)
            if self.loss.gradient_penalty and self.gp_weight > 0:
                gp = self.penalty(real, fake, y_real)
                self.record(gradient_penalty=gp)
                d_loss = d_loss + self.gp_weight * gp
            if self.gead_weight > 0:
                gead = (fake_logits - real_logits).pow(2).mean()
                self.record(gead=gead)
                d_loss = d_loss + self.gead_weight * gead
            if r1_now:
                (grad,) = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                self.record(r1=r1)
                d_loss = d_loss + 0.5 * self.r1_weight * self.r1_every * r1
            out[DISCRIMINATOR] = d_loss
            self.record(d_loss=d_loss, d_real=self.loss.output(real_logits.detach()).mean(),
                        d_fake=self.loss.output(fake_logits.detach()).mean())
        if GENERATOR in players:
            if fake_logits is None:
                fake_logits = self._d(self._augment(fake, AUGMENT_FAKE), y_fake)
            out[GENERATOR] = self.loss.generator(fake_logits)
            self.record(g_loss=out[GENERATOR])
        return out

    def value(self, batch) -> Tensor:
        real, y_real = self._batch(batch)
        fake, y_fake = self._fake(real.shape[0], self.player_names)
        real_logits = self._d(self._augment(real, AUGMENT_REAL), y_real)
        fake_logits = self._d(self._augment(fake, AUGMENT_FAKE), y_fake)
        self.record(d_real=self.loss.output(real_logits.detach()).mean(),
                    d_fake=self.loss.output(fake_logits.detach()).mean())
        return self.loss.value(real_logits, fake_logits)

    # -------------------------------------------------------------------------------------------- EMA
    def train_iteration(self, batch) -> None:
        super().train_iteration(batch)
        if self.generator_ema is not None and (self.iteration + 1) % self.n_critic == 0:
            self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """theta_ema <- d theta_ema + (1 - d) theta (a copy of G before ema_start); buffers copied."""
        params = list(self.generator.parameters())
        ema = list(self.generator_ema.parameters())
        if self.iteration < self.ema_start:
            torch._foreach_copy_(ema, params)
        else:
            torch._foreach_lerp_(ema, params, 1.0 - self.ema_decay)
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    # ------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
            if isinstance(metric, GANQuality) and metric.needs_reference:  # FID against the training set
                metric.set_reference(images_of(self.trainer.datamodule.train_set))

    def validation_step(self, batch, batch_idx: int) -> None:
        real, y_real = self._batch(batch)
        fake = self.sample_fixed(real.shape[0])
        y_fake = self.fixed_y[: real.shape[0]] if self.num_classes else None
        real_logits, fake_logits = self._d(real, y_real), self._d(fake, y_fake)
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
