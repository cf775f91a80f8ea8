"""Workers sharing one Optuna study in a database (``xpnet tune --storage``, ``xpnet sweep --storage``).

Only Optuna's public API: the storage is ``optuna.storages.RDBStorage(url, heartbeat_interval=…,
grace_period=…)`` with Optuna's retry callback, so a worker that stops beating has its trial marked
FAIL by the next live worker (``optuna.storages.fail_stale_trials``) and re-queued with the same
parameters; grids are ``optuna.samplers.GridSampler`` studies. What xpnet adds is :func:`work`, the
loop deciding when a worker starts a trial, waits (a running trial's worker may still die and its
retry needs a live worker) or stops.

The one gap Optuna leaves: a trial gets its first heartbeat when its heartbeat thread starts, just
after ``study.ask()`` created it. A worker killed in that instant leaves a RUNNING trial without a
heartbeat, which Optuna never fails; the others then wait for it until ``--timeout``
(docs/distributed.md). Reaching into the storage to give such a trial a beat, as xpnet once did,
needs private attributes.
"""

from __future__ import annotations

import re
import time
import warnings

from xpnet.errors import ConfigError

DEFAULT_HEARTBEAT = 10  # seconds; a worker silent for 2 heartbeats is declared dead and its trial retried
MAX_RETRY = 3
FINISHED = ("COMPLETE", "PRUNED")


def import_optuna():
    """Optuna, or one ConfigError naming the extra that brings it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("--method bayes and --storage need Optuna: pip install 'xpnet[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(url: str) -> str:
    """A plain ``postgresql://`` URL with the PostgreSQL driver that is installed (psycopg 3 or
    psycopg2): SQLAlchemy's default for a bare ``postgresql://`` depends on its version."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"--storage {redact(url)!r} is not a database URL (e.g. sqlite:///study.db or "
                          "postgresql://user:password@host/db)")
    if scheme in ("postgresql", "postgres"):
        import importlib.util

        for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"{dialect}://{rest}"
        raise ConfigError("a postgresql:// storage needs a PostgreSQL driver: pip install 'xpnet[tune]' (psycopg)")
    return url


def redact(url) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def _retry_callback(optuna):
    """Optuna's callback that re-queues a stale trial with its parameters, under the keyword this
    Optuna version takes: ``heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback`` since
    4.6 (``failed_trial_callback``/``RetryFailedTrialCallback`` are deprecated there), before that
    ``failed_trial_callback=RetryFailedTrialCallback``."""
    import inspect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental"
        if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters:
            return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)}
        return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(MAX_RETRY)}


def open_storage(optuna, url: str | None, heartbeat: float | None = DEFAULT_HEARTBEAT, retry: bool = True):
    """Optuna's RDB storage for ``url`` with a heartbeat every ``heartbeat`` seconds (0/None: off) and
    a grace period of two; with ``retry``, a stale trial is re-queued with the same parameters."""
    if url is None:
        return None
    kwargs = {}
    if heartbeat:
        interval = max(1, int(round(heartbeat)))
        kwargs.update(heartbeat_interval=interval, grace_period=2 * interval)
        if retry:
            kwargs.update(_retry_callback(optuna))
    engine = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}
    last = None
    for attempt in range(5):  # workers starting together race to create the schema
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat options are "experimental"
                return optuna.storages.RDBStorage(storage_url(url), engine_kwargs=engine, **kwargs)
        except ConfigError:
            raise
        except ImportError as exc:
            raise ConfigError(f"cannot open the storage {redact(url)}: {str(exc).splitlines()[0]} "
                              "(pip install 'xpnet[tune]')") from None
        except Exception as exc:  # sqlalchemy OperationalError: server down, bad password, locked...
            last = exc
            time.sleep(0.1 * (attempt + 1))
    raise ConfigError(f"cannot open the storage {redact(url)}: "
                      f"{redact(str(last).splitlines()[0]) if str(last) else type(last).__name__}")


def open_study(optuna, sampler, pruner, storage, study_name, url=None, attempts: int = 8):
    """Create or join the study; retried because workers starting together race to create it."""
    for attempt in range(attempts):
        try:
            return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, storage=storage,
                                       study_name=study_name, load_if_exists=True)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"cannot open the Optuna study (storage {redact(url)}): {redact(str(exc).splitlines()[0])}") from None
        except Exception as exc:  # sqlalchemy OperationalError/IntegrityError from a concurrent creator
            if storage is None or attempt == attempts - 1:
                raise ConfigError(f"cannot open the Optuna study (storage {redact(url)}): {redact(str(exc).splitlines()[0])}") from None
            time.sleep(0.2 * (attempt + 1))


def retried_from(optuna, trial):
    """The number of the trial that ``trial`` (a FrozenTrial) retries, or None for a fresh one."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.retried_trial_number(trial)


def frozen(study, trial):
    """The FrozenTrial of a running ``optuna.Trial`` (its system attributes say whether it is a retry)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def fail_stale(optuna, study) -> None:
    """Mark the trials of dead workers FAIL (Optuna re-queues them through the storage's callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def work(optuna, study, objective, plan, timeout: float | None, heartbeat: float | None, say) -> None:
    """One worker of a shared study: run trials one at a time until ``plan`` says the study is done.

    ``plan(trials)`` gets the study's trials and returns ``(done, startable, summary)``: whether the
    study is finished, whether a new trial may start now (a retry is WAITING, or the running and
    finished trials fall short of the work), and the line to print when stopping. When none may start,
    the worker waits while others run (one may die, and its retry needs a live worker); without a
    heartbeat nobody can tell a dead worker from a slow one, so it stops instead."""
    t0 = time.perf_counter()
    poll = min(1.0, heartbeat / 2) if heartbeat else 1.0
    while True:
        fail_stale(optuna, study)
        done, startable, summary = plan(study.get_trials(deepcopy=False))
        if done:
            say(f"study {study.study_name}: {summary}; this worker stops")
            return
        if timeout is not None and time.perf_counter() - t0 > timeout:
            say(f"timeout after {time.perf_counter() - t0:.0f} s: {summary}")
            return
        if startable:
            study.optimize(objective, n_trials=1, catch=())
        elif not heartbeat:
            say(f"study {study.study_name}: {summary}; the running trials are left to their workers (no heartbeat)")
            return
        else:
            time.sleep(poll)


def count_plan(total: int):
    """The plan of a study of ``total`` trials (tune): finished ones count, PRUNED included."""
    def plan(trials):
        states = [t.state.name for t in trials]
        done = sum(s in FINISHED for s in states)
        running, waiting = states.count("RUNNING"), states.count("WAITING")
        return done >= total, bool(waiting) or done + running < total, f"{done} trial(s) finished (--trials {total})"

    return plan


def grid_plan(keys, param: str = "run_id"):
    """The plan of a grid study (sweep): done when every key has a COMPLETE trial."""
    keys = set(keys)

    def plan(trials):
        complete = {t.params.get(param) for t in trials if t.state.name == "COMPLETE"}
        running = {t.params.get(param) for t in trials if t.state.name == "RUNNING"}
        waiting = any(t.state.name == "WAITING" for t in trials)
        todo = keys - complete
        # a RUNNING trial that has not drawn its key yet (params empty) may take any open key
        undrawn = sum(1 for t in trials if t.state.name == "RUNNING" and param not in t.params)
        open_keys = len(todo - running) - undrawn
        return not todo, waiting or open_keys > 0, f"{len(keys & complete)} of {len(keys)} run(s) done"

    return plan


def worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
