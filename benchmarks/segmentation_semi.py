"""Hung et al. 2018 (BMVC, arXiv 1802.07934) on the offline scenes data: baseline vs +adversarial vs
+adversarial+semi-supervised at 1/8 labels, 3 seeds each.

Each run is the preset as a user runs it (``python -m src.run experiment=scenes_supervised|scenes_adv|
scenes_semi seed=S dataset.labeled_fraction=0.125``), in a fresh process with one thread, `--jobs` at a time
(longest first); validation only at the end of training (the final val/mIoU on the 500 validation scenes),
no overlay pictures, CSV logging. A seed fixes the weights, the data order and the labeled subset, so the
three methods of one seed share their labeled images: the difference to the baseline is also reported
paired by seed. The claim (the paper, VOC 1/8: 66.0 -> 67.6 (+adv) -> 68.8 (+adv+semi)) is that
+adv+semi ends above the baseline.

Also printed, for the runs with a discriminator: the accuracy of the argmax pseudo-labels where
sigmoid(D) > T_semi (0.2) against where it is not, on the unlabeled training images (their diagnostic masks,
averaged over the last epoch) and on the validation images (final model), and the fraction above.

    python benchmarks/segmentation_semi.py [--seeds 0 1 2] [--fraction 0.125] [--jobs 2]
                                           [--iterations N] [--out DIR]

Budget: the presets' 1000 iterations of batch 8 on 64x64 scenes take about 110 / 150 / 250 CPU-seconds
(baseline / +adv / +adv+semi); the 9 runs measured 1534 CPU-seconds in all, 12.8 minutes on 2 free CPU
cores (the script prints both its wall time and the runs' CPU time: on a shared machine the wall time
grows with the load).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"baseline": "scenes_supervised", "+adv": "scenes_adv", "+adv+semi": "scenes_semi"}
COST = {"baseline": 1.0, "+adv": 1.4, "+adv+semi": 2.3}  # relative run time, to start the longest first


def command(method: str, seed: int, fraction: float, iterations: int | None, run_dir: Path) -> list[str]:
    args = [sys.executable, "-m", "src.run", f"experiment={METHODS[method]}", f"seed={seed}",
            f"dataset.labeled_fraction={fraction}", "logger=csv", "callbacks.overlays=null",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", f"task_name=bench_{METHODS[method]}"]
    n = iterations or 1000
    args.append(f"trainer.val_check_interval={n}")  # validate once, at the end
    if iterations is not None:
        args.append(f"trainer.max_steps={n}")  # iterations; the poly schedule follows
        if method == "+adv+semi":
            args.append(f"model.semi_start={round(0.4 * n)}")
    return args


def run_one(method: str, seed: int, fraction: float, iterations: int | None, out: Path) -> dict:
    run_dir = out / f"{METHODS[method]}_seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env = {k: v for k, v in env.items() if not k.startswith("WANDB_")}
    start = time.time()
    proc = subprocess.run(command(method, seed, fraction, iterations, run_dir), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary["metrics"]

    def final(key):
        entry = metrics.get(key)
        if entry is None and key.endswith("_epoch"):  # no finished epoch: the last logged value
            entry = metrics.get(key[: -len("_epoch")])
        return None if entry is None else entry.get("final")

    return {"method": method, "seed": seed, "wall_s": round(wall, 1), "run_dir": str(run_dir),
            "mIoU": final("val/mIoU"), "mAcc": final("val/mAcc"), "aAcc": final("val/aAcc"),
            "train_acc_above": final("train/pseudo_acc_above_epoch"),
            "train_acc_below": final("train/pseudo_acc_below_epoch"),
            "train_fraction_above": final("train/semi_fraction_epoch"),
            "val_acc_above": final("val/pseudo_acc_above"), "val_acc_below": final("val/pseudo_acc_below"),
            "val_fraction_above": final("val/semi_fraction"), "d_acc": final("train/d_acc_epoch"),
            "global_step": summary.get("global_step")}


def mean_std(values) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fraction", type=float, default=0.125)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=None, help="override the presets' 1000 iterations")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="seg_semi_"))
    out.mkdir(parents=True, exist_ok=True)
    jobs = sorted(((m, s) for m in args.methods for s in args.seeds), key=lambda ms: -COST[ms[0]])
    print(f"{len(jobs)} runs, {args.jobs} at a time, 1 thread each; labeled fraction {args.fraction}; "
          f"outputs in {out}", flush=True)
    start = time.time()
    results = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, m, s, args.fraction, args.iterations, out) for m, s in jobs]
        for f in futures:
            r = f.result()
            results.append(r)
            print(f"  {r['method']:<10} seed {r['seed']}: mIoU {r['mIoU']:.4f}  ({r['wall_s']:.0f} s)", flush=True)
    total = time.time() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))

    by = {m: sorted((r for r in results if r["method"] == m), key=lambda r: r["seed"]) for m in args.methods}
    base = {r["seed"]: r["mIoU"] for r in by.get("baseline", [])}
    print(f"\nscenes, {args.fraction:g} labeled, {len(args.seeds)} seeds (val mIoU on 500 scenes, final model)")
    print(f"{'method':<11} {'mIoU mean ± std':<18} {'per seed':<26} {'minus baseline (paired)':<24} {'mean wall s'}")
    for m in args.methods:
        rows = by[m]
        per_seed = " ".join(f"{r['mIoU']:.4f}" for r in rows)
        diffs = [r["mIoU"] - base[r["seed"]] for r in rows if r["seed"] in base] if m != "baseline" else []
        wall = statistics.mean(r["wall_s"] for r in rows)
        print(f"{m:<11} {mean_std([r['mIoU'] for r in rows]):<18} {per_seed:<26} "
              f"{(mean_std(diffs) if diffs else '-'):<24} {wall:.0f}")
    print(f"\npseudo-label accuracy, sigmoid(D) above vs below T_semi = 0.2 (mean ± std over seeds)")
    print(f"{'method':<11} {'data':<28} {'acc above':<18} {'acc below':<18} {'fraction above'}")
    for m in args.methods:
        rows = by[m]
        if m == "baseline":
            continue
        if any(r["train_acc_below"] is not None for r in rows):
            print(f"{m:<11} {'unlabeled train (last epoch)':<28} {mean_std([r['train_acc_above'] for r in rows]):<18} "
                  f"{mean_std([r['train_acc_below'] for r in rows]):<18} "
                  f"{mean_std([r['train_fraction_above'] for r in rows])}")
        print(f"{m:<11} {'val (final model)':<28} {mean_std([r['val_acc_above'] for r in rows]):<18} "
              f"{mean_std([r['val_acc_below'] for r in rows]):<18} {mean_std([r['val_fraction_above'] for r in rows])}")
    if "baseline" in by and "+adv+semi" in by:
        diffs = [r["mIoU"] - base[r["seed"]] for r in by["+adv+semi"] if r["seed"] in base]
        wins = sum(d > 0 for d in diffs)
        verdict = "above" if statistics.mean(diffs) > 0 else "NOT above"
        print(f"\nclaim (Hung et al. 2018): +adv+semi above the baseline at {args.fraction:g} labels -> {verdict} "
              f"(mean paired difference {statistics.mean(diffs):+.4f} mIoU, higher in {wins} of {len(diffs)} seeds)")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    print(f"total wall time {total:.0f} s ({total / 60:.1f} min); CPU time of the runs {cpu:.0f} s "
          f"(= {cpu / 120:.1f} min on 2 free cores); results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
