"""Entry point: `python -m src.run [+experiment=NAME] [group=option ...] [key=value ...]`, and
`python -m src.run -m ...` for sweeps. See README.md."""
from __future__ import annotations

import sys

from src.utils.env import load_environment

load_environment()  # before Hydra composes: .env may set DATA_DIR, OUTPUT_DIR, WANDB_*

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.utils.config import register_resolvers  # noqa: E402
from src.utils.errors import UserError  # noqa: E402

register_resolvers()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from src.train import train

    try:
        result = train(cfg)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"\nrun finished ({result['status']}); outputs in: {result['output_dir']}")
    print(f"summary: {result['summary_path']}")
    # For sweepers (Optuna): the value of the monitored metric, if any.
    monitor = cfg.model.get("monitor") or {}
    entry = result["metrics"].get(monitor.get("metric", ""), {})
    return entry.get("best")


if __name__ == "__main__":
    main()
