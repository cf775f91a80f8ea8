"""Learning-rate schedules: closed forms, PyTorch's schedulers, and the optimizer's lr_at."""

import math

import numpy as np
import pytest

from xpnet import optim

from xpnet.optim import schedules
from xpnet.errors import ConfigError

PEAK = 3e-3


def _torch_lrs(make_scheduler, n, lr=PEAK):
    """The lr PyTorch uses for steps 1..n when its scheduler is stepped once per optimizer step."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


def _ours(schedule, n, lr=PEAK):
    return optim.SGD(lr, schedule=schedule).lr_table(1, n)


# ----------------------------------------------------------------------------- closed forms
def test_closed_forms():
    assert schedules.Constant()(7) == 1.0
    s = schedules.Step(step_size=3, gamma=0.5)
    assert [s(t) for t in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    e = schedules.Exponential(gamma=0.9)
    assert e(1) == 1.0 and e(4) == pytest.approx(0.9**3)
    c = schedules.Cosine(total_steps=10, min_factor=0.1)
    assert c(1) == 1.0
    assert c(6) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 5 / 10)) / 2)  # = 0.55
    assert c(6) == pytest.approx(0.55)
    assert c(500) == pytest.approx(0.1)  # past the end: stays at the minimum


def test_warmup_is_linear_then_the_schedule_starts():
    c = schedules.Cosine(total_steps=14, warmup_steps=4)
    assert [c(t) for t in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    assert c(5) == 1.0  # first step after the warm-up: cosine at s = 0
    assert c(7) == pytest.approx((1 + math.cos(math.pi * 2 / 10)) / 2)
    s = schedules.Step(step_size=2, gamma=0.1, warmup_steps=2)
    assert [s(t) for t in range(1, 7)] == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_onecycle_closed_form():
    oc = schedules.OneCycle(total_steps=100, pct_start=0.3)  # peak at n = 29, i.e. step t = 30
    assert oc(1) == pytest.approx(1 / 25)
    assert oc(30) == pytest.approx(1.0)
    assert oc(100) == pytest.approx(1 / 25 / 1e4)
    # halfway through the warm-up (n = 14.5 is not a step; n = 29/2 → use the formula directly)
    n = 10
    assert oc(n + 1) == pytest.approx(1.0 + (1 / 25 - 1.0) / 2 * (math.cos(math.pi * n / 29) + 1))
    values = oc.values(np.arange(1, 101))
    assert np.argmax(values) == 29 and np.all(np.diff(values[:30]) > 0) and np.all(np.diff(values[29:]) < 0)
    assert oc(1000) == oc(100)  # past the end it stays at the final value


def test_values_is_the_vectorised_call():
    for sched in (schedules.Step(5, 0.3, 2), schedules.Exponential(0.97, 3), schedules.Cosine(40, 0.05, 6),
                  schedules.OneCycle(40, 0.25, anneal="linear"), schedules.Constant(4)):
        t = np.arange(1, 60)
        np.testing.assert_array_equal(sched.values(t), [sched(int(i)) for i in t])


# ----------------------------------------------------------------------------- PyTorch
def test_step_matches_torch():
    ours = _ours(schedules.Step(step_size=7, gamma=0.3), 40)
    np.testing.assert_allclose(ours, _torch_lrs(lambda S, o: S.StepLR(o, step_size=7, gamma=0.3), 40), rtol=1e-12)


def test_exponential_matches_torch():
    ours = _ours(schedules.Exponential(gamma=0.95), 60)
    np.testing.assert_allclose(ours, _torch_lrs(lambda S, o: S.ExponentialLR(o, gamma=0.95), 60), rtol=1e-9)


def test_cosine_matches_torch():
    ours = _ours(schedules.Cosine(total_steps=50, min_factor=0.02), 50)
    ref = _torch_lrs(lambda S, o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.02 * PEAK), 50)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)


def test_cosine_with_warmup_matches_torch_sequential():
    w, total = 5, 45
    ours = _ours(schedules.Cosine(total_steps=total, warmup_steps=w), total)
    ref = _torch_lrs(lambda S, o: S.SequentialLR(o, [S.LinearLR(o, start_factor=1 / w, total_iters=w - 1),
                                                    S.CosineAnnealingLR(o, T_max=total - w)], milestones=[w]), total)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total,pct", [(100, 0.3), (37, 0.25), (844, 0.3)])
def test_onecycle_matches_torch(anneal, total, pct):
    ours = _ours(schedules.OneCycle(total, pct_start=pct, anneal=anneal), total)
    ref = _torch_lrs(lambda S, o: S.OneCycleLR(o, max_lr=PEAK, total_steps=total, pct_start=pct,
                                               anneal_strategy=anneal, cycle_momentum=False), total)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-18)


# ----------------------------------------------------------------------------- optimizer
def test_lr_at_without_schedule_is_lr_and_step_uses_lr_at():
    opt = optim.SGD(0.1)
    assert opt.lr_at(1) == opt.lr_at(999) == 0.1
    sched = schedules.Step(step_size=1, gamma=0.5)
    opt = optim.SGD(0.1, schedule=sched)
    p = np.zeros(1)
    for t in range(1, 5):
        before = p.copy()
        opt.step(p, np.ones(1))
        assert before[0] - p[0] == pytest.approx(0.1 * 0.5 ** (t - 1))  # SGD: Δp = lr_t · g
        assert opt.lr_at(t) == pytest.approx(0.1 * 0.5 ** (t - 1))
    opt.schedule = None
    assert opt.lr_at(3) == 0.1


def test_schedule_round_trips_through_the_state_dict():
    a = optim.Adam(2e-3, schedule=schedules.OneCycle(30))
    p, g = np.ones(3), np.array([0.1, -0.2, 0.3])
    for _ in range(4):
        a.step(p, g)
    b = optim.Adam(1e-3)
    b.load_state_dict(a.state_dict())
    assert b.schedule == a.schedule and b.lr == a.lr and b.t == 4
    q = p.copy()
    for _ in range(10):
        a.step(p, g)
        b.step(q, g)
    np.testing.assert_array_equal(p, q)
    assert schedules.from_config(a.hyperparams()["schedule"]) == a.schedule


def test_build_schedule_for_the_cli():
    assert schedules.build_schedule("constant", 100) is None
    assert schedules.build_schedule("constant", 100, 10)(5) == 0.5
    oc = schedules.build_schedule("onecycle", 200)
    assert oc.pct_start == 0.3 and np.argmax(oc.values(np.arange(1, 201))) + 1 == 60
    oc = schedules.build_schedule("one-cycle", 200, warmup_steps=40)
    assert np.argmax(oc.values(np.arange(1, 201))) + 1 == 40  # the peak is the last warm-up step
    ex = schedules.build_schedule("exponential", 101)
    assert ex(101) == pytest.approx(0.01)
    st = schedules.build_schedule("step", 90)
    assert st(30) == 1.0 and st(31) == pytest.approx(0.1) and st(61) == pytest.approx(0.01)
    assert schedules.build_schedule("cosine", 50, 10)(10) == 1.0


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown schedule 'warp'"):
        schedules.build_schedule("warp", 10)
    with pytest.raises(ConfigError, match="warm-up"):
        schedules.build_schedule("cosine", 10, 10)
    with pytest.raises(ConfigError, match="gamma"):
        schedules.Step(3, gamma=0)
    with pytest.raises(ConfigError, match="1-based"):
        schedules.Constant()(0)
    with pytest.raises(ConfigError, match="pct_start"):
        schedules.OneCycle(100, pct_start=1.5)
    with pytest.raises(ConfigError, match="schedule must be"):
        optim.Adam(schedule="onecycle")
    with pytest.raises(ConfigError, match="unknown schedule"):
        schedules.from_config({"name": "nope"})


# ----------------------------------------------------------------------------- xpnet train
@pytest.fixture
def data_dir(tmp_path):
    from conftest import write_synthetic_idx

    return write_synthetic_idx(tmp_path / "data", n_train=600)


def _cli(args, capsys):
    from conftest import run_cli

    return run_cli([str(a) for a in args], capsys)


def test_resume_continues_the_schedule_exactly(data_dir, tmp_path, capsys):
    """A one-cycle AdamW run checkpointed after epoch 2 and resumed ends with the full run's weights."""
    common = ["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "3", "--quiet", "--batch-size", "64",
              "--optimizer", "adamw", "--weight-decay", "0.05", "--schedule", "onecycle", "--warmup", "1"]
    code, _, err = _cli([*common, "--out", tmp_path / "full.npz"], capsys)
    assert code == 0, err
    code, _, err = _cli([*common, "--out", tmp_path / "part.npz", "--checkpoint-every", "2"], capsys)
    assert code == 0, err
    code, _, err = _cli(["train", "--resume", tmp_path / "part.ckpt.npz", "--quiet", "--out", tmp_path / "res.npz"], capsys)
    assert code == 0, err
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "res.npz")
    for key in ("W0", "b0", "W1", "b1"):
        np.testing.assert_array_equal(a[key], b[key])


def test_recipe_and_flags_reach_the_run(data_dir, tmp_path, capsys):
    code, out, err = _cli(["train", "--data-dir", data_dir, "--hidden", "8", "--epochs", "2",
                           "--metrics", tmp_path / "run.jsonl", "--out", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    assert "OneCycle(total_steps=" in out and "recipe default" in out and "label smoothing 0.1" in out
    import json

    config = json.loads((tmp_path / "run.jsonl").read_text(encoding="utf-8").splitlines()[0])["config"]  # the start event
    assert config["batch_size"] == 128 and config["dropout"] == 0.1 and config["lr"] == 2e-3
    assert config["schedule_config"]["name"] == "onecycle" and config["schedule_config"]["total_steps"] == 2 * 5  # 540 train rows, batch 128
    code, out, err = _cli(["train", "--data-dir", data_dir, "--hidden", "8", "--epochs", "1", "--recipe", "plain",
                           "--out", tmp_path / "p.npz"], capsys)
    assert code == 0, err
    assert "Adam(lr=0.001, betas=[0.9, 0.999], eps=1e-08) · batch 128" in out and "schedule" not in out
    code, out, err = _cli(["train", "--data-dir", data_dir, "--hidden", "8", "--epochs", "1", "--optimizer", "sgd",
                           "--schedule", "cosine", "--label-smoothing", "0", "--out", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    assert "SGD(lr=0.1, schedule=Cosine(" in out


def test_weight_decay_needs_adamw(data_dir, tmp_path, capsys):
    code, _, err = _cli(["train", "--data-dir", data_dir, "--weight-decay", "0.1", "--out", tmp_path / "m.npz"], capsys)
    assert code == 1 and err.strip() == "error: weight decay is AdamW's decoupled decay: choose the adamw optimizer (--optimizer adamw) or use L2 (--l2)"
    code, _, err = _cli(["train", "--data-dir", data_dir, "--epochs", "2", "--warmup", "5", "--out", tmp_path / "m.npz"],
                        capsys)
    assert code == 1 and err.startswith("error: one-cycle needs a warm-up shorter than the run")
