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
sigmoid(D(s_u)) > t_semi, from iteration ``semi_start`` on (5000 in the paper); the unlabeled adversarial
term and D's training on unlabeled predictions start at ``semi_adv_start`` (0 in the paper).

Ignored pixels (255): every labeled term -- cross-entropy, D's real and fake BCE, S's adversarial
BCE -- is averaged over the pixels that are not ignored, and the discriminator's inputs (real and fake
alike) are zeroed there (``mask_d_input``), so D cannot tell real from fake by them and no gradient
reaches an ignored pixel's logits through D's receptive field. Unlabeled images have no known ignore
mask: their (diagnostic) ground truth is never used for training, as in the paper's code. In Luc mode,
an image-level D has no per-pixel BCE, so the input masking is what leaves ignored pixels out.

Per-player optimizers (the default): S's update runs with D's parameters frozen (D receives no gradient
from S's loss); D's update uses S's predictions detached (S receives no gradient from D's loss). Each
player has its own optimizer from the optimizer group (per-player overrides, or per-player classes
via ``players.<name>._target_``; Hung: S SGD 2.5e-4, D Adam 1e-4, both poly: conf/optimizer/hung.yaml).
A joint game optimizer (CGD, ...) updates both players from a closure; nothing is detached there (the
optimizer differentiates each loss w.r.t. its own player only, and competitive methods need the mixed
derivatives); a zero-sum optimizer gets f = L_ce + lambda_semi L_semi - lambda_adv * (D's loss) and -f.

Logged: train/loss (S's total), train/ce, train/adv, train/adv_unlabeled, train/semi, train/d_loss,
train/d_acc (pixel accuracy of D on real and fake for hung, image accuracy for luc), train/d_real,
train/d_fake, train/semi_fraction (unlabeled pixels above t_semi), train/pseudo_acc,
train/pseudo_acc_above, train/pseudo_acc_below (argmax pseudo-labels against the unlabeled batch's
diagnostic masks); at validation, besides the segmentation metrics, val/semi_fraction,
val/pseudo_acc_above and val/pseudo_acc_below (hung mode: D's confidence on the validation predictions).
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from src.losses.reduction import Mean, global_mean, local_mean
from src.losses.segmentation import cross_entropy, get_segmentation_loss, one_hot
from src.metrics.segmentation import ConfidenceAccuracy
from src.models.adversarial import TwoPlayerModule
from src.models.segmentation import SegmentationEvaluation, head_param_groups, pixel_accuracy, split_batch
from src.networks.seg_discriminators import luc_scaling
from src.utils.errors import ConfigError
from src.utils.schema import choose, require

log = logging.getLogger(__name__)

MODES = ("luc", "hung")


def masked_bce(logits: Tensor, target: float, mask: Tensor | None = None, mean: Mean = local_mean) -> Tensor:
    """Mean BCE-with-logits of a logit map (B, 1, H, W) or vector (B,) to a constant label, over the
    pixels where `mask` (B, H, W) is true (all if None). No selected pixel: exactly 0."""
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)), reduction="none")
    if mask is None:
        return mean(loss.sum(), torch.tensor(float(loss.numel()), dtype=loss.dtype, device=loss.device))
    loss = loss.squeeze(1) if loss.dim() == mask.dim() + 1 else loss
    m = mask.to(loss.dtype)
    return mean((loss * m).sum(), m.sum())


def _frozen(module: nn.Module):
    """Context: the module's parameters do not require grad (no gradient is computed for them)."""

    class _Ctx:
        def __enter__(self):
            self.flags = [p.requires_grad for p in module.parameters()]
            for p in module.parameters():
                p.requires_grad_(False)

        def __exit__(self, *exc):
            for p, flag in zip(module.parameters(), self.flags):
                p.requires_grad_(flag)

    return _Ctx()


def _resize_labels(y: Tensor, size) -> Tensor:
    """Ground truth at the segmenter's output resolution (nearest, so 255 stays 255)."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].long()


class AdversarialSegmentation(SegmentationEvaluation, TwoPlayerModule):
    def __init__(
        self,
        segmenter: nn.Module,
        discriminator: nn.Module,
        num_classes: int,
        optimizer: DictConfig | None = None,
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
        self._warned_unlabeled = False

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"segmenter": self.segmenter, "discriminator": self.discriminator}

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
    @property
    def iteration(self) -> int:
        """The 0-based index of the current training batch (TwoPlayerModule counts a batch at its start,
        so during the first batch batches_seen is 1)."""
        return max(int(self.batches_seen) - 1, 0)

    def _use_unlabeled_adv(self, unlabeled) -> bool:
        return (self.mode == "hung" and unlabeled is not None and self.iteration >= self.semi_adv_start
                and (self.lambda_adv_unlabeled > 0 or self.d_on_unlabeled))

    def _use_semi(self, unlabeled) -> bool:
        return (self.mode == "hung" and unlabeled is not None and self.lambda_semi > 0
                and self.iteration >= self.semi_start)

    # ---------------------------------------------------------------------------------- losses
    def _forward(self, batch):
        (x, y), unlabeled = split_batch(batch)
        if unlabeled is not None and self.mode == "luc" and not self._warned_unlabeled:
            log.warning("mode=luc is supervised: the unlabeled batches are not used")
            self._warned_unlabeled = True
        if self.mode == "luc":
            unlabeled = None
        logits = self.segmenter(x)
        y = _resize_labels(y, logits.shape[-2:])
        return x, y, logits, unlabeled

    def segmenter_loss(self, x: Tensor, y: Tensor, logits: Tensor, unlabeled, logs: dict,
                       logits_u: Tensor | None = None, parts: dict | None = None) -> Tensor:
        """S's loss (with the current D); fills `logs` with detached diagnostics and `parts` (if given)
        with the supervised terms ce and semi, still in the graph."""
        parts = {} if parts is None else parts
        mean = self.pixel_mean
        valid = y != self.ignore_index
        ce = self.loss_fn(logits, y, mean=mean)
        probs = logits.softmax(1)
        adv_logits = self._d_logits(x, self._mask_input(probs, valid))
        adv = masked_bce(adv_logits, 1.0, valid if self.mode == "hung" else None, mean=mean)
        loss = ce + self.lambda_adv * adv
        parts["ce"] = ce
        logs.update(ce=ce.detach(), adv=adv.detach(), pixel_acc=pixel_accuracy(logits.detach(), y, self.ignore_index))
        if logits_u is not None:
            xu, yu = unlabeled
            probs_u = logits_u.softmax(1)
            d_u = self.discriminator(probs_u)
            if self.lambda_adv_unlabeled > 0:
                adv_u = masked_bce(d_u, 1.0, mean=mean)
                loss = loss + self.lambda_adv_unlabeled * adv_u
                logs["adv_unlabeled"] = adv_u.detach()
            conf = torch.sigmoid(d_u.detach()).squeeze(1)
            pseudo = logits_u.detach().argmax(1)
            above = conf > self.t_semi
            self._log_pseudo(logs, pseudo, yu, above)
            if self._use_semi(unlabeled):
                target = torch.where(above, pseudo, torch.full_like(pseudo, self.ignore_index))
                semi = cross_entropy(logits_u, target, self.ignore_index, mean=mean)  # L_semi is a cross-entropy
                loss = loss + self.lambda_semi * semi
                parts["semi"] = semi
                logs["semi"] = semi.detach()
        logs["loss"] = loss.detach()
        return loss

    def _log_pseudo(self, logs: dict, pseudo: Tensor, yu: Tensor | None, above: Tensor) -> None:
        logs["semi_fraction"] = above.float().mean()
        if yu is None:
            return
        yu = _resize_labels(yu, pseudo.shape[-2:])
        valid = yu != self.ignore_index
        correct = (pseudo == yu) & valid
        selections = (("pseudo_acc", valid), ("pseudo_acc_above", valid & above), ("pseudo_acc_below", valid & ~above))
        for name, sel in selections:
            n = sel.sum()
            if n > 0:
                logs[name] = correct[sel].float().sum() / n

    def discriminator_loss(self, x: Tensor, y: Tensor, probs: Tensor, probs_u: Tensor | None, logs: dict) -> Tensor:
        """D's loss on the ground truth (real) and the given predictions (fake; the caller detaches them
        for a per-player update)."""
        mean = self.pixel_mean
        valid = y != self.ignore_index
        real_in = self._mask_input(self._real_input(y, probs.detach()), valid)
        real = self._d_logits(x, real_in)
        fake = self._d_logits(x, self._mask_input(probs, valid))
        if self.mode == "luc":
            loss = masked_bce(real, 1.0, mean=mean) + masked_bce(fake, 0.0, mean=mean)
            correct = (real > 0).float().sum() + (fake < 0).float().sum()
            total = real.numel() + fake.numel()
            logs.update(d_real=torch.sigmoid(real.detach()).mean(), d_fake=torch.sigmoid(fake.detach()).mean())
        else:
            real_loss = masked_bce(real, 1.0, valid, mean=mean)
            if probs_u is not None:
                fake_u = self.discriminator(probs_u)
                fake_all = torch.cat([fake, fake_u])
                mask_all = torch.cat([valid, torch.ones(fake_u.shape[0], *fake_u.shape[2:], dtype=torch.bool,
                                                        device=fake_u.device)])
            else:
                fake_all, mask_all = fake, valid
            fake_loss = masked_bce(fake_all, 0.0, mask_all, mean=mean)
            loss = 0.5 * (real_loss + fake_loss)
            correct = ((real.squeeze(1) > 0) & valid).sum() + ((fake_all.squeeze(1) < 0) & mask_all).sum()
            total = valid.sum() + mask_all.sum()
            m = valid.float()
            logs.update(d_real=(torch.sigmoid(real.detach()).squeeze(1) * m).sum() / m.sum().clamp_min(1),
                        d_fake=(torch.sigmoid(fake.detach()).squeeze(1) * m).sum() / m.sum().clamp_min(1))
        logs["d_acc"] = correct.float() / max(int(total), 1)
        logs["d_loss"] = loss.detach()
        return loss

    # -------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        x, y, logits, unlabeled = self._forward_maybe_deferred(batch)
        if self.joint:
            self._joint_training_step(batch)
            return
        logs: dict[str, Tensor] = {}
        logits_u = None
        use_u = self._use_unlabeled_adv(unlabeled) or self._use_semi(unlabeled)
        # Segmenter: D frozen (no gradient for D's parameters from S's loss).
        with _frozen(self.discriminator):
            if use_u:
                logits_u = self.segmenter(unlabeled[0])
            elif unlabeled is not None:  # diagnostics only: what D thinks of unlabeled predictions
                with torch.no_grad():
                    lu = self.segmenter(unlabeled[0])
                    conf = torch.sigmoid(self.discriminator(lu.softmax(1))).squeeze(1)
                    self._log_pseudo(logs, lu.argmax(1), unlabeled[1], conf > self.t_semi)
            s_loss = self.segmenter_loss(x, y, logits, unlabeled, logs, logits_u)
        self.player_step("segmenter", s_loss)
        # Discriminator: S's predictions detached (no gradient for S's parameters from D's loss).
        probs = logits.detach().softmax(1)
        probs_u = None
        if logits_u is not None and self.d_on_unlabeled and self._use_unlabeled_adv(unlabeled):
            probs_u = logits_u.detach().softmax(1)
        d_loss = self.discriminator_loss(x, y, probs, probs_u, logs)
        self.player_step("discriminator", d_loss)
        self._log_train(logs, x.shape[0])

    def _forward_maybe_deferred(self, batch):
        if self.joint:  # the closure runs the forward itself
            (x, y), unlabeled = split_batch(batch)
            return x, y, None, unlabeled
        return self._forward(batch)

    def _joint_training_step(self, batch) -> None:
        opt = self.plan_optimizers().optimizers["joint"]
        zero_sum = getattr(opt, "requires_zero_sum", False)
        logs: dict[str, Tensor] = {}

        def closure():
            x, y, logits, unlabeled = self._forward(batch)
            use_u = self._use_unlabeled_adv(unlabeled) or self._use_semi(unlabeled)
            logits_u = self.segmenter(unlabeled[0]) if use_u else None
            step_logs: dict[str, Tensor] = {}
            parts: dict[str, Tensor] = {}
            s_loss = self.segmenter_loss(x, y, logits, unlabeled, step_logs, logits_u, parts)
            probs_u = logits_u.softmax(1) if (logits_u is not None and self.d_on_unlabeled) else None
            d_loss = self.discriminator_loss(x, y, logits.softmax(1), probs_u, step_logs)
            if not logs:
                logs.update(step_logs)
            if zero_sum:
                # S minimises, D maximises: f = ce + lambda_semi semi - lambda_adv * (D's loss).
                f = parts["ce"] + self.lambda_semi * parts.get("semi", 0.0) - self.lambda_adv * d_loss
                return f, -f
            return s_loss, d_loss

        self.joint_step(closure)
        self._log_train(logs, split_batch(batch)[0][0].shape[0])

    def _log_train(self, logs: Mapping[str, Tensor], batch_size: int) -> None:
        for key, value in logs.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=True, prog_bar=key in ("loss", "d_loss"),
                     batch_size=batch_size)

    # ------------------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        if self.val_confidence is not None:
            self.val_confidence.reset()

    def confidence(self, probs: Tensor) -> Tensor:
        """sigmoid(D(probs)) (B, H, W) in hung mode."""
        return torch.sigmoid(self.discriminator(probs)).squeeze(1)

    def _validation_extra(self, x: Tensor, y: Tensor, logits: Tensor) -> None:
        if self.val_confidence is not None:
            self.val_confidence.update(logits.argmax(1), y, self.confidence(logits.softmax(1)))

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.val_confidence is not None:
            scores = self.val_confidence.compute()
            names = {"fraction_above": "semi_fraction", "acc_above": "pseudo_acc_above",
                     "acc_below": "pseudo_acc_below"}
            values = {f"val/{names[k]}": v for k, v in scores.items() if k in names and torch.isfinite(v)}
            if values:
                self.log_dict(values, on_epoch=True, sync_dist=False)

    @torch.no_grad()
    def overlay_outputs(self, x: Tensor) -> dict[str, Tensor | None]:
        logits = self.infer(x)
        probs = logits.softmax(1)
        if self.mode == "hung":
            conf = self.confidence(probs)
        else:
            conf = torch.sigmoid(self.discriminator(x, probs))[:, None, None].expand(-1, *probs.shape[-2:])
        return {"pred": logits.argmax(1), "confidence": conf}
