import pytest
import torch

from src.losses.adversarial import LOSSES, get_adversarial_loss, gradient_penalty
from src.utils.errors import ConfigError


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_scalars_with_gradients(name):
    loss = get_adversarial_loss(name)
    real, fake = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    d, g = loss.discriminator(real, fake), loss.generator(fake)
    assert d.dim() == 0 and g.dim() == 0
    d.backward()
    assert real.grad is not None


@pytest.mark.parametrize("name", [n for n, c in LOSSES.items() if c.zero_sum])
def test_zero_sum_losses_define_a_game_value(name):
    loss = get_adversarial_loss(name)
    real, fake = torch.randn(8), torch.randn(8, requires_grad=True)
    f = loss.value(real, fake)
    torch.testing.assert_close(loss.discriminator(real, fake), -f)
    # the generator's loss equals f up to a term constant in G: same gradient w.r.t. fake logits
    (g_f,) = torch.autograd.grad(f, fake)
    (g_g,) = torch.autograd.grad(loss.generator(fake), fake)
    torch.testing.assert_close(g_f, g_g)


def test_non_saturating_is_not_zero_sum_and_values_refuse():
    with pytest.raises(NotImplementedError):
        get_adversarial_loss("ns").value(torch.zeros(2), torch.zeros(2))


def test_known_values():
    zero = torch.zeros(4)
    assert torch.isclose(get_adversarial_loss("ns").discriminator(zero, zero), 2 * torch.log(torch.tensor(2.0)))
    assert get_adversarial_loss("hinge").discriminator(zero, zero) == 2.0
    assert get_adversarial_loss("wgan").value(torch.ones(4), zero) == 1.0


def test_unknown_loss_lists_options():
    with pytest.raises(ConfigError, match="model.loss.*hinge.*wgan_gp"):
        get_adversarial_loss("nope")


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    w = torch.zeros(2, 3)
    w[0, 0] = 1.0  # D(x) = x[..., 0, 0]: gradient norm 1 everywhere
    critic = lambda x: x[:, 0, 0]  # noqa: E731
    gp = gradient_penalty(critic, torch.randn(5, 2, 3), torch.randn(5, 2, 3))
    assert torch.isclose(gp, torch.tensor(0.0), atol=1e-6)
