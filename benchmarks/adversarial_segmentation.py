"""Adversarial segmentation on the offline scenes (Hung et al. 2018, BMVC, arXiv 1802.07934; Luc et al. 2016,
arXiv 1611.08408): does a discriminator help the segmenter, with few labels and with all of them?

    python benchmarks/adversarial_segmentation.py --stage curve     # the baseline's convergence (budget)
    python benchmarks/adversarial_segmentation.py --stage select    # lambda_adv and D's lr, on validation
    python benchmarks/adversarial_segmentation.py --stage final     # the table's cells, test split
    python benchmarks/adversarial_segmentation.py --stage report    # <results>/adversarial_segmentation.md

Every cell is an ordinary run (``python -m src.run experiment=scenes_supervised|scenes_adv|scenes_semi|
scenes_luc ...``, one thread, CSV logging, its own directory under ``--runs-dir``; a run that ended is
reused, so an interrupted benchmark continues). The protocol:

* Splits: 2,000 training scenes (the labeled subset of each seed: ``dataset.labeled_fraction``, nested
  across fractions), 500 validation scenes for every choice, 1,000 test scenes for the reported numbers
  (``test_after_fit=true``: the final weights, once), each split drawn from its own source digits.
* ``curve``: the supervised baseline (``--curves``: 1/8 labels with and without the pretrained encoder, full
  labels without, by default) for ``--curve-iterations`` with validation every 250 iterations (seed 100):
  the budget (``--iterations``) is where these curves have flattened.
* ``select``: +adv at 1/8 labels over lambda_adv in {0.001, 0.01, 0.1} x D's lr in {1e-4, 1e-3} (seeds 100,
  101, validation mIoU; the baseline on the same seeds beside it); +adv+semi uses the chosen pair with the
  paper's lambda_semi 0.1, T_semi 0.2, lambda_adv(unlabeled) 0.001 and L_semi from a quarter of the run
  (the paper: 5,000 of 20,000 iterations).
* ``final`` (seeds 0-4, never used for choosing): labels x method x pretraining, in this order of priority:
  1/8 {baseline, +adv, +adv+semi} x {none, digits}; full labels baseline x {none, digits} (the upper
  bound); 1/4 the same as 1/8; 1/8 and 1/4 with extra scenes from the conditional digits GAN or from real
  digits (the ceiling); Luc et al.'s three discriminator inputs at full labels.
* ``report``: test mIoU mean and std over seeds, each method's difference to its baseline (same labels,
  same pretraining, same seed) with its 95% interval, the discriminator's diagnostics (D's accuracy on the
  ground truth and on the predictions, the adversarial gradient's size relative to the cross-entropy's),
  pseudo-label accuracy above and below T_semi, and the curves.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import runs  # noqa: E402

FRACTIONS = {"1/8": 0.125, "1/4": 0.25, "full": 1.0}
PRETRAIN = {"none": [], "digits": ["model.segmenter.pretrain=digits"]}
LAMBDAS = [0.001, 0.01, 0.1]
D_LRS = [1e-4, 1e-3]
SELECT_SEEDS = [100, 101]
AUG_RATIO = 1.0  # extra scenes per labeled scene
METHODS = {
    "baseline": ["experiment=scenes_supervised"],
    "+adv": ["experiment=scenes_adv"],
    "+adv+semi": ["experiment=scenes_semi"],
    "+GAN scenes": ["experiment=scenes_supervised"],
    "+real scenes": ["experiment=scenes_supervised"],
    "Luc basic": ["experiment=scenes_luc", "model.discriminator.variant=basic"],
    "Luc product": ["experiment=scenes_luc", "model.discriminator.variant=product"],
    "Luc scaling": ["experiment=scenes_luc", "model.discriminator.variant=scaling"],
}
ADVERSARIAL = ("+adv", "+adv+semi")
# (labels, method, pretraining) groups of the final stage, by priority
FINAL_GROUPS = ([("1/8", m, p) for p in PRETRAIN for m in ("baseline", "+adv", "+adv+semi")]
                + [("full", "baseline", p) for p in PRETRAIN]
                + [("1/4", m, p) for p in PRETRAIN for m in ("baseline", "+adv", "+adv+semi")]
                + [(f, m, "none") for f in ("1/8", "1/4") for m in ("+GAN scenes", "+real scenes")]
                + [("full", m, "none") for m in ("Luc basic", "Luc product", "Luc scaling")])


def cell_args(labels: str, method: str, pretrain: str, seed: int, iterations: int, val_every: int,
              chosen: dict | None = None, generator: str | None = None, test: bool = True) -> list[str]:
    args = [*METHODS[method], *PRETRAIN[pretrain], f"seed={seed}", f"dataset.labeled_fraction={FRACTIONS[labels]}",
            "logger=csv", "callbacks.overlays=null", "callbacks.model_checkpoint=null",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"trainer.max_steps={iterations}",
            f"trainer.val_check_interval={val_every}", f"test_after_fit={str(test).lower()}"]
    if method in ADVERSARIAL and chosen:
        args += [f"model.lambda_adv={chosen['lambda_adv']}", f"optimizer.players.discriminator.lr={chosen['d_lr']}"]
    if method == "+adv+semi":
        args.append(f"model.semi_start={iterations // 4}")
    if method == "+GAN scenes":
        args.append(f"dataset.extra_scenes={{source:gan,ratio:{AUG_RATIO},generator:{generator}}}")
    if method == "+real scenes":
        args.append(f"dataset.extra_scenes={{source:real,ratio:{AUG_RATIO}}}")
    return args


def cell_dir(args, stage: str, labels: str, method: str, pretrain: str, seed: int, extra: str = "") -> Path:
    name = method.replace("+", "plus_").replace(" ", "_")
    return args.runs_dir / stage / labels.replace("/", "of") / f"{name}_{pretrain}{extra}" / f"seed{seed}"


def gan_checkpoint(args) -> str:
    """The conditional digits GAN of the +GAN scenes rows (trained once: experiment=digits_cgan_scenes)."""
    run_dir = args.runs_dir / "gan" / "digits_cgan_scenes"
    summary = runs.run_cell(["experiment=digits_cgan_scenes", "seed=0", "logger=csv", "trainer.enable_progress_bar=false",
                             "trainer.enable_model_summary=false"], run_dir)
    if not runs.ok(summary):
        raise SystemExit(f"the conditional GAN run in {run_dir} failed: {summary and summary['status']}")
    return str(run_dir / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------------------------- stages
def stage_curve(args) -> None:
    cells = []
    for cell in args.curves:
        f, p = cell.split(":")
        cells.append((cell_args(f, "baseline", p, 100, args.curve_iterations, 250, test=False),
                      cell_dir(args, "curve", f, "baseline", p, 100)))
    runs.run_cells(cells, args.jobs)


def stage_select(args) -> dict:
    cells, keys = [], []
    grid = [tuple(float(v) for v in pair.split(":")) for pair in args.select_grid]
    for seed in args.select_seeds:
        cells.append((cell_args("1/8", "baseline", "none", seed, args.iterations, args.iterations, test=False),
                      cell_dir(args, "select", "1/8", "baseline", "none", seed)))
        keys.append(("baseline", None, None, seed))
        for lam, d_lr in grid:
            chosen = {"lambda_adv": lam, "d_lr": d_lr}
            cells.append((cell_args("1/8", "+adv", "none", seed, args.iterations, args.iterations, chosen, test=False),
                          cell_dir(args, "select", "1/8", "+adv", "none", seed, f"_lam{lam:g}_dlr{d_lr:g}")))
            keys.append(("+adv", lam, d_lr, seed))
    summaries = runs.run_cells(cells, args.jobs)
    records = [{"method": m, "lambda_adv": lam, "d_lr": d_lr, "seed": seed,
                "val_mIoU": runs.final_value(s, "val/mIoU")} for (m, lam, d_lr, seed), s in zip(keys, summaries)]

    def score(lam, d_lr):
        vals = [r["val_mIoU"] for r in records if r["lambda_adv"] == lam and r["d_lr"] == d_lr]
        return statistics.fmean(vals) if vals and None not in vals else -math.inf

    best = max(grid, key=lambda c: score(*c))
    selection = {"iterations": args.iterations, "seeds": args.select_seeds, "grid": grid, "runs": records,
                 "chosen": {"lambda_adv": best[0], "d_lr": best[1]}}
    path = selection_file(args)
    path.write_text(json.dumps(selection, indent=1))
    print(f"chosen: lambda_adv {best[0]:g}, D lr {best[1]:g} (mean val mIoU {score(*best):.4f}); {path}")
    return selection


def selection_file(args) -> Path:
    """Where the select stage writes its runs and the chosen pair (final and report read it)."""
    return args.results_dir / "adversarial_segmentation_selection.json"


def final_cells(args, chosen: dict | None) -> list[tuple[tuple, list[str], Path]]:
    generator = None
    out = []
    for labels, method, pretrain in FINAL_GROUPS:
        if (args.only and method not in args.only) or pretrain not in args.pretrain or labels not in args.labels:
            continue
        if method == "+GAN scenes" and generator is None:
            generator = gan_checkpoint(args)
        for seed in args.seeds:
            out.append(((labels, method, pretrain, seed),
                        cell_args(labels, method, pretrain, seed, args.iterations, args.iterations // 4, chosen, generator),
                        cell_dir(args, "final", labels, method, pretrain, seed)))
    return out


def stage_final(args, chosen: dict | None) -> None:
    runs.run_cells([(a, d) for _, a, d in final_cells(args, chosen)], args.jobs)


# --------------------------------------------------------------------------------------------- report
def _mean_over_second_half(run_dir: Path, metric: str) -> float | None:
    xs, ys = runs.curve(run_dir, metric)
    if not xs:
        return None
    half = [y for x, y in zip(xs, ys) if x > xs[-1] / 2 and math.isfinite(y)]
    return statistics.fmean(half) if half else None


def stage_report(args, selection: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.utils.stats import format_interval, mean_std, paired_interval

    cells = {}
    for labels, method, pretrain in FINAL_GROUPS:
        for seed in args.seeds:
            run_dir = cell_dir(args, "final", labels, method, pretrain, seed)
            summary = runs.ended(run_dir)
            if summary is not None:
                cells[(labels, method, pretrain, seed)] = (run_dir, summary)

    def values(labels, method, pretrain, metric="test/mIoU"):
        return [runs.final_value(cells[(labels, method, pretrain, s)][1], metric)
                if (labels, method, pretrain, s) in cells else None for s in args.seeds]

    def baseline_of(labels, method, pretrain):
        return (labels, "baseline", pretrain)

    pct = lambda v: v * 100  # noqa: E731 - mIoU in points
    lines = [f"# Adversarial segmentation on scenes: {args.iterations} iterations, seeds "
             f"{args.seeds[0]}..{args.seeds[-1]}", "",
             f"`python benchmarks/adversarial_segmentation.py --stage final --iterations {args.iterations}` (then "
             "`--stage report`). U-Net (width 24, depth 3, at 32x32 of the 64x64 scenes), batch 8, Adam 3e-3 poly "
             f"0.9, {args.iterations} iterations; test mIoU (points) on the 1,000 test scenes, final weights; "
             f"settings chosen on the 500 validation scenes with seeds {selection['seeds']}: lambda_adv "
             f"{selection['chosen']['lambda_adv']:g}, D lr {selection['chosen']['d_lr']:g}. Pretraining `digits`: the U-Net encoder starts "
             "from a digit classifier trained on the scenes' training digits (src/networks/pretraining.py). "
             "Differences are paired by seed against the baseline with the same labels and pretraining "
             "(full labels for Luc et al.), with 95% t-intervals.", "",
             "| labels | method | pretraining | runs | test mIoU | minus baseline [95% CI] | val mIoU |",
             "|---|---|---|---|---|---|---|"]
    for labels, method, pretrain in FINAL_GROUPS:
        vals = values(labels, method, pretrain)
        if all(v is None for v in vals):
            continue
        mean, std = mean_std([pct(v) for v in vals if v is not None])
        vmean, vstd = mean_std([pct(v) for v in values(labels, method, pretrain, "val/mIoU") if v is not None])
        diff = "—"
        if method != "baseline":
            base = values(*baseline_of(labels if not method.startswith("Luc") else "full", method, pretrain))
            diff = format_interval(*paired_interval([pct(v) if v is not None else None for v in vals],
                                                    [pct(v) if v is not None else None for v in base])[:3])
        n = sum(v is not None for v in vals)
        lines.append(f"| {labels} | {method} | {pretrain} | {n} | {mean:.1f} ± {std:.1f} | {diff} | "
                     f"{vmean:.1f} ± {vstd:.1f} |")
    lines += ["", f"Selection (1/8 labels, no pretraining, {selection['iterations']} iterations, final validation "
              "mIoU in points; the chosen pair has the best mean over the selection seeds):", "",
              "| method | lambda_adv | D lr | seed | val mIoU |", "|---|---|---|---|---|"]
    for r in selection["runs"]:
        val = "—" if r["val_mIoU"] is None else f"{pct(r['val_mIoU']):.1f}"
        lam = "—" if r["lambda_adv"] is None else f"{r['lambda_adv']:g}"
        d_lr = "—" if r["d_lr"] is None else f"{r['d_lr']:g}"
        lines.append(f"| {r['method']} | {lam} | {d_lr} | {r['seed']} | {val} |")
    lines += ["", "Discriminator diagnostics (mean over seeds of each run's mean over its second half): D's "
              "accuracy on ground-truth maps and on predicted maps, and the weighted adversarial gradient's norm "
              "on S's parameters relative to the cross-entropy's.", "",
              "| labels | method | pretraining | D acc (real) | D acc (predicted) | adv / CE gradient |",
              "|---|---|---|---|---|---|"]
    for labels, method, pretrain in FINAL_GROUPS:
        if method not in ADVERSARIAL and not method.startswith("Luc"):
            continue
        dirs = [cells[(labels, method, pretrain, s)][0] for s in args.seeds if (labels, method, pretrain, s) in cells]
        if not dirs:
            continue
        cols = []
        for metric in ("train/d_acc_real", "train/d_acc_fake", "train/grad_ratio_adv"):
            m, s = mean_std([v for v in (_mean_over_second_half(d, metric) for d in dirs) if v is not None])
            cols.append(f"{m:.3g} ± {s:.2g}")
        lines.append(f"| {labels} | {method} | {pretrain} | " + " | ".join(cols) + " |")
    lines += ["", "Pseudo-labels of +adv+semi on the test scenes (final model): accuracy of the argmax where "
              "sigmoid(D) > T_semi = 0.2 and where not, and the share of pixels above.", "",
              "| labels | pretraining | acc above | acc below | share above |", "|---|---|---|---|---|"]
    for labels, method, pretrain in FINAL_GROUPS:
        if method != "+adv+semi":
            continue
        cols = [mean_std([v for v in values(labels, method, pretrain, k) if v is not None])
                for k in ("test/pseudo_acc_above", "test/pseudo_acc_below", "test/semi_fraction")]
        if all(math.isfinite(m) for m, _ in cols):
            lines.append(f"| {labels} | {pretrain} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cols) + " |")

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, labels in enumerate(FRACTIONS):
        for pretrain, style in (("none", "-"), ("digits", "--")):
            xs, ys = runs.curve(cell_dir(args, "curve", labels, "baseline", pretrain, 100), "val/mIoU")
            if xs:
                ax.plot(xs, [pct(y) for y in ys], style, color=f"C{i}", marker="o", ms=3,
                        label=f"{labels} labels, pretraining {pretrain}")
    ax.axvline(args.iterations, color="gray", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("val mIoU (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.results_dir / "adversarial_segmentation_curves.png")
    plt.close(fig)
    lines += ["", "Baseline curves (seed 100, validation; the grey line is the budget): "
              "`adversarial_segmentation_curves.png`."]
    (args.results_dir / "adversarial_segmentation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("curve", "select", "final", "report"), required=True)
    parser.add_argument("--iterations", type=int, default=2000, help="the budget of select and final")
    parser.add_argument("--curve-iterations", type=int, default=4000)
    parser.add_argument("--curves", nargs="+", default=["1/8:none", "1/8:digits", "full:none"],
                        choices=[f"{f}:{p}" for f in FRACTIONS for p in PRETRAIN], help="curve: labels:pretraining")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=list(METHODS), default=None, help="final: these methods only")
    parser.add_argument("--pretrain", nargs="+", choices=list(PRETRAIN), default=list(PRETRAIN),
                        help="final: these pretraining settings only")
    parser.add_argument("--labels", nargs="+", choices=list(FRACTIONS), default=list(FRACTIONS),
                        help="final: these label fractions only")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=SELECT_SEEDS)
    parser.add_argument("--select-grid", nargs="+", default=[f"{lam:g}:{d:g}" for lam in LAMBDAS for d in D_LRS],
                        help="select: lambda_adv:D_lr pairs")
    runs.add_arguments(parser, "adversarial_segmentation")
    args = parser.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    selection_path = selection_file(args)
    if args.stage == "curve":
        stage_curve(args)
    elif args.stage == "select":
        stage_select(args)
    else:
        needs_choice = args.stage == "report" or not args.only or set(args.only) & set(ADVERSARIAL)
        if not selection_path.is_file() and needs_choice:
            raise SystemExit(f"{selection_path} is missing: run --stage select first")
        selection = json.loads(selection_path.read_text()) if selection_path.is_file() else None
        if args.stage == "final":
            stage_final(args, selection and selection["chosen"])
        else:
            stage_report(args, selection)
    print(f"total wall time {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
