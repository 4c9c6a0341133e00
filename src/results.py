"""Results tables and plots from finished runs:
`python -m src.results DIR [DIR ...] [--out OUT] [--group-by choices.optimizer] [--metrics ...]`.

Collects every ``summary.json`` under the given directories (a multirun directory, a task's ``runs/``
folder, or several runs; evaluation summaries written by src.eval are skipped unless ``--include-eval``)
and writes next to them, to ``<the directory holding them>/results/`` (or to ``--out``):

* ``results.md``: one row per run (its distinguishing choices / overrides, seed, status, and for each key
  metric the final and best value), then one row per group with the mean ± sample standard deviation
  (n - 1) over its runs and the run count; links to the plots below. Also printed.
* ``results.json``: the same numbers, unrounded.
* ``<metric>_vs_step.png`` (``val_fid_vs_step.png`` ...): each run's metric against the training iteration,
  from its ``csv/metrics.csv``, one colour per group (e.g. per optimizer with ``--group-by choices.optimizer``);
  a series of one point is drawn as a marker. Groups are labelled by what differs between them.
* ``mode_coverage.png``: mean ± std modes captured and high-quality fraction per group (2D mixtures), when
  the runs logged ``val/modes_captured``.
* ``miou_vs_labeled_fraction.png``: best ``val/mIoU`` against ``dataset.labeled_fraction`` per group
  (semi-supervised segmentation), when runs with several fractions are present.

``--group-by`` takes dotted paths into a run's record: ``choices.<group>``, ``config.<key>`` (its resolved
config, e.g. ``config.dataset.labeled_fraction``), ``seed``, ``task_name``, ``status``; several, comma
separated. Default: the run's overrides without ``seed=`` (runs that differ only in their seed).
``--metrics`` lists the metrics to show; default: the validation metrics any run has, most important first
(at most 6), blank where a run lacks one (a run that diverged before validating keeps its row).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

#: default metric order (most telling first); metrics not listed follow alphabetically
PRIORITY = ("val/fid", "val/kid", "val/is", "val/mIoU", "val/acc", "val/modes_captured", "val/hq_fraction",
            "val/reverse_kl", "val/mmd", "val/mAcc", "val/aAcc", "val/acc_balanced", "val/loss",
            "val/distance_to_equilibrium", "val/d_loss")
MAX_DEFAULT_METRICS = 6


# ------------------------------------------------------------------------------------------ collect
def find_summaries(dirs: Iterable[Path], include_eval: bool = False) -> list[Path]:
    found = []
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.name == "summary.json":
            found.append(d)
            continue
        if not d.is_dir():
            raise SystemExit(f"error: {d} is not a directory")
        found += sorted(d.rglob("summary.json"))
    out = []
    for path in dict.fromkeys(p.resolve() for p in found):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("mode") == "eval" and not include_eval:
            continue
        out.append(path)
    return out


def load_run(path: Path) -> dict:
    summary = json.loads(path.read_text())
    run_dir = path.parent
    config: dict = {}
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        if (run_dir / name).is_file():
            import yaml

            try:
                config = yaml.safe_load((run_dir / name).read_text()) or {}
            except yaml.YAMLError:
                config = {}
            break
    return {"dir": run_dir, "summary": summary, "config": config, "choices": summary.get("choices") or {},
            "overrides": list(summary.get("overrides") or []), "seed": summary.get("seed"),
            "task_name": summary.get("task_name"), "status": summary.get("status"),
            "metrics": summary.get("metrics") or {}}


def lookup(run: dict, dotted: str) -> Any:
    node: Any = run
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def group_key(run: dict, group_by: list[str] | None) -> str:
    if group_by:
        return ", ".join(f"{key.split('.')[-1]}={lookup(run, key)}" for key in group_by)
    rest = [o for o in run["overrides"] if not o.lstrip("+~").startswith("seed=")
            and not o.startswith(("hydra.", "paths.", "logger=", "trainer.enable_progress_bar"))]
    return " ".join(rest) or str(run["task_name"] or "(defaults)")


def default_metrics(runs: list[dict]) -> list[str]:
    """The validation metrics of any of the runs, most telling first."""
    names = {k for run in runs for k in run["metrics"] if k.startswith("val/") and "/IoU_" not in k}
    ordered = [m for m in PRIORITY if m in names] + sorted(names - set(PRIORITY))
    return ordered[:MAX_DEFAULT_METRICS]


def distinguishing_labels(names: list[str]) -> dict[str, str]:
    """{group name: the part of it that differs from the other groups} (tokens shared by all dropped)."""
    tokens = [name.split() for name in names]
    common = set.intersection(*(set(t) for t in tokens)) if len(tokens) > 1 else set()
    return {name: " ".join(t for t in toks if t not in common) or name for name, toks in zip(names, tokens)}


def _value(run: dict, metric: str, which: str) -> float | None:
    v = (run["metrics"].get(metric) or {}).get(which)
    return float(v) if isinstance(v, (int, float)) else None


def mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def fmt_ms(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


# ------------------------------------------------------------------------------------------- tables
def varying_choices(runs: list[dict]) -> list[str]:
    keys = sorted({k for r in runs for k in r["choices"]})
    return [k for k in keys if len({str(r["choices"].get(k)) for r in runs}) > 1]


def build(runs: list[dict], metrics: list[str], group_by: list[str] | None, root: Path) -> dict:
    vary = varying_choices(runs)
    rows = []
    for run in runs:
        try:
            rel = str(run["dir"].relative_to(root))
        except ValueError:
            rel = str(run["dir"])
        rows.append({
            "run": rel or ".", "group": group_key(run, group_by),
            "choices": " ".join(f"{k}={run['choices'].get(k)}" for k in vary),
            "overrides": " ".join(run["overrides"]), "seed": run["seed"], "status": run["status"],
            "metrics": {m: {"final": _value(run, m, "final"), "best": _value(run, m, "best")} for m in metrics},
        })
    groups: "OrderedDict[str, list[dict]]" = OrderedDict()
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    aggregated = []
    for name, members in groups.items():
        entry = {"group": name, "n": len(members), "seeds": [m["seed"] for m in members], "metrics": {}}
        for m in metrics:
            for which in ("final", "best"):
                mean, std, n = mean_std([r["metrics"][m][which] for r in members])
                entry["metrics"].setdefault(m, {})[which] = {"mean": mean, "std": std, "n": n}
        aggregated.append(entry)
    return {"root": str(root), "metrics": metrics, "group_by": group_by, "runs": rows, "groups": aggregated}


def markdown(result: dict, plots: list[str]) -> str:
    metrics = result["metrics"]
    lines = [f"# Results: {result['root']}", "",
             f"{len(result['runs'])} runs, {len(result['groups'])} groups"
             + (f" (grouped by {', '.join(result['group_by'])})" if result["group_by"] else
                " (grouped by overrides without the seed)") + ".", "", "## Runs", ""]
    head = ["run", "group", "seed", "status"] + [f"{m} {w}" for m in metrics for w in ("final", "best")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["runs"]:
        cells = [row["run"], row["group"], str(row["seed"]),
                 str(row["status"]).split(":")[0]]
        cells += [fmt(row["metrics"][m][w]) for m in metrics for w in ("final", "best")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Groups (mean ± sample std over runs)", ""]
    head = ["group", "n"] + [f"{m} {w}" for m in metrics for w in ("final", "best")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in result["groups"]:
        cells = [g["group"], str(g["n"])]
        cells += [fmt_ms(g["metrics"][m][w]["mean"], g["metrics"][m][w]["std"]) for m in metrics
                  for w in ("final", "best")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_curve(run_dir: Path, metric: str) -> tuple[list[float], list[float]]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return [], []
    xs, ys = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            v, s = row.get(metric), row.get("step")
            if v not in (None, "") and s not in (None, ""):
                try:
                    xs.append(float(s))
                    ys.append(float(v))
                except ValueError:
                    continue
    return xs, ys


def plot_curves(runs: list[dict], rows: list[dict], metric: str, out: Path) -> Path | None:
    plt = _plt()
    colours = {}
    labels = distinguishing_labels(list(dict.fromkeys(row["group"] for row in rows)))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    drawn = False
    for run, row in zip(runs, rows):
        xs, ys = read_curve(run["dir"], metric)
        if not xs:
            continue
        group = row["group"]
        first = group not in colours
        colours.setdefault(group, f"C{len(colours) % 10}")
        ax.plot(xs, ys, color=colours[group], alpha=0.8, lw=1.2, marker="o" if len(xs) == 1 else None,
                label=labels[group] if first else None)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("iteration (training batches)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{metric.replace('/', '_')}_vs_step.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mode_coverage(result: dict, runs: list[dict], out: Path) -> Path | None:
    if not any("val/modes_captured" in r["metrics"] for r in runs):
        return None
    plt = _plt()
    groups = OrderedDict()
    for run, row in zip(runs, result["runs"]):
        groups.setdefault(row["group"], []).append(run)
    names = list(groups)
    labels = distinguishing_labels(names)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.4, 1.2 * len(names) + 3), 4.2), dpi=100)
    for ax, metric, label in ((axes[0], "val/modes_captured", "modes captured"),
                              (axes[1], "val/hq_fraction", "high-quality fraction")):
        means, stds = [], []
        for name in names:
            mean, std, _ = mean_std([_value(r, metric, "final") for r in groups[name]])
            means.append(mean if mean is not None else 0.0)
            stds.append(std or 0.0)
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=[f"C{i % 10}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), [labels[n] for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label + " (final, mean ± std)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "mode_coverage.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_miou_vs_fraction(result: dict, runs: list[dict], out: Path) -> Path | None:
    points: dict[str, dict[float, list[float]]] = {}
    for run, row in zip(runs, result["runs"]):
        fraction = lookup(run, "config.dataset.labeled_fraction")
        value = _value(run, "val/mIoU", "best")
        if fraction is None or value is None:
            continue
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            continue
        label = " ".join(o for o in row["group"].split() if "labeled_fraction" not in o) or row["group"]
        points.setdefault(label, {}).setdefault(fraction, []).append(value)
    if not points or len({f for p in points.values() for f in p}) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for i, (label, by_fraction) in enumerate(points.items()):
        xs = sorted(by_fraction)
        stats = [mean_std(by_fraction[x]) for x in xs]
        ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] or 0.0 for s in stats], marker="o", capsize=3,
                    color=f"C{i % 10}", label=label[:60])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labeled fraction")
    ax.set_ylabel("best val/mIoU (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "miou_vs_labeled_fraction.png"
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- main
def common_root(dirs: list[Path]) -> Path:
    """The directory that holds all of `dirs` (a summary.json given directly counts as its run directory)."""
    roots = [(Path(d).parent if Path(d).is_file() else Path(d)).resolve() for d in dirs]
    return roots[0] if len(roots) == 1 else Path(os.path.commonpath([str(r) for r in roots]))


def collect(dirs: list[Path], out: Path, group_by: list[str] | None = None, metrics: list[str] | None = None,
            include_eval: bool = False, plots: bool = True) -> dict:
    paths = find_summaries(dirs, include_eval)
    if not paths:
        raise SystemExit(f"error: no summary.json under {', '.join(str(d) for d in dirs)}")
    runs = [load_run(p) for p in paths]
    root = common_root(dirs)
    metrics = metrics or default_metrics(runs)
    result = build(runs, metrics, group_by, root)
    out.mkdir(parents=True, exist_ok=True)
    drawn: list[str] = []
    if plots:
        for m in metrics:
            p = plot_curves(runs, result["runs"], m, out)
            if p is not None:
                drawn.append(str(p))
        for fn in (plot_mode_coverage, plot_miou_vs_fraction):
            p = fn(result, runs, out)
            if p is not None:
                drawn.append(str(p))
    result["plots"] = drawn
    text = markdown(result, drawn)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    result["markdown"] = text
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.results", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="run / multirun directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where tables and plots go (default: <the directory holding the runs>/results)")
    parser.add_argument("--group-by", default=None,
                        help="dotted keys, comma separated (choices.optimizer, config.dataset.labeled_fraction)")
    parser.add_argument("--metrics", default=None, help="metrics to show, comma separated (default: automatic)")
    parser.add_argument("--include-eval", action="store_true", help="also collect src.eval summaries")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()] if args.group_by else None
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    out = args.out or common_root(args.dirs) / "results"
    result = collect(args.dirs, out, group_by, metrics, args.include_eval, not args.no_plots)
    sys.stdout.write(result["markdown"])
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}"
          + (f" and {len(result['plots'])} plots" if result["plots"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
