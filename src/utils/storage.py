"""Checks that the output location can take a run, before anything is built or trained."""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.utils.errors import UserError

DEFAULT_MIN_FREE_MB = 200


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(directory: str | os.PathLike, min_free_mb: float = DEFAULT_MIN_FREE_MB) -> None:
    """Raise UserError if `directory` cannot be created/written or its disk has less than `min_free_mb`."""
    directory = Path(directory)
    base = _existing_ancestor(directory)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"output directory {directory} is not writable (checked {base}); set OUTPUT_DIR in .env "
                        "or paths.log_dir=... to a writable place")
    free_mb = shutil.disk_usage(base).free / 2**20
    if free_mb < min_free_mb:
        raise UserError(f"only {free_mb:.0f} MB free on the disk of {base} (need at least {min_free_mb:.0f} MB for "
                        "checkpoints and logs); free some space or set OUTPUT_DIR / paths.log_dir elsewhere")
    if directory.exists():
        probe = directory / f".write-probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"0" * 1024)
        except OSError as err:
            raise UserError(f"cannot write into the output directory {directory}: {err}") from err
        finally:
            probe.unlink(missing_ok=True)


class OutputDirCheck(Callback):
    """A Hydra callback: refuses a run whose output location is unwritable or full, before Hydra
    creates the run directory (a clear message and exit code 2 instead of a traceback)."""

    def __init__(self, min_free_mb: float = DEFAULT_MIN_FREE_MB):
        self.min_free_mb = float(min_free_mb)

    def _check(self, directory: Any) -> None:
        try:
            check_writable(str(directory), self.min_free_mb)
        except UserError as err:
            print(f"\nerror: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)
