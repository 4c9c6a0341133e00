"""Stores the run's resolved config, Hydra choices and seed in every checkpoint (as plain data, so a
weights-only load can read them), which lets `src.eval` and resumes rebuild the run."""
from __future__ import annotations

import pytorch_lightning as pl


class ConfigInCheckpoint(pl.Callback):
    def __init__(self, config: dict, choices: dict, seed: int):
        self.payload = {"config": config, "choices": choices, "seed": seed}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["run_config"] = self.payload
