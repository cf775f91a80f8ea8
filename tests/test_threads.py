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


def test_default_mode_ignores_the_load_so_runs_are_reproducible(monkeypatch):
    """By default the choice is the shape's alone: a busy neighbour changes nothing, so two runs of
    a configuration (an interrupted one and its resume) round alike."""
    monkeypatch.delenv("XPNET_BLAS_THREADS", raising=False)
    monkeypatch.setattr(threads.MachineLoad, "others", lambda self: 1.0)  # would mean: a core is taken
    lib = _FakeBlas(2)
    monkeypatch.setattr(threads, "_blas_controllers", lambda: [lib])
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    with threads.blas_policy() as policy:
        assert policy.load is None
        threads.before_gemm(128, 1024, 784)  # large: both cores, whatever the load
        threads.before_gemm(128, 10, 1024)   # small: 1
    assert lib.calls == [2, 1, 2]


def test_an_unknown_mode_is_a_config_error(monkeypatch):
    from xpnet.errors import ConfigError

    monkeypatch.setenv("XPNET_BLAS_THREADS", "fast")
    with pytest.raises(ConfigError, match="XPNET_BLAS_THREADS='fast'"):
        with threads.blas_policy():
            pass
