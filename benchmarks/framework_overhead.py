"""Framework overhead: training batches per second of the default GAN (DCGAN on digits, Adam, batch
64, non-saturating loss) through `src.train` against a plain PyTorch loop with the same networks,
batch and optimizer, both measured in this one process (alternating, best of `--repeats`); and the
time from process start to the first training step of `python -m src.run` (a fresh process).

    python benchmarks/framework_overhead.py [--batches 300] [--repeats 3]

Targets: framework >= 0.9x the plain loop; first step within 10 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plain_loop(batches: int, warmup: int = 10) -> float:
    """Batches per second of a hand-written GAN loop (what the framework runs, minus the framework)."""
    from src.data.digits import load_digits_array
    from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    images, _ = load_digits_array()
    data = torch.from_numpy(images) * 2 - 1
    g, d = DCGANGenerator(64, (1, 28, 28), 64), DCGANDiscriminator((1, 28, 28), 64)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    perm = torch.randperm(len(data))
    busy, n = 0.0, 0
    for step in range(batches + warmup):
        t0 = time.perf_counter()
        idx = perm[(step * 64) % (len(data) - 64):][:64]
        real = data[idx]
        fake = g(torch.randn(64, 64)).detach()
        d_loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-d(g(torch.randn(64, 64)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step >= warmup:
            busy += time.perf_counter() - t0
            n += 1
    return n / busy


def framework(batches: int, out: Path) -> float:
    """Batches per second through src.train (Lightning, callbacks, loggers), validation excluded."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.train import train
    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"trainer.max_steps={batches}", "trainer.max_epochs=-1", "trainer.limit_val_batches=0",
            "logger=csv", "trainer.enable_progress_bar=false", "validate_after_fit=false"],
            return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    result = train(cfg)
    return result["metrics"]["perf/train_batches_per_s"]["final"]


def first_step_seconds(out: Path) -> float:
    proc = subprocess.run([sys.executable, "-m", "src.run", "trainer.max_steps=2", "trainer.limit_val_batches=0",
                           f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads((out / "summary.json").read_text())["metrics"]["perf/first_step_s"]["final"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    plain, fw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            plain.append(plain_loop(args.batches))
            fw.append(framework(args.batches, Path(tmp) / f"fw{r}"))
        first = [first_step_seconds(Path(tmp) / f"first{r}") for r in range(args.repeats)]
    print(f"\nDCGAN on digits, batch 64, Adam, {args.batches} batches x {args.repeats} repeats, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| measure | value |\n|---|---|")
    print(f"| plain PyTorch loop, batches/s (best) | {max(plain):.2f} |")
    print(f"| src.train (Lightning), batches/s (best) | {max(fw):.2f} |")
    print(f"| framework / plain | {max(fw) / max(plain):.3f} |")
    print(f"| all runs plain | {', '.join(f'{x:.2f}' for x in plain)} |")
    print(f"| all runs framework | {', '.join(f'{x:.2f}' for x in fw)} |")
    print(f"| process start -> first training step, s (median) | {sorted(first)[len(first) // 2]:.2f} |")


if __name__ == "__main__":
    main()
