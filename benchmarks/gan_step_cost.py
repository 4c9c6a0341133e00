"""Wall time of one full GAN training step of the width-64 DCGAN (the default run's until 2026-11-30) with Adam,
NCG and NCG-Adam, on CPU.

    python benchmarks/gan_step_cost.py [--steps 200] [--block 10] [--warmup 10] [--threads 1]

One step = a discriminator step (G forward, detached, D forward on real and fake, non-saturating D
loss, backward, optimizer step) and a generator step (G and D forward, non-saturating G loss, backward,
optimizer step), as src/models/gan.py does it (n_critic = 1), on the default model of conf/model/gan_dcgan.yaml:
src/networks/dcgan.py with image (1, 28, 28), base width 64, latent 64, batch 64 of the 5,000 real digits.

Optimizers, each player its own, built from the project's presets (so the settings are the runs'):
conf/optimizer/adam.yaml (torch.optim.Adam, lr 2e-4, betas (0.5, 0.999); torch's default implementation,
a per-tensor loop on CPU), the same with fused=True for reference, conf/optimizer/ncg.yaml (NCG, Naganuma
& Iiduka, AISTATS 2023: Fletcher-Reeves, global beta) and conf/optimizer/ncg_adam.yaml (NCGAdam, CoBA).
Every variant trains its own copy of the same initial networks on the same batches and noise; variants
run in the same process in interleaved blocks of `--block` steps (round robin) so that a changing load on
a shared machine affects all alike. Reported: median step time over `--steps` timed steps after
`--warmup`, the median time inside the two optimizer.step() calls, and the ratio to Adam (the issue's
target: NCG at most 1.3x Adam per GAN step).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = {  # name: (preset file, extra keyword arguments)
    "Adam (adam.yaml, torch default)": ("adam", {}),
    "Adam fused=True": ("adam", {"fused": True}),
    "NCG (ncg.yaml, FR)": ("ncg", {}),
    "NCG-Adam (ncg_adam.yaml, HS)": ("ncg_adam", {}),
}


def optimizer_factory(preset: str, extra: dict):
    """A function params -> the preset's optimizer (the class and settings of conf/optimizer/<preset>.yaml,
    as src/optim/factory.py builds them)."""
    import hydra
    from omegaconf import OmegaConf

    from src.optim.factory import COMMON_KEYS

    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optimizer" / f"{preset}.yaml"))
    cls = hydra.utils.get_class(node.pop("_target_"))
    kwargs = {k: v for k, v in node.items() if k not in COMMON_KEYS}
    return lambda params: cls(params, **kwargs, **extra)


class Variant:
    def __init__(self, name: str, make_opt, G: torch.nn.Module, D: torch.nn.Module, data: torch.Tensor,
                 batch: int, latent: int, seed: int = 0):
        self.name, self.G, self.D, self.data = name, copy.deepcopy(G), copy.deepcopy(D), data
        self.opt_g, self.opt_d = make_opt(list(self.G.parameters())), make_opt(list(self.D.parameters()))
        self.batch, self.latent = batch, latent
        self.rng = torch.Generator().manual_seed(seed)
        self.step_s: list[float] = []
        self.opt_s: list[float] = []

    def step(self, record: bool) -> None:
        from torch.nn.functional import softplus

        idx = torch.randint(len(self.data), (self.batch,), generator=self.rng)
        z1 = torch.randn(self.batch, self.latent, generator=self.rng)
        z2 = torch.randn(self.batch, self.latent, generator=self.rng)
        t0 = time.perf_counter()
        real = self.data[idx]
        # discriminator step
        fake = self.G(z1).detach()
        d_loss = softplus(-self.D(real)).mean() + softplus(self.D(fake)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        t1 = time.perf_counter()
        self.opt_d.step()
        t2 = time.perf_counter()
        # generator step
        g_loss = softplus(-self.D(self.G(z2))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        t3 = time.perf_counter()
        self.opt_g.step()
        t4 = time.perf_counter()
        if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
            raise RuntimeError(f"{self.name}: non-finite loss")
        if record:
            self.step_s.append(t4 - t0)
            self.opt_s.append((t2 - t1) + (t4 - t3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed GAN steps per variant")
    parser.add_argument("--block", type=int, default=10, help="consecutive steps per variant before switching")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from src.data.digits import load_digits_array
    from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator

    images, _ = load_digits_array()
    data = torch.from_numpy(images).float() * 2 - 1
    latent = 64
    torch.manual_seed(0)
    G, D = DCGANGenerator(latent, (1, 28, 28), base_width=64), DCGANDiscriminator((1, 28, 28), base_width=64)
    variants = [Variant(name, optimizer_factory(*spec), G, D, data, args.batch, latent) for name, spec in PRESETS.items()]
    for v in variants:
        for _ in range(args.warmup):
            v.step(record=False)
    t_start = time.perf_counter()
    while len(variants[0].step_s) < args.steps:
        for v in variants:
            for _ in range(args.block):
                v.step(record=True)
    wall = time.perf_counter() - t_start

    nd, ng = sum(p.numel() for p in D.parameters()), sum(p.numel() for p in G.parameters())
    print(f"DCGAN on digits (1x28x28, base width 64, latent 64, G {ng:,} / D {nd:,} params), batch {args.batch}, "
          f"ns loss, D step + G step; median of {len(variants[0].step_s)} steps per optimizer after {args.warmup} "
          f"warm-up, interleaved in blocks of {args.block}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); {wall:.0f} s")
    ref = statistics.median(variants[0].step_s)
    fused = statistics.median(variants[1].step_s)
    print()
    print("| optimizer (both players) | GAN step ms (median) | IQR ms | optimizer.step() ms, D + G | ratio / Adam | ratio / Adam fused |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        med = statistics.median(v.step_s)
        q = statistics.quantiles(v.step_s, n=4)
        print(f"| {v.name} | {1e3 * med:.1f} | {1e3 * q[0]:.1f}-{1e3 * q[2]:.1f} | {1e3 * statistics.median(v.opt_s):.2f} "
              f"| {med / ref:.3f} | {med / fused:.3f} |")
    ncg = statistics.median(variants[2].step_s) / ref
    print(f"\nIssue target NCG <= 1.3x Adam per GAN step: {'met' if ncg <= 1.3 else 'NOT met'} ({ncg:.3f}x).")


if __name__ == "__main__":
    main()
