"""xpnet tune: grid enumerates the grid, random is bounded and seeded, bayes (Optuna) prunes and shares a study."""

import json
import os
import subprocess
import sys

import pytest

from xpnet.experiments.tune import DEFAULT_GRID, PARAMS, build_space, grid_configs, random_configs
from xpnet.cli import main
from conftest import write_synthetic_idx


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("tune-data"), n_train=200, n_test=60)


def _key(c):
    return tuple(c[p] for p in PARAMS)


def test_default_grid_is_the_documented_product():
    configs = grid_configs()
    assert len(configs) == 8
    expected = {(lr, h, b, l2, d, o) for lr in DEFAULT_GRID["lr"] for h in DEFAULT_GRID["hidden"]
                for b in DEFAULT_GRID["batch_size"] for l2 in DEFAULT_GRID["l2"] for d in DEFAULT_GRID["dropout"]
                for o in DEFAULT_GRID["optimizer"]}
    assert {_key(c) for c in configs} == expected


def test_random_respects_bounds_and_seed():
    space = build_space({"lr": [1e-3, 1e-1], "hidden": [(16,), (32, 8)], "dropout": [0.1, 0.3], "optimizer": ["sgd", "adam"]})
    a, b = random_configs(50, space, seed=3), random_configs(50, space, seed=3)
    assert a == b
    assert random_configs(50, space, seed=4) != a
    for c in a:
        assert 1e-3 <= c["lr"] <= 1e-1 and 0.1 <= c["dropout"] <= 0.3
        assert c["hidden"] in ("16", "32-8") and c["optimizer"] in ("sgd", "adam")
        assert c["batch_size"] in (32, 64, 128, 256) and 1e-5 <= c["l2"] <= 1.0
    # log scale: about half of the draws below the geometric mean 1e-2
    below = sum(c["lr"] < 1e-2 for c in a)
    assert 15 <= below <= 35


def test_grid_cli_runs_exactly_the_grid(data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(["tune", "--method", "grid", "--data-dir", str(data_dir), "--epochs", "1", "--lr", "0.01,0.1",
                 "--hidden", "8", "--hidden", "16,4", "--optimizer", "sgd", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    trials = json.loads((out / "trials.json").read_text(encoding="utf-8"))["trials"]
    got = {(t["lr"], t["hidden"], t["optimizer"], t["batch_size"], t["dropout"]) for t in trials}
    assert got == {(lr, h, "sgd", 128, d) for lr in (0.01, 0.1) for h in ("8", "16-4") for d in (0.0, 0.2)}
    assert len(trials) == 8
    best = json.loads((out / "best.json").read_text(encoding="utf-8"))
    assert best["value"] == max(t["value"] for t in trials)
    assert (out / "best_model.npz").exists()
    # best.toml is the best trial's run config: the recipe's fields, the trial's values
    from xpnet.training.recipe import RunConfig

    cfg = RunConfig.load(out / "best.toml")
    assert cfg.recipe == "default" and cfg.schedule == "onecycle" and cfg.label_smoothing == 0.1 and cfg.epochs == 1
    assert (cfg.lr, cfg.optimizer, cfg.dropout, cfg.hidden) == (best["config"]["lr"], "sgd", best["config"]["dropout"],
                                                                tuple(int(h) for h in best["config"]["hidden"].split("-")))
    assert "Leaderboard" in captured.out and captured.out.count("| ") >= 8


def test_random_cli_reproducible(data_dir, tmp_path, capsys):
    rows = []
    for name in ("a", "b"):
        assert main(["tune", "--method", "random", "--trials", "3", "--epochs", "1", "--hidden", "8", "--hidden", "16", "--seed", "5",
                     "--data-dir", str(data_dir), "--out", str(tmp_path / name)]) == 0
        rows.append(json.loads((tmp_path / name / "trials.json").read_text(encoding="utf-8"))["trials"])
    capsys.readouterr()
    strip = lambda ts: sorted((t["number"], _key(t), t["value"]) for t in ts)  # noqa: E731
    assert strip(rows[0]) == strip(rows[1])


def test_storage_input_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--method", "bayes", "--storage", "sqlite:///x.db"], 2, "--storage needs --study-name"),
        (["--method", "bayes", "--heartbeat", "5"], 2, "need --storage"),
        (["--method", "bayes", "--storage", "nonsense", "--study-name", "s"], 1, "is not a database URL"),
    ]
    for args, code, words in cases:
        assert main(["tune", *args, "--out", str(tmp_path / "o")]) == code, args
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (args, err)


def test_unreachable_postgresql_is_one_line_without_the_password(data_dir, tmp_path, capsys):
    pytest.importorskip("optuna")
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["tune", "--method", "random", "--storage", f"postgresql://xpnet:s3cret@127.0.0.1:{port}/db",
                 "--study-name", "s", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot open the storage postgresql://xpnet:***@127.0.0.1") and err.count("\n") == 1, err
    assert "s3cret" not in err and "Traceback" not in err


def test_postgresql_url_gets_the_installed_driver(monkeypatch):
    import importlib.util

    from xpnet.experiments.distributed import storage_url
    from xpnet.errors import ConfigError

    assert storage_url("sqlite:///a.db") == "sqlite:///a.db"
    assert storage_url("postgresql+psycopg2://u@h/d") == "postgresql+psycopg2://u@h/d"  # an explicit driver is kept
    real = importlib.util.find_spec
    for present, expected in (({"psycopg", "psycopg2"}, "postgresql+psycopg://u:p@h:5/d"),
                              ({"psycopg2"}, "postgresql+psycopg2://u:p@h:5/d")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, p=present: object() if n in p else None)
        assert storage_url("postgresql://u:p@h:5/d") == expected
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None)
    with pytest.raises(ConfigError, match=r"needs a PostgreSQL driver: pip install 'xpnet\[tune\]'"):
        storage_url("postgresql://u@h/d")
    monkeypatch.setattr(importlib.util, "find_spec", real)


def test_bad_input(tmp_path, capsys):
    assert main(["tune", "--method", "nope", "--out", str(tmp_path)]) == 2
    assert main(["tune", "--optimizer", "lbfgs", "--out", str(tmp_path)]) == 2
    assert "lbfgs" in capsys.readouterr().err
    assert main(["tune", "--lr", "x", "--out", str(tmp_path)]) == 2


def test_bayes_runs_trials(data_dir, tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "bayes"
    code = main(["tune", "--method", "bayes", "--trials", "5", "--epochs", "2", "--hidden", "8", "--hidden", "16",
                 "--data-dir", str(data_dir), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    trials = json.loads((out / "trials.json").read_text(encoding="utf-8"))["trials"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2, 3, 4]
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    assert (out / "best.json").exists()
    del optuna


def test_bayes_without_optuna_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--method", "bayes", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "xpnet[tune]" in err and err.count("\n") == 1


def _two_workers(cmd, tmp_path):
    """Run ``cmd`` as two worker processes at once (outputs in tmp_path/w0, w1), one thread each; both must succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()


def test_two_workers_share_one_sqlite_study(data_dir, tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [sys.executable, "-m", "xpnet", "tune", "--method", "bayes", "--storage", storage, "--study-name", "s",
           "--trials", "4", "--epochs", "1", "--hidden", "8", "--hidden", "16", "--data-dir", str(data_dir)]
    _two_workers(cmd, tmp_path)
    study = optuna.load_study(study_name="s", storage=storage)
    numbers = [t.number for t in study.trials]
    # --trials is the study's total: the workers stop at 4 finished (one more if both start the last one together)
    assert len(numbers) in (4, 5) and sorted(numbers) == list(range(len(numbers)))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    rows = [json.loads((tmp_path / f"w{i}" / "trials.json").read_text(encoding='utf-8'))["trials"] for i in range(2)]
    listed = [{r["number"] for r in w} for w in rows]
    # each worker lists the study as it was when it stopped (>= 4 finished); a 5th trial started by the other
    # worker at that instant may be missing from the first one's list, so together they list the whole study
    assert all(len(w) >= 4 and w <= set(numbers) for w in listed) and set().union(*listed) == set(numbers)


def test_grid_on_a_shared_storage_is_a_gridsampler_study(data_dir, tmp_path):
    """`--method grid --storage`: two workers share the grid (Optuna's GridSampler); every point is finished."""
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    cmd = [sys.executable, "-m", "xpnet", "tune", "--method", "grid", "--storage", storage, "--study-name", "g",
           "--epochs", "1", "--hidden", "8", "--hidden", "16", "--lr", "0.01,0.1", "--dropout", "0",
           "--data-dir", str(data_dir)]
    _two_workers(cmd, tmp_path)
    trials = optuna.load_study(study_name="g", storage=storage).trials
    done = {(t.params["lr"], t.params["hidden"]) for t in trials if t.state.name == "COMPLETE"}
    assert done == {(lr, h) for lr in (0.01, 0.1) for h in ("8", "16")}
    assert len(trials) <= 4 + 1  # a point run twice only when both workers drew it at the same instant
