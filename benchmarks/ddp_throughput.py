"""Data-parallel training throughput: batches/s and samples/s of `python -m src.run` with 1 and 2 DDP
processes on the CPU (trainer=ddp_cpu, gloo) or on GPUs (`--accelerator gpu`: trainer=gpu for one device
without DDP, then trainer=ddp with NCCL on 1..N GPUs), the same batch per process (so 2 processes train on twice
the global batch), for the default GAN (DCGAN on digits), the MLP GAN on ring8 and, where present, the
adversarial-segmentation hybrid (experiments/scenes_adv.yaml). Validation is off; the rate is the
Timing callback's `perf/train_batches_per_s` of rank 0 (after 5 warm-up batches), which in DDP is the
rate of the whole group (every batch ends with a gradient all-reduce).

    python benchmarks/ddp_throughput.py [--batches 40] [--procs 1,2] [--threads 1] [--models dcgan,mlp,scenes_adv]
                                        [--accelerator cpu|gpu]

Each process gets `--threads` torch threads (default 1), so 2 processes use 2 cores: on a machine with
at least 2 free cores the ideal is 2x samples/s. docs/scaling.md has the recipe for GPUs and nodes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS: dict[str, dict] = {
    # the default run before 2026-11-30 (width 64), as recorded in docs/scaling.md
    "dcgan": {"label": "DCGAN, digits (width 64)", "args": ["model.generator.base_width=64",
                                                           "model.discriminator.base_width=64"], "batch": 64},
    "mlp": {"label": "MLP GAN, ring8", "args": ["experiment=mlp_ring8", "callbacks.samples=null"], "batch": 256},
    "scenes_adv": {"label": "adv. segmentation, scenes", "args": ["experiment=scenes_adv"], "batch": 8,
                   "needs": ("src/models/adversarial_segmentation.py", "experiments/scenes_adv.yaml")},
}
COMMON = ["logger=csv", "trainer.max_epochs=-1", "trainer.limit_val_batches=0",
          "trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1", "validate_after_fit=false",
          "trainer.enable_progress_bar=false", "callbacks.model_checkpoint=null",
          "++callbacks.timing._target_=src.callbacks.timing.Timing"]  # not in every callbacks preset


def available(name: str) -> bool:
    return all((ROOT / p).is_file() for p in MODELS[name].get("needs", ()))


def measure(name: str, procs: int, batches: int, threads: int, out: Path, trainer: str = "ddp_cpu") -> dict:
    spec = MODELS[name]
    run_dir = out / f"{name}-{trainer}-{procs}"
    args = [*spec["args"], *COMMON, f"trainer={trainer}", f"trainer.devices={procs}", f"dataset.batch_size={spec['batch']}",
            f"trainer.max_steps={batches}", f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} x{procs} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    bps = summary["metrics"]["perf/train_batches_per_s"]["final"]
    return {"model": name, "procs": procs, "trainer": trainer, "batch": spec["batch"], "batches_per_s": bps,
            "samples_per_s": bps * spec["batch"] * procs, "wall_s": wall, "steps": summary.get("global_step")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="training batches per run (5 are warm-up)")
    parser.add_argument("--procs", default="1,2", help="process counts, comma separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--models", default=",".join(MODELS), help="from: " + ", ".join(MODELS))
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"),
                        help="cpu: trainer=ddp_cpu (gloo); gpu: trainer=gpu (1 device, no DDP), then trainer=ddp (NCCL)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    skipped = [m for m in names if not available(m)]
    names = [m for m in names if m not in skipped]
    procs = [int(p) for p in args.procs.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddp-throughput-") as tmp:
        for name in names:
            plan = ([("ddp_cpu", n) for n in procs] if args.accelerator == "cpu"
                    else [("gpu", 1)] + [("ddp", n) for n in procs])
            for trainer, n in plan:
                rows.append(measure(name, n, args.batches, args.threads, Path(tmp), trainer))
                print(f"  {name} {trainer} x{n}: {rows[-1]['batches_per_s']:.2f} batches/s ({rows[-1]['wall_s']:.0f} s)",
                      file=sys.stderr, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.accelerator == "gpu":
        import torch

        where = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, NCCL, torch {torch.__version__}"
    else:
        where = "CPU, gloo"
    print(f"\n{where}, {args.threads} thread(s) per process, {args.batches} batches per run, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end\n")
    print("| model | trainer | processes | batch / process | batches/s | samples/s | samples/s vs first row | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for r in rows:
        base.setdefault(r["model"], r["samples_per_s"])
        print(f"| {MODELS[r['model']]['label']} | {r['trainer']} | {r['procs']} | {r['batch']} | {r['batches_per_s']:.2f} | "
              f"{r['samples_per_s']:.0f} | {r['samples_per_s'] / base[r['model']]:.2f}x | {r['wall_s']:.0f} |")
    for m in skipped:
        print(f"\n(skipped {m}: {', '.join(MODELS[m]['needs'])} not found)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
