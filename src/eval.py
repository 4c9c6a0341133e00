"""Evaluate a checkpoint: `python -m src.eval ckpt_path=PATH [n_samples=N] [out_dir=DIR] [predict_dir=FOLDER]`.

The run is rebuilt from the resolved config stored in the checkpoint (``checkpoint["run_config"]``,
src/callbacks/run_config.py) with the project's own builders (src/train.py), its weights are loaded with
``model.load_state_dict`` and its validation is run again (``trainer.validate``): on CPU the numbers are
those of the run (the GAN metrics use fixed noise, seeded subsets and the same cached feature extractor;
segmentation metrics are exact counts). Everything goes to ``out_dir`` (a Hydra run dir like a training
run's): ``summary.json`` (the metrics, the run's values at the checkpoint's step and their relative
difference, the metric protocols), ``csv/metrics.csv``, and on request

* ``n_samples=N`` (GANs): ``samples/000000.png ...`` (one PNG per image), ``samples_grid.png`` and
  ``samples.npz`` (``images`` uint8 (N, H, W, C), ``z`` the noise; 2D data: ``samples`` (N, 2) and a
  scatter plot), from noise seeded by ``sample_seed`` (default: the run's seed);
* ``predict_dir=FOLDER`` (segmentation): ``predictions/<name>.png`` class-id masks (palette PNG) for every
  image in FOLDER, read and normalised as the run's data module does; (classifiers):
  ``predictions.csv`` (file, class, probability).

Loading is safe: the checkpoint is read with ``torch.load(weights_only=True)`` (plain tensors and
containers only: no pickled code runs), and only classes under ``src.``, ``torch.nn.``, ``torch.optim.``
and ``torchvision.models.`` named in its config are built. A missing, corrupt or foreign checkpoint, or
one whose weights do not fit the model this version builds from its config, stops with a clear message
(exit code 2, no traceback).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from src.utils.env import load_environment

load_environment()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from src.utils.config import register_configs  # noqa: E402
from src.utils.errors import UserError  # noqa: E402
from src.utils.resume import CheckpointError, load_checkpoint  # noqa: E402,F401 (load_checkpoint: src.eval's API)

register_configs()
log = logging.getLogger("src.eval")

#: module prefixes a checkpoint's config may name as `_target_` for the model and data
SAFE_TARGETS = ("src.", "torch.nn.", "torch.optim.", "torchvision.models.")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _targets(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":
                found.append((prefix, str(value)))
            else:
                found += _targets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _targets(value, f"{prefix}[{i}]")
    return found


def check_targets(config: dict) -> None:
    """Refuse to build anything outside SAFE_TARGETS that a (possibly foreign) checkpoint's config names."""
    for key in ("model", "dataset"):
        for where, target in _targets(config.get(key), key):
            if not target.startswith(SAFE_TARGETS):
                raise CheckpointError(f"the checkpoint's config names {where}._target_={target!r}; src.eval only "
                                      f"builds classes under {', '.join(SAFE_TARGETS)}")


def rebuild(ckpt: dict, out_dir: Path):
    """(config, data module, model with the checkpoint's weights)."""
    from src.train import build_datamodule, build_model

    config = ckpt["run_config"]["config"]
    check_targets(config)
    cfg = OmegaConf.create(config)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        if cfg.dataset.get("save_dir") is not None:  # e.g. labeled_ids.txt: write ours, not into the run
            cfg.dataset.save_dir = str(out_dir)
        if cfg.model.get("confusion_dir") is not None:
            cfg.model.confusion_dir = str(out_dir / "confusion")
    for key in ("model", "dataset"):
        if key not in cfg:
            raise CheckpointError(f"the checkpoint's config has no `{key}` node; it was not written by this version")
    datamodule = build_datamodule(cfg)
    datamodule.check()
    model = build_model(cfg, train=False)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0]
        raise CheckpointError(f"the checkpoint's weights do not fit the model this version builds from its config "
                              f"({type(model).__name__}): {detail[:600]}") from None
    return cfg, datamodule, model


# ------------------------------------------------------------------------------------------- outputs
def reference_values(ckpt_path: Path, step: int | None) -> dict[str, float]:
    """The run's own validation numbers at the checkpoint's step, from <run_dir>/summary.json."""
    summary = ckpt_path.resolve().parent.parent / "summary.json"
    if not summary.is_file() or step is None:
        return {}
    try:
        metrics = json.loads(summary.read_text()).get("metrics", {})
    except (json.JSONDecodeError, OSError):
        return {}
    out = {}
    for name, entry in metrics.items():
        if not name.startswith("val/"):
            continue
        if entry.get("final_step") == step and entry.get("final") is not None:
            out[name] = entry["final"]
        elif entry.get("best_step") == step and entry.get("best") is not None:
            out[name] = entry["best"]
    return out


def compare(evaluated: dict[str, dict], reference: dict[str, float]) -> dict[str, dict]:
    out = {}
    for name, ref in sorted(reference.items()):
        got = (evaluated.get(name) or {}).get("final")
        if got is None:
            continue
        rel = abs(got - ref) / max(abs(ref), 1e-12) if math.isfinite(got) and math.isfinite(ref) else float("nan")
        out[name] = {"run": ref, "eval": got, "rel_diff": rel}
    return out


def write_samples(model, n: int, seed: int, out_dir: Path) -> dict:
    """n samples from the generator (eval mode) -> PNGs, a grid and samples.npz."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import save_image

    generator = getattr(model, "generator", None)
    latent_dim = getattr(model, "latent_dim", getattr(generator, "latent_dim", None))
    if generator is None or latent_dim is None:
        raise UserError(f"n_samples: this checkpoint's model ({type(model).__name__}) has no generator to sample")
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, int(latent_dim), generator=g)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        x = torch.cat([generator(chunk.to(model.device)).float().cpu() for chunk in z.split(500)])
    generator.train(was_training)
    out_dir.mkdir(parents=True, exist_ok=True)
    if x.dim() == 2:  # 2D points
        from src.callbacks.samples import scatter_png

        np.savez_compressed(out_dir / "samples.npz", samples=x.numpy(), z=z.numpy())
        scatter_png(x.numpy(), None, out_dir / "samples_scatter.png", f"{n} samples")
        return {"n": n, "seed": int(seed), "npz": str(out_dir / "samples.npz")}
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folder = out_dir / "samples"
    folder.mkdir(exist_ok=True)
    width = max(6, len(str(n - 1)))
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:0{width}d}.png")
    save_image(x[:64], out_dir / "samples_grid.png", nrow=8, normalize=True, value_range=(-1, 1))
    np.savez_compressed(out_dir / "samples.npz", images=images, z=z.numpy())
    return {"n": n, "seed": int(seed), "pngs": str(folder), "npz": str(out_dir / "samples.npz")}


def _read_image(path: Path, channels: int):
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(image, dtype=np.float32) / 255.0
    except Exception as err:  # noqa: BLE001 - unreadable image
        raise UserError(f"predict_dir: cannot read {path} as an image ({err})") from None
    t = torch.from_numpy(array)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def _palette(k: int) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(0)
    colours = [(0, 0, 0)] + [tuple(int(c) for c in rng.integers(40, 256, 3)) for _ in range(max(k, 255) - 1)]
    flat = [c for colour in colours[:256] for c in colour]
    return flat + [0] * (768 - len(flat))


def predict_folder(cfg: DictConfig, datamodule, model, folder: Path, out_dir: Path) -> dict:
    """Segmentation: class-id masks as palette PNGs; classifiers: predictions.csv."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if not folder.is_dir():
        raise UserError(f"predict_dir: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"predict_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    shape = list(OmegaConf.select(cfg, "dataset.meta.shape") or [3, 0, 0])
    channels = int(shape[0])
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    segmentation = hasattr(model, "infer") or hasattr(model, "segmenter")
    model.eval()
    rows, written = [], 0
    (out_dir / "predictions").mkdir(parents=True, exist_ok=True) if segmentation else None
    for path in files:
        x = _read_image(path, channels)
        h, w = x.shape[-2:]
        if mean is not None and std is not None:  # the segmentation data modules' normalisation
            x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        else:  # the image data modules serve [-1, 1]
            x = x * 2 - 1
        x = x[None].to(model.device)
        with torch.no_grad():
            if segmentation:
                logits = model.infer(x) if hasattr(model, "infer") else model(x)
                if logits.shape[-2:] != (h, w):
                    logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                mask = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
                image = Image.fromarray(mask, mode="P")
                image.putpalette(_palette(int(logits.shape[1])))
                image.save(out_dir / "predictions" / f"{path.stem}.png")
                written += 1
            else:
                if tuple(x.shape[-2:]) != tuple(shape[1:]) and len(shape) == 3:
                    x = F.interpolate(x, size=tuple(shape[1:]), mode="bilinear", align_corners=False, antialias=True)
                probs = model(x).softmax(1)[0]
                k = int(probs.argmax())
                rows.append({"file": path.name, "class": k, "probability": round(float(probs[k]), 6)})
    if segmentation:
        return {"masks": str(out_dir / "predictions"), "n": written}
    with open(out_dir / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "class", "probability"])
        writer.writeheader()
        writer.writerows(rows)
    return {"csv": str(out_dir / "predictions.csv"), "n": len(rows)}


# ------------------------------------------------------------------------------------------- evaluate
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    import pytorch_lightning as pl
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.loggers import CSVLogger

    from src.callbacks.summary import RunSummary
    from src.utils.config import hydra_overrides

    out_dir = Path(HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else cfg.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser()
    ckpt = load_checkpoint(ckpt_path)
    run_config = ckpt["run_config"]
    seed = int(run_config.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    run_cfg, datamodule, model = rebuild(ckpt, out_dir)

    limit = cfg.limit_val_batches if cfg.limit_val_batches is not None else run_cfg.trainer.get("limit_val_batches")
    extra = {"mode": "eval", "seed": seed, "task_name": run_cfg.get("task_name"),
             "choices": run_config.get("choices", {}), "overrides": hydra_overrides(),
             "output_dir": str(out_dir),
             "checkpoint": {"path": str(ckpt_path.resolve()), "global_step": ckpt.get("global_step"),
                            "epoch": ckpt.get("epoch"),
                            "lightning_version": ckpt.get("pytorch-lightning_version")}}
    summary = RunSummary(str(out_dir / "summary.json"), extra=extra)
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, logger=CSVLogger(str(out_dir), name="csv", version=""),
                         callbacks=[summary], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                         default_root_dir=str(out_dir), limit_val_batches=limit,
                         precision=run_cfg.trainer.get("precision", "32-true"))
    result: dict[str, Any] = {"output_dir": str(out_dir), "summary_path": str(out_dir / "summary.json")}
    if cfg.validate:
        trainer.validate(model, datamodule=datamodule, verbose=False)
        summary.record(trainer)
        reference = reference_values(ckpt_path, ckpt.get("global_step"))
        summary.extra["reproduces"] = compare(summary.metrics, reference)
    else:
        datamodule.setup("validate")
    model.to(trainer.strategy.root_device)
    if int(cfg.n_samples or 0) > 0:
        seed_s = seed if cfg.sample_seed is None else int(cfg.sample_seed)
        summary.extra["samples"] = write_samples(model, int(cfg.n_samples), seed_s, out_dir)
    if cfg.predict_dir:
        summary.extra["predictions"] = predict_folder(run_cfg, datamodule, model,
                                                      Path(str(cfg.predict_dir)).expanduser(), out_dir)
    summary.status = "evaluated"
    summary.write(trainer)
    result.update(metrics=summary.metrics, reproduces=summary.extra.get("reproduces", {}))
    return result


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
            raise UserError("ckpt_path: required, e.g. python -m src.eval "
                            "ckpt_path=outputs/<task>/runs/<run>/checkpoints/last.ckpt")
        result = evaluate(cfg)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(2)
    metrics = {k: v["final"] for k, v in result["metrics"].items() if k.startswith("val/")}
    if metrics:
        print("\n" + "\n".join(f"{k:<24} {v:.6g}" for k, v in sorted(metrics.items())))
    worst = max((r["rel_diff"] for r in result["reproduces"].values() if math.isfinite(r["rel_diff"])), default=None)
    if worst is not None:
        print(f"largest relative difference from the run's own numbers: {worst:.2e}")
    print(f"\nevaluation finished; outputs in: {result['output_dir']}")
    print(f"summary: {result['summary_path']}")


if __name__ == "__main__":
    main()
