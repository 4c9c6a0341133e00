"""Adversarial semantic segmentation: a segmenter S and a discriminator D as two players.

``mode: luc`` -- Luc, Couprie, Chintala & Verbeek 2016 ("Semantic Segmentation using Adversarial
Networks", arXiv 1611.08408). D is image-level (src/networks/seg_discriminators.py: LucDiscriminator,
input variants basic | product | scaling). With one-hot ground truth y at the segmenter's output
resolution and s = softmax(S(x)):

    D minimises  bce(a(x, y), 1) + bce(a(x, s(x)), 0)
    S minimises  mce(S(x), y) + lambda_adv * bce(a(x, s(x)), 1)

``mode: hung`` -- Hung, Tsai, Liou, Lin & Yang 2018 ("Adversarial Learning for Semi-Supervised
Semantic Segmentation", BMVC, arXiv 1802.07934). D is fully convolutional (HungDiscriminator), one
confidence per pixel; real = one-hot ground truth (label 1), fake = softmax(S(x)) (label 0):

    S minimises  L_ce + lambda_adv L_adv + lambda_adv_unlabeled L_adv(unlabeled) + lambda_semi L_semi
    D minimises  (bce(D(y), 1) + bce(D(s_labeled ++ s_unlabeled), 0)) / 2

L_adv = bce(D(s), 1) over pixels; L_semi is the cross-entropy of S(x_u) to its own argmax, only where
sigmoid(D(s_u)) > t_semi. The unlabeled block -- the unlabeled adversarial term, D's training on
unlabeled predictions and L_semi -- starts at iteration ``semi_adv_start`` (0 in the paper), and L_semi
also waits for ``semi_start`` (5000 in the paper), as in the authors' code.

Ignored pixels (255): every labeled term -- cross-entropy, D's real and fake BCE, S's adversarial
BCE -- is averaged over the pixels that are not ignored, and the discriminator's inputs (real and fake
alike) are zeroed there (``mask_d_input``), so D cannot tell real from fake by them and no gradient
reaches an ignored pixel's logits through D's receptive field. Unlabeled images have no known ignore
mask: their (diagnostic) ground truth is never used for training, as in the paper's code. In Luc mode,
an image-level D has no per-pixel BCE, so the input masking is what leaves ignored pixels out.

The update rule comes from the optimizer group (src/models/adversarial.py); the default is
simultaneous, as in Hung et al.'s code: one forward of S, both players' gradients at the same point (S's
from its own loss w.r.t. its own parameters only, so D gets nothing from S's loss and S nothing from D's),
then both step. ``optimizer.update=alternating`` updates S first, then D on S's new predictions. Each
player has its own optimizer from the optimizer group (per-player settings, or per-player classes via
``players.<name>._target_``; Hung: S SGD 2.5e-4, D Adam 1e-4, both poly: conf/optimizer/hung.yaml). A joint
game optimizer (CGD, ...) updates both players from a closure; a zero-sum optimizer gets the value
f = L_ce + lambda_semi L_semi - lambda_adv * (D's loss).

Logged: train/loss (S's total), train/ce, train/adv, train/adv_unlabeled, train/semi, train/d_loss,
train/d_acc (pixel accuracy of D on real and fake for hung, image accuracy for luc), train/d_acc_real and
train/d_acc_fake (the same on the ground-truth maps and on the labeled predictions alone), train/d_real,
train/d_fake, train/grad_ratio_adv (and _adv_unlabeled, _semi: each weighted term's gradient norm on S's
parameters over the cross-entropy's, at logging iterations), train/semi_fraction (unlabeled pixels above t_semi), train/pseudo_acc,
train/pseudo_acc_above, train/pseudo_acc_below (argmax pseudo-labels against the unlabeled batch's
diagnostic masks); at validation (and test), besides the segmentation metrics, val/semi_fraction,
val/pseudo_acc_above and val/pseudo_acc_below (hung mode: D's confidence on the validation predictions).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.losses.reduction import Mean, global_mean, local_mean
from src.losses.segmentation import cross_entropy, get_segmentation_loss, one_hot
from src.metrics.segmentation import ConfidenceAccuracy
from src.models.adversarial import AdversarialModule
from src.models.segmentation import SegmentationEvaluation, head_param_groups, pixel_accuracy, split_batch
from src.networks.seg_discriminators import luc_scaling
from src.utils.errors import ConfigError
from src.utils.schema import choose, require

log = logging.getLogger(__name__)

MODES = ("luc", "hung")
SEGMENTER, DISCRIMINATOR = "segmenter", "discriminator"


def masked_bce(logits: Tensor, target: float, mask: Tensor | None = None, mean: Mean = local_mean) -> Tensor:
    """Mean BCE-with-logits of a logit map (B, 1, H, W) or vector (B,) to a constant label, over the
    pixels where `mask` (B, H, W) is true (all if None). No selected pixel: exactly 0."""
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)), reduction="none")
    if mask is None:
        return mean(loss.sum(), torch.tensor(float(loss.numel()), dtype=loss.dtype, device=loss.device))
    loss = loss.squeeze(1) if loss.dim() == mask.dim() + 1 else loss
    m = mask.to(loss.dtype)
    return mean((loss * m).sum(), m.sum())


def _resize_labels(y: Tensor, size) -> Tensor:
    """Ground truth at the segmenter's output resolution (nearest, so 255 stays 255)."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].long()


class AdversarialSegmentation(SegmentationEvaluation, AdversarialModule):
    # Hung et al.'s code takes both players' gradients at the same point (one forward; both step at
    # the end of the iteration)
    default_update = "simultaneous"

    def __init__(
        self,
        segmenter: nn.Module,
        discriminator: nn.Module,
        num_classes: int,
        optimizer=None,
        mode: str = "hung",
        ignore_index: int = 255,
        loss: str = "ce",
        loss_options: Mapping | None = None,
        lambda_adv: float = 0.01,
        lambda_adv_unlabeled: float = 0.001,
        lambda_semi: float = 0.1,
        t_semi: float = 0.2,
        semi_start: int = 5000,
        semi_adv_start: int = 0,
        d_on_unlabeled: bool = True,
        mask_d_input: bool = True,
        tau: float | None = None,
        head_lr_mult: float = 1.0,
        inference: str = "whole",
        window: Sequence[int] | int | None = None,
        stride: Sequence[int] | int | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
        monitor: Mapping | None = None,
    ):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        self.mode = choose(mode, MODES, "model.mode")
        for key, value in (("lambda_adv", lambda_adv), ("lambda_adv_unlabeled", lambda_adv_unlabeled),
                           ("lambda_semi", lambda_semi), ("semi_start", semi_start),
                           ("semi_adv_start", semi_adv_start)):
            require(value >= 0, f"model.{key}", f"must be >= 0, got {value}")
        require(0.0 <= t_semi < 1.0, "model.t_semi", f"must lie in [0, 1), got {t_semi}")
        require(head_lr_mult > 0, "model.head_lr_mult", f"must be > 0, got {head_lr_mult}")
        seg_classes = getattr(segmenter, "num_classes", num_classes)
        require(seg_classes == num_classes, "model.num_classes",
                f"{num_classes} differs from the segmenter's num_classes {seg_classes}")
        d_classes = getattr(discriminator, "num_classes", num_classes)
        require(d_classes == num_classes, "model.discriminator.num_classes",
                f"{d_classes} differs from model.num_classes {num_classes}")
        expected = "LucDiscriminator" if self.mode == "luc" else "HungDiscriminator"
        is_luc_d = hasattr(discriminator, "variant")
        if (self.mode == "luc") != is_luc_d:
            kind = "an image-level" if self.mode == "luc" else "a fully convolutional"
            raise ConfigError(f"model.discriminator: mode={self.mode} needs {kind} discriminator such as {expected}, "
                              f"got {type(discriminator).__name__}")
        self.segmenter, self.discriminator = segmenter, discriminator
        self.loss_fn = get_segmentation_loss(loss, ignore_index, **dict(loss_options or {}))
        self.lambda_adv, self.lambda_adv_unlabeled = float(lambda_adv), float(lambda_adv_unlabeled)
        self.lambda_semi, self.t_semi = float(lambda_semi), float(t_semi)
        self.semi_start, self.semi_adv_start = int(semi_start), int(semi_adv_start)
        self.d_on_unlabeled, self.mask_d_input = bool(d_on_unlabeled), bool(mask_d_input)
        self.tau = float(tau if tau is not None else getattr(discriminator, "tau", 0.9))
        self.head_lr_mult = float(head_lr_mult)
        self._init_evaluation(num_classes, ignore_index, class_names, inference, window, stride)
        self.val_confidence = ConfidenceAccuracy(self.t_semi, ignore_index) if self.mode == "hung" else None
        self.test_confidence = ConfidenceAccuracy(self.t_semi, ignore_index) if self.mode == "hung" else None
        self.metric_modes.update({f"{stage}/{name}": "max" for stage in ("train", *self.STAGES)
                                  for name in ("pseudo_acc", "pseudo_acc_above", "pseudo_acc_below", "pixel_acc",
                                               "d_acc", "d_acc_real", "d_acc_fake")})
        self._warned_unlabeled = False

    @property
    def players(self) -> dict[str, nn.Module]:
        return {SEGMENTER: self.segmenter, DISCRIMINATOR: self.discriminator}

    @property
    def headline_metrics(self) -> list[str]:
        return [*super().headline_metrics, *(f"{stage}/pseudo_acc_{side}" for stage in self.STAGES
                                             for side in ("above", "below"))]

    def player_param_groups(self) -> dict[str, list[dict]]:
        return head_param_groups("segmenter", self.segmenter, self.head_lr_mult)

    def forward(self, x: Tensor) -> Tensor:
        return self.infer(x)

    # ------------------------------------------------------------------------------- D's inputs
    def _d_logits(self, x: Tensor, probs: Tensor) -> Tensor:
        """D's logits for label maps `probs`: (B, 1, H, W) in hung mode, (B,) in luc mode."""
        if self.mode == "luc":
            return self.discriminator(x, probs)
        return self.discriminator(probs)

    def _real_input(self, y: Tensor, probs: Tensor) -> Tensor:
        onehot = one_hot(y, self.num_classes, self.ignore_index, probs.dtype)
        if self.mode == "luc" and self.discriminator.variant == "scaling":
            return luc_scaling(onehot, probs, self.tau)
        return onehot

    def _mask_input(self, probs: Tensor, valid: Tensor) -> Tensor:
        return probs * valid.unsqueeze(1).to(probs.dtype) if self.mask_d_input else probs

    # --------------------------------------------------------------------------------- schedule
    def _unlabeled_active(self, unlabeled) -> bool:
        """Whether Hung's unlabeled block runs in this iteration: the unlabeled adversarial term, D's training
        on unlabeled predictions and L_semi all start at ``semi_adv_start`` (the authors' code gates the
        whole block by it); L_semi also waits for ``semi_start``."""
        return (self.mode == "hung" and unlabeled is not None and self.iteration >= self.semi_adv_start
                and (self.lambda_adv_unlabeled > 0 or self.d_on_unlabeled or self.lambda_semi > 0))

    def _semi_active(self, unlabeled) -> bool:
        return self._unlabeled_active(unlabeled) and self.lambda_semi > 0 and self.iteration >= self.semi_start

    # ---------------------------------------------------------------------------------- the game
    def _predict(self, batch, players: Sequence[str]):
        """(x, y at the prediction's resolution, S(x), unlabeled, S(x_u) or None), with a graph through S
        only when S is being updated."""
        (x, y), unlabeled = split_batch(batch)
        if unlabeled is not None and self.mode == "luc":
            if not self._warned_unlabeled:
                log.warning("mode=luc is supervised: the unlabeled batches are not used")
                self._warned_unlabeled = True
            unlabeled = None
        updating_s = SEGMENTER in players
        need_u = self._unlabeled_active(unlabeled) and (
            (updating_s and (self.lambda_adv_unlabeled > 0 or self._semi_active(unlabeled)))
            or (DISCRIMINATOR in players and self.d_on_unlabeled))
        with torch.set_grad_enabled(updating_s and torch.is_grad_enabled()):
            logits = self.segmenter(x)
            logits_u = self.segmenter(unlabeled[0]) if need_u else None
        return x, _resize_labels(y, logits.shape[-2:]), logits, unlabeled, logits_u

    def segmenter_terms(self, x: Tensor, y: Tensor, logits: Tensor, unlabeled=None,
                        logits_u: Tensor | None = None) -> dict[str, Tensor]:
        """S's loss terms with the current D: ``ce`` and ``adv`` on the labeled batch; with unlabeled
        predictions ``logits_u`` (Hung's unlabeled block), ``adv_unlabeled`` and, once active, ``semi``.
        Records the diagnostics."""
        mean = self.pixel_mean
        valid = y != self.ignore_index
        terms = {"ce": self.loss_fn(logits, y, mean=mean)}
        adv_logits = self._d_logits(x, self._mask_input(logits.softmax(1), valid))
        terms["adv"] = masked_bce(adv_logits, 1.0, valid if self.mode == "hung" else None, mean=mean)
        if self.logging_now:
            self.record(pixel_acc=pixel_accuracy(logits.detach(), y, self.ignore_index))
        if logits_u is not None:
            d_u = self.discriminator(logits_u.softmax(1))
            if self.lambda_adv_unlabeled > 0:
                terms["adv_unlabeled"] = masked_bce(d_u, 1.0, mean=mean)
            above = torch.sigmoid(d_u.detach()).squeeze(1) > self.t_semi
            pseudo = logits_u.detach().argmax(1)
            if self.logging_now:
                self._record_pseudo(pseudo, unlabeled[1], above)
            if self._semi_active(unlabeled):
                target = torch.where(above, pseudo, torch.full_like(pseudo, self.ignore_index))
                terms["semi"] = cross_entropy(logits_u, target, self.ignore_index, mean=mean)  # L_semi is a CE
        self.record(**terms)
        return terms

    def term_weights(self) -> dict[str, float]:
        return {"ce": 1.0, "adv": self.lambda_adv, "adv_unlabeled": self.lambda_adv_unlabeled,
                "semi": self.lambda_semi}

    def segmenter_loss(self, terms: Mapping[str, Tensor]) -> Tensor:
        """L_ce + lambda_adv L_adv + lambda_adv_unlabeled L_adv(unlabeled) + lambda_semi L_semi."""
        weights = self.term_weights()
        loss = terms["ce"] + weights["adv"] * terms["adv"]
        for name in ("adv_unlabeled", "semi"):
            if name in terms:
                loss = loss + weights[name] * terms[name]
        self.record(loss=loss)
        return loss

    def record_gradient_ratios(self, terms: Mapping[str, Tensor]) -> None:
        """At logging iterations: the size of each weighted term's gradient w.r.t. S's parameters relative
        to the cross-entropy's, ``grad_ratio_<term>`` = ||d(lambda L_term)/d theta_S|| / ||dL_ce/d theta_S||
        (e.g. how much the adversarial term moves S next to the supervised loss)."""
        params = [p for p in self.segmenter.parameters() if p.requires_grad]
        weights = self.term_weights()

        def norm(loss: Tensor) -> Tensor:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            return torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads if g is not None))

        ce_norm = norm(terms["ce"])
        for name, term in terms.items():
            if name != "ce" and weights[name] > 0 and term.requires_grad:
                self.record(**{f"grad_ratio_{name}": norm(weights[name] * term) / ce_norm.clamp_min(1e-12)})

    def _record_pseudo(self, pseudo: Tensor, yu: Tensor | None, above: Tensor) -> None:
        """The share of unlabeled pixels above T_semi, and the accuracy of the argmax pseudo-labels above
        and below it (against the unlabeled images' diagnostic masks, never used for training)."""
        self.record(semi_fraction=above.float().mean())
        if yu is None:
            return
        yu = _resize_labels(yu, pseudo.shape[-2:])
        valid = yu != self.ignore_index
        correct = (pseudo == yu) & valid
        selections = (("pseudo_acc", valid), ("pseudo_acc_above", valid & above), ("pseudo_acc_below", valid & ~above))
        for name, sel in selections:
            n = sel.sum()
            if n > 0:
                self.record(**{name: correct[sel].float().sum() / n})

    def discriminator_loss(self, x: Tensor, y: Tensor, probs: Tensor, probs_u: Tensor | None = None) -> Tensor:
        """D's loss on the ground truth (real, label 1) and the predictions `probs` (fake, label 0), and in
        hung mode also on the unlabeled predictions `probs_u` as fake."""
        mean = self.pixel_mean
        valid = y != self.ignore_index
        real_in = self._mask_input(self._real_input(y, probs.detach()), valid)
        real = self._d_logits(x, real_in)
        fake = self._d_logits(x, self._mask_input(probs, valid))
        if self.mode == "luc":
            loss = masked_bce(real, 1.0, mean=mean) + masked_bce(fake, 0.0, mean=mean)
            if self.logging_now:
                self.record(d_real=torch.sigmoid(real.detach()).mean(), d_fake=torch.sigmoid(fake.detach()).mean(),
                            d_acc=((real > 0).float().sum() + (fake < 0).float().sum()) / (real.numel() + fake.numel()),
                            d_acc_real=(real > 0).float().mean(), d_acc_fake=(fake < 0).float().mean())
        else:
            real_loss = masked_bce(real, 1.0, valid, mean=mean)
            if probs_u is not None:
                fake_u = self.discriminator(probs_u)
                fake_all = torch.cat([fake, fake_u])
                mask_all = torch.cat([valid, torch.ones(fake_u.shape[0], *fake_u.shape[2:], dtype=torch.bool,
                                                        device=fake_u.device)])
            else:
                fake_all, mask_all = fake, valid
            loss = 0.5 * (real_loss + masked_bce(fake_all, 0.0, mask_all, mean=mean))
            if self.logging_now:
                correct = ((real.squeeze(1) > 0) & valid).sum() + ((fake_all.squeeze(1) < 0) & mask_all).sum()
                m = valid.float()
                n_valid = valid.sum().clamp_min(1)
                self.record(d_acc=correct.float() / (valid.sum() + mask_all.sum()).clamp_min(1),
                            d_acc_real=((real.squeeze(1) > 0) & valid).sum().float() / n_valid,
                            d_acc_fake=((fake.squeeze(1) < 0) & valid).sum().float() / n_valid,
                            d_real=(torch.sigmoid(real.detach()).squeeze(1) * m).sum() / m.sum().clamp_min(1),
                            d_fake=(torch.sigmoid(fake.detach()).squeeze(1) * m).sum() / m.sum().clamp_min(1))
        self.record(d_loss=loss)
        return loss

    def losses(self, batch, players: Sequence[str]) -> dict[str, Tensor]:
        x, y, logits, unlabeled, logits_u = self._predict(batch, players)
        out = {}
        if SEGMENTER in players:
            terms = self.segmenter_terms(x, y, logits, unlabeled, logits_u)
            if self.logging_now and torch.is_grad_enabled():
                self.record_gradient_ratios(terms)
            out[SEGMENTER] = self.segmenter_loss(terms)
        if DISCRIMINATOR in players:
            probs_u = logits_u.softmax(1) if logits_u is not None and self.d_on_unlabeled else None
            out[DISCRIMINATOR] = self.discriminator_loss(x, y, logits.softmax(1), probs_u)
        return out

    def value(self, batch) -> Tensor:
        """f = L_ce + lambda_semi L_semi - lambda_adv * (D's loss): S minimises it, D maximises it."""
        x, y, logits, unlabeled, logits_u = self._predict(batch, self.player_names)
        terms = self.segmenter_terms(x, y, logits, unlabeled, logits_u)
        probs_u = logits_u.softmax(1) if logits_u is not None and self.d_on_unlabeled else None
        f = terms["ce"] - self.lambda_adv * self.discriminator_loss(x, y, logits.softmax(1), probs_u)
        return f + self.lambda_semi * terms["semi"] if "semi" in terms else f

    def zero_sum_error(self) -> str | None:
        return None

    # ------------------------------------------------------------------------------ evaluation
    def _confidence_metric(self, stage: str) -> ConfidenceAccuracy | None:
        return self.test_confidence if stage == "test" else self.val_confidence

    def _evaluation_start(self, stage: str) -> None:
        super()._evaluation_start(stage)
        if self._confidence_metric(stage) is not None:
            self._confidence_metric(stage).reset()

    def confidence(self, probs: Tensor) -> Tensor:
        """sigmoid(D(probs)) (B, H, W) in hung mode."""
        return torch.sigmoid(self.discriminator(probs)).squeeze(1)

    def _evaluation_extra(self, stage: str, x: Tensor, y: Tensor, logits: Tensor) -> None:
        metric = self._confidence_metric(stage)
        if metric is not None:
            metric.update(logits.argmax(1), y, self.confidence(logits.softmax(1)))

    def _evaluation_end(self, stage: str) -> None:
        metric = self._confidence_metric(stage)
        if metric is not None:
            scores = metric.compute()
            names = {"fraction_above": "semi_fraction", "acc_above": "pseudo_acc_above",
                     "acc_below": "pseudo_acc_below"}
            values = {f"{stage}/{names[k]}": v for k, v in scores.items() if k in names and torch.isfinite(v)}
            if values:
                self.log_dict(values, on_epoch=True, sync_dist=False)
        super()._evaluation_end(stage)

    @torch.no_grad()
    def overlay_outputs(self, x: Tensor) -> dict[str, Tensor | None]:
        logits = self.infer(x)
        probs = logits.softmax(1)
        if self.mode == "hung":
            conf = self.confidence(probs)
        else:
            conf = torch.sigmoid(self.discriminator(x, probs))[:, None, None].expand(-1, *probs.shape[-2:])
        return {"pred": logits.argmax(1), "confidence": conf}
