"""benchmarks/runs.py: a cell is run once even when two benchmark processes are given it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from benchmarks import runs


def _finished(run_dir, step=7):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "global_step": step}))


def test_a_cell_held_by_a_live_process_is_waited_for_not_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "LOCK_POLL_S", 0.05)
    monkeypatch.setattr(runs, "_run", lambda *a: pytest.fail("ran a cell another process was running"))
    run_dir = tmp_path / "final" / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = run_dir.with_name("seed0.lock")
        lock.parent.mkdir(parents=True)
        lock.write_text(str(holder.pid))
        result = {}
        waiter = threading.Thread(target=lambda: result.update(s=runs.run_cell(["seed=0"], run_dir)))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "run_cell did not wait for the live holder"
        _finished(run_dir)  # the holder's run ends
        lock.unlink()
        waiter.join(10)
        assert not waiter.is_alive()
        assert result["s"] == {"status": "finished", "global_step": 7}
        assert not lock.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "LOCK_POLL_S", 0.05)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "seed3"
    lock = tmp_path / "seed3.lock"
    lock.write_text(dead.stdout.strip())
    calls = []

    def fake_run(args, d, threads):
        calls.append(lock.read_text())
        _finished(d)
        return runs.ended(d)

    monkeypatch.setattr(runs, "_run", fake_run)
    summary = runs.run_cell(["seed=3"], run_dir)
    assert runs.ok(summary)
    assert calls == [str(os.getpid())]  # ran once, holding the lock under this process's pid
    assert not lock.exists()
    assert runs.run_cell(["seed=3"], run_dir) == summary and len(calls) == 1  # ended: reused, not rerun


def _saved(run_dir, config):
    from omegaconf import OmegaConf

    _finished(run_dir)
    OmegaConf.save(OmegaConf.create(config), run_dir / "config_resolved.yaml")


def _counting_run(calls):
    def fake_run(args, d, threads):
        calls.append(d)
        _finished(d, step=9)
        return runs.ended(d)
    return fake_run


def test_an_ended_run_is_reused_only_with_the_config_its_arguments_give_now(tmp_path, monkeypatch):
    now = {"seed": 0, "optimizer": {"lr": 1e-3}, "paths": {"output_dir": runs.RUN_DIR}}
    monkeypatch.setattr(runs, "resolved_config", lambda args: now)
    calls = []
    monkeypatch.setattr(runs, "_run", _counting_run(calls))
    same, moved, changed = tmp_path / "same", tmp_path / "moved", tmp_path / "changed"
    _saved(same, {"seed": 0, "optimizer": {"lr": 1e-3}, "paths": {"output_dir": str(same)}})
    # written elsewhere and moved here since: its own directory is not a difference; a new key is not either
    _saved(moved, {"seed": 0, "optimizer": {"lr": 1e-3, "ckpt_path": None}, "paths": {"output_dir": "/old/place"}})
    now_with_new_key = {**now, "model": {"r1_weight": 0.0}}
    _saved(changed, {"seed": 0, "optimizer": {"lr": 2e-3}, "paths": {"output_dir": str(changed)}})
    assert runs.run_cell([], same)["global_step"] == 7 and calls == []
    monkeypatch.setattr(runs, "resolved_config", lambda args: now_with_new_key)
    assert runs.run_cell([], moved)["global_step"] == 7 and calls == []
    monkeypatch.setattr(runs, "resolved_config", lambda args: now)
    assert runs.run_cell([], changed)["global_step"] == 9 and calls == [changed]  # the preset changed: run again
    stale = tmp_path / "changed.stale"
    assert (stale / "config_resolved.yaml").is_file()  # the old run is kept beside it
    assert runs.config_changes([], stale) == (["optimizer.lr"], [])


def test_the_config_compared_is_the_one_the_cli_resolves(tmp_path):
    cfg = runs.resolved_config(["experiment=mlp_grid25", "seed=3"])
    assert cfg["seed"] == 3 and cfg["paths"]["output_dir"] == runs.RUN_DIR
    assert cfg["trainer"]["default_root_dir"] == runs.RUN_DIR  # interpolations of the run directory too
    assert cfg["paths"]["root_dir"] == "<root>"
