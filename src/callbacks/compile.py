"""Compile each player's network with torch.compile (PyTorch 2 graph capture: TorchInductor kernels, and on
GPUs with ``mode: reduce-overhead`` CUDA graphs, which replay a small model's whole step without per-kernel
launch cost). Opt in per run: ``+callbacks.compile={_target_: src.callbacks.compile.CompileNetworks}`` (or
``callbacks=...`` in a preset); it pays where a step is many small kernels (tiny MLPs on a GPU) and costs a
compilation of tens of seconds at the first steps. Measured: experiments/README.md, "Framework overhead".

The networks are compiled in place (``nn.Module.compile``): parameters, buffers and checkpoint keys are those
of the uncompiled run, so checkpoints move freely between compiled and uncompiled runs.
"""
from __future__ import annotations

import pytorch_lightning as pl

from src.utils.schema import choose

MODES = ("default", "reduce-overhead", "max-autotune")


class CompileNetworks(pl.Callback):
    def __init__(self, mode: str = "default", dynamic: bool | None = None, fullgraph: bool = False):
        self.mode = choose(mode, MODES, "callbacks.compile.mode")
        self.dynamic, self.fullgraph = dynamic, bool(fullgraph)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for net in pl_module.players.values():
            net.compile(mode=self.mode, dynamic=self.dynamic, fullgraph=self.fullgraph)
