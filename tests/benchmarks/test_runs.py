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
