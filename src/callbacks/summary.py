"""summary.json: the final and best value of every logged metric, with the seed, the config choices
and the output path. Written at the end of fit (and of test), and also when a run fails, so nothing
computed is lost. Only rank 0 writes."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def metric_protocols(trainer: pl.Trainer | None) -> dict[str, dict]:
    """{name: protocol} of the model's sample metrics (``pl_module.metrics``) that describe how their last
    numbers were made (a ``protocol`` dict: backbone and checkpoint hash, sample counts, resizing)."""
    module = getattr(getattr(trainer, "strategy", None), "lightning_module", None) if trainer is not None else None
    metrics = getattr(module, "metrics", None)
    if not hasattr(metrics, "items"):
        return {}
    return {name: dict(m.protocol) for name, m in metrics.items() if getattr(m, "protocol", None)}


class RunSummary(pl.Callback):
    """Tracks the final and best value of every logged metric. Whether a metric is better high or low is
    declared where it is made (the model's ``metric_modes``: its monitor, its metric objects' ``modes``,
    callbacks such as Timing); anything undeclared (losses, distances) is best at its minimum."""

    def __init__(self, path: str, extra: dict | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})
        self.metrics: dict[str, dict[str, Any]] = {}
        self.modes: dict[str, str] = {}
        self.started = time.time()
        self.status = "running"

    # -------------------------------------------------------------------------------------- tracking
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.modes = pl_module.metric_modes
        self.extra["monitor"] = dict(pl_module.monitor)
        self.extra["headline"] = list(pl_module.headline_metrics)

    def record(self, trainer: pl.Trainer) -> None:
        step = trainer.global_step
        for name, value in trainer.callback_metrics.items():
            v = _scalar(value)
            if v is None or name == "step":
                continue
            entry = self.metrics.setdefault(name, {"best": None, "best_step": None})
            entry["mode"] = self.modes.get(name, "min")
            entry["final"], entry["final_step"] = v, step
            better = (entry["best"] is None or not math.isfinite(entry["best"])
                      or (v > entry["best"] if entry["mode"] == "max" else v < entry["best"]))
            if math.isfinite(v) and better:
                entry["best"], entry["best_step"] = v, step

    def validated_at(self, step: int) -> bool:
        """Whether validation numbers were recorded at `step`."""
        return any(e.get("final_step") == step for k, e in self.metrics.items() if k.startswith("val/"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % max(int(trainer.log_every_n_steps or 1), 1) == 0:
            self.record(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self.record(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.record(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.record(trainer)
        self.status = "finished"
        self.write(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.record(trainer)
        from src.utils.errors import RunInterrupted

        kind = "interrupted" if isinstance(exception, (RunInterrupted, SIGTERMException)) else "failed"
        self.status = f"{kind}: {type(exception).__name__}: {exception}"
        self.write(trainer)

    # -------------------------------------------------------------------------------------- writing
    def state_dict(self) -> dict:
        return {"metrics": self.metrics}

    def load_state_dict(self, state: dict) -> None:
        self.metrics = dict(state.get("metrics", {}))

    def write_failed(self, error: BaseException) -> Path:
        self.status = f"failed: {type(error).__name__}: {error}"
        return self.write()

    def write(self, trainer: pl.Trainer | None = None) -> Path:
        if trainer is not None and not trainer.is_global_zero:
            return self.path
        best_ckpt = None
        if trainer is not None and trainer.checkpoint_callback is not None:
            best_ckpt = getattr(trainer.checkpoint_callback, "best_model_path", None) or None
        summary = {
            "status": self.status,
            **self.extra,
            "global_step": trainer.global_step if trainer is not None else None,
            "epoch": trainer.current_epoch if trainer is not None else None,
            "best_checkpoint": best_ckpt,
            "wall_time_s": round(time.time() - self.started, 2),
            "metrics": {k: self.metrics[k] for k in sorted(self.metrics)},
        }
        protocols = metric_protocols(trainer)
        self.protocols = protocols or getattr(self, "protocols", {})
        if self.protocols:  # how the sample metrics (FID, KID, IS) were measured, beside their numbers
            summary["metric_protocols"] = self.protocols
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str, allow_nan=True))
        tmp.replace(self.path)
        return self.path


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isfinite(value) and value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def headline_table(summary: dict) -> str:
    """The end of a run as printed: its status and length, then the monitored metric and the model's main
    metrics (final value, best value and the iteration it was reached at), as a small table."""
    metrics = summary.get("metrics") or {}
    monitor = (summary.get("monitor") or {}).get("metric")
    names = [n for n in dict.fromkeys([monitor, *(summary.get("headline") or [])]) if n and n in metrics]
    minutes, seconds = divmod(float(summary.get("wall_time_s") or 0.0), 60)
    lines = [f"run {summary.get('status', '?')}: {summary.get('global_step')} iterations, {int(minutes)} min "
             f"{seconds:.0f} s"]
    if names:
        width = max(len(n) for n in names) + len(" (monitored, max)")
        lines.append(f"{'metric':<{width}}  {'final':>10}  {'best':>10}  at iteration")
        for name in names:
            entry = metrics[name]
            label = f"{name} (monitored, {entry.get('mode', 'min')})" if name == monitor else name
            lines.append(f"{label:<{width}}  {_number(entry.get('final')):>10}  {_number(entry.get('best')):>10}  "
                         f"{_number(entry.get('best_step'))}")
    return "\n".join(lines)
