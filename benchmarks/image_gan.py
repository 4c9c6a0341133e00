"""Conjugate-direction optimizers on images: the seeds' central claim (Naganuma & Iiduka, "Conjugate Gradient
Method for Generative Adversarial Networks", AISTATS 2023) measured on the 5,000 real digits.

    python benchmarks/image_gan.py --stage select [--archs dcgan sngan] [--optimizers ...] [--budget 1500] [--jobs 2]
    python benchmarks/image_gan.py --stage final  [--archs dcgan sngan] [--seeds 1 2 3 4 5] [--jobs 2]
    python benchmarks/image_gan.py --stage report [--archs dcgan sngan]

Every cell is an ordinary run of `python -m src.run` (one thread, CSV logging, in its own directory under
``--runs-dir``; a finished cell is reused): the architecture's model (``dcgan``: the default DCGAN; ``sngan``:
the SNGAN ResNet of src/networks/sngan.py at width 64), the non-saturating loss (the BCE of Naganuma &
Iiduka) except ACGD, which trains the WGAN loss of its paper, one update of each player per iteration for
``--budget`` iterations at batch 64, and the sample metrics of src/metrics/gan_quality.py on ``--samples``
generated digits against every training digit (FID, KID, improved precision / recall, density / coverage in
the feature space of the digits classifier the framework trains).

Stages:

* ``select`` (seed 0 only): the learning rates of each optimizer from Naganuma & Iiduka's grid {5e-3, 1e-3,
  5e-4, 1e-4, 5e-5}: first lr_G = lr_D over the grid, then (unless ``--no-off-diagonal``), at the best lr_G,
  lr_D one grid step above and below; the lowest final FID (on ``--select-samples`` samples) wins. For NCG, Fletcher-Reeves (``ncg_fr``) is searched so, and the other beta
  rules (PRP, HS, DY, HS_DY, FR_PRP, HZ) are tried at FR's learning rates: the best is ``ncg_best``. Every run
  of the search is kept in ``<results>/image_gan_<arch>_selection.json`` (the grid, recorded).
* ``final``: the chosen settings on seeds never used for choosing (``--seeds``, 1..5 by default), with the
  metrics every ``--budget / 4`` iterations for the curves.
* ``report``: ``<results>/image_gan_<arch>.md``: mean and std over seeds of each metric, each optimizer's
  difference to Adam paired by seed with its 95% interval, the curves (``image_gan_<arch>_fid.png``) and
  the last samples of each optimizer (``image_gan_<arch>_samples.png``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import runs  # noqa: E402

GRID = [5e-3, 1e-3, 5e-4, 1e-4, 5e-5]
RULES = ["PRP", "HS", "DY", "HS_DY", "FR_PRP", "HZ"]
ARCHS = {
    "dcgan": ["model=gan_dcgan"],  # the default run's networks (width 32)
    "sngan": ["model=gan_sngan", "model.generator.base_width=64", "model.discriminator.base_width=64",
              "model.loss=ns", "model.latent_dim=64"],
}
OPTIMIZERS = {
    "adam": ["optimizer=adam"],
    "ncg_fr": ["optimizer=ncg", "optimizer.beta_rule=FR"],
    "ncg_best": ["optimizer=ncg"],  # the rule chosen in the select stage
    "ncg_adam": ["optimizer=ncg_adam"],
    "acgd": ["optimizer=acgd", "model.loss=wgan"],
    "optimistic_adam": ["optimizer=optimistic_adam"],
}
METRICS = {"val/fid": "min", "val/kid": "min", "val/precision": "max", "val/recall": "max", "val/density": "max",
           "val/coverage": "max"}


def overrides(arch: str, opt: str, lr_g: float, lr_d: float, seed: int, budget: int, samples: int,
              validations: int, rule: str | None = None) -> list[str]:
    out = [*ARCHS[arch], *OPTIMIZERS[opt], f"seed={seed}", f"optimizer.lr={lr_g}",
           f"optimizer.players.discriminator.lr={lr_d}", "dataset=digits",
           "dataset.meta.metrics.quality.reference=train", "dataset.meta.metrics.quality.which=[fid,kid,pr,dc]",
           "dataset.meta.metrics.mmd=null", f"model.num_eval_samples={samples}",
           "logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
           "trainer.max_epochs=-1", f"trainer.max_steps={budget}", "trainer.check_val_every_n_epoch=null",
           f"trainer.val_check_interval={budget // validations}", "callbacks.model_checkpoint=null",
           "validate_after_fit=false"]
    if rule is not None:
        out.append(f"optimizer.beta_rule={rule}")
    return out


def run_cell(args_: list[str], run_dir: Path) -> dict:
    """The cell's run (benchmarks/runs.py) and its final metrics."""
    summary = runs.run_cell(args_, run_dir)
    record = {"status": "finished" if runs.ok(summary) else "failed", "dir": str(run_dir),
              "wall_s": summary.get("wall_time_s") if summary else None}
    for name in METRICS:
        record[name] = runs.final_value(summary, name)
    return record


def fid_of(record: dict) -> float:
    value = record.get("val/fid")
    return value if record["status"] == "finished" and value is not None and math.isfinite(value) else math.inf


def select(arch: str, opt: str, args) -> list[dict]:
    """The learning-rate search of one optimizer on seed 0 (and NCG's beta rule); every run recorded."""
    base = args.runs_dir / "select" / arch / opt
    runs = []

    def one(lr_g, lr_d, rule=None):
        name = f"g{lr_g:g}_d{lr_d:g}" + (f"_{rule}" if rule else "")
        over = overrides(arch, opt if rule is None else "ncg_best", lr_g, lr_d, 0, args.budget, args.select_samples, 1,
                         rule)
        rec = {"optimizer": opt if rule is None else "ncg_best", "lr_g": lr_g, "lr_d": lr_d, "rule": rule,
               **run_cell(over, base / name)}
        runs.append(rec)
        return rec

    diagonal = [one(lr, lr) for lr in GRID]
    best = min(diagonal, key=fid_of)
    i = GRID.index(best["lr_g"])
    for j in (i - 1, i + 1):
        if args.off_diagonal and 0 <= j < len(GRID):
            one(best["lr_g"], GRID[j])
    if opt == "ncg_fr":
        chosen = min(runs, key=fid_of)
        for rule in RULES:
            one(chosen["lr_g"], chosen["lr_d"], rule)
    return runs


def choices(selection: list[dict]) -> dict[str, dict]:
    """{optimizer: its chosen run} (lowest final FID)."""
    out = {}
    for opt in dict.fromkeys(r["optimizer"] for r in selection):
        out[opt] = min((r for r in selection if r["optimizer"] == opt), key=fid_of)
    return out


# ------------------------------------------------------------------------------------------- report
def report(arch: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from src.utils.stats import format_interval, mean_std, paired_interval

    selection = json.loads((args.results_dir / f"image_gan_{arch}_selection.json").read_text())
    chosen = choices(selection["runs"])
    finals = {}
    for opt in chosen:
        for seed in args.seeds:
            run_dir = args.runs_dir / "final" / arch / opt / f"seed{seed}"
            if (run_dir / "summary.json").is_file():
                finals[(opt, seed)] = run_cell([], run_dir)
    opts = [o for o in chosen if any((o, s) in finals for s in args.seeds)]

    def values(opt, metric):
        return [finals[(opt, s)].get(metric) if (opt, s) in finals else None for s in args.seeds]

    lines = [f"# Image GANs on the digits: {arch}, {selection['budget']} iterations, {len(args.seeds)} seeds", "",
             f"`python benchmarks/image_gan.py --stage select --archs {arch} --budget {selection['budget']} "
             f"--select-samples {selection['samples']}"
             f"{'' if selection.get('off_diagonal', True) else ' --no-off-diagonal'}` then `--stage final "
             f"--samples {args.samples}` and `--stage report` (same --archs, --budget). Batch 64, one update of each player per iteration, {selection['budget']} iterations; metrics "
             f"on {args.samples} generated digits (the search: {selection['samples']}) against every training digit (4,500), in the feature space "
             "of the framework's digits classifier (src/metrics/backbones.py: digits_cnn). Learning rates chosen on "
             "seed 0 from Naganuma & Iiduka's grid (every run of the search: "
             f"`image_gan_{arch}_selection.json`); the table is over seeds {args.seeds[0]}..{args.seeds[-1]}, never used "
             "for choosing. Loss: non-saturating (BCE), ACGD: WGAN as in its paper.", "",
             "| optimizer | lr G / D | runs | FID | KID | precision | recall | density | coverage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for opt in opts:
        c = chosen[opt]
        cells = []
        for metric in METRICS:
            mean, std = mean_std([v for v in values(opt, metric) if v is not None])
            cells.append(f"{mean:.4g} ± {std:.2g}" if math.isfinite(mean) else "—")
        done = sum((opt, s) in finals and finals[(opt, s)]["status"] == "finished" for s in args.seeds)
        label = opt + (f" ({c['rule']})" if c.get("rule") else "")
        lines.append(f"| {label} | {c['lr_g']:g} / {c['lr_d']:g} | {done} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference to Adam (same seed), mean and 95% interval (FID, KID: lower is better; the "
              "others: higher is better):", "",
              "| optimizer | " + " | ".join(m.split("/")[1] for m in METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    for opt in opts:
        if opt == "adam":
            continue
        cells = [format_interval(*paired_interval(values(opt, m), values("adam", m))[:3]) for m in METRICS]
        lines.append(f"| {opt} | " + " | ".join(cells) + " |")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, opt in enumerate(opts):
        for j, seed in enumerate(args.seeds):
            xs, ys = runs.curve(args.runs_dir / "final" / arch / opt / f"seed{seed}", "val/fid")
            if xs:
                ax.plot(xs, ys, color=f"C{i}", alpha=0.7, marker="o", ms=3, label=opt if j == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("FID (digits classifier features)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.results_dir / f"image_gan_{arch}_fid.png")
    plt.close(fig)
    grids = []
    for opt in opts:
        pngs = sorted((args.runs_dir / "final" / arch / opt / f"seed{args.seeds[0]}" / "samples").glob("*.png"))
        if pngs:
            grids.append((opt, Image.open(pngs[-1]).convert("L")))
    if grids:
        fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 2.9), dpi=100, squeeze=False)
        for ax, (opt, image) in zip(axes[0], grids):
            ax.imshow(image, cmap="gray")
            ax.set_title(opt, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.results_dir / f"image_gan_{arch}_samples.png")
        plt.close(fig)
    lines += ["", f"Curves: `image_gan_{arch}_fid.png`; samples (seed {args.seeds[0]}, fixed noise, last "
              f"iteration): `image_gan_{arch}_samples.png`."]
    (args.results_dir / f"image_gan_{arch}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("select", "final", "report"), required=True)
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--optimizers", nargs="+", default=[o for o in OPTIMIZERS if o != "ncg_best"],
                        choices=[o for o in OPTIMIZERS if o != "ncg_best"])
    parser.add_argument("--budget", type=int, default=1500, help="iterations per run")
    parser.add_argument("--samples", type=int, default=5000, help="generated samples per evaluation (final)")
    parser.add_argument("--select-samples", type=int, default=5000, help="generated samples per evaluation (select)")
    parser.add_argument("--off-diagonal", action=argparse.BooleanOptionalAction, default=True,
                        help="select: also lr_D one grid step above and below the best lr_G = lr_D")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    runs.add_arguments(parser, "image_gan")
    args = parser.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for arch in args.archs:
        sel_path = args.results_dir / f"image_gan_{arch}_selection.json"
        if args.stage == "select":
            with ThreadPoolExecutor(args.jobs) as pool:
                chains = list(pool.map(lambda o: select(arch, o, args), args.optimizers))
            selection = [r for chain in chains for r in chain]
            sel_path.write_text(json.dumps({"budget": args.budget, "samples": args.select_samples, "grid": GRID,
                                            "off_diagonal": args.off_diagonal,
                                            "runs": selection}, indent=1))
            print(f"{arch}: chosen " + ", ".join(f"{o} lr_G {r['lr_g']:g} lr_D {r['lr_d']:g}"
                                               + (f" {r['rule']}" if r["rule"] else "")
                                               for o, r in choices(selection).items()), flush=True)
        elif args.stage == "final":
            chosen = choices(json.loads(sel_path.read_text())["runs"])
            cells = [(opt, seed) for seed in args.seeds for opt in chosen]
            runs.run_cells([(overrides(arch, opt, chosen[opt]["lr_g"], chosen[opt]["lr_d"], seed, args.budget,
                                       args.samples, 4, chosen[opt]["rule"]),
                             args.runs_dir / "final" / arch / opt / f"seed{seed}") for opt, seed in cells], args.jobs)
        else:
            report(arch, args)
    print(f"total wall time {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
