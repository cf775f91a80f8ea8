"""Backprop against central finite differences (float64), for every activation × loss."""

import numpy as np
import pytest

import xpnet

ACTIVATIONS = ["relu", "leaky_relu", "sigmoid", "tanh"]
HEADS = [("softmax", "cross_entropy", 3), ("softmax", "mse", 3), ("sigmoid", "binary_cross_entropy", 1),
         ("sigmoid", "mse", 3), ("linear", "mse", 3)]
DEPTHS = {1: [6, 5], 2: [6, 5, 4], 3: [6, 5, 4, 5]}


def _net(sizes, rng, **kwargs):
    net = xpnet.MLP(sizes, dtype="float64", seed=int(rng.integers(1000)), **kwargs)
    # Non-zero biases keep ReLU inputs away from the kink at exactly 0, where the
    # derivative is undefined and a finite difference cannot agree with either side.
    for b in net.b:
        b[...] = rng.uniform(0.05, 0.3, size=b.shape)
    return net


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output,loss,n_out", HEADS)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_gradients_match_finite_differences(activation, output, loss, n_out, depth, l2):
    rng = np.random.default_rng(hash((activation, output, depth)) % 2**32)
    net = _net(DEPTHS[depth] + [n_out], rng, activation=activation, output=output, loss=loss)
    X = rng.standard_normal((7, 6))
    y = rng.integers(0, max(n_out, 2), size=7)
    assert xpnet.gradcheck(net, X, y, l2=l2) < 1e-6


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dropout_gradient_with_fixed_mask(activation):
    rng = np.random.default_rng(3)
    net = _net([6, 8, 7, 3], rng, activation=activation, dropout=0.4)
    X = rng.standard_normal((5, 6))
    y = rng.integers(0, 3, size=5)
    masks = [rng.random((5, 8)) > 0.4, rng.random((5, 7)) > 0.4]
    assert xpnet.gradcheck(net, X, y, masks=masks) < 1e-6
    # The mask matters: checking against the no-dropout loss must fail.
    net.loss_and_grad(X, y, train=True, masks=masks)
    with_mask = net.flat_grads.copy()
    net.loss_and_grad(X, y, train=False)
    assert not np.allclose(with_mask, net.flat_grads)


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The checker itself must be able to fail: corrupt backprop and expect a large error."""
    rng = np.random.default_rng(0)
    net = _net([6, 5, 3], rng)
    X, y = rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)
    original = xpnet.MLP.backward

    def broken(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.grads[0] *= 1.1

    monkeypatch.setattr(xpnet.MLP, "backward", broken)
    assert xpnet.gradcheck(net, X, y) > 1e-3


def test_float32_network_is_checked_in_float64():
    rng = np.random.default_rng(1)
    net = xpnet.MLP([6, 5, 3], dtype="float32")
    for b in net.b:
        b[...] = 0.1
    X, y = rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)
    assert xpnet.gradcheck(net, X, y) < 1e-6
    assert net.dtype == np.float32  # the original is untouched


@pytest.mark.parametrize("smoothing", [0.1, 0.5])
@pytest.mark.parametrize("fast_ops", [True, False])
def test_label_smoothing_gradient_and_loss(smoothing, fast_ops):
    """The fused softmax-CE with label smoothing (Numba and reference) against finite differences,
    and its loss against the closed form -Σ q log p with q = (1-s)·onehot + s/k."""
    rng = np.random.default_rng(5)
    net = _net([6, 5, 4], rng, label_smoothing=smoothing, fast_ops=fast_ops)
    X = rng.standard_normal((7, 6))
    y = rng.integers(0, 4, size=7)
    assert xpnet.gradcheck(net, X, y) < 1e-7
    loss, _ = net.loss_and_grad(X, y)
    P = net.predict_proba(X)
    q = np.full((7, 4), smoothing / 4)
    q[np.arange(7), y] += 1 - smoothing
    assert float(loss) == pytest.approx(float(-(q * np.log(P)).sum(axis=1).mean()), rel=1e-12)


def test_label_smoothing_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    net = _net([6, 5, 4], rng, label_smoothing=0.2)
    X, y = rng.standard_normal((9, 6)), rng.integers(0, 4, size=9)
    loss, _ = net.loss_and_grad(X, y)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)).double()
    with torch.no_grad():
        for layer, W, b in zip((model[0], model[2]), net.W, net.b):
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.2)(model(torch.from_numpy(X)), torch.from_numpy(y))
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(net.grads[0], model[0].weight.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(net.grads[3], model[2].bias.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_label_smoothing_is_checked():
    with pytest.raises(xpnet.errors.ConfigError, match="label smoothing"):
        xpnet.MLP([4, 3], label_smoothing=1.0)
    with pytest.raises(xpnet.errors.ConfigError, match="cross-entropy"):
        xpnet.MLP([4, 3], output="sigmoid", label_smoothing=0.1)
