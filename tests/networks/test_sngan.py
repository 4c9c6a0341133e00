import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from src.networks.sngan import ConditionalBatchNorm2d, SNGANDiscriminator, SNGANGenerator

SHAPES = [(3, 32, 32), (1, 28, 28)]


def _sn_layers(d: nn.Module) -> list[nn.Module]:
    return [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]


def _top_singular_value(m: nn.Module) -> float:
    w = m.weight.detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [None, 4])
def test_shapes_and_range(shape, num_classes):
    torch.manual_seed(0)
    g = SNGANGenerator(16, shape, base_width=16, num_classes=num_classes)
    d = SNGANDiscriminator(shape, base_width=16, num_classes=num_classes)
    assert g.latent_dim == 16 and g.image_shape == shape and g.num_classes == num_classes
    assert d.num_classes == num_classes
    y = torch.tensor([0, 1, 2, 3, 1]) if num_classes else None
    x = g(torch.randn(5, 16), y)
    assert x.shape == (5, *shape) and x.abs().max() <= 1 and x.std() > 0
    out = d(x, y)
    assert out.shape == (5,) and torch.isfinite(out).all()
    g.eval()
    assert g(torch.randn(1, 16), None if y is None else y[:1]).shape == (1, *shape)


@pytest.mark.parametrize("shape, s0, up_blocks, d_sides", [
    ((3, 32, 32), 4, 3, [16, 8, 8, 8]),  # the paper's CIFAR-10 ResNet
    ((1, 28, 28), 7, 2, [14, 7, 7, 7]),
])
def test_resolution_plan(shape, s0, up_blocks, d_sides):
    g, d = SNGANGenerator(8, shape, base_width=8), SNGANDiscriminator(shape, base_width=8)
    assert g.s0 == s0 and len(g.blocks) == up_blocks
    sides, h = [], torch.randn(2, *shape)
    for block in d.blocks:
        h = block(h)
        sides.append(h.shape[-1])
    assert sides == d_sides
    x = torch.randn(2, *shape)
    d.eval()  # freeze the power-iteration vectors so that both calls see the same weights
    phi = d.features(x)  # ReLU, then global sum (not mean) pooling, as in the paper
    assert phi.shape == (2, 8) and torch.allclose(phi, torch.relu(d.blocks(x)).sum((2, 3)))


@pytest.mark.parametrize("bad", [(3, 30, 30), (1, 3, 3), (1, 64, 32), (32, 32)])
def test_unsupported_shapes_raise(bad):
    for make in (lambda: SNGANGenerator(8, bad, base_width=8), lambda: SNGANDiscriminator(bad, base_width=8)):
        with pytest.raises(ValueError, match=str(bad[-1]) if len(bad) == 3 else "image_shape"):
            make()


def test_labels_required_iff_conditional():
    g, d = SNGANGenerator(8, (1, 28, 28), 8, num_classes=3), SNGANDiscriminator((1, 28, 28), 8, num_classes=3)
    z, x, y = torch.randn(2, 8), torch.randn(2, 1, 28, 28), torch.tensor([0, 2])
    with pytest.raises(ValueError, match="num_classes=3"):
        g(z)
    with pytest.raises(ValueError, match="num_classes=3"):
        d(x)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        d(x, torch.tensor([0, 1, 2]))
    g0, d0 = SNGANGenerator(8, (1, 28, 28), 8), SNGANDiscriminator((1, 28, 28), 8)
    with pytest.raises(ValueError, match="unconditional"):
        g0(z, y)
    with pytest.raises(ValueError, match="unconditional"):
        d0(x, y)


def test_spectral_norm_on_every_discriminator_layer():
    torch.manual_seed(0)
    d = SNGANDiscriminator((1, 28, 28), base_width=32, num_classes=5)
    layers = _sn_layers(d)
    assert len(layers) == 3 + 3 + 2 * 2 + 1 + 1  # optimized block, down block, 2 plain blocks, head, embed
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    d.train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        for _ in range(20):  # one power iteration per training-mode forward
            d(x, y)
    sigmas = [_top_singular_value(m) for m in layers]
    assert all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    # the normalised weights do not depend on the raw weights' scale (u, v frozen in eval mode)
    d.eval()
    with torch.no_grad():
        before = d(x, y)
        for m in layers:
            m.parametrizations.weight.original.mul_(3.0)
        assert torch.allclose(d(x, y), before, rtol=1e-4, atol=1e-4)

    plain = SNGANDiscriminator((1, 28, 28), base_width=32, num_classes=5, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert max(_top_singular_value(m) for m in _sn_layers(plain)) > 1.5


def test_projection_term_depends_on_y():
    torch.manual_seed(0)
    d = SNGANDiscriminator((1, 28, 28), base_width=16, num_classes=4).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        a, b = d(x, torch.zeros(3, dtype=torch.long)), d(x, torch.ones(3, dtype=torch.long))
        assert (a - b).abs().min() > 1e-4
        phi = d.features(x)
        assert torch.allclose(a - b, (phi * (d.embed.weight[0] - d.embed.weight[1])).sum(1), atol=1e-4)
        # equal embedding rows (still spectrally normalised): the projection no longer tells classes apart
        d.embed.parametrizations.weight.original.copy_(torch.randn(1, 16).expand(4, 16))
        a, b = d(x, torch.zeros(3, dtype=torch.long)), d(x, torch.full((3,), 3))
        assert torch.allclose(a, b, atol=1e-5)

    plain = SNGANDiscriminator((1, 28, 28), base_width=16, num_classes=4, spectral_norm=False).eval()
    with torch.no_grad():
        plain.embed.weight.zero_()
        a, b = plain(x, torch.tensor([0, 1, 2])), plain(x, torch.tensor([3, 3, 0]))
        assert torch.equal(a, b) and torch.allclose(a, plain.linear(plain.features(x)).squeeze(1))


def test_conditional_batch_norm():
    torch.manual_seed(0)
    g = SNGANGenerator(8, (3, 32, 32), base_width=16, num_classes=3).eval()
    z = torch.randn(1, 8).expand(2, 8)
    with torch.no_grad():
        base = g(z, torch.tensor([0, 1]))
        assert torch.allclose(base[0], base[1])  # gains 1, biases 0 at init: y has no effect
        cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
        assert len(cbns) == 2 * len(g.blocks)
        for m in cbns:
            m.gain.weight[1].uniform_(0.5, 1.5)
            m.bias.weight[1].uniform_(-0.5, 0.5)
        out = g(z, torch.tensor([0, 1]))
        assert (out[0] - out[1]).abs().max() > 1e-3
        assert torch.allclose(out[0], base[0])  # class 0's parameters are untouched
        for m in cbns:
            m.gain.weight.fill_(1.0)
            m.bias.weight.zero_()
        out = g(z, torch.tensor([1, 2]))
        assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], base[0])

    # the layer itself: batch statistics without affine, then the class's gain and bias
    cbn = ConditionalBatchNorm2d(4, num_classes=3)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.arange(12.0).view(3, 4))
        cbn.bias.weight.copy_(-torch.arange(12.0).view(3, 4))
    x, y = torch.randn(6, 4, 5, 5), torch.tensor([0, 1, 2, 2, 1, 0])
    normed = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = normed * cbn.gain.weight[y][:, :, None, None] + cbn.bias.weight[y][:, :, None, None]
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)


@pytest.mark.parametrize("num_classes", [None, 3])
def test_hinge_loss_reaches_every_parameter(num_classes):
    torch.manual_seed(0)
    shape = (3, 32, 32)
    g = SNGANGenerator(8, shape, base_width=16, num_classes=num_classes)
    d = SNGANDiscriminator(shape, base_width=16, num_classes=num_classes)
    y = torch.arange(6) % 3 if num_classes else None
    real = torch.rand(6, *shape) * 2 - 1
    fake = g(torch.randn(6, 8), y)
    # the two hinge terms are backpropagated separately: summed, their effects on D's bias can cancel exactly
    reached = {name: 0.0 for name, _ in d.named_parameters()}
    for term in (torch.relu(1 - d(real, y)).mean(), torch.relu(1 + d(fake.detach(), y)).mean()):
        d.zero_grad()
        term.backward()
        for name, p in d.named_parameters():
            assert p.grad is not None, name
            reached[name] += p.grad.abs().sum().item()
    assert all(v > 0 for v in reached.values()), [k for k, v in reached.items() if v == 0]
    assert all(p.grad is None for p in g.parameters())
    d.zero_grad()
    g_loss = -d(fake, y).mean()
    g_loss.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts_at_paper_widths():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    g, d = SNGANGenerator(), SNGANDiscriminator()
    assert g.latent_dim == 128 and g.image_shape == (3, 32, 32)
    n_g, n_d = count(g), count(d)
    assert abs(n_g - 4.3e6) <= 0.15 * 4.3e6 and abs(n_d - 1.0e6) <= 0.15 * 1.0e6
    # exact: G = linear 128 -> 4*4*256, 3 blocks (2 BN, two 3x3 and one 1x1 conv), BN, conv 3x3 -> 3,
    # without the biases that feed a batch norm only (conv1 of each block, conv2/shortcut of the last)
    block = 2 * 2 * 256 + 2 * 9 * 256 * 256 + 256 * 256 + 2 * 256
    assert n_g == 128 * 4096 + 4096 + 3 * block - 2 * 256 + 2 * 256 + 9 * 256 * 3 + 3
    # D = optimized block 3 -> 128, down block with 1x1 shortcut, 2 blocks with identity shortcut, linear
    conv3 = 9 * 128 * 128 + 128
    assert n_d == (9 * 3 * 128 + 128 + conv3 + 3 * 128 + 128) + (2 * conv3 + 128 * 128 + 128) + 4 * conv3 + 129
    # class conditioning adds per-class gains and biases to G's block norms and D's embedding
    assert count(SNGANGenerator(num_classes=10)) - n_g == 3 * 2 * 2 * 10 * 256 - 3 * 2 * 2 * 256
    assert count(SNGANDiscriminator(num_classes=10)) - n_d == 10 * 128
    assert math.isclose(n_g / 1e6, 4.28, abs_tol=0.01) and math.isclose(n_d / 1e6, 1.05, abs_tol=0.01)
