"""Environment: `.env` loading and the defaults that make a run work offline with no account."""
from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

# Variables whose values must never reach a saved file (configs, logs, checkpoints, summaries).
SECRET_VARIABLES = ("WANDB_API_KEY",)


def project_root() -> Path:
    """The repository root (the folder holding conf/ and src/)."""
    return Path(__file__).resolve().parents[2]


def load_environment(env_file: str | os.PathLike | None = None) -> None:
    """Load `.env` (from the working directory, else the project root) without overriding variables
    already set in the environment, then default wandb to offline mode.

    Offline wandb needs no account: runs are written under the run's output directory and
    `wandb sync` uploads them later. `WANDB_MODE=online` in `.env` logs live.
    """
    candidates = [Path(env_file)] if env_file else [Path.cwd() / ".env", project_root() / ".env"]
    for path in candidates:
        if path.is_file():
            load_dotenv(path, override=False)
            break
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("PROJECT_ROOT", str(project_root()))
    # wandb must never ask questions on a terminal; console capture clutters offline runs.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def secret_values() -> list[str]:
    """The values of secret variables currently set (non-trivial ones only)."""
    return [v for k in SECRET_VARIABLES if len(v := os.environ.get(k, "")) >= 8]
