"""The one run: RunConfig (validation, TOML/JSON, replay from a metrics log), run(), fit(recipe=…),
continuing fit() and the data set a model file records."""

import json

import numpy as np
import pytest

import xpnet
from conftest import run_cli, write_synthetic_idx
from xpnet.errors import ConfigError
from xpnet.training.recipe import RECIPES, RunConfig, prepare_split, run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("recipe") / "data", n_train=300, n_test=60)


def _weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_resolve_fills_the_recipe_and_flags_win():
    cfg = RunConfig(recipe="plain", lr=0.01, hidden=[32, 16]).resolve()
    assert cfg.hidden == (32, 16) and cfg.lr == 0.01 and cfg.schedule == "constant" and cfg.dropout == 0.0
    default = RunConfig().resolve()
    assert {k: getattr(default, k) for k in RECIPES["default"]} == RECIPES["default"]
    assert default.dataset == "fashion-mnist"  # nothing given: the default data set
    assert RunConfig(optimizer="sgd").resolve().lr is None  # the recipe's Adam lr is not SGD's (0.1 by default)


@pytest.mark.parametrize("changes, words", [
    ({"recipe": "fancy"}, "unknown recipe 'fancy'"),
    ({"activation": "gelu"}, "unknown activation 'gelu'"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
    ({"hidden": [10, 0]}, "hidden must be a list of positive integers"),
    ({"hidden": "a,b"}, "hidden must be a list of positive integers"),
    ({"val_split": 1.0}, "val_split must be in (0, 1)"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"weight_decay": 0.1}, "weight decay is AdamW's decoupled decay"),
    ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
])
def test_bad_configs_are_one_typed_error(changes, words):
    with pytest.raises(ConfigError, match=None) as info:
        RunConfig(**changes).resolve()
    assert words in str(info.value)


def test_toml_and_json_round_trip(tmp_path):
    cfg = RunConfig(dataset="mnist", hidden=(120, 64), recipe="plain", lr=3e-3, seed=7, augment=True).resolve()
    (tmp_path / "run.toml").write_text(cfg.to_toml(), encoding="utf-8")
    assert RunConfig.load(tmp_path / "run.toml") == cfg
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    assert RunConfig.load(tmp_path / "run.json") == cfg
    (tmp_path / "bad.toml").write_text("[run]\nhidden = [10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.toml is not a valid TOML run config"):
        RunConfig.load(tmp_path / "bad.toml")
    (tmp_path / "odd.toml").write_text("[run]\nhiden = [10]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown run-config key 'hiden'"):
        RunConfig.load(tmp_path / "odd.toml")


def test_print_config_then_config_with_a_flag_beside_it(data_dir, tmp_path, capsys):
    code, toml, err = run_cli(["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "2", "--recipe", "plain",
                               "--print-config"], capsys)
    assert code == 0, err
    (tmp_path / "run.toml").write_text(toml, encoding="utf-8")
    cfg = RunConfig.load(tmp_path / "run.toml")
    assert cfg.hidden == (16,) and cfg.epochs == 2 and cfg.recipe == "plain" and cfg.data_dir == str(data_dir)
    code, out, err = run_cli(["train", "--config", tmp_path / "run.toml", "--seed", "3", "--print-config"], capsys)
    assert code == 0 and "seed = 3" in out and "hidden = [16]" in out and "epochs = 2" in out
    code, out, err = run_cli(["train", "--config", tmp_path / "missing.toml"], capsys)
    assert code != 0 and err.startswith("error: cannot read run config") and len(err.strip().splitlines()) == 1


def test_the_metrics_log_replays_the_run_exactly(data_dir, tmp_path, capsys):
    common = ["--quiet", "--batch-size", "64"]
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "3", "--seed", "5",
                            "--metrics", tmp_path / "a.jsonl", "--out", tmp_path / "a.npz", *common], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--config", tmp_path / "a.jsonl", "--out", tmp_path / "b.npz", *common], capsys)
    assert code == 0, err
    _assert_same_weights(_weights(tmp_path / "a.npz"), _weights(tmp_path / "b.npz"))
    code, _, err = run_cli(["train", "--config", tmp_path / "a.jsonl", "--seed", "6", "--out", tmp_path / "c.npz",
                            *common], capsys)
    assert code == 0, err
    assert not np.array_equal(_weights(tmp_path / "a.npz")["W0"], _weights(tmp_path / "c.npz")["W0"])


def test_a_replay_from_the_log_uses_the_recorded_blas_cores(data_dir, tmp_path, capsys, monkeypatch):
    """The run mode counts free cores once per run and the log records them (ops/threads.py): a replay
    on a machine whose load changed since runs on the recorded count, not a new look."""
    from xpnet.io.runlog import read
    from xpnet.ops import threads

    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    load, looks = [1.0], []
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: looks.append(1) or load[0])
    monkeypatch.setattr(threads, "_last_decision", None)
    common = ["--quiet", "--batch-size", "64", "--hidden", "256", "--epochs", "1"]
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--metrics", tmp_path / "a.jsonl", "--out",
                            tmp_path / "a.npz", *common], capsys)
    assert code == 0, err
    assert [e["blas_cores"] for e in read(tmp_path / "a.jsonl") if e["event"] == "epoch"] == [1] and len(looks) == 1
    load[0] = 0.0  # the busy program is gone: a new run would take both cores
    monkeypatch.setattr(threads, "_last_decision", None)
    code, _, err = run_cli(["train", "--config", tmp_path / "a.jsonl", "--metrics", tmp_path / "b.jsonl", "--out",
                            tmp_path / "b.npz", *common], capsys)
    assert code == 0, err
    assert [e["blas_cores"] for e in read(tmp_path / "b.jsonl") if e["event"] == "epoch"] == [1] and len(looks) == 1
    _assert_same_weights(_weights(tmp_path / "a.npz"), _weights(tmp_path / "b.npz"))


def test_cli_run_and_fit_with_the_recipe_give_the_same_weights(data_dir, tmp_path, capsys):
    cfg = RunConfig(data_dir=str(data_dir), hidden=(16,), epochs=2, seed=2, batch_size=64)
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--hidden", "16", "--epochs", "2", "--seed", "2",
                            "--batch-size", "64", "--quiet", "--out", tmp_path / "cli.npz"], capsys)
    assert code == 0, err
    result = run(cfg)
    cli = _weights(tmp_path / "cli.npz")
    for l, (W, b) in enumerate(zip(result.net.W, result.net.b)):
        np.testing.assert_array_equal(cli[f"W{l}"], W)
        np.testing.assert_array_equal(cli[f"b{l}"], b)
    # fit(recipe=…) on the same split, with the net the config builds
    resolved = cfg.resolve()
    split = prepare_split(resolved)
    net = resolved.build_net(split.n_features, split.n_classes)
    history = xpnet.fit(net, None, split.X_train, split.y_train, val=(split.X_val, split.y_val), seed=2, recipe=resolved)
    assert len(history) == 2 and history["lr"][-1] == pytest.approx(result.history["lr"][-1])
    np.testing.assert_array_equal(net.flat_params, result.net.flat_params)
    assert result.scores["accuracy"] > 0.5 and result.net.dataset == "data"


def test_a_second_fit_continues_like_one_longer_run():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 12)).astype(np.float32), rng.integers(0, 3, 200)

    def fresh():
        net = xpnet.MLP([12, 16, 3], dropout=0.2, seed=1)
        steps = 5 * -(-200 // 32)
        return net, xpnet.optim.Adam(1e-2, schedule=xpnet.optim.schedules.OneCycle(total_steps=steps))

    net_a, opt_a = fresh()
    xpnet.fit(net_a, opt_a, X, y, epochs=2, batch_size=32)
    history = xpnet.fit(net_a, opt_a, X, y, epochs=3, batch_size=32)  # used to raise IndexError in adam_step
    net_b, opt_b = fresh()
    longer = xpnet.fit(net_b, opt_b, X, y, epochs=5, batch_size=32)
    assert [r["epoch"] for r in history.records] == [3, 4, 5] and opt_a.t == opt_b.t == 5 * 7
    np.testing.assert_array_equal(net_a.flat_params, net_b.flat_params)
    assert history["train_loss"] == longer["train_loss"][2:]


def test_fit_writes_the_same_log_as_the_cli(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(120, 6)).astype(np.float32), rng.integers(0, 2, 120)
    net = xpnet.MLP([6, 8, 2])
    opt = xpnet.optim.Adam(1e-2)
    xpnet.fit(net, opt, X, y, epochs=2, log=tmp_path / "fit.jsonl")
    xpnet.fit(net, opt, X, y, epochs=1, log=tmp_path / "fit.jsonl")
    events = [json.loads(line) for line in (tmp_path / "fit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "end", "continue", "epoch", "end"]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert all("time" in e and e["lr"] == 1e-2 for e in events)


def test_fit_without_an_optimizer_takes_the_default_recipe():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(256, 6)).astype(np.float32), rng.integers(0, 2, 256)
    net = xpnet.MLP([6, 8, 2])
    history = xpnet.fit(net, None, X, y, epochs=3)
    lrs = history["lr"]  # one-cycle peaking at the recipe's 2e-3, ending near 2e-3 / 250,000
    assert len(lrs) == 3 and max(lrs) <= 2e-3 and lrs[-1] == pytest.approx(2e-3 / 25 / 1e4)


def test_model_records_its_data_set_and_evaluate_uses_it(tmp_path, capsys, fashion_dir):
    # a folder named like a registered set is that set: its class names go into the model
    data = write_synthetic_idx(tmp_path / "fashion-mnist", n_train=200, n_test=40)
    code, _, err = run_cli(["train", "--data-dir", data, "--hidden", "8", "--epochs", "1", "--quiet",
                            "--out", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    net = xpnet.load(tmp_path / "m.npz")
    assert net.dataset == "fashion-mnist" and net.class_names[0] == "T-shirt/top"
    code, out, err = run_cli(["evaluate", tmp_path / "m.npz"], capsys)  # no --dataset: the recorded one
    assert code == 0, err
    assert "data set fashion-mnist (recorded in" in out and "fashion-mnist test (10,000 images)" in out


def test_a_resumed_run_appends_to_its_log_and_keeps_its_out(data_dir, tmp_path, capsys):
    out, log = tmp_path / "run" / "m.npz", tmp_path / "run" / "m.jsonl"
    out.parent.mkdir()
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--hidden", "8", "--epochs", "2", "--checkpoint-every", "1",
                            "--quiet", "--out", out, "--metrics", log], capsys)
    assert code == 0, err
    first = out.stat().st_mtime_ns
    code, stdout, err = run_cli(["train", "--resume", tmp_path / "run" / "m.ckpt.npz", "--epochs", "4", "--quiet"],
                                capsys)
    assert code == 0, err
    assert f"model saved to {out}" in stdout and out.stat().st_mtime_ns != first
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "resume", "epoch", "epoch", "test"]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3, 4]
    assert all(isinstance(e["lr"], float) and e["time"] for e in events)  # every line: event, time, lr
