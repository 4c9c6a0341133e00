"""global_mean: W processes averaging their gradients reproduce one process's mean over the global batch."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from src.losses.reduction import global_mean, local_mean
from src.losses.segmentation import cross_entropy

IGNORE = 255


def _batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, 5, generator=g)
    target = torch.randint(0, 3, (4, 5, 5), generator=g)
    target[:2][torch.rand(2, 5, 5, generator=g) < 0.7] = IGNORE  # rank 0's half is mostly ignored
    return logits, target


def _grad(features, target, mean):
    """The gradient of a parameter shared by all processes: a 1x1 convolution from features to logits."""
    weight = torch.linspace(-1, 1, 9).reshape(3, 3).requires_grad_(True)
    logits = torch.einsum("kc,bchw->bkhw", weight, features)
    cross_entropy(logits, target, IGNORE, mean=mean).backward()
    return weight.grad


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    logits, target = _batch()
    half = slice(2 * rank, 2 * rank + 2)
    grads = {}
    for name, mean in (("global", global_mean), ("local", local_mean)):
        g = _grad(logits[half], target[half], mean)
        dist.all_reduce(g)  # DDP: the average of the processes' gradients
        grads[name] = g / world
    torch.save(grads, f"{out}.{rank}")
    dist.destroy_process_group()


def test_outside_a_process_group_it_is_the_local_mean():
    total, count = torch.tensor(6.0), torch.tensor(4.0)
    assert float(global_mean(total, count)) == float(local_mean(total, count)) == 1.5
    assert float(local_mean(torch.tensor(0.0), torch.tensor(0.0))) == 0.0, "nothing counted: 0, not NaN"


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_processes_reproduce_the_global_batch_mean(tmp_path):
    logits, target = _batch()
    reference = _grad(logits, target, local_mean)  # one process, the whole batch
    out = str(tmp_path / "grads")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, join=True)
    for rank in range(2):
        grads = torch.load(f"{out}.{rank}", weights_only=True)
        torch.testing.assert_close(grads["global"], reference, rtol=1e-6, atol=1e-8)
        # the per-process mean weighs the mostly-ignored half's pixels more: not the same gradient
        assert not torch.allclose(grads["local"], reference, rtol=1e-3, atol=1e-6)
