"""BLAS threads per GEMM, chosen from the GEMM's shape and what else the machine is running.

OpenBLAS splits every GEMM over all its threads, and its idle workers spin. With a core taken
by another program, each split GEMM waits for the worker that shares that core (a scheduler
time slice per GEMM): a training step of small GEMMs then runs several times slower than on
one thread, and even large ones lose to one thread (bench/results/ has the measurements).
So, inside :func:`blas_policy` (entered once by ``Trainer.run``), the CPU ops' ``matmul`` asks
:func:`gemm_threads` before every GEMM: one thread for small GEMMs and on cores other programs
hold, more only for large GEMMs on free cores. Outside the context nothing changes: the user's
own NumPy keeps its BLAS settings, and the count in force when the context was entered (e.g.
``OPENBLAS_NUM_THREADS``) is the ceiling.

OpenBLAS rounds differently on 1 and 2 threads, so a choice that changed within a run would make
its weights depend on the load. Modes, chosen by ``XPNET_BLAS_THREADS``:

* ``run`` (the default): the free cores are counted once per run, at its first GEMM large enough
  to split (other processes' CPU use over :data:`DECIDE_S` seconds), and kept for the whole run;
  the trainer records the count and a resumed or continued run reuses it, so it rounds exactly
  like the uninterrupted run. A program started in the middle of a run is not followed.
* ``shape``: every usable core, whatever the load (the same choice on every run of a machine).
* ``adaptive``: the load at every GEMM (``/proc/stat`` minus this process's own time over the
  last :data:`WINDOW_S` seconds); follows a program started mid-run, but the last bits of the
  weights then depend on the load.
* a number ``N``: at most ``N`` cores, whatever the load (e.g. to repeat a recorded run).

threadpoolctl sets the counts. A caller may split a GEMM over Numba's threads itself, one BLAS call
on one thread per part (:func:`split_parts`: the CPU ops' step of a one-hidden-layer network).

Idle workers: OpenBLAS's idle workers spin for about 0.1 s after each GEMM (2^28 cycles), and by
default OpenMP's (Numba's parallel Adam) spin too, each on the core the other pool needs next. So Adam runs on one
thread unless both pools' workers sleep when idle: :func:`let_idle_workers_sleep` asks for that
through the environment before NumPy loads OpenBLAS (the ``xpnet`` command and the benchmark's
xpnet processes call it; it is read only when each library loads), and then Adam runs on the cores
the run's BLAS uses (measured at 784-1024-10 on 2 cores: Adam 0.42 -> 0.25 ms per step).

The side core: while the training step runs on one thread (a network's small GEMMs, or the
single-threaded middle of a large one), the second core would idle. :func:`beside` hands it a job
(the trainer's gather of the next batch) on a worker thread: the job starts at the next one-thread
GEMM, and a GEMM or parallel loop that needs every core waits for it first (:func:`claim_cores`), so
the two never share a core. Only where the policy counts a second free core, and (the trainer asks
:class:`SideSwitch`) while it makes the step faster; nothing computed changes, only when.

This module does not import NumPy: the command line calls it before anything loads OpenBLAS.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

# A GEMM of at least this many multiply-adds (m·n·k) per thread is worth splitting: below it the
# split's synchronisation costs more than the second core brings (batch-128 GEMMs of 784-10-10 are
# about 1e6; 784-1024-10's large ones 1e8).
MIN_WORK_PER_THREAD = 1 << 22
# The shared dimension below which a split GEMM is memory-bound stores (dA = dZ @ W with 10 classes).
MIN_K = 32
# Other processes using at least this much of a core take it away from us.
BUSY_CORE = 0.3
WINDOW_S = 0.25
# The ``run`` mode's one look at the machine, and how long its answer serves later runs of this process
# (many short fits, e.g. a grid search, then pay for one look, not one each).
DECIDE_S = 0.2
DECISION_REUSE_S = 5.0


def gemm_threads(m: int, n: int, k: int, cores: int, others_busy: float) -> int:
    """Threads for one ``(m × k) @ (k × n)`` GEMM with ``cores`` usable cores of which other
    processes keep ``others_busy`` (in cores, e.g. 1.0 for one busy program) occupied.

    A pure function: the policy's whole decision, tested without timing."""
    free = int(cores) - _taken(others_busy)
    if free < 2 or int(k) < MIN_K:
        return 1
    by_work = (int(m) * int(n) * int(k)) // MIN_WORK_PER_THREAD
    return max(1, min(free, by_work))


def never_split(m: int, n: int, k: int) -> bool:
    """Whether :func:`gemm_threads` keeps this GEMM on one thread however many cores are free."""
    return gemm_threads(m, n, k, 1 << 16, 0.0) == 1


def _taken(others_busy: float) -> int:
    """Whole cores that other processes occupy: a core counts once they use BUSY_CORE of it."""
    whole = int(others_busy)
    return whole + (1 if others_busy - whole >= BUSY_CORE else 0)


# What the idle workers of OpenBLAS and of OpenMP (Numba's threading layer) do: sleep at once (OpenBLAS's
# shortest spin is 2^4 cycles) instead of spinning on the core the other pool needs next. GNU OpenMP's
# short spin (microseconds; it overrides "passive") lets Adam's two halves meet at the loop's end
# without a sleep: on 2 cores Adam alone took 190 us with it, 238 us without (814k floats).
IDLE_SLEEP_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "1000"}
# The longest OpenBLAS spin (2^N cycles) that still counts as sleeping: 2^8 cycles is under 0.1 us.
MAX_SLEEPING_TIMEOUT = 8
# The longest GNU OpenMP spin (iterations) that still counts: 10^5 made the step 1.7x slower (784-1024-10).
MAX_SLEEPING_SPINCOUNT = 10_000


_set_here: dict = {}  # what let_idle_workers_sleep put into os.environ


def let_idle_workers_sleep(environ=None) -> dict:
    """Ask OpenBLAS and OpenMP to put idle workers to sleep (:data:`IDLE_SLEEP_ENV`), leaving any of
    these variables the user set alone. Only before NumPy is imported (OpenBLAS reads them once, as
    it loads): afterwards nothing is set. Returns the variables set."""
    environ = os.environ if environ is None else environ
    if "numpy" in sys.modules:
        return {}
    changes = {key: value for key, value in IDLE_SLEEP_ENV.items() if key not in environ}
    environ.update(changes)
    if environ is os.environ:
        _set_here.update(changes)
    return changes


def child_environ(xpnet: bool) -> dict:
    """The environment for a child process: an xpnet one gets :data:`IDLE_SLEEP_ENV` (where the user
    set nothing), any other program this process's environment without what xpnet added (a peer in a
    benchmark runs with its own defaults)."""
    env = {key: value for key, value in os.environ.items() if _set_here.get(key) != value}
    if xpnet:
        for key, value in IDLE_SLEEP_ENV.items():
            env.setdefault(key, value)
    return env


def idle_workers_sleep(environ=None) -> bool:
    """Whether both pools' idle workers sleep here: ``OMP_WAIT_POLICY=passive`` with no long
    ``GOMP_SPINCOUNT``, and an OpenBLAS spin of at most 2^:data:`MAX_SLEEPING_TIMEOUT` cycles (read
    from the environment: right only if it was set before NumPy loaded, as the command line does)."""
    environ = os.environ if environ is None else environ
    passive = environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
    timeout = environ.get("OPENBLAS_THREAD_TIMEOUT", "").strip()
    spin = environ.get("GOMP_SPINCOUNT", "0").strip()  # set, it overrides "passive"
    short_spin = spin.isdigit() and int(spin) <= MAX_SLEEPING_SPINCOUNT
    return passive and short_spin and timeout.isdigit() and int(timeout) <= MAX_SLEEPING_TIMEOUT


def numba_threads(available: int) -> int:
    """Threads for Numba's parallel loops (the fused Adam): all ``available`` only when idle workers
    sleep (:func:`idle_workers_sleep`). Otherwise one: a spinning pool steals the core the other
    needs next (measured on 2 cores: two 128x784x1024 GEMMs + Adam took 8.0 ms with a 2-thread
    Adam, 4.7 ms with NumPy's)."""
    return int(available) if idle_workers_sleep() else 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class MachineLoad:
    """Other processes' CPU use in cores, averaged over windows of at least ``window_s`` seconds.

    Reads ``/proc/stat`` (all CPUs' busy jiffies) and this process's CPU time (every thread of
    ours, spinning BLAS workers included) and takes the difference. Where ``/proc/stat`` is
    missing, the 1-minute load average stands in, less one for this process. Until the first
    window has passed, :meth:`others` is ``assume`` (default: every core taken, the safe guess)."""

    def __init__(self, window_s: float = WINDOW_S, assume: float | None = None):
        self.window_s = float(window_s)
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._value = float(_online_cpus() if assume is None else assume)
        self._last = self._sample()
        self._next = self.first_at = time.monotonic() + self.window_s

    def _sample(self):
        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                fields = fh.readline().split()[1:]
        except OSError:
            return None
        values = [int(v) for v in fields[:8]]
        busy = sum(values) - values[3] - values[4]  # all but idle and iowait (steal counts as taken)
        return busy, sum(values), time.process_time()  # every thread of ours, in ns rather than jiffies

    def others(self) -> float:
        """Other processes' busy cores (refreshed at most once per window; cheap otherwise)."""
        now = time.monotonic()
        if now < self._next:
            return self._value
        self._next = now + self.window_s
        sample = self._sample()
        if sample is None or self._last is None:
            from xpnet.backend import load_average  # noqa: PLC0415 - loads NumPy: only where /proc/stat is missing

            self._value = max(0.0, (load_average() or 1.0) - 1.0)
            return self._value
        (busy0, total0, own0), (busy1, total1, own1) = self._last, sample
        self._last = sample
        elapsed = (total1 - total0) / self._hz / _online_cpus()
        if elapsed <= 0:
            return self._value
        self._value = max(0.0, ((busy1 - busy0) / self._hz - (own1 - own0)) / elapsed)
        return self._value


def _online_cpus() -> int:
    """Every online CPU (``/proc/stat``'s totals cover them all, whatever our affinity)."""
    return os.cpu_count() or 1


MODES = ("run", "shape", "adaptive")


def policy_mode() -> str | int:
    """``XPNET_BLAS_THREADS``: ``run`` (default), ``shape``, ``adaptive`` or a core count."""
    mode = os.environ.get("XPNET_BLAS_THREADS", "run").strip().lower() or "run"
    if mode.isdigit() and int(mode) >= 1:
        return int(mode)
    if mode not in MODES:
        from xpnet.errors import ConfigError  # noqa: PLC0415

        raise ConfigError(f"XPNET_BLAS_THREADS={mode!r}: use one of {', '.join(MODES)} or a core count")
    return mode


_last_decision: tuple[float, int] | None = None  # (monotonic time, free cores) of the run mode's last look


def free_cores(usable: int) -> int:
    """Cores of ``usable`` that other processes leave free now: one look of :data:`DECIDE_S` seconds
    (reused for :data:`DECISION_REUSE_S`), at least one."""
    recent = _recent_decision()
    if recent is not None:
        return min(usable, recent)
    load = MachineLoad(window_s=DECIDE_S)
    time.sleep(DECIDE_S)
    return _decided(usable, load)


def _recent_decision() -> int | None:
    """The free cores the last look counted, if it was recent (:data:`DECISION_REUSE_S`)."""
    if _last_decision is not None and time.monotonic() - _last_decision[0] < DECISION_REUSE_S:
        return _last_decision[1]
    return None


# The side core's look (_Policy.side_core_free): the run mode's window without its sleep. The first one
# starts as this module loads, so that by a run's first step (data loaded, kernels compiled) its window
# has usually passed; one started by a short fit serves a later one, unless older than a decision is reused.
_look: MachineLoad | None = MachineLoad(window_s=DECIDE_S)


def _side_look() -> MachineLoad | None:
    """A look at the machine whose :data:`DECIDE_S` window has passed (then used up), or None
    (one is started, or still under way)."""
    global _look
    now = time.monotonic()
    if _look is None or now - _look.first_at > DECISION_REUSE_S:
        _look = MachineLoad(window_s=DECIDE_S)
    if now < _look.first_at:
        return None
    look, _look = _look, None
    return look


def _decided(usable: int, load: MachineLoad) -> int:
    """The free cores ``load`` shows (at least one), kept for later runs to reuse."""
    global _last_decision
    free = max(1, usable - _taken(load.others()))
    _last_decision = (time.monotonic(), free)
    return free


class _Policy:
    """The active policy: OpenBLAS's controllers, the ceiling, the current count, and either the
    cores this run uses (``cores``; ``None`` in the run mode until its first large GEMM) or the load
    monitor (adaptive mode)."""

    def __init__(self, controllers, ceiling: int, mode: str | int = "run", cores: int | None = None, numba=None):
        self.controllers = controllers
        self.numba = numba  # the numba module when loaded: its parallel loops get the run's cores
        self.ceiling = ceiling
        self.current = None
        self.usable = min(usable_cores(), ceiling)
        self.load = MachineLoad() if mode == "adaptive" else None
        if cores is not None:  # a continued or resumed run: the count it ran with
            self.cores = max(1, min(int(cores), self.usable))
        elif isinstance(mode, int):
            self.cores = min(mode, self.usable)
        elif mode in ("shape", "adaptive") or self.usable < 2:
            self.cores = self.usable
        else:
            self.cores = None
        self.numba_ceiling = numba.get_num_threads() if numba is not None else None
        self._set_numba_threads()
        self.side: bool | None = None  # whether a second core is free for side jobs (decided at the first)
        self.pending: SideJob | None = None  # handed over, not started: waits for a one-thread moment
        self.running: SideJob | None = None
        self._worker: _SideWorker | None = None

    def _set_numba_threads(self) -> None:
        """Numba's parallel loops on the run's cores (one until they are known), set once per
        decision rather than around every Adam step (~9 us a call)."""
        if self.numba is not None:
            self.numba.set_num_threads(numba_threads(min(self.cores or 1, self.numba_ceiling)))

    def _want(self, m: int, n: int, k: int) -> int:
        """The threads for this GEMM (the run mode's one look at its first large GEMM)."""
        if self.cores is None and gemm_threads(m, n, k, self.usable, 0.0) > 1:
            self.cores = free_cores(self.usable)
            self._set_numba_threads()
            if self.side:  # decided on an earlier look: a core another program took since is not free
                self.side = self.cores >= 2
        if self.cores is None or self.cores < 2:
            return 1
        others = self.load.others() if self.load is not None else 0.0
        return gemm_threads(m, n, k, self.cores, others)

    def _set_blas_threads(self, want: int) -> None:
        if want != self.current:
            for lib in self.controllers:
                lib.set_num_threads(want)
            self.current = want

    def before_gemm(self, m: int, n: int, k: int) -> None:
        want = self._want(m, n, k)
        if want > 1:
            self.claim()
        elif self.pending is not None:
            self.start_pending()
        self._set_blas_threads(want)

    def split_parts(self, m: int, n: int, k: int) -> int:
        want = self._want(m, n, k)
        if want < 2 or self.numba is None or self.numba.get_num_threads() < want:
            return 1
        self.claim()
        self._set_blas_threads(1)
        return want

    # ---------------------------------------------------------------- the side core
    def side_core_free(self) -> bool:
        """Whether a side job may run on a core of its own now: the run's cores are two or more; in
        the adaptive mode, also what other programs hold now. Before a GEMM has counted the run's
        cores (a small network's never do), a recent look counts, or one started here: it does not
        sleep like :func:`free_cores` (0.2 s would cost a short fit more than the side core saves),
        so the first batches (:data:`DECIDE_S`) go without side jobs. The answer binds nothing: side jobs change
        no result."""
        if not SIDE_CORE:
            return False
        if self.side is None:
            recent = _recent_decision()
            if self.usable < 2:
                self.side = False
            elif self.cores is not None:
                self.side = self.cores >= 2
            elif recent is not None:
                self.side = min(self.usable, recent) >= 2
            else:
                look = _side_look()
                if look is None:
                    return False
                self.side = _decided(self.usable, look) >= 2
        if self.side and self.load is not None:
            return (self.cores or self.usable) - _taken(self.load.others()) >= 2
        return self.side

    def busy(self) -> bool:
        """A side job is handed over and not yet waited for (one at a time)."""
        return self.pending is not None or self.running is not None

    def hand_over(self, job: SideJob) -> None:
        job._policy = self
        self.pending = job

    def start_pending(self) -> None:
        job, self.pending = self.pending, None
        if self._worker is None:
            self._worker = _SideWorker()
        self._worker.start(job)
        self.running = job

    def claim(self) -> None:
        """Every core is needed next: a running side job finishes first (a pending one stays pending)."""
        if self.running is not None:
            job, self.running = self.running, None
            job._finished()  # the error, if any, is raised by job.wait()

    def close(self) -> None:
        self.claim()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


_active: _Policy | None = None


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries loaded now ([] without threadpoolctl).
    Looked up on every entry to :func:`blas_policy` (a few ms): a library loaded since counts too."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay correct without it
        return []
    import numpy  # noqa: F401 - numpy's BLAS must be loaded before it is looked for

    return list(ThreadpoolController().select(user_api="blas").lib_controllers)


def policy_active() -> bool:
    """Whether a :func:`blas_policy` block is active (it has set Numba's thread count too)."""
    return _active is not None


def before_gemm(m: int, n: int, k: int) -> None:
    """Set the BLAS thread count for the next ``(m × k) @ (k × n)`` GEMM; nothing outside :func:`blas_policy`."""
    if _active is not None:
        _active.before_gemm(m, n, k)


def split_parts(m: int, n: int, k: int) -> int:
    """Into how many parts a caller's own parallel loop may split an ``(m × k) @ (k × n)`` GEMM, each
    part one BLAS call on one thread: the threads the policy gives this GEMM, when Numba's loops run on
    as many (:func:`numba_threads`). Then BLAS is set to one thread and a running side job has
    finished. 1 (BLAS as usual) outside :func:`blas_policy`."""
    return _active.split_parts(m, n, k) if _active is not None else 1


def one_thread_next() -> None:
    """The main thread's next work runs on one core (a serial kernel instead of a GEMM): a side job
    handed over and waiting for such a moment starts now, as at a one-thread GEMM."""
    if _active is not None and _active.pending is not None:
        _active.start_pending()


# Off: every side job runs where it is waited for (a switch for tests and comparisons).
SIDE_CORE = True


class SideJob:
    """``fn(*args)`` handed to the side core by :func:`beside`. It must not call GEMMs (the policy's
    thread counts belong to the main thread); :meth:`wait` returns once it has run."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args
        self._policy: _Policy | None = None
        self._started = False
        self._done = threading.Lock()  # held until the worker has run the job
        self._done.acquire()
        self._error: BaseException | None = None
        self._waited = False

    def _run(self) -> None:  # on the worker
        try:
            self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc
        finally:
            self._done.release()

    def _finished(self) -> None:
        self._done.acquire()
        self._done.release()

    @property
    def ran_beside(self) -> bool:
        """Whether the side core ran it (False: it never started, and :meth:`wait` runs it here)."""
        return self._started

    def wait(self) -> None:
        """Finish the job (here, if it never started) and raise its error, if it had one."""
        if self._waited:
            return
        self._waited = True
        policy = self._policy
        if policy is not None and policy.pending is self:
            policy.pending = None
        if policy is not None and policy.running is self:
            policy.running = None
        if not self._started:
            self.fn(*self.args)
            return
        self._finished()
        if self._error is not None:
            raise self._error


class _SideWorker:
    """The side core's thread. Not ``concurrent.futures``: its executor cost 14–23 µs of the main
    thread per job, much of it its worker's Python contending for the GIL; a lock each way costs
    less (bench/results/cpu-2core-2026-11-30-side/)."""

    def __init__(self):
        self._go = threading.Lock()
        self._go.acquire()
        self._job: SideJob | None = None
        self._thread = threading.Thread(target=self._loop, name="xpnet-side", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                return
            job._run()

    def start(self, job: SideJob) -> None:
        job._started = True
        self._job = job
        self._go.release()

    def stop(self) -> None:
        self._job = None
        self._go.release()
        self._thread.join()


class SideSwitch:
    """Whether gathering ahead on the side core pays off here and now, found by trying both ways. On
    the CI VM the side core takes 0.8x off a small network's step in some phases and makes it 1.03-1.15x
    slower in others, when the second vCPU's activity slows the first one's; the phases switch over
    minutes (bench/results/cpu-2core-2026-11-30-side/). So the last steps of every :attr:`PERIOD` run
    the other way (a probe), and :attr:`PROBE` of them are compared with the :attr:`PROBE` steps just
    before the probe (not with the whole period: a run's first steps are slow, warming up, and the
    machine drifts): when the probe was faster (median, by :attr:`MARGIN`), the other way becomes the
    rule. A probe of the side core after a period without it runs :attr:`SETTLE` steps longer, not
    compared: the idle side core's first jobs start late, and counted they bias the comparison against
    it (bench/results/cpu-2core-2026-12-01-rerun/). Probing costs little: a few steps in hundreds.
    Nothing computed depends on it. The caller asks :meth:`use` before each step and :meth:`record`
    each step's time and whether its batch was gathered ahead. Steps count by what happened (no side
    job where no core was free), and a comparison in which either way has fewer than half a probe's
    steps decides nothing."""

    PERIOD = 512
    PROBE = 16
    SETTLE = 8
    MARGIN = 0.97

    def __init__(self):
        self.on = True
        self._i = 0
        self._times: dict[bool, list[float]] = {True: [], False: []}

    def _probe_start(self) -> int:
        """The period's first step of the probe."""
        return self.PERIOD - self.PROBE - (0 if self.on else self.SETTLE)

    def use(self) -> bool:
        """Whether the coming step hands its next batch to the side core."""
        return self.on != (self._i >= self._probe_start())

    def record(self, seconds: float, ahead: bool) -> None:
        """The step's time, and whether its own batch had been gathered ahead. The probe's first step
        (its batch came the rule's way), or its first SETTLE steps, are left out."""
        start = self._probe_start()
        if start - self.PROBE <= self._i < start or self._i >= start + (1 if self.on else self.SETTLE):
            self._times[ahead].append(seconds)
        self._i += 1
        if self._i == self.PERIOD:
            on, off = self._times[True], self._times[False]
            if min(len(on), len(off)) >= self.PROBE // 2:
                from statistics import median  # noqa: PLC0415 - here, not at start-up (it loads fractions, decimal)

                best = median(on) < median(off)
                quick, slow = (on, off) if best else (off, on)
                if best != self.on and median(quick) < self.MARGIN * median(slow):
                    self.on = best
            self._i = 0
            on.clear()
            off.clear()


def beside(fn, *args) -> SideJob | None:
    """Run ``fn(*args)`` on a second core while this thread goes on: it starts at the next one-thread
    GEMM and has finished before any GEMM or parallel loop takes every core. Returns the job (call
    :meth:`SideJob.wait` before using what it writes), or ``None`` when no core is free for it
    (outside :func:`blas_policy`, one usable core, other programs busy, another side job not yet waited
    for): the caller then does the work itself."""
    if _active is None or _active.busy() or not _active.side_core_free():
        return None
    job = SideJob(fn, args)
    _active.hand_over(job)
    return job


def claim_cores(n: int) -> None:
    """Before a parallel loop on ``n`` threads (the fused Adam): with ``n > 1``, a running side job finishes first."""
    if _active is not None and n > 1:
        _active.claim()


@contextlib.contextmanager
def blas_policy(cores: int | None = None):
    """Choose BLAS threads per GEMM inside this block (see the module docstring); restores the
    libraries' thread counts on exit. Nested blocks share the outer one's policy.

    ``cores``: the count a run recorded (its policy's ``cores`` after the block), to continue it
    rounding alike; ``None`` decides as the mode says."""
    global _active
    if _active is not None:
        yield _active
        return
    controllers = _blas_controllers()
    saved = [lib.get_num_threads() for lib in controllers]
    mode = policy_mode()
    numba = sys.modules.get("numba")  # Numba's count is per calling thread: restored on exit (numba_ceiling)
    policy = _active = _Policy(controllers, max(saved, default=1), mode,
                               None if mode == "adaptive" or isinstance(mode, int) else cores, numba)
    try:
        yield policy
    finally:
        policy.close()
        _active = None
        for lib, n in zip(controllers, saved):
            lib.set_num_threads(n)
        if numba is not None:
            numba.set_num_threads(policy.numba_ceiling)
