"""Means over pixels (or samples) that stay exact under data parallelism.

A loss averaged over each process's own valid pixels, then gradient-averaged over processes, weighs a
pixel by 1 / (its process's count), not 1 / (the global count): with an ignore label or a confidence
mask (Hung et al. 2018's semi-supervised term) the counts differ between processes, and W processes do
not reproduce one process on the same global batch. ``global_mean`` divides the local sum by the global
count / W, so that the averaged gradient is exactly the gradient of the global-batch mean.

Every process must call ``global_mean`` the same number of times in the same order (it all-reduces the
count); models use it in training only, where every rank runs the same code path.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Mean = Callable[[Tensor, Tensor], Tensor]
_TINY = 1e-12


def local_mean(total: Tensor, count: Tensor) -> Tensor:
    """total / count on this process; exactly 0 (still in the graph) when nothing was counted."""
    return total / count.clamp_min(_TINY)


def global_mean(total: Tensor, count: Tensor) -> Tensor:
    """total * W / (count summed over the W processes); ``local_mean`` outside a process group."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local_mean(total, count)
    n = count.detach().to(total.dtype).clone().reshape(1)
    dist.all_reduce(n)
    return total * dist.get_world_size() / n.clamp_min(_TINY).squeeze(0)
