"""Semi-supervised classification with a GAN: the (K+1)-class discriminator of Salimans et al. 2016
("Improved techniques for training GANs", Sec. 5).

The discriminator is a K-class classifier whose logits l_1..l_K also score "real": with the fake class's
logit fixed at 0, D(x) = Z(x) / (Z(x) + 1), Z(x) = sum_k exp l_k(x). Its loss on a labeled batch (x_l, y),
an unlabeled batch x_u and generated images G(z) is

    L_D = CE(l(x_l), y) + w_u * ( E[softplus(lse(x_u)) - lse(x_u)] + E[softplus(lse(G(z)))] ),

lse = logsumexp of the K logits (-log D(x_u) and -log(1 - D(G(z))) written stably). The generator either
matches the mean of the discriminator's penultimate features on unlabeled and generated images
(``generator_loss: feature_matching``, the paper's choice for semi-supervised learning) or maximises
log D(G(z)) (``ns``). Class predictions are argmax_k l_k(x).

Players: ``generator`` and ``discriminator`` (:class:`~src.models.adversarial.AdversarialModule`), updated
by the rule of the ``optimizer`` group: by default alternating, the discriminator first, then the generator
on fresh noise; or a joint game optimizer that does not need a zero-sum game. Validation is the classifier's
(:class:`~src.models.classifier.ClassificationEvaluation`: ``val/acc``, ``val/acc_balanced``, ``val/loss``,
confusion matrix PNG) and a sample grid from fixed noise (SampleGrid callback). Data: a labeled subset and
the unlabeled rest (src/data/labeled.py, ``dataset.num_labels``); plain (x, y) batches use every image both
as labeled and as unlabeled.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.adversarial import AdversarialModule
from src.models.classifier import ClassificationEvaluation, labeled_part
from src.utils.schema import choose, require

GENERATOR_LOSSES = ("feature_matching", "ns")


class SemiSupervisedGAN(ClassificationEvaluation, AdversarialModule):
    """Args:
        generator: z -> images in [-1, 1] (``latent_dim`` attribute).
        discriminator: a K-class classifier with ``forward_with_features(x) -> (features, logits)``.
        num_classes: K.
        unlabeled_weight: w_u, the weight of the unsupervised (real vs generated) loss.
        generator_loss: feature_matching | ns.
        latent_dim: the generator's input size.
        num_fixed_samples: samples in the grids drawn at each validation (fixed noise).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, num_classes: int,
                 optimizer=None, unlabeled_weight: float = 1.0,
                 generator_loss: str = "feature_matching", latent_dim: int = 100, num_fixed_samples: int = 64,
                 class_names: Sequence[str] | None = None, confusion_dir: str | None = None,
                 save_confusion: bool = True, seed: int = 0, monitor: Mapping | None = None):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        require(hasattr(discriminator, "forward_with_features"), "model.discriminator",
                f"{type(discriminator).__name__} needs forward_with_features(x) -> (features, logits)")
        d_classes = getattr(discriminator, "num_classes", num_classes)
        require(d_classes == num_classes, "model.num_classes",
                f"{num_classes} differs from the discriminator's num_classes {d_classes}")
        require(getattr(generator, "latent_dim", latent_dim) == latent_dim, "model.latent_dim",
                "differs from the generator's latent_dim")
        require(unlabeled_weight >= 0, "model.unlabeled_weight", f"must be >= 0, got {unlabeled_weight}")
        self.generator, self.discriminator = generator, discriminator
        self.unlabeled_weight = float(unlabeled_weight)
        self.generator_loss = choose(generator_loss, GENERATOR_LOSSES, "model.generator_loss")
        self.latent_dim, self.num_fixed_samples = int(latent_dim), int(num_fixed_samples)
        g = torch.Generator().manual_seed(self.seed + 12345)
        self.register_buffer("fixed_z", torch.randn(self.num_fixed_samples, self.latent_dim, generator=g))
        self._init_evaluation(num_classes, class_names, confusion_dir, save_confusion)
        self.metric_modes.update(self.evaluation_modes)

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    update_order = ("discriminator", "generator")

    def zero_sum_error(self) -> str | None:
        return (f"the semi-supervised GAN's game (model.generator_loss={self.generator_loss}) is not zero-sum; "
                "pick per-player optimizers or a game optimizer for general-sum games")

    # ---------------------------------------------------------------------------------------- sampling
    def forward(self, x: Tensor) -> Tensor:
        """Class logits of images (the discriminator as a classifier)."""
        return self.discriminator(x)

    def classify(self, x: Tensor) -> Tensor:
        return self.discriminator(x)

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device, generator=self.step_generator())

    @torch.no_grad()
    def sample_fixed(self, n: int | None = None) -> Tensor:
        was_training = self.generator.training
        self.generator.eval()
        n = n or self.num_fixed_samples
        z = self.fixed_z[:n]
        if n > len(z):
            g = torch.Generator(device=self.fixed_z.device).manual_seed(self.seed + 54321)
            z = torch.cat([z, torch.randn(n - len(z), self.latent_dim, device=self.fixed_z.device, generator=g)])
        out = self.generator(z)
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------------------------------- losses
    @staticmethod
    def unsupervised_terms(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """(-E log D(x_u), -E log(1 - D(G(z)))) with D = Z / (Z + 1), Z = sum exp(logits)."""
        lse_real, lse_fake = torch.logsumexp(real_logits, 1), torch.logsumexp(fake_logits, 1)
        return (F.softplus(lse_real) - lse_real).mean(), F.softplus(lse_fake).mean()

    def discriminator_loss(self, xl: Tensor, y: Tensor, xu: Tensor, fake: Tensor) -> Tensor:
        logits_l = self.discriminator(xl)
        logits_u = self.discriminator(xu)
        logits_f = self.discriminator(fake)
        sup = F.cross_entropy(logits_l, y)
        real_term, fake_term = self.unsupervised_terms(logits_u, logits_f)
        loss = sup + self.unlabeled_weight * (real_term + fake_term)
        self.record(d_loss=loss, d_sup=sup, d_unsup=real_term + fake_term)
        if self.logging_now:
            with torch.no_grad():
                self.record(acc_labeled=(logits_l.argmax(1) == y).float().mean(),
                            d_real=torch.sigmoid(torch.logsumexp(logits_u, 1)).mean(),
                            d_fake=torch.sigmoid(torch.logsumexp(logits_f, 1)).mean())
        return loss

    def generator_objective(self, xu: Tensor, fake: Tensor) -> Tensor:
        if self.generator_loss == "feature_matching":
            f_real = self.discriminator.forward_with_features(xu)[0].detach()
            f_fake = self.discriminator.forward_with_features(fake)[0]
            loss = (f_real.mean(0) - f_fake.mean(0)).pow(2).mean()
        else:
            lse = torch.logsumexp(self.discriminator(fake), 1)
            loss = (F.softplus(lse) - lse).mean()  # -log D(G(z))
        self.record(g_loss=loss)
        return loss

    # --------------------------------------------------------------------------------------------- game
    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        (xl, y), xu = labeled_part(batch)
        xu = xl if xu is None else xu
        with torch.set_grad_enabled("generator" in players and torch.is_grad_enabled()):
            fake = self.generator(self.noise(xu.shape[0]))
        out = {}
        if "discriminator" in players:
            out["discriminator"] = self.discriminator_loss(xl, y, xu, fake)
        if "generator" in players:
            out["generator"] = self.generator_objective(xu, fake)
        return out
