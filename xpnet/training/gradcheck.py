"""Finite-difference gradient checking, the notes' way to trust a backward pass.

Compares backprop's gradient with central differences ``(J(θ+ε) − J(θ−ε)) / 2ε`` for
every parameter, in float64, and reports ``‖g − g̃‖ / (‖g‖ + ‖g̃‖)``.
"""

from __future__ import annotations

import numpy as np

from xpnet import backend


def gradcheck(net, X, y, eps: float = 1e-6, l2: float = 0.0, masks=None) -> float:
    """Max relative error between analytic and numerical gradients (want < 1e-7 in float64).

    The check runs on a float64 CPU copy of ``net`` (the original is untouched). With
    dropout, pass fixed 0/1 keep-``masks`` (one per hidden layer) so the function is
    deterministic.
    """
    from xpnet.nn.model import MLP  # noqa: PLC0415

    config = dict(net.config(), dtype="float64")
    probe = MLP.from_config(config, device="cpu", fast_ops=False)
    probe.set_params([backend.to_numpy(p).astype(np.float64) for p in net.params])
    X = backend.to_numpy(X).astype(np.float64)
    y = backend.to_numpy(y)
    if masks is not None:
        masks = [backend.to_numpy(mk) for mk in masks]
    train = masks is not None
    probe.loss_and_grad(X, y, l2=l2, train=train, masks=masks)
    analytic = probe.flat_grads.copy()
    numeric = np.empty_like(analytic)
    theta = probe.flat_params
    for i in range(theta.size):
        saved = theta[i]
        theta[i] = saved + eps
        plus = probe.loss(X, y, l2=l2, masks=masks)
        theta[i] = saved - eps
        minus = probe.loss(X, y, l2=l2, masks=masks)
        theta[i] = saved
        numeric[i] = (plus - minus) / (2 * eps)
    denom = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / denom) if denom > 0 else 0.0
