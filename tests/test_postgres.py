"""xpnet tune / sweep workers sharing one study on a real PostgreSQL server (started here).

The fixture starts Debian's ``postgresql`` server itself (tests/pg_server.py); without its
binaries these tests are skipped with that reason. Workers are processes forked from a forkserver, running the
real CLI (``xpnet.cli.main``) against a plain ``postgresql://`` URL, so they pay no import time
and one of them can be SIGKILLed mid-trial like a machine that dies.
"""

import json
import multiprocessing
import os
import signal
import sys
import time

import pytest

from conftest import write_synthetic_idx
from pg_server import PgServer, find_bin_dir

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="the PostgreSQL driver of the tune extra (psycopg) is not installed")

BIN = find_bin_dir()
pytestmark = pytest.mark.skipif(BIN is None, reason="PostgreSQL server binaries (Debian package postgresql: "
                                                     "/usr/lib/postgresql/*/bin/initdb) are not installed")
# forkserver: workers fork from a fresh interpreter that imported xpnet once (cheap starts, and nothing
# inherited from whatever earlier tests left in this process)
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["xpnet.cli", "xpnet.cli.train", "xpnet.training.trainer", "xpnet.nn.model", "xpnet.experiments.tune", "xpnet.experiments.sweep", "xpnet.experiments.distributed", "numpy", "optuna", "sqlalchemy"])  # one server per pytest process: the union of what the workers need


@pytest.fixture(scope="module")
def pg():
    server = PgServer(BIN).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_idx(tmp_path_factory.mktemp("pg-data"), n_train=120, n_test=40)


_db_counter = iter(range(1000))


@pytest.fixture
def url(pg):
    return pg.create_db(f"t{next(_db_counter)}")


def _worker(args, log):
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    from xpnet.cli import main

    code = main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start(args, log):
    p = FORK.Process(target=_worker, args=([str(a) for a in args], str(log)))
    p.start()
    return p


def _join(procs, logs, timeout=120):
    deadline = time.monotonic() + timeout
    for p, log in zip(procs, logs):
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"worker timed out: {log.read_text(encoding='utf-8')[-2000:]}")
        assert p.exitcode == 0, log.read_text(encoding="utf-8")[-3000:]


def _tune(url, data_dir, out, trials, extra=()):
    return ["tune", "--method", "random", "--storage", url, "--study-name", "s", "--trials", trials, "--epochs", "1",
            "--hidden", "8", "--hidden", "16", "--batch-size", "32", "--data-dir", data_dir, "--out", out, *extra]


def _study(url):
    from xpnet.experiments.distributed import open_storage

    return optuna.load_study(study_name="s", storage=open_storage(optuna, url, None))


def _check_complete_study(study, total, workers):
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers)))  # no duplicate number, none missing
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") >= total, states  # none lost
    # a worker starts a trial only while finished + running < total: overshoot only by a race
    assert states.count("COMPLETE") <= total + workers - 1, states
    assert "RUNNING" not in states and "WAITING" not in states
    return trials


def test_four_tune_workers_share_one_study(pg, url, data_dir, tmp_path):
    outs = [tmp_path / f"w{i}" for i in range(4)]
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = [_start(_tune(url, data_dir, o, 8), log) for o, log in zip(outs, logs)]
    _join(procs, logs)
    trials = _check_complete_study(_study(url), 8, 4)
    assert all(t.state.name == "COMPLETE" for t in trials)
    # every trial was run by one worker: the workers' printed trial numbers are disjoint and cover the study
    ran = [set(int(line.split(":")[0].split()[1]) for line in log.read_text(encoding="utf-8").splitlines()
               if line.startswith("trial ") and "→ val" in line) for log in logs]
    assert sum(len(r) for r in ran) == len(set().union(*ran)) == len(trials)
    assert sum(1 for r in ran if r) >= 2  # the work was really shared
    assert all("this worker stops" in log.read_text(encoding="utf-8") for log in logs)


def test_killed_worker_trial_is_failed_and_retried(pg, url, data_dir, tmp_path):
    from xpnet.experiments.tune import PARAMS

    args = _tune(url, data_dir, tmp_path / "a", 3, ["--heartbeat", "1"])  # a dead worker is noticed after 2 s
    args[args.index("--epochs") + 1] = 400  # a trial of about a second: killed well inside it
    victim = _start(args, tmp_path / "a.log")
    deadline = time.monotonic() + 60
    running = None
    while time.monotonic() < deadline and running is None:
        time.sleep(0.05)
        try:
            trials = _study(url).get_trials(deepcopy=False)
        except Exception:  # the study does not exist yet
            continue
        # RUNNING with all its parameters drawn: a worker killed while sampling leaves a partial configuration
        running = next((t for t in trials if t.state.name == "RUNNING" and set(t.params) == set(PARAMS)), None)
    assert running is not None, (tmp_path / "a.log").read_text(encoding="utf-8")
    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: the worker is gone without a word
    victim.join()
    assert victim.exitcode == -signal.SIGKILL
    t_kill = time.monotonic()
    survivor_args = _tune(url, data_dir, tmp_path / "b", 3, ["--heartbeat", "1"])
    survivor = _start(survivor_args, tmp_path / "b.log")
    _join([survivor], [tmp_path / "b.log"])
    study = _study(url)
    killed = study.trials[running.number]
    assert killed.state.name == "FAIL"
    from xpnet.experiments.distributed import retried_from

    retries = [t for t in study.trials if retried_from(optuna, t) == running.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == running.params  # the same configuration, trained again
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 3
    log = (tmp_path / "b.log").read_text(encoding="utf-8")
    assert f"retries trial {running.number}" in log
    assert time.monotonic() - t_kill < 60
    rows = json.loads((tmp_path / "b" / "trials.json").read_text(encoding="utf-8"))["trials"]
    assert {r["number"]: r["state"] for r in rows}[running.number] == "FAIL"
    assert any(r["retry_of"] == running.number and r["state"] == "COMPLETE" for r in rows)


def test_two_sweep_workers_share_the_grid(pg, url, data_dir, tmp_path):
    """Two workers on one GridSampler study: every grid point × seed trained, by one worker unless two drew it
    at the same instant (at-least-once; the report keeps one row per run_id), and the study knows each run."""
    args = ["sweep", "--data-dir", data_dir, "--hidden", "4", "--hidden", "8", "--hidden", "12", "--optimizer", "adam,sgd", "--repeats", "2",
            "--epochs", "1", "--batch-size", "32", "--storage", url, "--study-name", "g", "--heartbeat", "1"]
    logs = [tmp_path / f"s{i}.log" for i in range(2)]
    procs = [_start(args + ["--out", tmp_path / f"s{i}"], log) for i, log in enumerate(logs)]
    _join(procs, logs)
    ids = [[r["run_id"] for r in json.loads((tmp_path / f"s{i}" / "results.json").read_text(encoding='utf-8'))["results"]]
           for i in range(2)]
    from xpnet.experiments.sweep import make_grid, run_id
    from xpnet.training.recipe import RunConfig

    base = RunConfig(data_dir=str(data_dir), epochs=1, batch_size=32)
    grid = {run_id(c) for c in make_grid(base, [(4,), (8,), (12,)], ["adam", "sgd"], repeats=2)}
    assert len(grid) == 12
    assert set(ids[0]) | set(ids[1]) == grid  # every point × seed
    assert len(ids[0]) == len(set(ids[0])) and len(ids[1]) == len(set(ids[1]))  # never twice by one worker
    assert len(ids[0]) + len(ids[1]) <= 12 + 2, ids  # a duplicate only from a simultaneous draw
    assert ids[0] and ids[1], "both workers trained runs"
    trials = optuna.load_study(study_name="g", storage=url).get_trials(deepcopy=False)
    assert {t.params["run_id"] for t in trials if t.state.name == "COMPLETE"} == grid
    assert "RUNNING" not in {t.state.name for t in trials}
    for i in range(2):
        meta = json.loads((tmp_path / f"s{i}" / "results.json").read_text(encoding='utf-8'))["meta"]
        assert meta["study"] == "g"
        assert "this worker stops" in logs[i].read_text(encoding="utf-8")


def test_killed_sweep_worker_run_is_retried(pg, url, data_dir, tmp_path):
    """A sweep worker SIGKILLed mid-run: its trial goes FAIL, Optuna re-queues the same run, a survivor trains it."""
    args = ["sweep", "--data-dir", data_dir, "--hidden", "4", "--hidden", "8", "--epochs", "300", "--batch-size", "32",
            "--storage", url, "--study-name", "k", "--heartbeat", "1"]
    victim = _start(args + ["--out", tmp_path / "a"], tmp_path / "a.log")
    deadline, running = time.monotonic() + 60, None
    while time.monotonic() < deadline and running is None:
        time.sleep(0.05)
        try:
            trials = optuna.load_study(study_name="k", storage=url).get_trials(deepcopy=False)
        except Exception:
            continue
        running = next((t for t in trials if t.state.name == "RUNNING" and "run_id" in t.params), None)
    assert running is not None, (tmp_path / "a.log").read_text(encoding="utf-8")
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    survivor = _start(args + ["--out", tmp_path / "b"], tmp_path / "b.log")
    _join([survivor], [tmp_path / "b.log"], timeout=180)
    trials = optuna.load_study(study_name="k", storage=url).trials
    assert trials[running.number].state.name == "FAIL"
    from xpnet.experiments.distributed import retried_from

    retry = [t for t in trials if retried_from(optuna, t) == running.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == running.params
    rows = json.loads((tmp_path / "b" / "results.json").read_text(encoding="utf-8"))["results"]
    assert len(rows) == 2 and running.params["run_id"] in {r["run_id"] for r in rows}
    assert "retries trial" in (tmp_path / "b.log").read_text(encoding="utf-8")


def test_load_eight_workers_tiny_trials(pg, url, data_dir, tmp_path):
    n = 8
    logs = [tmp_path / f"w{i}.log" for i in range(n)]
    procs = [_start(_tune(url, data_dir, tmp_path / f"w{i}", 16, ["--hidden", "4"]), log) for i, log in enumerate(logs)]
    _join(procs, logs, timeout=180)
    trials = _check_complete_study(_study(url), 16, n)
    assert all(t.state.name == "COMPLETE" for t in trials)
