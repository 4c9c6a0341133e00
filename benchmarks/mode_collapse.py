"""Mode collapse on the 2D mixtures (grid25, ring8) for every optimizer preset in conf/optimizer/.

    python benchmarks/mode_collapse.py [--budget 30] [--seeds 5] [--datasets grid25 ring8]
                                       [--optimizers adam ncg ...] [--zero-sum-loss wgan] [--jobs 1]
                                       [--experiment mlp_{dataset}] [--override KEY=VALUE ...] [--tag T]
                                       [--accelerator cpu|gpu]

Each cell (dataset x optimizer x seed) is one ordinary run of the presets ``experiment=mlp_grid25`` /
``experiment=mlp_ring8`` (MLP GAN, z = 2, three 400-unit layers, batch 256; ``--experiment`` names
another preset, ``--override`` adds settings to every cell) with ``optimizer=<preset>`` at the optimizer
preset's own learning rate, trained in this process through ``src.train.train`` for the same
number of *generator updates* (``--budget``) whatever the optimizer: ``trainer.max_steps`` counts
iterations, one update of each player (n_critic = 1) or one joint game step each. Joint optimizers that
need a zero-sum game (CGD, ACGD) train with ``model.loss=<--zero-sum-loss>`` (WGAN without penalty or
clipping, as in the ACGD paper, by default); every other cell keeps the presets' non-saturating loss.
Learning-rate schedules whose length is left null (hung, sgd_poly, or one an experiment preset adds) run
over the whole budget.

Metrics (REFERENCE section 2; src/metrics/mode_coverage.py): on 2,500 samples from the generator's fixed
noise after the last update, a sample is high quality within 3 std of its nearest mode centre, a mode is
captured if it gets one high-quality sample. The table (mean +- std over seeds) is printed as Markdown
and written to experiments/results/mode_collapse.md beside the published PacGAN numbers (Lin et al.
2018, Table 1); experiments/results/mode_collapse_{grid25,ring8}.png show seed 0's samples, one panel per
optimizer. Each cell's run directory (outputs/mode_collapse/b<budget>/<dataset>/<optimizer>/seed<S>/)
holds its summary.json, csv/metrics.csv and samples.npy; a cell already done with the same resolved config (its
overrides and the preset files as they are now) is
reused (``--fresh`` reruns everything); ``--tag`` keeps variants apart. The Markdown file lists the command
line that reruns each cell. ``--accelerator gpu`` trains each cell with ``trainer=gpu`` (several jobs share
the GPU); the device is recorded per cell and does not change the overrides.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ("grid25", "ring8")
OPTIMIZERS = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))
CONJUGATE = ("ncg", "ncg_adam", "cgd", "acgd")  # the issue's conjugate-direction optimizers
NUM_MODES = {"grid25": 25, "ring8": 8}
# REFERENCE.md section 2: PacGAN (Lin et al., NeurIPS 2018) Table 1, quoted from memory there.
PUBLISHED = {
    "grid25": [("GAN", "17.3", "94.8"), ("ALI", "24.1", "95.7"), ("minibatch discrimination", "23.8", "79.9"),
               ("VEEGAN", "24.6", "40.0"), ("PacGAN4", "24.8", "93.8")],
    "ring8": [("GAN", "6.3", "98.2"), ("PacGAN", "7.8-7.9", "~96-98")],
}
BASE_OVERRIDES = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=-1",
                  "callbacks.samples=null", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
                  "+trainer.enable_checkpointing=false"]


# ------------------------------------------------------------------------------------------- a cell
def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def optimizer_facts(optimizer: str, experiment: str = "mlp_grid25", extra: tuple[str, ...] = ()) -> dict:
    """Whether the preset is a joint game optimizer, needs a zero-sum loss, the lr it runs at (under the
    experiment preset and the extra overrides) and whether its schedule has a length to set."""
    import hydra
    from omegaconf import OmegaConf

    from src.optim.base import is_game_optimizer

    cfg = _compose([f"experiment={experiment}", f"optimizer={optimizer}", *extra])
    node = cfg.optimizer
    lr = float(node.lr)
    cls = hydra.utils.get_class(node._target_)
    players = OmegaConf.to_container(node.players, resolve=True) if node.get("players") else {}
    lrs = {}
    for p in ("generator", "discriminator"):
        own = players.get(p) or {}
        target = own.get("_target_", node._target_).rsplit(".", 1)[-1]
        lrs[p] = (target, float(own.get("lr", lr)))
    return {"joint": is_game_optimizer(cls), "zero_sum": bool(getattr(cls, "requires_zero_sum", False)),
            "lrs": lrs, "lr": lr, "loss": str(cfg.model.loss), "batch": int(cfg.dataset.batch_size),
            "scheduler": node.scheduler._target_.rsplit(".", 1)[-1] if node.get("scheduler") is not None else None,
            "schedule_length": node.get("scheduler") is not None and "total_iters" in node.scheduler
            and node.scheduler.total_iters is None,
            "lookahead": node.get("lookahead") is not None}


def cell_overrides(dataset: str, optimizer: str, seed: int, budget: int, facts: dict, zero_sum_loss: str,
                   experiment: str = "mlp_{dataset}", extra: tuple[str, ...] = ()) -> list[str]:
    """The command-line overrides of one cell (what `python -m src.run` takes)."""
    out = [f"experiment={experiment.format(dataset=dataset)}", f"optimizer={optimizer}", f"seed={seed}",
           f"trainer.max_steps={budget}", *extra]
    if facts["zero_sum"]:
        out.append(f"model.loss={zero_sum_loss}")
    return out


def cell_loss(optimizer: str, facts: dict, zero_sum_loss: str) -> str:
    return zero_sum_loss if facts["zero_sum"] else facts["loss"]


def where(accelerator: str, threads: int) -> str:
    """The device a cell trains on, as the report names it."""
    import platform

    import torch

    if accelerator == "gpu":
        return f"{torch.cuda.get_device_name(0)} (shared by the jobs)"
    return f"CPU {platform.machine()} ({os.cpu_count()} cores, {threads} thread(s) per job)"


def run_cell(task: dict) -> dict:
    """Train one cell in this process (or reuse a finished one); returns its record."""
    out = Path(task["dir"])
    record_path = out / "cell.json"

    import numpy as np
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from src.metrics.mode_coverage import mode_statistics
    from src.data.mixtures import mixture_centers
    from src.train import train
    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        device = ["trainer=gpu"] if task.get("accelerator") == "gpu" else []
        cfg = compose(config_name="config", overrides=task["overrides"] + BASE_OVERRIDES + device,
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    # The same overrides may mean another run once a preset file changed: a cell is reused only when its
    # resolved config is the one it was trained with.
    digest = hashlib.sha256(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:16]
    if not task["fresh"] and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("config") == digest and (out / "samples.npy").is_file():
            record["reused"] = True
            return record
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    record = {"dataset": task["dataset"], "optimizer": task["optimizer"], "seed": task["seed"],
              "overrides": task["overrides"], "config": digest, "budget": task["budget"], "reused": False,
              "accelerator": task.get("accelerator", "cpu"),
              "where": where(task.get("accelerator", "cpu"), task.get("threads", 1))}
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Lightning's model summary table
            result = train(cfg)
    except Exception as err:  # noqa: BLE001 - a diverged or failed cell is a result, not a crash
        record.update(status="failed", error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
                      wall_s=time.perf_counter() - t0)
        record_path.write_text(json.dumps(record, indent=1))
        return record
    wall = time.perf_counter() - t0
    model = result["model"]
    samples = model.sample_fixed(2500).float().cpu()
    stats = mode_statistics(samples, mixture_centers(task["dataset"]), float(cfg.dataset.std))
    np.save(out / "samples.npy", samples.numpy())
    metrics = result["metrics"]
    bps = metrics.get("perf/train_batches_per_s", {}).get("final")
    record.update(status=result["status"], wall_s=wall, train_batches_per_s=bps,
                  generator_updates=int(result["trainer"].global_step), global_step=int(result["trainer"].global_step),
                  modes=float(stats["modes_captured"]), hq=float(stats["hq_fraction"]),
                  reverse_kl=float(stats["reverse_kl"]),
                  val_modes=metrics.get("val/modes_captured", {}).get("final"),
                  val_hq=metrics.get("val/hq_fraction", {}).get("final"))
    record_path.write_text(json.dumps(record, indent=1))
    del result, model
    return record


def untrained(dataset: str, seed: int) -> dict:
    """Mode statistics of the generator at initialisation (step 0): the floor a short run starts from
    (its output sits near the origin, which is a grid25 mode and no ring8 mode)."""
    from src.data.mixtures import mixture_centers
    from src.metrics.mode_coverage import mode_statistics
    from src.train import build_model

    import pytorch_lightning as pl

    cfg = _compose([f"experiment=mlp_{dataset}", f"seed={seed}"])
    pl.seed_everything(seed, verbose=False)  # the networks' initialisation: the same numbers on every call
    model = build_model(cfg)
    stats = mode_statistics(model.sample_fixed(2500).float(), mixture_centers(dataset), float(cfg.dataset.std))
    return {"modes": float(stats["modes_captured"]), "hq": float(stats["hq_fraction"]),
            "reverse_kl": float(stats["reverse_kl"])}


def _init_worker(threads: int) -> None:
    quiet(threads)


def quiet(threads: int) -> None:
    import pytorch_lightning  # noqa: F401 - configures its loggers on import: quieten them after
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric", "src"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------- report
def mean_std(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format(statistics.mean(values), fmt)} ± {format(sd, fmt)}"


def lr_text(facts: dict) -> str:
    (cg, lg), (cd, ld) = facts["lrs"]["generator"], facts["lrs"]["discriminator"]
    if cg == cd and lg == ld:
        text = f"{lg:g}"
    else:
        text = f"G {cg} {lg:g}, D {cd} {ld:g}"
    return text + (f" ({facts['scheduler']})" if facts["scheduler"] else "")


def command(dataset: str, optimizer: str, args, facts: dict, seeds: list[int], gpu: bool = False) -> str:
    over = cell_overrides(dataset, optimizer, 0, args.budget, facts, args.zero_sum_loss, args.experiment,
                          tuple(args.override))
    over[2] = "seed=" + ",".join(map(str, seeds))
    return "python -m src.run -m " + " ".join(over) + (" trainer=gpu" if gpu else "")


def cli_check(record: dict, out: Path) -> str:
    """Rerun one cell with `python -m src.run` in a fresh process and compare its final validation with the
    cell's: the benchmark's in-process training is the CLI's."""
    import subprocess

    device = ["trainer=gpu"] if record.get("accelerator") == "gpu" else []
    args = [sys.executable, "-m", "src.run", *record["overrides"], *BASE_OVERRIDES, *device, f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return f"the CLI rerun of {record['dataset']} {record['optimizer']} seed {record['seed']} failed: " + \
            (proc.stdout + proc.stderr)[-300:]
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    cli = (metrics["val/modes_captured"]["final"], 100 * metrics["val/hq_fraction"]["final"])
    cell = (record["val_modes"], 100 * record["val_hq"])
    same = "the same" if cli == cell else "different"
    return (f"checked with `--cli-check`: `python -m src.run {' '.join(record['overrides'])}` gave {cli[0]:.0f} modes / "
            f"{cli[1]:.2f}% at its final validation, the benchmark's cell {cell[0]:.0f} / {cell[1]:.2f}%: {same}")


def report(records: list[dict], facts: dict, args, total_wall: float, floor: dict) -> str:
    import torch

    reused = sum(1 for r in records if r.get("reused"))
    devices = Counter(r.get("where") or r.get("accelerator", "cpu") for r in records)
    first, last = args.first_seed, args.first_seed + args.seeds - 1
    flags = f"--budget {args.budget} --seeds {args.seeds} --zero-sum-loss {args.zero_sum_loss}"
    flags += f" --first-seed {first}" if first else ""
    if args.experiment != "mlp_{dataset}":
        flags += f" --experiment {args.experiment}"
    flags += "".join(f" --override {o}" for o in args.override) + (f" --tag {args.tag}" if args.tag else "")
    preset = args.experiment.format(dataset="{" + ",".join(args.datasets) + "}")
    batches = sorted({f["batch"] for f in facts.values()})
    lines = [
        f"# Mode collapse on 2D mixtures: {len(args.optimizers)} optimizer preset(s), {preset}",
        "",
        f"`python benchmarks/mode_collapse.py {flags}` — {args.budget} generator updates per run "
        f"(batch {'/'.join(map(str, batches))}, n_critic 1), {args.seeds} seeds ({first}..{last}), MLP GAN "
        f"(z = 2, 3 x 400 units) of `experiments/{preset}.yaml`"
        + (f" with {' '.join(args.override)}" if args.override else "")
        + ". Learning rates (column `lr`): each optimizer preset's own unless the experiment preset or an "
        "override sets one. Metrics on 2,500 "
        "samples from the fixed noise after the last update: modes captured (a high-quality sample within 3 std "
        "of the centre) and the high-quality fraction, mean ± std over seeds. `goal` = seeds with all modes "
        "captured and >= 95% high quality. CGD and ACGD need a "
        f"zero-sum game and train with `model.loss={args.zero_sum_loss}`. Optimizers whose schedule has a length "
        f"decay over the whole run (the lr column names the schedule, e.g. `(PolynomialLR)`).",
        "",
        f"{len(records)} cells, trained on "
        + ", ".join(f"{n} x {d}" for d, n in devices.items())
        + f"; torch {torch.__version__}; the cells' training calls took {sum(r['wall_s'] for r in records) / 60:.1f} "
        f"min in all (this invocation: {total_wall / 60:.1f} min, {reused} cells reused from earlier invocations at "
        "the same settings)"
        + "; `s/run` is the median wall time of one cell's `src.train.train` call (building, training, final "
        "validation). The untrained-generator row is the floor every run starts from: at initialisation the "
        "generator's samples sit in a small blob near the origin, which is a grid25 mode (so a run that barely "
        "moved shows 1 mode at a high high-quality fraction) and no ring8 mode.",
        "",
    ]
    goal_lines = []
    for dataset in args.datasets:
        k = NUM_MODES[dataset]
        lines += [f"## {dataset} ({k} modes)", "",
                  "| optimizer | kind | loss | lr | modes captured | high quality % | reverse KL | goal | s/run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for opt in args.optimizers:
            cells = [r for r in records if r["dataset"] == dataset and r["optimizer"] == opt]
            ok = [r for r in cells if r.get("status") == "finished" and r.get("modes") is not None]
            failed = len(cells) - len(ok)
            f = facts[opt]
            kind = ("joint" if f["joint"] else "per player") + (" + lookahead" if f["lookahead"] else "")
            modes = mean_std([r["modes"] for r in ok], ".1f")
            hq = mean_std([100 * r["hq"] for r in ok], ".1f")
            kls = [r["reverse_kl"] for r in ok if math.isfinite(r["reverse_kl"])]
            kl = mean_std(kls, ".2f") + (f" ({len(ok) - len(kls)} inf)" if len(kls) < len(ok) else "")
            goal = sum(1 for r in ok if r["modes"] >= k and r["hq"] >= 0.95)
            goal_text = f"{goal}/{len(cells)}" + (f" ({failed} failed)" if failed else "")
            wall = statistics.median([r["wall_s"] for r in cells]) if cells else float("nan")
            name = f"**{opt}**" if opt in CONJUGATE else opt
            lines.append(f"| {name} | {kind} | {cell_loss(opt, f, args.zero_sum_loss)} | {lr_text(f)} | {modes} | "
                         f"{hq} | {kl} | {goal_text} | {wall:.1f} |")
            if dataset == "grid25" and opt in CONJUGATE:
                goal_lines.append((opt, goal, len(cells),
                                   statistics.mean([r["modes"] for r in ok]) if ok else -1.0,
                                   statistics.mean([r["hq"] for r in ok]) if ok else -1.0))
        base = floor[dataset]
        kls = [b["reverse_kl"] for b in base if math.isfinite(b["reverse_kl"])]
        lines.append(f"| untrained generator (step 0, same seeds) | — | — | — | {mean_std([b['modes'] for b in base], '.1f')} "
                     f"| {mean_std([100 * b['hq'] for b in base], '.1f')} | {mean_std(kls, '.2f')}"
                     + (f" ({len(base) - len(kls)} inf)" if len(kls) < len(base) else "") + " | — | — |")
        for name, modes, hq in PUBLISHED[dataset]:
            lines.append(f"| published: {name} (PacGAN Table 1) | — | — | — | {modes} | {hq} | — | — | — |")
        lines.append("")
    if goal_lines:
        best = max(goal_lines, key=lambda g: (g[1], g[3], g[4]))  # seeds at the goal, then modes, then HQ
        reached = best[1] == best[2] and best[2] > 0
        lines += ["## The issue's goal", "",
                  "All 25 grid modes with >= 95% high-quality samples for the best conjugate-direction optimizer "
                  "(bold: ncg, ncg_adam, cgd, acgd) in every seed: "
                  + ("**reached**" if reached else "**not reached**")
                  + f" at {args.budget} generator updates (best: {best[0]}, {best[1]}/{best[2]} seeds at the goal, "
                  f"{best[3]:.1f} modes and {100 * best[4]:.1f}% high quality on average). "
                  + ("" if reached else "REFERENCE section 7 found this open at CPU budgets (Adam needed ~60k steps "
                     "for 22 modes / 67%). ")
                  + "The long-budget protocol is `--experiment mlp_grid25_long` (experiments/README.md, \"Mode collapse\").",
                  ""]
    failures = [r for r in records if r.get("status") != "finished"]
    if failures:
        lines += ["## Failed cells", ""]
        lines += [f"- {r['dataset']} {r['optimizer']} seed {r['seed']}: {r.get('error')}" for r in failures]
        lines.append("")
    lines += ["## Commands", "",
              "Each row reruns one optimizer's seeds on one dataset as a Hydra sweep (`seed=S` alone: one cell); "
              "the benchmark adds only output settings (`" + " ".join(BASE_OVERRIDES) + "`), which do not change "
              "training" + (f" ({args.cli_result})" if getattr(args, "cli_result", "") else "")
              + ". Rows ending in `trainer=gpu` ran on the GPU.",
              "", "```bash"]
    seeds = list(range(first, last + 1))
    for dataset in args.datasets:
        for opt in args.optimizers:
            cells = [r for r in records if r["dataset"] == dataset and r["optimizer"] == opt]
            gpu = bool(cells) and all(r.get("accelerator") == "gpu" for r in cells)
            lines.append(command(dataset, opt, args, facts[opt], seeds, gpu))
    lines += ["```", ""]
    pics = ", ".join(f"`mode_collapse{args.tag}_{d}.png`" for d in args.datasets)
    lines += [f"Pictures (seed 0, one panel per optimizer): {pics}.", ""]
    return "\n".join(lines)


def figure(records: list[dict], dataset: str, optimizers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from src.data.mixtures import mixture_centers

    centers = mixture_centers(dataset).numpy()
    lim = float(np.abs(centers).max()) * 1.4
    cols = min(6, len(optimizers))
    rows = math.ceil(len(optimizers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(2.6 * cols, 5.2), 2.7 * rows), dpi=90, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, opt in zip(axes.flat, optimizers):
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        rec = next((r for r in records if r["dataset"] == dataset and r["optimizer"] == opt and r["seed"] == 0), None)
        ax.scatter(centers[:, 0], centers[:, 1], s=18, marker="x", color="tab:red", linewidths=0.8)
        if rec is not None and rec.get("status") == "finished":
            pts = np.load(Path(rec["dir"]) / "samples.npy")
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.35, color="tab:blue")
            title = f"{opt}\n{rec['modes']:.0f} modes, {100 * rec['hq']:.0f}% HQ"
        else:
            title = f"{opt}\n(failed)"
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{dataset}: samples after {records[0]['budget']} generator updates (seed 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=30, help="generator updates per run (the same for all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--optimizers", nargs="+", default=OPTIMIZERS, choices=OPTIMIZERS)
    parser.add_argument("--zero-sum-loss", default="wgan", choices=("wgan", "minimax"),
                        help="model.loss for optimizers that need a zero-sum game (CGD, ACGD)")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once (worker processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "mode_collapse")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--fresh", action="store_true", help="rerun cells already done at the same settings")
    parser.add_argument("--experiment", default="mlp_{dataset}",
                        help="experiment preset of every cell ({dataset} is filled in)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="an override added to every cell (repeatable)")
    parser.add_argument("--tag", default="", help="suffix of the runs folder b<budget><tag> and of the results files")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"), help="gpu: trainer=gpu per cell")
    parser.add_argument("--cli-check", action="store_true",
                        help="rerun the cheapest finished cell with `python -m src.run` and report whether it agrees")
    args = parser.parse_args()
    os.chdir(ROOT)
    quiet(args.threads)

    t_start = time.perf_counter()
    facts = {opt: optimizer_facts(opt, args.experiment.format(dataset=args.datasets[0]), tuple(args.override))
             for opt in args.optimizers}
    tasks = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:  # seed-major: an interrupted run still has every optimizer's first seed
        for dataset in args.datasets:
            for opt in args.optimizers:
                tasks.append({"dataset": dataset, "optimizer": opt, "seed": seed, "budget": args.budget,
                              "overrides": cell_overrides(dataset, opt, seed, args.budget, facts[opt], args.zero_sum_loss,
                                                          args.experiment, tuple(args.override)),
                              "dir": str(args.runs_dir / f"b{args.budget}{args.tag}" / dataset / opt / f"seed{seed}"),
                              "fresh": args.fresh, "threads": args.threads, "accelerator": args.accelerator})
    records = []

    def done(rec: dict, i: int) -> None:
        rec["dir"] = tasks[i]["dir"] if "dir" not in rec else rec["dir"]
        records.append(rec)
        res = (f"{rec['modes']:.0f} modes, {100 * rec['hq']:.1f}% HQ" if rec.get("status") == "finished"
               else rec.get("error"))
        print(f"[{len(records)}/{len(tasks)}] {rec['dataset']} {rec['optimizer']} seed {rec['seed']}: {res} "
              f"({rec['wall_s']:.1f} s{', reused' if rec.get('reused') else ''}; "
              f"{(time.perf_counter() - t_start) / 60:.1f} min)", flush=True)

    if args.jobs <= 1:
        for i, task in enumerate(tasks):
            rec = run_cell(task)
            rec["dir"] = task["dir"]
            done(rec, i)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(args.threads,)) as pool:
            futures = {pool.submit(run_cell, t): i for i, t in enumerate(tasks)}
            for fut in as_completed(futures):
                i = futures[fut]
                rec = fut.result()
                rec["dir"] = tasks[i]["dir"]
                done(rec, i)
    total = time.perf_counter() - t_start
    for rec in records:
        if rec.get("status") == "finished" and rec.get("generator_updates") not in (None, args.budget):
            raise RuntimeError(f"{rec['dataset']} {rec['optimizer']} seed {rec['seed']}: "
                               f"{rec['generator_updates']} generator updates, expected {args.budget}")

    if args.cli_check:
        done = [r for r in records if r.get("status") == "finished"]
        cheapest = min(done, key=lambda r: r["wall_s"]) if done else None
        if cheapest is not None:
            args.cli_result = cli_check(cheapest, args.runs_dir / f"b{args.budget}{args.tag}" / "cli_check")
            print(args.cli_result, flush=True)
    floor = {d: [untrained(d, seed) for seed in seeds] for d in args.datasets}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    text = report(records, facts, args, total, floor)
    (args.results_dir / f"mode_collapse{args.tag}.md").write_text(text)
    for dataset in args.datasets:
        figure(records, dataset, args.optimizers, args.results_dir / f"mode_collapse{args.tag}_{dataset}.png")
    print()
    print(text)


if __name__ == "__main__":
    main()
