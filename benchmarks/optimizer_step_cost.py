"""Per-step cost of the per-player optimizers on the DCGAN players at width 64 (the default run's until
2026-11-30), on CPU.

    python benchmarks/optimizer_step_cost.py [--steps 300] [--threads 1]

Times ``optimizer.step()`` alone (median over many steps) for torch Adam (per-tensor loop, foreach, fused),
NCG (Naganuma & Iiduka, AISTATS 2023; every beta rule, global scope, plus FR per tensor) and NCGAdam (CoBA,
Kobayashi & Iiduka) on the DCGAN discriminator and generator of src/networks/dcgan.py (image (1, 28, 28),
base width 64, latent 64), with real gradients: a few backward passes of the non-saturating GAN losses on
random batches of 64, cycled between steps. Optimizers are measured in interleaved blocks so that a
changing load on a shared machine affects all of them alike. Ratios are to Adam foreach and Adam fused.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from src.optim.ncg import BETA_RULES, NCG
from src.optim.ncg_adam import NCGAdam


def real_gradients(n_sets: int, batch: int = 64, latent: int = 64):
    """(D, G, per-player lists of gradient sets) from backward passes of the non-saturating losses."""
    torch.manual_seed(0)
    D = DCGANDiscriminator((1, 28, 28), base_width=64)
    G = DCGANGenerator(latent, (1, 28, 28), base_width=64)
    bce = nn.BCEWithLogitsLoss()
    grads = {"discriminator": [], "generator": []}
    for _ in range(n_sets):
        real = torch.rand(batch, 1, 28, 28) * 2 - 1
        z = torch.randn(batch, latent)
        D.zero_grad(set_to_none=True)
        fake = G(z).detach()
        (bce(D(real), torch.ones(batch)) + bce(D(fake), torch.zeros(batch))).backward()
        grads["discriminator"].append([p.grad.clone() for p in D.parameters()])
        G.zero_grad(set_to_none=True)
        bce(D(G(z)), torch.ones(batch)).backward()
        grads["generator"].append([p.grad.clone() for p in G.parameters()])
    return {"discriminator": D, "generator": G}, grads


OPTIMIZERS = {
    "Adam (for-loop)": lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), foreach=False),
    "Adam foreach": lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), foreach=True),
    "Adam fused": lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), fused=True),
    **{f"NCG {rule}": (lambda rule: lambda p: NCG(p, lr=1e-3, beta_rule=rule, c=0.5))(rule) for rule in BETA_RULES},
    "NCG FR (tensor scope)": lambda p: NCG(p, lr=1e-3, beta_rule="FR", c=0.5, beta_scope="tensor"),
    "NCGAdam HS": lambda p: NCGAdam(p, lr=2e-4, betas=(0.5, 0.999)),
}


def measure(steps: int, block: int, warmup: int) -> dict[str, dict[str, float]]:
    nets, grads = real_gradients(n_sets=4)
    runs = {}
    for name, make in OPTIMIZERS.items():
        for player, net in nets.items():
            params = [nn.Parameter(p.detach().clone()) for p in net.parameters()]
            runs[name, player] = (params, make(params), [])
    for (name, player), (params, opt, times) in runs.items():  # warm-up (state allocation, first steps)
        for i in range(warmup):
            for p, g in zip(params, grads[player][i % len(grads[player])]):
                p.grad = g
            opt.step()
    done = 0
    while done < steps:
        for (name, player), (params, opt, times) in runs.items():
            for i in range(block):
                for p, g in zip(params, grads[player][(done + i) % len(grads[player])]):
                    p.grad = g
                t0 = time.perf_counter_ns()
                opt.step()
                times.append(time.perf_counter_ns() - t0)
        done += block
    out: dict[str, dict[str, float]] = {}
    for (name, player), (_, _, times) in runs.items():
        out.setdefault(name, {})[player] = statistics.median(times) / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per optimizer and player")
    parser.add_argument("--block", type=int, default=20, help="consecutive steps per optimizer before switching")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args.steps, args.block, args.warmup)
    nd = sum(p.numel() for p in DCGANDiscriminator((1, 28, 28), 64).parameters())
    ng = sum(p.numel() for p in DCGANGenerator(64, (1, 28, 28), 64).parameters())
    print(f"optimizer.step() on CPU, median of {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); D {nd:,} params, G {ng:,} params")
    header = f"{'optimizer':<24}{'D us':>9}{'G us':>9}{'D/foreach':>11}{'G/foreach':>11}{'D/fused':>9}{'G/fused':>9}"
    print(header)
    print("-" * len(header))
    ref, fused = result["Adam foreach"], result["Adam fused"]
    for name, t in result.items():
        print(f"{name:<24}{t['discriminator']:>9.0f}{t['generator']:>9.0f}"
              f"{t['discriminator'] / ref['discriminator']:>11.2f}{t['generator'] / ref['generator']:>11.2f}"
              f"{t['discriminator'] / fused['discriminator']:>9.2f}{t['generator'] / fused['generator']:>9.2f}")


if __name__ == "__main__":
    main()
