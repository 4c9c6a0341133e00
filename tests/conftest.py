"""Shared fixtures (helpers live in tests/helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import RunResult, run_cli


@pytest.fixture
def cli(tmp_path):
    """run_cli bound to a fresh run directory per call."""
    counter = iter(range(1000))

    def _run(*args: str, env: dict | None = None, run_dir: Path | None = None, timeout: int = 600) -> RunResult:
        return run_cli(list(args), run_dir or tmp_path / f"run{next(counter)}", env=env, timeout=timeout)

    return _run
