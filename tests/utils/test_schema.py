import pytest
from omegaconf import OmegaConf

from src.utils.errors import ConfigError
from src.utils.schema import validate_config


def cfg(**kw):
    base = {"seed": 0, "model": {"n_critic": 1, "loss": "ns"}, "optimizer": {"optimizer": {"lr": 0.1}},
            "dataset": {"batch_size": 4}}
    return OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(kw))


def test_valid_config_passes():
    validate_config(cfg())


@pytest.mark.parametrize("bad,key", [
    ({"seed": "x"}, "seed"), ({"seed": True}, "seed"), ({"model": {"n_critic": 0}}, "model.n_critic"),
    ({"optimizer": {"lr": -1}}, "optimizer.lr"),
    ({"optimizer": {"betas": [0.5, 1.5]}}, "optimizer.betas"),
    ({"optimizer": {"players": {"generator": {"lr": 0}}}}, "optimizer.players.generator.lr"),
    ({"dataset": {"batch_size": 0}}, "dataset.batch_size"),
])
def test_each_violation_names_its_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(cfg(**bad))


def test_all_violations_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config(cfg(seed=-1, model={"n_critic": 0}))
    assert "seed" in str(err.value) and "model.n_critic" in str(err.value)


def test_missing_seed():
    with pytest.raises(ConfigError, match="seed: missing"):
        validate_config(OmegaConf.create({"model": {}}))
