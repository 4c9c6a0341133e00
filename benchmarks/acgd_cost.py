"""Cost of one ACGD step (Schaefer, Zheng & Anandkumar, ICML 2020): ours (src/optim/acgd.py) against the
authors' package (PyPI `CGDs`, used here only as a reference point), at equal CG tolerance, and an Adam
GAN step (both players, the framework's per-player path) for scale.

Setting: the default DCGAN (src/networks/dcgan.py, 1x28x28, base width 64), batch 64 of the 5,000 MNIST
digits (src/data/digits.load_digits_array), WGAN game f = mean D(real) - mean D(G(z)), lr 1e-4.
Both ACGDs use the same squared-residual convention, so equal `tol` means equal accuracy. The three
methods are stepped in turn on their own copies of the same initial networks and batches, so load
from other processes spreads evenly over them. Products D v are counted by wrapping the functions that
compute them (ours: src.optim.hvp.mixed_vp; CGDs: its Hvp_vec).

    python benchmarks/acgd_cost.py [--steps 6] [--warmup 2] [--tol 1e-10 1e-4] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src.optim.cgd as ours_cgd  # noqa: E402
from src.data.digits import load_digits_array  # noqa: E402
from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from src.optim.acgd import ACGD  # noqa: E402

LATENT, BATCH, LR = 64, 64, 1e-4


class Counter:
    """Wrap a module attribute (a function) and count its calls."""

    def __init__(self, module, name: str):
        self.module, self.name, self.calls = module, name, 0
        self.original = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        setattr(module, name, counted)

    def take(self) -> int:
        n, self.calls = self.calls, 0
        return n


def batches(n: int, seed: int = 0):
    images, _ = load_digits_array("mnist5k", 28)
    x = torch.from_numpy(images) * 2 - 1
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    out = []
    for i in range(n):
        idx = order[(i * BATCH) % (len(x) - BATCH):][:BATCH]
        out.append((x[idx], torch.randn(BATCH, LATENT, generator=g)))
    return out


@torch.no_grad()
def apart(G0, D0, ours, theirs) -> float:
    """norm(ours - theirs) / norm(theirs - start): how far apart the runs are, relative to how far they moved."""
    flat = lambda ms: torch.cat([p.reshape(-1) for m in ms for p in m.parameters()])  # noqa: E731
    start, a, b = flat((G0, D0)), flat(ours), flat(theirs)
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b - start)).item()


def wgan_value(G, D, real, z):
    return D(real).mean() - D(G(z)).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per method and tolerance")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tol", type=float, nargs="+", default=[1e-10, 1e-4])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); 1 is steadier on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import CGDs
        import CGDs.acgd
        import CGDs.cgd_utils
    except ImportError:
        sys.exit("the authors' package is missing: pip install CGDs")

    torch.manual_seed(0)
    G0, D0 = DCGANGenerator(LATENT, (1, 28, 28)), DCGANDiscriminator((1, 28, 28))
    nG, nD = (sum(p.numel() for p in m.parameters()) for m in (G0, D0))
    data = batches(args.warmup + args.steps)
    ours_count = Counter(ours_cgd, "mixed_vp")
    theirs_counts = [Counter(CGDs.cgd_utils, "Hvp_vec")]
    theirs_counts.append(Counter(CGDs.acgd, "Hvp_vec"))
    print(f"DCGAN G {nG:,} params, D {nD:,} params; batch {BATCH}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    rows = []
    for tol in args.tol:
        nets = {k: (copy.deepcopy(G0), copy.deepcopy(D0)) for k in ("ours", "cgds", "adam")}
        G, D = nets["ours"]
        ours = ACGD([{"params": G.parameters(), "player": "generator"},
                     {"params": D.parameters(), "player": "discriminator"}], lr=LR, tol=tol, atol=1e-16)
        Gc, Dc = nets["cgds"]
        theirs = CGDs.ACGD(max_params=Dc.parameters(), min_params=Gc.parameters(), lr_max=LR, lr_min=LR,
                           tol=tol, atol=1e-16, collect_info=True)
        Ga, Da = nets["adam"]
        adam_g = torch.optim.Adam(Ga.parameters(), lr=LR, betas=(0.5, 0.999))
        adam_d = torch.optim.Adam(Da.parameters(), lr=LR, betas=(0.5, 0.999))
        times = {k: [] for k in nets}
        iters = {"ours": [], "cgds": []}
        hvps = {"ours": [], "cgds": []}
        for i, (real, z) in enumerate(data):
            timed = i >= args.warmup
            # ours
            ours_count.take()
            t0 = time.perf_counter()
            ours.step(lambda: (lambda f: (f, -f))(wgan_value(G, D, real, z)))
            dt = time.perf_counter() - t0
            if timed:
                times["ours"].append(dt)
                iters["ours"].append(ours.stats["cg_iters"])
                hvps["ours"].append(ours_count.take())
            # the authors' package
            for c in theirs_counts:
                c.take()
            t0 = time.perf_counter()
            theirs.zero_grad()
            theirs.step(wgan_value(Gc, Dc, real, z))
            dt = time.perf_counter() - t0
            if timed:
                times["cgds"].append(dt)
                iters["cgds"].append(theirs.get_info()["iter_num"])
                hvps["cgds"].append(sum(c.take() for c in theirs_counts))
            # Adam GAN step: discriminator, then generator (the framework's per-player path)
            t0 = time.perf_counter()
            adam_d.zero_grad(set_to_none=True)
            (Da(Ga(z).detach()).mean() - Da(real).mean()).backward()
            adam_d.step()
            adam_g.zero_grad(set_to_none=True)
            (-Da(Ga(z)).mean()).backward()
            adam_g.step()
            dt = time.perf_counter() - t0
            if timed:
                times["adam"].append(dt)
            if i == 0:
                first = apart(G0, D0, (G, D), (Gc, Dc))
        diff = (first, apart(G0, D0, (G, D), (Gc, Dc)))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append((tol, med, {k: statistics.mean(v) for k, v in iters.items()},
                     {k: statistics.mean(v) for k, v in hvps.items()}, diff))

    print()
    print("| CG tol | method | ms/step (median) | x Adam GAN step | CG iters/step | HVPs/step | ours / CGDs |")
    print("|---|---|---|---|---|---|---|")
    for tol, med, it, hv, diff in rows:
        for k, label in (("ours", "ACGD (ours)"), ("cgds", "ACGD (CGDs 0.4.5)"), ("adam", "Adam (D then G)")):
            ratio = f"{med['ours'] / med['cgds']:.2f}x" if k == "ours" else ""
            cg = f"{it[k]:.1f}" if k in it else "-"
            hp = f"{hv[k]:.1f}" if k in hv else "-"
            print(f"| {tol:g} | {label} | {med[k]:.0f} | {med[k] / med['adam']:.1f}x | {cg} | {hp} | {ratio} |")
        print(f"| {tol:g} | ours vs CGDs: distance between the two runs' parameters relative to the distance "
              f"moved, {diff[0]:.1e} after one step, {diff[1]:.1e} after {args.warmup + args.steps} (float32) "
              "| | | | | |")


if __name__ == "__main__":
    main()
