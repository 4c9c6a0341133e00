"""The cost of Hung et al.'s VOC recipe (experiments/voc_hung_{baseline,adv,semi}.yaml) and of Naganuma &
Iiduka's CIFAR-10 GAN protocol (experiments/cifar10_sngan_ncg.yaml: SNGAN ResNet, batch 64, 100k iterations): floating-point
operations of one training iteration counted exactly (torch.utils.flop_counter on the presets' own models:
torchvision DeepLabv3-ResNet-101, 321x321 crops, batch 10 labeled, + 10 unlabeled for semi, the fully
convolutional discriminator), times the 20,000 iterations, and what that means at a sustained GPU rate; plus the
measured CPU seconds of one iteration at batch 1 here, for scale.

    python benchmarks/recipe_cost.py [--tflops 20 60]

No data or GPU is needed (random inputs of the presets' shapes). Validation (VOC: 1,449 whole images every
2,000 iterations; CIFAR-10: FID on 10,000 samples every 1,000) is not counted. The GAN's count backpropagates
every loss through every graph it builds (D's loss also into G): an upper bound on the update's own work.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("voc_hung_baseline", "voc_hung_adv", "voc_hung_semi")
# Naganuma & Iiduka's CIFAR-10 protocol (SNGAN ResNet, batch 64, 100k iterations): the same count
GAN_PRESETS = ("cifar10_sngan_ncg",)


def build(preset: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.train import build_model
    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={preset}", "logger=csv"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, build_model(cfg)


def iteration(model, cfg, batch: int, gan: bool = False) -> None:
    """One training iteration's forward and backward passes: S on the labeled (and unlabeled) crops, D on the
    ground truth and the predictions, as the model's losses compute them."""
    size = int(cfg.dataset.meta.shape[-1])
    x = torch.randn(batch, 3, size, size)
    if gan:  # G and D as the GAN's losses compute them (labels unused)
        for loss in model.losses((x, torch.zeros(batch, dtype=torch.long)), model.player_names).values():
            loss.backward(retain_graph=True)  # (spectral norm's hooks refuse autograd.grad here)
        return
    k = int(cfg.model.num_classes)
    y = torch.randint(0, k, (batch, size, size))
    data = {"labeled": (x, y), "unlabeled": (torch.randn_like(x), y)} if cfg.dataset.get("unlabeled") else (x, y)
    from src.models.adversarial import AdversarialModule

    model.train()
    if isinstance(model, AdversarialModule):
        losses = model.losses(data, model.player_names)
        for name, loss in losses.items():
            params = [p for p in model.players[name].parameters() if p.requires_grad]
            torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    else:
        logits = model.segmenter(x)
        torch.nn.functional.cross_entropy(logits, y).backward()


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    parser = argparse.ArgumentParser()
    parser.add_argument("--tflops", type=float, nargs="+", default=[20.0, 60.0],
                        help="sustained GPU rates (TFLOP/s) to convert the count into time")
    args = parser.parse_args()
    print("| preset | batch | GFLOP per iteration | iterations | PFLOP in all | "
          + " | ".join(f"hours at {t:g} TFLOP/s" for t in args.tflops) + " | CPU s per iteration at batch 1 |")
    print("|---|---|---|---|---|" + "---|" * len(args.tflops) + "---|")
    for preset in (*PRESETS, *GAN_PRESETS):
        gan = preset in GAN_PRESETS
        cfg, model = build(preset)
        # the count is of a plain iteration: the diagnostics of logging iterations (1 in 10) are left out
        type(model).logging_now = property(lambda self: False)
        with FlopCounterMode(display=False) as counter:
            iteration(model, cfg, 1, gan)
        per_image = counter.get_total_flops()
        batch = int(cfg.dataset.batch_size)
        steps = int(cfg.trainer.max_steps)
        per_it = per_image * batch
        t0 = time.perf_counter()
        iteration(model, cfg, 1, gan)
        cpu = time.perf_counter() - t0
        total = per_it * steps
        hours = [total / (t * 1e12) / 3600 for t in args.tflops]
        print(f"| {preset} | {batch} | {per_it / 1e9:.0f} | {steps} | {total / 1e15:.1f} | "
              + " | ".join(f"{h:.1f}" for h in hours) + f" | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
