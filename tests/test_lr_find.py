"""The learning-rate range test: its suggestion against a grid search, its rule, its CLI."""

import json
import math

import numpy as np
import pytest

import xpnet
from xpnet.errors import ConfigError
from xpnet.training.lr_find import lr_find


def _blobs(n=2000, d=20, k=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=0.5, size=(k, d))  # overlapping classes: too large an lr costs loss
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    return X, y


def _final_loss(lr, X, y, steps=150, batch=64):
    net = xpnet.MLP([X.shape[1], 32, 5], seed=0)
    opt = xpnet.optim.Adam(lr)
    rng = np.random.default_rng(0)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            idx = rng.integers(0, len(X), batch)
            net.loss_and_grad(X[idx], y[idx], check=False)
            opt.step(net.flat_params, net.flat_grads)
        loss = net.loss(X, y)
    return loss if math.isfinite(loss) else math.inf


def test_suggestion_is_within_a_decade_of_the_best_lr_of_a_grid():
    X, y = _blobs()
    grid = 10.0 ** np.arange(-4, 0.01, 0.5)
    losses = [_final_loss(lr, X, y) for lr in grid]
    best = grid[int(np.argmin(losses))]
    net = xpnet.MLP([20, 32, 5], seed=0)
    res = lr_find(net, X, y, optimizer="adam", steps=200, batch_size=64)
    assert abs(math.log10(res.suggested_lr) - math.log10(best)) <= 1.0, (res.suggested_lr, best, losses)
    assert res.stopped_early and res.lrs[-1] < 10.0  # Adam at lr → 10 blows this problem up


def test_rule_and_schedule_of_the_lrs():
    X, y = _blobs(n=600)
    res = lr_find(xpnet.MLP([20, 16, 5], seed=1), X, y, start_lr=1e-4, end_lr=1.0, steps=50, batch_size=32)
    n = len(res.lrs)
    np.testing.assert_allclose(res.lrs, 1e-4 * (1e4) ** (np.arange(n) / 49), rtol=1e-12)
    # smoothed = bias-corrected EMA of the raw losses
    avg, expect = 0.0, []
    for i, loss in enumerate(res.losses):
        avg = 0.98 * avg + 0.02 * loss
        expect.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(res.smoothed, expect, rtol=1e-12)
    k = int(np.argmin(res.smoothed))
    assert res.min_loss_lr == res.lrs[k] and res.suggested_lr == pytest.approx(res.lrs[k] / 10)
    assert res.lrs[0] <= res.steepest_lr <= res.min_loss_lr


def test_callers_network_and_optimizer_are_untouched():
    X, y = _blobs(n=300)
    net = xpnet.MLP([20, 8, 5], seed=2, dropout=0.1)
    before = net.flat_params.copy()
    opt = xpnet.optim.AdamW(1e-3, schedule=xpnet.optim.schedules.OneCycle(100))
    lr_find(net, X, y, optimizer=opt, steps=20, batch_size=16)
    np.testing.assert_array_equal(net.flat_params, before)
    assert opt.t == 0 and opt.state == {} and opt.lr == 1e-3 and opt.schedule is not None


def test_bad_settings():
    X, y = _blobs(n=100)
    net = xpnet.MLP([20, 8, 5])
    with pytest.raises(ConfigError, match="start lr < end lr"):
        lr_find(net, X, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ConfigError, match="at least 10 steps"):
        lr_find(net, X, y, steps=3)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        lr_find(net, X, y, optimizer="lion")


def test_cli_writes_the_plot_and_prints_the_suggestion(tmp_path, capsys):
    from conftest import run_cli, write_synthetic_idx

    data = write_synthetic_idx(tmp_path / "data", n_train=400)
    code, out, err = run_cli(["lr-find", "--data-dir", str(data), "--hidden", "16", "--steps", "40", "--batch-size", "32",
                              "--out", str(tmp_path / "lr")], capsys)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("suggested lr: ") and "minimum of the smoothed loss ÷ 10" in last
    saved = json.loads((tmp_path / "lr" / "lr_find.json").read_text(encoding="utf-8"))
    assert float(last.split()[2]) == pytest.approx(saved["suggested_lr"], rel=1e-2)
    assert saved["config"]["batch_size"] == 32 and saved["config"]["dropout"] == 0.1  # the default recipe's
    pytest.importorskip("matplotlib")
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 10_000
    code, _, err = run_cli(["lr-find", "--data-dir", str(data), "--start-lr", "1", "--end-lr", "0.1",
                            "--out", str(tmp_path / "lr")], capsys)
    assert code == 1 and err.strip() == "error: need 0 < start lr < end lr, got 1 and 0.1"
