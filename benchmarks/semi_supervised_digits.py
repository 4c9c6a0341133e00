"""Semi-supervised digits with 100 labels: the semi-supervised GAN (Salimans et al. 2016, K+1-class
discriminator, feature matching; experiment=digits_ssgan_100) against a supervised baseline with the same
network on the same 100 labels (experiment=digits_classifier_100), over several seeds (the seed draws the
labeled subset, the initial weights and the data order). Both train for the same number of batches.

    python benchmarks/semi_supervised_digits.py [--seeds 0 1 2] [--epochs 5] [--jobs 2] [--out DIR]

Runs the presets through the CLI (`python -m src.run`, CSV logger), one process per (preset, seed), at
most `--jobs` at a time with one torch thread each, then prints the table of `python -m src.results`
(validation accuracy on the 500 held-out digits: final and best, mean ± sample std over seeds).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("digits_ssgan_100", "digits_classifier_100")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/benchmarks/semi_supervised_<time>")
    args = parser.parse_args()
    out = args.out or ROOT / "outputs" / "benchmarks" / time.strftime("semi_supervised_%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    # the slow preset first, so the parallel jobs finish together
    queue = [(p, s) for p in PRESETS for s in args.seeds]
    running: list[tuple[subprocess.Popen, str, float]] = []
    started = time.time()
    failed = []
    while queue or running:
        while queue and len(running) < args.jobs:
            preset, seed = queue.pop(0)
            run_dir = out / f"{preset}_seed{seed}"
            cmd = [sys.executable, "-m", "src.run", f"experiment={preset}", f"seed={seed}",
                   f"trainer.max_epochs={args.epochs}", "logger=csv", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={run_dir}"]
            log = open(out / f"{preset}_seed{seed}.log", "w")
            running.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                            f"{preset} seed {seed}", time.time()))
        time.sleep(1)
        for item in list(running):
            proc, name, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"{name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)
                if proc.returncode != 0:
                    failed.append(name)
    print(f"all runs: {time.time() - started:.0f} s wall\n", flush=True)
    from src.results import collect

    result = collect([out], out / "results", group_by=["choices.experiment"],
                     metrics=["val/acc", "val/acc_balanced"])
    def cell(e):
        return f"{e['mean']:.4f} ± {e['std']:.4f}" if e["std"] is not None else f"{e['mean']:.4f}"

    print("| preset | n | val/acc final | val/acc best |")
    print("|---|---|---|---|")
    for g in result["groups"]:
        acc = g["metrics"]["val/acc"]
        print(f"| {g['group']} | {g['n']} | {cell(acc['final'])} | {cell(acc['best'])} |")
    print(f"\nfull table and plots: {out / 'results' / 'results.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
