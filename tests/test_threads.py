"""The BLAS thread policy (xpnet/ops/threads.py): its decisions as a pure function of GEMM shape,
cores and other processes' load, the load monitor's arithmetic, and the context's effect on the
real BLAS (set inside, restored outside). No timing assertions."""

import numpy as np
import pytest

from xpnet.ops import threads


@pytest.mark.parametrize("m, n, k, cores, busy, expected", [
    (128, 10, 784, 2, 0.0, 1),        # 784-10-10's forward GEMM: too small to split
    (10, 784, 128, 2, 0.0, 1),        # its weight gradient
    (128, 1024, 784, 2, 0.0, 2),      # 784-1024-10's forward on an idle machine: both cores
    (1024, 784, 128, 2, 0.0, 2),      # its weight gradient
    (128, 1024, 784, 2, 1.0, 1),      # one busy program: one thread, never a split across a taken core
    (128, 1024, 784, 2, 0.35, 1),     # a third of a core is enough to count as taken
    (128, 1024, 784, 2, 0.2, 2),      # background noise is not
    (128, 1024, 10, 2, 0.0, 1),       # dA = dZ @ W with 10 classes: k too small to split
    (128, 1024, 784, 1, 0.0, 1),      # one core
    (128, 1024, 784, 16, 0.0, 16),    # large enough for every idle core
    (128, 1024, 784, 16, 3.0, 13),    # three busy programs leave thirteen
    (128, 120, 784, 16, 0.0, 2),      # a middling GEMM gets what its size is worth
    (128, 1024, 784, 2, 5.0, 1),      # overloaded
])
def test_gemm_threads_decisions(m, n, k, cores, busy, expected):
    assert threads.gemm_threads(m, n, k, cores, busy) == expected


def test_load_monitor_subtracts_our_own_time(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads, "_online_cpus", lambda: 2)
    samples = iter([(1000, 5000, 10.0), (1150, 5200, 10.5)])  # (busy jiffies, total jiffies, own CPU s)
    monkeypatch.setattr(threads.MachineLoad, "_sample", lambda self: next(samples))
    load = threads.MachineLoad(window_s=0.25)
    load._hz = 100
    assert load.others() == 2.0  # before the first window: every core assumed taken
    clock[0] += 1.0
    # 200 total jiffies over 2 CPUs = 1 s; 150 busy jiffies = 1.5 core-seconds, 0.5 of them ours
    assert load.others() == pytest.approx(1.0)
    clock[0] += 0.1
    assert load.others() == pytest.approx(1.0)  # within the window: the cached value, no new sample


class _FakeBlas:
    def __init__(self, n):
        self.n, self.calls = n, []

    def get_num_threads(self):
        return self.n

    def set_num_threads(self, n):
        self.calls.append(n)
        self.n = n


def test_policy_sets_per_gemm_and_restores(monkeypatch):
    monkeypatch.setenv("XPNET_BLAS_THREADS", "adaptive")
    lib = _FakeBlas(2)
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [lib])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    with threads.blas_policy() as policy:
        policy.load._value, policy.load._next = 0.0, float("inf")  # an idle machine, no re-sampling
        threads.before_gemm(128, 1024, 784)  # large: 2
        threads.before_gemm(128, 10, 1024)   # small: 1
        threads.before_gemm(128, 10, 1024)   # unchanged: no call
        with threads.blas_policy() as inner:
            assert inner is policy
        policy.load._value = 1.0  # a busy program appears
        threads.before_gemm(128, 1024, 784)  # large, but a core is taken: stays 1, no call
        assert lib.calls == [2, 1]
    assert lib.calls == [2, 1, 2]  # the count in force before is restored on exit
    assert lib.n == 2  # restored
    threads.before_gemm(128, 1024, 784)  # outside the context: nothing is set
    assert lib.n == 2


class _FakeNumba:
    def __init__(self, n):
        self.n = n

    def get_num_threads(self):
        return self.n

    def set_num_threads(self, n):
        self.n = n


@pytest.mark.parametrize("numba_threads, m, n, k, expected", [
    (2, 128, 1024, 784, 2),  # large, and Numba's loops on both cores: two parts, BLAS on one thread
    (1, 128, 1024, 784, 1),  # Numba's loops on one thread (workers that spin): BLAS splits it as usual
    (2, 128, 10, 784, 1),    # too small to split
])
def test_split_parts_where_numba_runs_on_the_gemms_threads(monkeypatch, numba_threads, m, n, k, expected):
    """A GEMM the caller splits over Numba's threads (cpu's split dense step): as many parts as the
    policy gives it threads, when Numba's loops run on as many; each part's BLAS call on one thread."""
    monkeypatch.setenv("XPNET_BLAS_THREADS", "2")
    monkeypatch.setattr(threads, "numba_threads", lambda available: numba_threads)
    lib, numba = _FakeBlas(2), _FakeNumba(2)
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [lib])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setitem(threads.sys.modules, "numba", numba)
    assert threads.split_parts(128, 1024, 784) == 1  # outside a policy: BLAS as the user set it
    with threads.blas_policy():
        assert threads.split_parts(m, n, k) == expected
        assert lib.calls[-1:] == ([1] if expected > 1 else [])
    assert lib.n == 2


def test_ceiling_is_the_count_in_force(monkeypatch):
    monkeypatch.setenv("XPNET_BLAS_THREADS", "adaptive")
    lib = _FakeBlas(1)  # e.g. OPENBLAS_NUM_THREADS=1
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [lib])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    with threads.blas_policy() as policy:
        policy.load._value, policy.load._next = 0.0, float("inf")
        threads.before_gemm(128, 1024, 784)
    assert set(lib.calls) <= {1} and lib.n == 1


def test_real_blas_is_set_inside_and_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from xpnet.ops import cpu

    pytest.importorskip("numba")
    def counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = counts()
    A, B = np.ones((8, 64), np.float32), np.ones((64, 4), np.float32)
    C = np.empty((8, 4), np.float32)
    with threads.blas_policy():
        cpu.matmul(A, B, C)  # small: one thread in every BLAS loaded
        inside = counts()
    np.testing.assert_array_equal(C, 64.0)
    assert inside and all(n == 1 for n in inside) and counts() == before


def _two_cores(monkeypatch, lib):
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [lib])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_last_decision", None)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


def test_run_mode_decides_once_at_the_first_large_gemm(monkeypatch):
    """The default: small GEMMs need no decision; the first large one counts the free cores once,
    and the run keeps that count when the load changes (a run rounds one way throughout)."""
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    load = [1.0]  # a busy program when the run looks
    looks = []
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: looks.append(1) or load[0])
    lib = _FakeBlas(2)
    _two_cores(monkeypatch, lib)
    with threads.blas_policy() as policy:
        threads.before_gemm(128, 10, 784)  # small: one thread, nothing decided yet
        assert policy.cores is None and not looks
        threads.before_gemm(128, 1024, 784)  # large: one look, a core is taken
        assert policy.cores == 1 and len(looks) == 1
        load[0] = 0.0  # the program ends: this run stays on one core
        threads.before_gemm(128, 1024, 784)
        assert len(looks) == 1
    assert lib.calls == [1, 2]  # one thread throughout; the count in force before is restored
    with threads.blas_policy(cores=policy.cores) as resumed:  # a resumed run: its record, no look
        threads.before_gemm(128, 1024, 784)
        assert resumed.cores == 1 and len(looks) == 1
    monkeypatch.setattr(threads, "_last_decision", None)
    with threads.blas_policy() as fresh:  # a new run on the now idle machine: both cores
        threads.before_gemm(128, 1024, 784)
        assert fresh.cores == 2 and lib.calls[-1] == 2


def test_run_mode_reuses_a_recent_look(monkeypatch):
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    looks = []
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: looks.append(1) or 0.0)
    _two_cores(monkeypatch, _FakeBlas(2))
    for _ in range(3):  # e.g. a grid search's short fits: one look serves them
        with threads.blas_policy():
            threads.before_gemm(128, 1024, 784)
    assert len(looks) == 1


@pytest.mark.parametrize("mode, busy, expected", [("shape", 1.0, 2), ("1", 0.0, 1), ("2", 1.0, 2)])
def test_shape_and_numbered_modes_ignore_the_load(monkeypatch, mode, busy, expected):
    monkeypatch.setenv("XPNET_BLAS_THREADS", mode)
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: busy)
    lib = _FakeBlas(2)
    _two_cores(monkeypatch, lib)
    with threads.blas_policy(cores=1 if mode == "2" else None) as policy:  # a number wins over a record
        assert policy.load is None
        threads.before_gemm(128, 1024, 784)
        threads.before_gemm(128, 10, 1024)  # small: 1
    assert policy.cores == expected and lib.calls[0] == expected


def test_trainer_records_its_cores_and_a_resume_reuses_them(monkeypatch, tmp_path):
    """The count a run chose is in its checkpoint state and epoch log events; a trainer loaded from
    that state runs on it without looking at the machine again."""
    from xpnet import MLP
    from xpnet.io.runlog import RunLog
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer

    pytest.importorskip("numba")
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_last_decision", None)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    looks = []
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: looks.append(1) or 1.0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64)

    def trainer():
        net = MLP([784, 1024, 10], seed=0)
        return Trainer(net, get_optimizer("adam", lr=1e-3), X, y, batch_size=32)

    first = trainer()
    log = tmp_path / "metrics.jsonl"
    first.callbacks.append(RunLog(log).epoch_callback)
    first.run(1)
    assert first.blas_cores_in_use() == 1 and len(looks) == 1
    from xpnet.io.runlog import read

    assert [event.get("blas_cores") for event in read(log)] == [1]
    state = first.state_dict()
    assert state["blas_cores"] == 1
    monkeypatch.setattr(threads, "_last_decision", None)
    again = trainer()
    again.load_state_dict(state)
    again.run(2)
    assert again.blas_cores_in_use() == 1 and len(looks) == 1  # no second look


@pytest.mark.parametrize("value", ["fast", "0", "-1"])
def test_an_unknown_mode_is_a_config_error(monkeypatch, value):
    from xpnet.errors import ConfigError

    monkeypatch.setenv("XPNET_BLAS_THREADS", value)
    with pytest.raises(ConfigError, match=f"XPNET_BLAS_THREADS='{value}'"):
        with threads.blas_policy():
            pass


# ---- idle workers: sleep, so that Adam can take the BLAS cores -----------------------------------


@pytest.mark.parametrize("env, sleeping", [
    ({}, False),                                                             # the libraries' defaults spin
    ({"OMP_WAIT_POLICY": "passive"}, False),                                 # OpenBLAS still spins 2^28 cycles
    ({"OPENBLAS_THREAD_TIMEOUT": "4"}, False),                               # OpenMP still spins
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}, True),
    ({"OPENBLAS_THREAD_TIMEOUT": "8", "OMP_WAIT_POLICY": "passive"}, True),
    ({"OPENBLAS_THREAD_TIMEOUT": "20", "OMP_WAIT_POLICY": "passive"}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "short", "OMP_WAIT_POLICY": "passive"}, False),
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "1000"}, True),
    ({"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "300000"}, False),  # overrides passive
])
def test_idle_workers_sleep_needs_both_pools(env, sleeping):
    assert threads.idle_workers_sleep(env) is sleeping


def test_let_idle_workers_sleep_only_before_numpy_and_never_over_the_user(monkeypatch):
    env = {"OMP_WAIT_POLICY": "active"}  # the user's choice stays
    assert threads.let_idle_workers_sleep(env) == {}  # NumPy (so OpenBLAS) is loaded in this process: too late
    assert env == {"OMP_WAIT_POLICY": "active"}
    monkeypatch.delitem(threads.sys.modules, "numpy")
    assert threads.let_idle_workers_sleep(env) == {"OPENBLAS_THREAD_TIMEOUT": "4", "GOMP_SPINCOUNT": "1000"}
    assert env == {"OMP_WAIT_POLICY": "active", "OPENBLAS_THREAD_TIMEOUT": "4", "GOMP_SPINCOUNT": "1000"}
    assert not threads.idle_workers_sleep(env)


def test_child_environ_gives_peers_their_defaults(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("MY_VAR", "kept")
    monkeypatch.setattr(threads, "_set_here", {"OMP_WAIT_POLICY": "passive"})  # as if the CLI had set it
    peer = threads.child_environ(xpnet=False)
    assert "OMP_WAIT_POLICY" not in peer and "OPENBLAS_THREAD_TIMEOUT" not in peer and peer["MY_VAR"] == "kept"
    ours = threads.child_environ(xpnet=True)
    assert threads.idle_workers_sleep(ours) and ours["MY_VAR"] == "kept"
    monkeypatch.setattr(threads, "_set_here", {})  # the user set it: a peer gets it too
    assert threads.child_environ(xpnet=False)["OMP_WAIT_POLICY"] == "passive"


@pytest.mark.parametrize("sleeping, busy, adam", [(True, 0.0, 2), (True, 1.0, 1), (False, 0.0, 1)])
def test_adam_threads_follow_the_runs_cores(monkeypatch, sleeping, busy, adam):
    """Numba's parallel Adam gets the cores the run's BLAS got (one until they are counted), only when
    idle workers sleep, and the count in force before is restored."""
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    for key, value in threads.IDLE_SLEEP_ENV.items():
        if sleeping:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)
    fake = _FakeBlas(2)  # numba's get/set_num_threads, as the fake BLAS pool has them
    monkeypatch.setitem(threads.sys.modules, "numba", fake)
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [_FakeBlas(2)])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_last_decision", None)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: busy)
    with threads.blas_policy():
        assert fake.n == 1  # cores not counted yet
        threads.before_gemm(128, 10, 784)
        assert fake.n == 1  # a small GEMM decides nothing
        threads.before_gemm(128, 1024, 784)
        assert fake.n == adam
        threads.before_gemm(128, 1024, 784)
        assert fake.calls == [1, adam]  # set once per decision, not per GEMM
    assert fake.n == 2  # restored


def test_the_command_line_lets_idle_workers_sleep():
    """``xpnet`` sets the variables before NumPy loads (a fresh process, none of them set by us)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in threads.IDLE_SLEEP_ENV}
    out = subprocess.run([sys.executable, "-m", "xpnet", "info"], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert "idle BLAS/OpenMP workers sleep" in out and "OPENBLAS_THREAD_TIMEOUT=4" in out
    env["OMP_WAIT_POLICY"] = "active"  # the user's setting wins
    out = subprocess.run([sys.executable, "-m", "xpnet", "info"], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert "workers spin" in out and "OMP_WAIT_POLICY=active" in out


# ---------------------------------------------------------------- the side core
def _side_ready(monkeypatch, free=2):
    """Two usable cores and a recent look that counted ``free`` of them free (no sleep, no window)."""
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    _two_cores(monkeypatch, _FakeBlas(2))
    monkeypatch.setattr(threads, "_last_decision", (threads.time.monotonic(), free))
    monkeypatch.setattr(threads, "DECISION_REUSE_S", 1e9)


def test_a_side_job_waits_for_a_one_thread_gemm_and_ends_before_a_split_one(monkeypatch):
    """Handed over, a job waits; the next one-thread GEMM starts it on the worker thread; a GEMM that
    splits (or a parallel Adam) waits for it to end. The two never run at once on the side core."""
    import threading

    _side_ready(monkeypatch)
    go, ran = threading.Event(), []

    def job(tag):
        assert go.wait(timeout=30)
        ran.append((tag, threading.current_thread().name))

    with threads.blas_policy() as policy:
        handle = threads.beside(job, "a")
        threads.before_gemm(128, 1024, 784)  # splits: nothing to wait for, the job stays pending
        assert policy.pending is handle and policy.running is None and not ran
        threads.before_gemm(128, 10, 784)  # one thread: the job starts beside it
        assert policy.running is handle and policy.pending is None
        assert not ran  # blocked on `go`, on the worker
        go.set()
        threads.before_gemm(128, 1024, 784)  # a split GEMM: the job has ended before it returns
        assert ran == [("a", "xpnet-side")] and policy.running is None
        handle.wait()  # already done: returns at once
        assert handle.ran_beside
        second = threads.beside(job, "b")
        assert second is not None and threads.beside(job, "c") is None  # one at a time: the caller does it
        go.set()
        second.wait()
        assert ran[-1] == ("b", "MainThread")  # never started (no one-thread GEMM came): ran in the waiter
        assert not second.ran_beside
    assert "xpnet-side" not in [t.name for t in threading.enumerate()]  # the worker ends with the policy


def test_a_side_jobs_error_reaches_the_waiter_and_a_pending_job_runs_there(monkeypatch):
    import threading

    _side_ready(monkeypatch)

    def boom():
        raise ValueError("bad rows")

    names = []
    with threads.blas_policy():
        failing = threads.beside(boom)
        threads.before_gemm(128, 10, 784)  # started on the worker
        threads.claim_cores(1)  # one thread needs no claim
        threads.claim_cores(2)  # a 2-thread loop: the job has ended (its error kept for the waiter)
        with pytest.raises(ValueError, match="bad rows"):
            failing.wait()
        never_started = threads.beside(lambda: names.append(threading.current_thread().name))
        never_started.wait()  # no one-thread GEMM came: it runs here, in the waiting thread
    assert names == [threading.current_thread().name]


@pytest.mark.parametrize("case", ["outside", "one core taken", "XPNET_BLAS_THREADS=1", "switched off"])
def test_no_side_core_means_no_side_job(monkeypatch, case):
    _side_ready(monkeypatch, free=1 if case == "one core taken" else 2)
    if case == "XPNET_BLAS_THREADS=1":
        monkeypatch.setenv("XPNET_BLAS_THREADS", "1")
    if case == "switched off":
        monkeypatch.setattr(threads, "SIDE_CORE", False)
    if case == "outside":
        assert threads.beside(print) is None
        return
    with threads.blas_policy():
        assert threads.beside(print) is None


def test_the_side_cores_own_look_does_not_sleep(monkeypatch):
    """With no recent look, the first calls say no (never sleeping) until the look's window has passed;
    then the load it measured decides, and a later large GEMM reuses it."""
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads.time, "sleep", lambda s: pytest.fail("the side core's look must not sleep"))
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [_FakeBlas(2)])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_last_decision", None)
    monkeypatch.setattr(threads, "_look", None)
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: 0.0)
    with threads.blas_policy() as policy:
        assert not policy.side_core_free()  # the look starts
        clock[0] += threads.DECIDE_S / 2
        assert not policy.side_core_free()
        clock[0] += threads.DECIDE_S
        assert policy.side_core_free() and policy.side
        threads.before_gemm(128, 1024, 784)  # the run mode's decision reuses that look: no sleep
        assert policy.cores == 2


def test_a_later_look_that_finds_a_core_taken_ends_the_side_core(monkeypatch):
    """The side core was granted on an early look; the run mode's own look at its first large GEMM
    (past the reuse window) finds another program on a core: the run goes on one core, no side jobs."""
    _side_ready(monkeypatch)
    with threads.blas_policy() as policy:
        assert policy.side_core_free()
        monkeypatch.setattr(threads, "_last_decision", None)
        monkeypatch.setattr(threads, "free_cores", lambda usable: 1)
        threads.before_gemm(128, 1024, 784)
        assert policy.cores == 1 and not policy.side_core_free() and threads.beside(print) is None


def _two_epochs(net, trainer, stop_at=None):
    """Two epochs of ``trainer``; with ``stop_at``, stopped at that batch of the first and resumed. The
    weights and the train losses at the end."""
    if stop_at is not None:
        trainer.step_callbacks.append(lambda t: setattr(t, "stop_requested", t.epoch == 0 and t.batch == stop_at))
        trainer.run(2)
        assert trainer.history.interrupted and trainer.batch == stop_at
        trainer.stop_requested = False
        trainer.step_callbacks.clear()
    history = trainer.run(2)
    return net.flat_params.copy(), history["train_loss"]


def test_the_trainer_gathers_ahead_on_the_side_core_and_the_weights_do_not_change(monkeypatch):
    """Every batch after an epoch's first is gathered on the side core during the step before, and the
    run (a short last batch, a stop mid-epoch and its resume included) ends with the same weights,
    bit for bit, as gathering each batch in its own step."""
    import threading

    from xpnet import MLP
    from xpnet.ops import cpu
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer

    pytest.importorskip("numba")
    _side_ready(monkeypatch)
    where = []
    gather = cpu.gather_batch

    def recorded(*args):
        where.append(threading.current_thread().name)
        return gather(*args)

    monkeypatch.setattr(cpu, "gather_batch", recorded)
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)

    def train(hidden, side, stop_at=None):
        monkeypatch.setattr(threads, "SIDE_CORE", side)
        net = MLP([784, hidden, 10], seed=0, dropout=0.1)
        return _two_epochs(net, Trainer(net, get_optimizer("adam", lr=1e-3), X, y, batch_size=64, seed=1), stop_at)

    for hidden in (16, 1024):  # one-thread GEMMs only; split GEMMs (the claim before them)
        where.clear()
        plain = train(hidden, side=False)
        assert set(where) == {threading.current_thread().name}
        where.clear()
        ahead = train(hidden, side=True)
        assert where.count("xpnet-side") == 2 * 4  # batches 2-5 of each epoch (300 rows, 64 a batch)
        resumed = train(hidden, side=True, stop_at=2)
        for other in (ahead, resumed):
            np.testing.assert_array_equal(other[0], plain[0])
            assert other[1] == plain[1]


def test_a_split_run_stops_and_resumes_to_the_same_weights(monkeypatch):
    """One hidden layer whose first GEMM the policy gives two threads: the step runs split by units
    (cpu._dense_split, on the real OpenBLAS), and a stop mid-epoch and its resume end with the same
    weights, bit for bit, as the run that went through."""
    numba = pytest.importorskip("numba")
    from xpnet import MLP
    from xpnet.ops import cpu
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer

    assert numba.config.NUMBA_NUM_THREADS >= 2, "the CI machine has two cores"
    monkeypatch.setenv("XPNET_BLAS_THREADS", "2")
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "numba_threads", lambda available: available)  # as if idle workers slept
    calls, split = [], cpu._dense_split
    monkeypatch.setattr(cpu, "_dense_split", lambda *a: calls.append(a[0]) or split(*a))
    rng = np.random.default_rng(0)
    X, y = rng.random((300, 784), dtype=np.float32), rng.integers(0, 10, 300)

    def train(stop_at=None):
        net = MLP([784, 128, 10], seed=0, dropout=0.1)
        return _two_epochs(net, Trainer(net, get_optimizer("adam", lr=1e-3), X, y, batch_size=128, seed=1), stop_at)

    plain = train()
    assert calls == [2, 2] * 2  # two full batches an epoch split in two; the 44-row batch is too small to split
    resumed = train(stop_at=1)
    np.testing.assert_array_equal(resumed[0], plain[0])
    assert resumed[1] == plain[1]


def test_the_side_switch_follows_whichever_way_is_faster():
    """Of every PERIOD steps the last PROBE try the other way; the faster way (by the margin, by what
    really happened) becomes the rule, and a period with too few steps either way decides nothing."""
    switch = threads.SideSwitch()
    P, B = switch.PERIOD, switch.PROBE

    def period(on_s, off_s, ahead_possible=True):
        ways = []
        for _ in range(P):
            use = switch.use()
            ways.append(use)
            ahead = use and ahead_possible  # (the lag of one step does not matter to the medians here)
            switch.record(on_s if ahead else off_s, ahead)
        return ways

    ways = period(1.0, 1.2)
    assert ways[-B:] == [False] * B and all(ways[:-B]) and switch.on  # probes off; on is faster: stays on
    period(1.0, 1.02)
    assert switch.on  # within the margin: no change
    period(1.2, 1.0)
    assert not switch.on  # the side core slows the step: off
    ways = period(1.2, 1.0)
    S = switch.SETTLE  # a probe of the side core runs SETTLE steps longer
    assert ways[-B - S :] == [True] * (B + S) and not any(ways[: -B - S]) and not switch.on  # probes on, stays off
    period(1.0, 1.2)
    assert switch.on  # faster again: back on
    period(5.0, 1.0, ahead_possible=False)
    assert switch.on  # no step was gathered ahead (no free core): nothing to compare, no change


def test_the_side_switch_compares_the_probe_with_the_steps_just_before_it():
    """Slow steps early in a period (a run warming up, the machine drifting) do not count against the
    rule: only the PROBE steps before the probe do."""
    switch = threads.SideSwitch()
    P, B = switch.PERIOD, switch.PROBE
    for i in range(P):
        ahead = switch.use()
        # on: slow (3.0) for most of the period, then 1.0 just before the probe; off: 1.1
        switch.record((3.0 if i < P - 2 * B else 1.0) if ahead else 1.1, ahead)
    assert switch.on
    for i in range(P):
        ahead = switch.use()
        switch.record((1.0 if i < P - 2 * B else 1.3) if ahead else 1.1, ahead)
    assert not switch.on  # slower than the probe just before it, however quick earlier in the period


def test_the_side_switch_leaves_out_the_first_steps_of_a_probe_of_the_side_core():
    """After a period without side jobs the side core's first jobs start late. A probe of the side core
    runs SETTLE steps longer and they are not compared, so slow first steps do not keep it off, as they
    do when counted (a switch without SETTLE)."""

    class Counted(threads.SideSwitch):
        SETTLE = 0

    def period(switch, off_s, first_on_s, on_s):
        probe = 0  # the probe's steps so far
        for _ in range(switch.PERIOD):
            use = switch.use()
            ahead = use and probe > 0  # the probe's first step: its batch came the rule's way
            probe = probe + 1 if use else 0
            switch.record((first_on_s if probe <= threads.SideSwitch.SETTLE + 1 else on_s) if ahead else off_s,
                          ahead)

    for kind, back_on in ((threads.SideSwitch, True), (Counted, False)):
        switch = kind()
        period(switch, off_s=1.0, first_on_s=1.1, on_s=5.0)
        assert not switch.on  # the side core slows the step: off
        period(switch, off_s=1.0, first_on_s=3.0, on_s=0.9)
        assert switch.on is back_on  # its first jobs slow, the later ones faster: back on unless they count


def test_side_probe_script_prints_the_steps_around_a_probe_of_the_side_core(fashion_dir):
    """bench/side_probe.py, started with the side core off, shows the first period's probe of it from
    where the switch starts it (SETTLE steps early) to the period's end."""
    import subprocess
    import sys
    from pathlib import Path

    S = threads.SideSwitch
    script = Path(__file__).resolve().parents[1] / "bench" / "side_probe.py"
    proc = subprocess.run([sys.executable, str(script), "--data-dir", str(fashion_dir), "--epochs", "2", "--start-off"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("784-10-10, epochs (s): ") and "flips (step, side core before -> after):" in out
    start = S.PERIOD - S.PROBE - S.SETTLE
    assert f"side core off as the rule (1 periods), the probe from step {start}:" in out
    steps = [int(item.split(":")[0]) for item in out.split(f"step {start}:\n")[1].split("(step")[0].split()]
    assert steps == list(range(start - S.PROBE, S.PERIOD))  # the compared steps before it, then the probe
