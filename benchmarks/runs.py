"""Running benchmark cells as ordinary CLI runs: ``python -m src.run ARGS`` in its own directory, one thread,
reused when a run that ended (finished, or failed by itself, e.g. diverged) is already there with the config
the same ARGS resolve to now: a benchmark interrupted and started again continues, and a cell whose preset
files changed since it ran is run again (the old run is kept beside it as ``<dir>.stale``). A cell being run holds a lock file beside its directory, so two
benchmark processes given the same cell (two invocations on one --runs-dir) run it once: the second waits for
the first's summary instead of writing into the same directory."""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRINT = threading.Lock()
LOCK_POLL_S = 5.0  # how often a process waiting for another's cell looks again


def ended(run_dir: Path) -> dict | None:
    """The summary of a run in `run_dir` that ended (finished or failed; not interrupted), else None."""
    path = run_dir / "summary.json"
    if path.is_file():
        summary = json.loads(path.read_text())
        if summary.get("status") == "finished" or summary.get("status", "").startswith("failed"):
            return summary
    return None


def ok(summary: dict | None) -> bool:
    return summary is not None and summary.get("status") == "finished"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def cell_lock(run_dir: Path):
    """Hold `RUN_DIR.lock` (holding this process's pid) while the body runs; wait while a live process holds it.
    A lock whose process is gone (a killed benchmark) is taken over. Processes on one machine only: the pid
    check cannot see another host's processes."""
    lock = run_dir.with_name(run_dir.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                text, age = lock.read_text().strip(), time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue
            if (text.isdigit() and not _alive(int(text))) or (not text and age > 60):
                lock.unlink(missing_ok=True)  # its process is gone
                continue
            if not waited:
                with PRINT:
                    print(f"  {run_dir}: another process (pid {text or '?'}) is running this cell; waiting", flush=True)
                waited = True
            time.sleep(LOCK_POLL_S)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


RUN_DIR = "<run_dir>"  # where a run wrote, in configs compared across runs and moved directories
COMPOSE = threading.Lock()  # Hydra's compose API keeps global state


def compose(args: list[str], out):
    """The config `python -m src.run ARGS` composes (without its `hydra` node), writing to `out`; Hydra's
    runtime config is set as the CLI sets it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.utils.cli import normalise_argv
    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=normalise_argv(args), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg["hydra"]
    return cfg


def resolved_config(args: list[str]) -> dict:
    """The config `python -m src.run ARGS` would train with now (secrets scrubbed), in comparable form."""
    from src.utils.config import resolved_container
    from src.utils.env import load_environment

    with COMPOSE:
        load_environment()  # what src.run reads first: .env, PROJECT_ROOT
        return comparable(resolved_container(compose(args, RUN_DIR)))


def comparable(config: dict) -> dict:
    """A resolved config without what says where and how a run ran rather than what it trained: its output
    directory (the run may have been moved since) and the project's location are placeholders, and the
    checkpoint it resumed from is dropped."""
    run_dir = str((config.get("paths") or {}).get("output_dir"))

    def clean(node):
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k != "ckpt_path"}
        if isinstance(node, list):
            return [clean(v) for v in node]
        if isinstance(node, str):
            return node.replace(run_dir, RUN_DIR).replace(str(ROOT), "<root>")
        return node

    return clean(config)


def config_changes(args: list[str], run_dir: Path) -> tuple[list[str], list[str]] | None:
    """How the config the run in `run_dir` trained with differs from the one ARGS resolve to now: (keys whose
    values differ, keys only one side has), as dotted paths; None without a saved config."""
    from omegaconf import OmegaConf

    path = run_dir / "config_resolved.yaml"
    if not path.is_file():
        return None
    changed, one_side = [], []

    def walk(old, new, key):
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(set(old) | set(new), key=str):
                if k in old and k in new:
                    walk(old[k], new[k], f"{key}.{k}" if key else str(k))
                else:
                    one_side.append(f"{key}.{k}" if key else str(k))
        elif old != new:
            changed.append(key)

    walk(comparable(OmegaConf.to_container(OmegaConf.load(path))), resolved_config(args), "")
    return changed, one_side


def reusable(args: list[str], run_dir: Path) -> dict | None:
    """The summary of an ended run in `run_dir` that trained with the config ARGS give now. A run where a value
    differs (a preset changed since) is moved to `<run_dir>.stale` (replacing an older one) and None returned.
    Keys only one side has (added to or removed from the framework since) do not count: a new key's default
    keeps the old behaviour; they are listed. A run without a saved config is reused as before."""
    summary = ended(run_dir)
    changes = config_changes(args, run_dir) if summary is not None else None
    if changes is None:
        return summary
    changed, one_side = changes
    if not changed:
        if one_side:
            with PRINT:
                print(f"  {run_dir}: reused; keys added or removed since it ran: {', '.join(one_side)}", flush=True)
        return summary
    stale = run_dir.with_name(run_dir.name + ".stale")
    shutil.rmtree(stale, ignore_errors=True)
    run_dir.rename(stale)
    with PRINT:
        print(f"  {run_dir}: ran with other values of {', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''} "
              f"than these arguments give now: moved to {stale.name}, running it again", flush=True)
    return None


def run_cell(args: list[str], run_dir: Path, threads: int = 1) -> dict | None:
    """Run `python -m src.run ARGS hydra.run.dir=RUN_DIR` with `threads` threads unless it ended before with
    the same config; its summary (check :func:`ok`: a failed run's status says why), None when the run left
    no summary."""
    with cell_lock(run_dir):  # another process may be running it: wait for it, then look
        summary = reusable(args, run_dir)
        return summary if summary is not None else _run(args, run_dir, threads)


def _run(args: list[str], run_dir: Path, threads: int) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    env = {k: v for k, v in env.items() if not k.startswith("WANDB_")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "src.run", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    summary = ended(run_dir)
    with PRINT:
        if not ok(summary):
            why = summary["status"] if summary else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"  {run_dir}: FAILED after {time.perf_counter() - t0:.0f} s ({why[:300]})", flush=True)
        else:
            print(f"  {run_dir}: {summary.get('global_step')} iterations in {time.perf_counter() - t0:.0f} s", flush=True)
    return summary


def run_cells(cells: list[tuple[list[str], Path]], jobs: int) -> list[dict | None]:
    """:func:`run_cell` for each (args, run_dir), `jobs` at a time, in order."""
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda c: run_cell(*c), cells))


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--jobs, --runs-dir (default outputs/<name>) and --results-dir (experiments/results) of a benchmark."""
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / name)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")


def final_value(summary: dict | None, metric: str) -> float | None:
    """The metric's value at the run's last iteration (None if it was not measured then)."""
    if not ok(summary):
        return None
    entry = summary["metrics"].get(metric) or {}
    return entry.get("final") if entry.get("final_step") == summary.get("global_step") else None


def curve(run_dir: Path, metric: str) -> tuple[list[int], list[float]]:
    """(iterations, values) of a metric from the run's csv/metrics.csv."""
    xs, ys = [], []
    path = run_dir / "csv" / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get(metric) not in (None, ""):
                    xs.append(int(float(row["step"])))
                    ys.append(float(row[metric]))
    return xs, ys
