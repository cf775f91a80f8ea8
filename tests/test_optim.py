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


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
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
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'.*sgd, momentum, rmsprop, adam, adamw"):
        optim.get_optimizer("lion")
    with pytest.raises(ConfigError, match="weight decay must be >= 0"):
        optim.AdamW(weight_decay=-1)
    with pytest.raises(ConfigError, match="decay_biases=False needs param_shapes"):
        optim.AdamW(decay_biases=False)
    with pytest.raises(ConfigError, match="learning rate must be > 0, got -0.1"):
        optim.SGD(lr=-0.1)
    with pytest.raises(ConfigError, match="learning rate must be > 0, got 0"):
        optim.Adam(lr=0)
    with pytest.raises(ConfigError, match=r"beta must be in \[0, 1\)"):
        optim.Momentum(beta=1.0)


# ----------------------------------------------------------------------------- AdamW
@pytest.mark.parametrize("fast_ops", [False, True])
def test_adamw_by_hand(fast_ops):
    lr, wd = 0.1, 0.5
    s1, s2 = _run(optim.AdamW(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, fast_ops=fast_ops))
    # t=1: decay first, p = 1·(1 - 0.1·0.5) = 0.95, then the Adam step of test_adam: - 0.1·0.5/(0.5+1e-8)
    assert s1[0] == pytest.approx(0.95 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-12)
    m = 0.9 * 0.05 + 0.1 * -0.25
    v = 0.999 * 0.00025 + 0.001 * 0.0625
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.999**2)
    assert s2[0] == pytest.approx(s1[0] * 0.95 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8), rel=1e-12)


def test_adamw_with_zero_decay_is_adam():
    np.testing.assert_array_equal(_run(optim.AdamW(lr=0.01, weight_decay=0.0))[-1], _run(optim.Adam(lr=0.01))[-1])


def test_adamw_decay_uses_the_scheduled_lr():
    from xpnet.optim.schedules import Step

    opt = optim.AdamW(lr=0.1, weight_decay=0.5, schedule=Step(step_size=1, gamma=0.5))
    p = np.array([2.0])
    opt.step(p, np.zeros(1))  # zero gradient: the Adam part moves nothing (m = 0)
    opt.step(p, np.zeros(1))
    assert p[0] == pytest.approx(2.0 * (1 - 0.1 * 0.5) * (1 - 0.05 * 0.5))


def _torch_adamw_trace(params, grads_seq, lr, wd, betas, eps, schedule=None):
    torch = pytest.importorskip("torch")
    ps = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in params]
    opt = torch.optim.AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    sched = schedule(torch.optim.lr_scheduler, opt) if schedule else None
    for grads in grads_seq:
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        if sched:
            sched.step()
    return np.concatenate([p.detach().numpy().ravel() for p in ps])


@pytest.mark.parametrize("with_schedule", [False, True])
def test_adamw_matches_torch(with_schedule):
    from xpnet.optim.schedules import OneCycle

    rng = np.random.default_rng(0)
    shapes = [(4, 3), (4,), (2, 4), (2,)]
    params = [rng.normal(size=s) for s in shapes]
    grads_seq = [[rng.normal(size=s) for s in shapes] for _ in range(12)]
    lr, wd, betas, eps = 0.05, 0.3, (0.85, 0.99), 1e-6
    ref = _torch_adamw_trace(params, grads_seq, lr, wd, betas, eps,
                             (lambda S, o: S.OneCycleLR(o, max_lr=lr, total_steps=12, cycle_momentum=False))
                             if with_schedule else None)
    opt = optim.AdamW(lr, betas, eps, weight_decay=wd, schedule=OneCycle(12) if with_schedule else None)
    flat = np.concatenate([p.ravel() for p in params])
    for grads in grads_seq:
        opt.step(flat, np.concatenate([g.ravel() for g in grads]))
    np.testing.assert_allclose(flat, ref, rtol=1e-12, atol=1e-14)


def test_adamw_without_bias_decay_matches_torch_param_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    shapes = [(3, 5), (3,), (2, 3), (2,)]
    params = [rng.normal(size=s) for s in shapes]
    grads_seq = [[rng.normal(size=s) for s in shapes] for _ in range(6)]
    ps = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    ref_opt = torch.optim.AdamW([{"params": ps[0::2], "weight_decay": 0.2}, {"params": ps[1::2], "weight_decay": 0.0}],
                                lr=0.01)
    opt = optim.AdamW(0.01, weight_decay=0.2, decay_biases=False, param_shapes=shapes)
    flat = np.concatenate([p.ravel() for p in params])
    for grads in grads_seq:
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g)
        ref_opt.step()
        opt.step(flat, np.concatenate([g.ravel() for g in grads]))
    ref = np.concatenate([p.detach().numpy().ravel() for p in ps])
    np.testing.assert_allclose(flat, ref, rtol=1e-12, atol=1e-14)
    assert optim.weight_slices(shapes) == [(0, 15), (18, 24)]


def test_adamw_on_a_network_float32():
    """The flat float32 buffer of a real MLP, through the fused (Numba) Adam, against float64."""
    import xpnet

    net = xpnet.MLP([6, 5, 3], seed=0)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    p64 = net.flat_params.astype(np.float64)
    a, b = optim.AdamW(0.01, weight_decay=0.1), optim.AdamW(0.01, weight_decay=0.1, fast_ops=False)
    for _ in range(5):
        net.loss_and_grad(X, y)
        g = net.flat_grads.astype(np.float64)
        a.step(net.flat_params, net.flat_grads)
        b.step(p64, g)
        np.testing.assert_allclose(net.flat_params, p64, rtol=2e-6, atol=1e-7)
        net.flat_params[...] = p64  # same trajectory: compare one step at a time
