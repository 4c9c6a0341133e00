"""Framework overhead: wall-time training throughput of `src.train` (Lightning, the update rules, callbacks,
wandb offline + CSV loggers, the resumable data loaders) against a plain PyTorch loop with the same
networks (built from the same config), data, batch, loss and optimizer; and the time from process start
to the first training step of `python -m src.run`, with a warm and a cold cache.

    python benchmarks/framework_overhead.py [--models dcgan mlp scenes mlp_compiled] [--batches 300] [--repeats 3]
                                            [--threads 1] [--startup 3] [--accelerator cpu|gpu]

Each repeat runs the plain loop and the framework one after the other (interleaved, in this process, one
thread by default), each for `--warmup` + `--batches` training batches with validation off; both times are
wall time from the start of the first timed batch to the end of the last, so data loading, the step and
every hook count (the framework's number is its own `perf/train_batches_per_s`, src/callbacks/timing.py).
The plain loop indexes the in-memory training tensors with a fresh permutation per epoch (the fastest data
path a hand-written loop would take) and updates the players as the framework's default rule does.

Models: `dcgan` (the default run: DCGAN on the digits, width 32, batch 64, Adam 5e-4, non-saturating loss), `mlp`
(experiment mlp_grid25: MLP GAN z=2, 3x400, batch 256, Adam), `scenes` (experiment scenes_supervised:
U-Net segmenter on the scenes, batch 8, Adam with the poly schedule, cross-entropy with void pixels),
`mlp_fast` (experiment mlp_grid25_fast, the 5-minute grid25 preset: ncg_adam, hinge loss, generator EMA,
the lr schedule, logging every 50 iterations; its plain loop runs the same optimizer, loss, EMA and schedule).
The framework runs as a user runs it, progress bar included (it redraws at most 4 times a second).
`mlp_compiled` is the MLP GAN with its networks compiled (``+callbacks.compile=...``), against the same
uncompiled plain loop: whether capturing the step pays (its compilation falls in the warm-up batches).
Targets (issue 15): >= 0.95x on the MLP GAN, >= 0.97x on the DCGAN; start-up <= 7 s, cold and warm.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import compose  # noqa: E402  (the config as the CLI composes it)

MODELS = {
    "dcgan": {"label": "DCGAN, digits (default run)", "args": []},
    "mlp": {"label": "MLP GAN, grid25", "args": ["experiment=mlp_grid25"]},
    "scenes": {"label": "U-Net segmenter, scenes", "args": ["experiment=scenes_supervised"]},
    # the 5-minute grid25 preset: ncg_adam, hinge loss, generator EMA, lr schedule, logging every 50 iterations
    "mlp_fast": {"label": "MLP GAN, grid25, 5-minute preset (ncg_adam, hinge, EMA)", "args": ["experiment=mlp_grid25_fast"]},
    # the option to capture the step (src/callbacks/compile.py), against the same uncompiled plain loop
    "mlp_compiled": {"label": "MLP GAN, grid25, torch.compile (CompileNetworks)",
                     "args": ["experiment=mlp_grid25", "+callbacks.compile={_target_:src.callbacks.compile.CompileNetworks}"]},
}
QUIET = ["trainer.limit_val_batches=0", "validate_after_fit=false",
         "trainer.max_epochs=-1", "callbacks.samples=null"]


# ------------------------------------------------------------------------------------------ plain loops
def _optimizer(params, node) -> torch.optim.Optimizer:
    """The config's optimizer class and shared settings (src/optim/factory.py reads the group), constructed by
    hand."""
    from hydra.utils import instantiate

    from src.optim.factory import OptimizerGroup

    return instantiate(OptimizerGroup(node).shared, params)


def _scheduler(optimizer, node, steps: int):
    """The config's schedule, its null length set to `steps` iterations as the framework sets it (None
    without one)."""
    from hydra.utils import instantiate

    from src.optim.factory import OptimizerGroup

    group = OptimizerGroup(node)
    return None if group.scheduler is None else instantiate(group.scheduler_spec(steps), optimizer)


def _device(cfg) -> torch.device:
    return torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_gan(cfg, batches: int, warmup: int) -> float:
    """The GAN's default rule by hand: D on fresh fakes, then G on new noise; the config's optimizer for
    each player (and its schedule), the model's loss and, where the config has one, the generator's EMA."""
    from src.train import build_datamodule, build_model

    torch.manual_seed(0)
    model, dm = build_model(cfg), build_datamodule(cfg)
    dm.setup("fit")
    device = _device(cfg)
    model.to(device)
    data = dm.train_set.tensors[0].to(device)
    G, D, z_dim, n = model.generator, model.discriminator, model.latent_dim, int(cfg.dataset.batch_size)
    loss = model.loss
    opt_g, opt_d = _optimizer(G.parameters(), cfg.optimizer), _optimizer(D.parameters(), cfg.optimizer)
    schedules = [s for s in (_scheduler(o, cfg.optimizer, warmup + batches) for o in (opt_g, opt_d)) if s]
    ema = None if model.generator_ema is None else (list(model.generator_ema.parameters()), list(G.parameters()))
    per_epoch = len(data) // n
    perm, t0 = torch.randperm(len(data)), None
    for step in range(warmup + batches):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if step % per_epoch == 0:
            perm = torch.randperm(len(data), device=device)
        real = data[perm[(step % per_epoch) * n:(step % per_epoch + 1) * n]]
        with torch.no_grad():
            fake = G(torch.randn(n, z_dim, device=device))
        d_loss = loss.discriminator(D(real), D(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = loss.generator(D(G(torch.randn(n, z_dim, device=device))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema[0], ema[1], 1.0 - model.ema_decay)
        for schedule in schedules:
            schedule.step()
    _sync(device)
    return batches / (time.perf_counter() - t0)


def plain_segmenter(cfg, batches: int, warmup: int) -> float:
    """Supervised segmentation by hand: cross-entropy (void pixels ignored), Adam with the poly schedule."""
    from src.train import build_datamodule, build_model

    torch.manual_seed(0)
    model, dm = build_model(cfg), build_datamodule(cfg)
    dm.setup("fit")
    loader = dm.train_dataloader()  # the scenes are generated per item with augmentation: their own loader
    device = _device(cfg)
    net = model.segmenter.to(device)
    opt = _optimizer(net.parameters(), cfg.optimizer)
    sched = _scheduler(opt, cfg.optimizer, warmup + batches)
    step, t0 = 0, None
    while step < warmup + batches:
        for batch in loader:
            if step == warmup:
                _sync(device)
                t0 = time.perf_counter()
            (x, y) = batch["labeled"] if isinstance(batch, dict) else batch
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(net(x), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if step == warmup + batches:
                break
    _sync(device)
    return batches / (time.perf_counter() - t0)


def framework(cfg, batches: int, warmup: int) -> float:
    from omegaconf import open_dict

    from src.train import train

    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + batches
        cfg.callbacks.timing.warmup_batches = warmup
    result = train(cfg)
    return result["metrics"]["perf/train_batches_per_s"]["final"]


def first_step_seconds(out: Path, cache: Path) -> float:
    env = {**os.environ, "CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "src.run", "trainer.max_steps=2", "trainer.limit_val_batches=0",
                           "validate_after_fit=false", f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads((out / "summary.json").read_text())["metrics"]["perf/first_step_s"]["final"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["dcgan", "mlp", "scenes"], choices=list(MODELS))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--startup", type=int, default=3, help="start-up measurements, cold and warm (0: skip)")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"),
                        help="gpu: both the plain loops and the framework (trainer=gpu) on the first CUDA device")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.update(OMP_NUM_THREADS=str(args.threads), WANDB_MODE="offline")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            plain_fn = plain_segmenter if name == "scenes" else plain_gan
            plain, fw = [], []
            device_args = ["trainer=gpu"] if args.accelerator == "gpu" else ["trainer.accelerator=cpu"]
            plain_args = [a for a in MODELS[name]["args"] if not a.startswith("+callbacks.compile")] + device_args
            for r in range(args.repeats):
                cfg = compose([*plain_args, *QUIET], Path(tmp) / f"{name}-plain{r}")
                plain.append(plain_fn(cfg, args.batches, args.warmup))
                cfg = compose([*MODELS[name]["args"], *device_args, *QUIET], Path(tmp) / f"{name}-fw{r}")
                fw.append(framework(cfg, args.batches, args.warmup))
                print(f"  {name} repeat {r}: plain {plain[-1]:.2f}, framework {fw[-1]:.2f} batches/s", flush=True)
            rows.append((name, plain, fw))
        cold, warm = [], []
        for r in range(args.startup):
            cache = Path(tmp) / f"cache{r}"
            cold.append(first_step_seconds(Path(tmp) / f"cold{r}", cache))   # an empty cache: a first run
            warm.append(first_step_seconds(Path(tmp) / f"warm{r}", cache))   # the same cache, now filled
            shutil.rmtree(cache, ignore_errors=True)
    print(f"\n{args.batches} timed batches after {args.warmup} warm-up, {args.repeats} interleaved repeats, "
          f"{args.threads} thread(s), {args.accelerator}, torch {torch.__version__}; median (all runs)")
    print("| model | plain loop, batches/s | framework, batches/s | framework / plain |")
    print("|---|---|---|---|")
    for name, plain, fw in rows:
        ratio = statistics.median(fw) / statistics.median(plain)
        print(f"| {MODELS[name]['label']} | {statistics.median(plain):.2f} ({', '.join(f'{x:.1f}' for x in plain)}) "
              f"| {statistics.median(fw):.2f} ({', '.join(f'{x:.1f}' for x in fw)}) | **{ratio:.3f}** |")
    if args.startup:
        print(f"\n| process start -> first training step (default run), s | median | all |\n|---|---|---|")
        print(f"| cold cache (first run) | {statistics.median(cold):.2f} | {', '.join(f'{x:.2f}' for x in cold)} |")
        print(f"| warm cache | {statistics.median(warm):.2f} | {', '.join(f'{x:.2f}' for x in warm)} |")


if __name__ == "__main__":
    main()
