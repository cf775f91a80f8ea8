"""Each optimizer's first steps against values computed by hand (plain Python scalars)."""

import math

import numpy as np
import pytest

from xpnet import optim
from xpnet.errors import ConfigError

P0 = [1.0, -2.0]
G1 = [0.5, -1.0]
G2 = [-0.25, 0.5]


def _run(opt, dtype=np.float64):
    p = np.array(P0, dtype=dtype)
    trace = []
    for g in (G1, G2):
        opt.step(p, np.array(g, dtype=dtype))
        trace.append(p.copy())
    return trace


def test_sgd():
    s1, s2 = _run(optim.SGD(lr=0.1))
    assert s1 == pytest.approx([0.95, -1.9])  # 1 - 0.1*0.5, -2 + 0.1*1
    assert s2 == pytest.approx([0.975, -1.95])  # 0.95 + 0.025, -1.9 - 0.05


def test_momentum_with_bias_correction():
    s1, s2 = _run(optim.Momentum(lr=0.1, beta=0.9))
    # t=1: v = 0.1*0.5 = 0.05, v̂ = 0.05/0.1 = 0.5  → p = 1 - 0.05 = 0.95
    assert s1[0] == pytest.approx(0.95)
    # t=2: v = 0.9*0.05 + 0.1*(-0.25) = 0.02, v̂ = 0.02/0.19 → p = 0.95 - 0.1*0.02/0.19
    assert s2[0] == pytest.approx(0.95 - 0.1 * 0.02 / 0.19)


def test_momentum_without_bias_correction():
    s1, _ = _run(optim.Momentum(lr=0.1, beta=0.9, bias_correction=False))
    assert s1 == pytest.approx([1 - 0.1 * 0.05, -2 + 0.1 * 0.1])


def test_rmsprop():
    s1, s2 = _run(optim.RMSProp(lr=0.01, beta=0.9, eps=1e-8))
    # s = 0.1*0.25 = 0.025 → p = 1 - 0.01*0.5/(√0.025 + 1e-8)
    assert s1[0] == pytest.approx(1 - 0.01 * 0.5 / (math.sqrt(0.025) + 1e-8))
    s = 0.9 * 0.025 + 0.1 * 0.0625
    assert s2[0] == pytest.approx(s1[0] + 0.01 * 0.25 / (math.sqrt(s) + 1e-8))


@pytest.mark.parametrize("fast_ops", [False, True])
def test_adam_with_bias_correction(fast_ops):
    s1, s2 = _run(optim.Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-8, fast_ops=fast_ops))
    # t=1: m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25 → p = 1 - 0.1*0.5/(0.5+1e-8)
    assert s1[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-12)
    m = 0.9 * 0.05 + 0.1 * -0.25
    v = 0.999 * 0.00025 + 0.001 * 0.0625
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    assert s2[0] == pytest.approx(s1[0] - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-12)


def test_adam_float32_matches_float64_reference():
    p32 = _run(optim.Adam(lr=0.01), np.float32)[-1]
    p64 = _run(optim.Adam(lr=0.01), np.float64)[-1]
    np.testing.assert_allclose(p32, p64, rtol=1e-6)


def test_updates_are_in_place_and_state_is_reused():
    p = np.ones(4)
    opt = optim.Adam()
    buffer = p
    opt.step(p, np.full(4, 0.3))
    m_buffer = opt.state["m"]
    opt.step(p, np.full(4, 0.3))
    assert p is buffer and opt.state["m"] is m_buffer and opt.t == 2


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_state_dict_round_trip_continues_identically(name):
    a, b = optim.get_optimizer(name, 0.05), optim.get_optimizer(name, 0.05)
    pa, pb = np.array(P0), np.array(P0)
    a.step(pa, np.array(G1))
    b.load_state_dict(a.state_dict())
    pb[...] = pa
    a.step(pa, np.array(G2))
    b.step(pb, np.array(G2))
    np.testing.assert_array_equal(pa, pb)


def test_bad_optimizer_settings():
    with pytest.raises(ConfigError, match="unknown optimizer 'adamw'.*sgd, momentum, rmsprop, adam"):
        optim.get_optimizer("adamw")
    with pytest.raises(ConfigError, match="learning rate must be > 0, got -0.1"):
        optim.SGD(lr=-0.1)
    with pytest.raises(ConfigError, match="learning rate must be > 0, got 0"):
        optim.Adam(lr=0)
    with pytest.raises(ConfigError, match=r"beta must be in \[0, 1\)"):
        optim.Momentum(beta=1.0)
