"""CompileNetworks (src/callbacks/compile.py): the players' networks compiled in place train to the same
weights as uncompiled ones, under the same parameter names (checkpoints stay interchangeable)."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from src.callbacks.compile import CompileNetworks
from src.models.gan import GAN
from src.networks.mlp import MLPDiscriminator, MLPGenerator
from src.utils.errors import ConfigError


def _fit(callbacks):
    torch.manual_seed(0)
    model = GAN(MLPGenerator(2, [2], hidden=[16]), MLPDiscriminator([2], hidden=[16]),
                optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}, latent_dim=2, num_eval_samples=8)
    keys = list(model.state_dict())
    data = DataLoader(TensorDataset(torch.randn(64, 2, generator=torch.Generator().manual_seed(1))), batch_size=16)
    pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", limit_val_batches=0,
               callbacks=callbacks).fit(model, data)
    return model, keys


@pytest.mark.slow
def test_compiled_players_train_like_uncompiled_ones_with_the_same_state_dict_keys():
    plain, _ = _fit([])
    compiled, keys = _fit([CompileNetworks()])
    assert list(compiled.state_dict()) == keys  # no _orig_mod. prefixes: checkpoints fit either way
    assert compiled.generator._compiled_call_impl is not None
    for (name, a), b in zip(plain.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="callbacks.compile.mode"):
        CompileNetworks(mode="fast")
