"""Shared fixtures (helpers live in tests/helpers.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import RunResult, run_cli

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per test process: `-n 2` on 2 cores must not oversubscribe them
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def cli(tmp_path):
    """run_cli bound to a fresh run directory per call."""
    counter = iter(range(1000))

    def _run(*args: str, env: dict | None = None, run_dir: Path | None = None, timeout: int = 600) -> RunResult:
        return run_cli(list(args), run_dir or tmp_path / f"run{next(counter)}", env=env, timeout=timeout)

    return _run
