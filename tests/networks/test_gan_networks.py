import pytest
import torch

from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from src.networks.mlp import MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_dcgan_shapes(shape, spectral_norm):
    g, d = DCGANGenerator(16, shape, base_width=8), DCGANDiscriminator(shape, base_width=8, spectral_norm=spectral_norm)
    x = g(torch.randn(4, 16))
    assert x.shape == (4, *shape) and x.abs().max() <= 1
    assert d(x).shape == (4,)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_dcgan_discriminator_norms(norm):
    assert DCGANDiscriminator((1, 28, 28), base_width=8, norm=norm)(torch.randn(2, 1, 28, 28)).shape == (2,)


def test_dcgan_rejects_bad_sides():
    with pytest.raises(ValueError, match="square image side"):
        DCGANGenerator(8, (1, 30, 30))


def test_mlp_shapes_and_spectral_norm():
    g, d = MLPGenerator(2, (2,), hidden=(16, 16)), MLPDiscriminator((2,), hidden=(16,), spectral_norm=True)
    assert g(torch.randn(5, 2)).shape == (5, 2) and d(torch.randn(5, 2)).shape == (5,)
    img = MLPGenerator(4, (1, 8, 8), hidden=(16,), output="tanh")(torch.randn(3, 4))
    assert img.shape == (3, 1, 8, 8) and img.abs().max() <= 1
