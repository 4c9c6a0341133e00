"""`python -m src.results`: the tables' numbers are the summaries' numbers; groups aggregate mean ± std."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import yaml

from src.results import collect
from tests.helpers import ROOT


def write_run(path, optimizer, seed, metrics, overrides=None, curve=None, config=None, mode=None):
    path.mkdir(parents=True)
    summary = {"status": "finished", "seed": seed, "task_name": "gan",
               "choices": {"model": "gan_mlp", "optimizer": optimizer},
               "overrides": overrides if overrides is not None else [f"optimizer={optimizer}", f"seed={seed}"],
               "metrics": {name: {"final": final, "best": best, "final_step": 100, "best_step": 50,
                                  "mode": "max" if "modes" in name or "IoU" in name else "min"}
                           for name, (final, best) in metrics.items()}}
    if mode:
        summary["mode"] = mode
    (path / "summary.json").write_text(json.dumps(summary))
    if config is not None:
        (path / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if curve is not None:
        (path / "csv").mkdir()
        lines = ["epoch,step,val/mmd,val/modes_captured"]
        lines += [f"0,{step},{value},{value * 10}" for step, value in curve]
        (path / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun"
    values = {("adam", 0): (0.10, 8.0), ("adam", 1): (0.20, 6.0), ("adam", 2): (0.30, 7.0),
              ("sgd", 0): (0.50, 3.0), ("sgd", 1): (0.70, 5.0)}
    for i, ((opt, seed), (mmd, modes)) in enumerate(values.items()):
        write_run(root / str(i), opt, seed,
                  {"val/mmd": (mmd, mmd / 2), "val/modes_captured": (modes, modes + 0.5), "train/d_loss": (1.0, 0.5)},
                  curve=[(10, mmd * 2), (20, mmd)])
    write_run(root / "0" / "eval", "adam", 0, {"val/mmd": (9.0, 9.0)}, mode="eval")  # skipped
    return root, values


def _table(markdown: str, title: str) -> list[list[str]]:
    block = markdown.split(title, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def test_run_rows_match_the_summaries(sweep, tmp_path):
    root, values = sweep
    result = collect([root], tmp_path / "out", group_by=["choices.optimizer"])
    assert result["metrics"] == ["val/modes_captured", "val/mmd"]  # val metrics only, most telling first
    rows = _table(result["markdown"], "## Runs")
    assert len(rows) == 5, "the eval summary is skipped"
    for row in rows:
        run, seed = row[0], int(row[2])
        opt = "adam" if run in ("0", "1", "2") else "sgd"
        mmd, modes = values[(opt, seed)]
        assert row[1].startswith(f"optimizer={opt}")
        assert float(row[4]) == pytest.approx(modes, rel=1e-3) and float(row[5]) == pytest.approx(modes + 0.5, rel=1e-3)
        assert float(row[6]) == pytest.approx(mmd, rel=1e-3) and float(row[7]) == pytest.approx(mmd / 2, rel=1e-3)


def test_groups_are_mean_and_sample_std(sweep, tmp_path):
    root, values = sweep
    result = collect([root], tmp_path / "out", group_by=["choices.optimizer"])
    groups = {g["group"]: g for g in result["groups"]}
    for opt in ("adam", "sgd"):
        mmds = [m for (o, _), (m, _) in values.items() if o == opt]
        entry = groups[f"optimizer={opt}"]["metrics"]["val/mmd"]["final"]
        assert entry["mean"] == pytest.approx(statistics.fmean(mmds))
        assert entry["std"] == pytest.approx(statistics.stdev(mmds))
        assert entry["n"] == len(mmds)
    rows = {r[0]: r for r in _table(result["markdown"], "## Groups")}
    mean, std = (float(v) for v in rows["optimizer=adam"][4].split(" ± "))
    assert mean == pytest.approx(0.2, rel=1e-3) and std == pytest.approx(0.1, rel=1e-3)
    assert rows["optimizer=sgd"][1] == "2"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["groups"][0]["metrics"]["val/mmd"]["final"]["mean"] == pytest.approx(0.2)


def test_default_grouping_is_overrides_without_the_seed_and_plots_are_written(sweep, tmp_path):
    root, _ = sweep
    result = collect([root], tmp_path / "out")
    assert [g["group"] for g in result["groups"]] == ["optimizer=adam", "optimizer=sgd"]
    names = {p.rsplit("/", 1)[-1] for p in result["plots"]}
    assert {"val_mmd_vs_step.png", "val_modes_captured_vs_step.png", "mode_coverage.png"} <= names
    assert all((tmp_path / "out" / n).stat().st_size > 1000 for n in names)
    assert "![mode_coverage](mode_coverage.png)" in (tmp_path / "out" / "results.md").read_text()


def test_miou_against_labeled_fraction(tmp_path):
    root = tmp_path / "runs"
    for i, (fraction, seed, miou) in enumerate([(0.125, 0, 0.4), (0.125, 1, 0.5), (0.5, 0, 0.7), (1.0, 0, 0.8)]):
        write_run(root / f"r{i}", "sgd", seed, {"val/mIoU": (miou, miou)},
                  overrides=[f"dataset.labeled_fraction={fraction}", f"seed={seed}"],
                  config={"dataset": {"labeled_fraction": fraction}})
    result = collect([root], tmp_path / "out", group_by=["config.dataset.labeled_fraction"])
    assert any(p.endswith("miou_vs_labeled_fraction.png") for p in result["plots"])
    groups = {g["group"]: g["metrics"]["val/mIoU"]["best"]["mean"] for g in result["groups"]}
    assert groups["labeled_fraction=0.125"] == pytest.approx(0.45)


def test_cli(sweep, tmp_path):
    root, _ = sweep
    proc = subprocess.run([sys.executable, "-m", "src.results", str(root), "--out", str(tmp_path / "o"),
                           "--group-by", "choices.optimizer", "--metrics", "val/mmd", "--no-plots"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| optimizer=adam | 3 | 0.2 ± 0.1 |" in proc.stdout and (tmp_path / "o" / "results.md").is_file()
    missing = subprocess.run([sys.executable, "-m", "src.results", str(tmp_path / "empty_nothing")], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "error" in missing.stderr


def test_by_default_results_go_next_to_the_runs_never_into_the_repository(sweep, tmp_path):
    root, _ = sweep
    tracked = ROOT / "experiments" / "results"
    before = sorted(p.name for p in tracked.iterdir())
    proc = subprocess.run([sys.executable, "-m", "src.results", str(root), "--no-plots"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (root / "results" / "results.md").is_file() and str(root / "results") in proc.stdout
    assert sorted(p.name for p in tracked.iterdir()) == before


def test_columns_are_the_union_of_the_runs_metrics_and_a_diverged_run_keeps_them(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "adam", 0, {"val/fid": (50.0, 40.0), "val/kid": (0.1, 0.05)})
    write_run(root / "b", "sgd", 0, {"train/d_loss": (float("nan"), 1.0)})  # diverged before validating
    write_run(root / "c", "ncg", 0, {"val/fid": (45.0, 44.0), "val/is": (3.0, 3.5)})
    result = collect([root], tmp_path / "out")
    assert result["metrics"] == ["val/fid", "val/kid", "val/is"]
    rows = {r[0]: r for r in _table(result["markdown"], "## Runs")}
    assert rows["b"][4:] == ["–"] * 6 and rows["c"][6:8] == ["–", "–"] and rows["a"][4] == "50"


def test_plots_mark_single_points_label_groups_by_what_differs_and_name_the_step_unit(tmp_path):
    from matplotlib.axes import Axes

    root = tmp_path / "runs"
    common = ["experiment=mlp_ring8", "logger=csv"]
    write_run(root / "a", "adam", 0, {"val/mmd": (0.1, 0.1)}, overrides=[*common, "optimizer=adam"],
              curve=[(10, 0.1)])
    write_run(root / "b", "ncg", 0, {"val/mmd": (0.2, 0.2)}, overrides=[*common, "optimizer=ncg"],
              curve=[(10, 0.2), (20, 0.1)])
    seen = {"labels": [], "markers": [], "xlabel": []}
    original_plot, original_xlabel = Axes.plot, Axes.set_xlabel

    def plot(self, *args, **kwargs):
        seen["labels"].append(kwargs.get("label"))
        seen["markers"].append((len(args[0]), kwargs.get("marker")))
        return original_plot(self, *args, **kwargs)

    def xlabel(self, text, *args, **kwargs):
        seen["xlabel"].append(text)
        return original_xlabel(self, text, *args, **kwargs)

    Axes.plot, Axes.set_xlabel = plot, xlabel
    try:
        collect([root], tmp_path / "out", metrics=["val/mmd"])
    finally:
        Axes.plot, Axes.set_xlabel = original_plot, original_xlabel
    assert sorted(seen["labels"]) == ["optimizer=adam", "optimizer=ncg"]
    assert (1, "o") in seen["markers"] and (2, None) in seen["markers"]
    assert any("iteration" in x for x in seen["xlabel"])
