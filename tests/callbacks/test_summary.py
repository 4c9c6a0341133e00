"""summary.json: final and best of every metric, each metric's direction taken from where it is declared
(the model's monitor, its metric objects, the callbacks that log it), never from a list of names."""
import json
from types import SimpleNamespace

import torch

from src.callbacks.summary import RunSummary
from src.callbacks.timing import Timing
from src.metrics.mode_coverage import ModeCoverage
from src.models.adversarial_segmentation import AdversarialSegmentation
from src.models.gan import GAN
from src.models.segmentation import Segmentation
from src.networks.mlp import MLPDiscriminator, MLPGenerator
from src.networks.seg_discriminators import HungDiscriminator
from src.networks.unet import UNet


def _trainer(step, metrics):
    return SimpleNamespace(global_step=step, callback_metrics=metrics, is_global_zero=True, current_epoch=0,
                           checkpoint_callback=None, log_every_n_steps=1)


def test_directions_are_declared_by_the_metrics_the_model_and_the_callbacks():
    gan = GAN(MLPGenerator(2, [2], hidden=[4]), MLPDiscriminator([2], hidden=[4]), latent_dim=2,
              metrics={"modes": ModeCoverage("ring8")}, monitor={"metric": "val/modes_captured", "mode": "max"})
    assert gan.metric_modes["val/modes_captured"] == "max" and gan.metric_modes["val/hq_fraction"] == "max"
    assert gan.metric_modes["val/reverse_kl"] == "min"
    seg = AdversarialSegmentation(UNet(3, base_width=4, depth=2), HungDiscriminator(3, base_width=4), 3,
                                  monitor={"metric": "val/mIoU", "mode": "max"})
    assert seg.metric_modes["val/pseudo_acc_above"] == "max" and seg.metric_modes["val/pseudo_acc_below"] == "max"
    assert seg.metric_modes["val/mIoU"] == "max"
    Timing().setup(None, gan, "fit")
    assert gan.metric_modes["perf/train_batches_per_s"] == "max"


def test_final_and_best_tracking_follows_the_declared_direction(tmp_path):
    model = Segmentation(UNet(3, base_width=4, depth=2), 3, monitor={"metric": "val/mIoU", "mode": "max"})
    Timing().setup(None, model, "fit")
    s = RunSummary(str(tmp_path / "summary.json"), extra={"seed": 0})
    s.setup(None, model, "fit")
    rows = [(3.0, 0.2, 5.0, 0.4), (1.0, 0.7, 9.0, 0.9), (2.0, 0.5, 7.0, 0.3)]
    for step, (loss, miou, speed, above) in enumerate(rows):
        s.record(_trainer(step, {"val/loss": torch.tensor(loss), "val/mIoU": torch.tensor(miou),
                                 "perf/train_batches_per_s": torch.tensor(speed), "step": torch.tensor(float(step)),
                                 "val/pseudo_acc_above": torch.tensor(above)}))
    data = json.loads(s.write(_trainer(2, {})).read_text())
    assert data["seed"] == 0 and "step" not in data["metrics"]
    assert data["metrics"]["val/loss"] == {"mode": "min", "best": 1.0, "best_step": 1, "final": 2.0, "final_step": 2}
    assert data["metrics"]["val/mIoU"]["best"] == torch.tensor(0.7).item() and data["metrics"]["val/mIoU"]["mode"] == "max"
    assert data["metrics"]["perf/train_batches_per_s"]["best"] == 9.0  # was kept as a minimum before
    assert data["metrics"]["val/pseudo_acc_above"]["best"] == torch.tensor(0.3).item()  # not declared by Segmentation: a minimum
    assert s.validated_at(2) and not s.validated_at(5)
