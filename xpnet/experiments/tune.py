"""``xpnet tune``: hyperparameter search by grid, random sampling or Optuna (TPE + median pruning).

Searched: learning rate (log scale), hidden size (one layer), batch size, L2 strength,
dropout and optimizer. The objective is the validation accuracy after the last epoch
(higher is better). ``grid`` enumerates the Cartesian product of ``DEFAULT_GRID`` (or of
the values given); ``random`` draws ``trials`` configurations inside ``DEFAULT_SPACE`` (or
the bounds given) from a seeded generator; ``bayes`` lets Optuna's TPE sampler choose and
its MedianPruner stop trials whose per-epoch validation accuracy is below the median of
earlier trials at the same epoch. With ``storage`` (``sqlite:///study.db`` on one machine,
``postgresql://user:pw@host/db`` across machines) and a ``study_name`` any number of workers
work on one study of ``trials`` trials in all (random or bayes); see docs/distributed.md.

Outputs in ``out``: ``trials.json``/``trials.csv`` (every trial of this process, or of the
whole study for bayes), ``best.json`` (best configuration and score) and
``best_model.npz`` (its trained network).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from xpnet.errors import ConfigError

PARAMS = ("lr", "hidden", "batch_size", "l2", "dropout", "optimizer")
OPTIMIZER_NAMES = ("sgd", "momentum", "rmsprop", "adam")

# grid: 2 × 2 × 1 × 1 × 2 × 1 = 8 configurations
DEFAULT_GRID = {
    "lr": [1e-3, 3e-3],
    "hidden": [128, 512],
    "batch_size": [128],
    "l2": [0.0],
    "dropout": [0.0, 0.2],
    "optimizer": ["adam"],
}
# random / bayes: ("log", lo, hi) log-uniform, ("float", lo, hi) uniform, ("choice", [...])
DEFAULT_SPACE = {
    "lr": ("log", 1e-4, 0.3),
    "hidden": ("choice", [64, 128, 256, 512, 1024]),
    "batch_size": ("choice", [32, 64, 128, 256]),
    "l2": ("log", 1e-5, 1.0),
    "dropout": ("float", 0.0, 0.5),
    "optimizer": ("choice", list(OPTIMIZER_NAMES)),
}
DEFAULT_HEARTBEAT = 10  # seconds; a worker silent for 2 heartbeats is declared dead and its trial retried
MAX_RETRY = 3
_FINISHED = ("COMPLETE", "PRUNED")
TRIAL_FIELDS = ["number", "state", "value", *PARAMS, "epochs_run", "seconds", "retry_of"]


# ---------------------------------------------------------------------------- search spaces
def build_space(overrides: dict | None = None) -> dict:
    """``DEFAULT_SPACE`` with user values: 1 value pins a parameter; 2 numbers are (lo, hi) for
    lr/l2/dropout; any values are the choices for hidden/batch_size/optimizer."""
    space = dict(DEFAULT_SPACE)
    for name, values in (overrides or {}).items():
        if not values:
            continue
        values = list(values)
        if len(values) == 1:
            space[name] = ("choice", values)
        elif name in ("lr", "l2", "dropout"):
            if len(values) != 2 or not values[0] < values[1]:
                raise ConfigError(f"--{name.replace('_', '-')} for random/bayes search takes one value or LO,HI bounds, got {values}")
            kind = space[name][0]
            if kind == "log" and values[0] <= 0:
                kind = "float"
            space[name] = (kind, float(values[0]), float(values[1]))
        else:
            space[name] = ("choice", values)
    return space


def grid_configs(grid: dict | None = None) -> list[dict]:
    """Every combination of ``grid`` (missing parameters from ``DEFAULT_GRID``), in a stable order."""
    full = dict(DEFAULT_GRID)
    full.update({k: list(v) for k, v in (grid or {}).items() if v})
    return [dict(zip(PARAMS, combo)) for combo in itertools.product(*(full[p] for p in PARAMS))]


def sample_config(space: dict, rng: np.random.Generator) -> dict:
    config = {}
    for name in PARAMS:
        kind, *args = space[name]
        if kind == "log":
            lo, hi = args
            config[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        elif kind == "float":
            config[name] = float(rng.uniform(*args))
        else:
            choices = args[0]
            config[name] = choices[int(rng.integers(len(choices)))]
    return _plain(config)


def random_configs(n: int, space: dict | None = None, seed: int = 0) -> list[dict]:
    """``n`` configurations drawn from ``space`` with a generator seeded by ``seed`` (reproducible)."""
    rng = np.random.default_rng(seed)
    space = space or DEFAULT_SPACE
    return [sample_config(space, rng) for _ in range(int(n))]


def suggest_config(trial, space: dict) -> dict:
    """The same space through an Optuna trial's ``suggest_*`` calls."""
    config = {}
    for name in PARAMS:
        kind, *args = space[name]
        if kind == "log":
            config[name] = trial.suggest_float(name, args[0], args[1], log=True)
        elif kind == "float":
            config[name] = trial.suggest_float(name, args[0], args[1])
        else:
            config[name] = trial.suggest_categorical(name, list(args[0]))
    return _plain(config)


def _plain(config: dict) -> dict:
    out = {}
    for k, v in config.items():
        if k in ("hidden", "batch_size"):
            out[k] = int(v)
        elif k == "optimizer":
            out[k] = str(v)
        else:
            out[k] = float(v)
    return out


def check_config(config: dict) -> None:
    if config["optimizer"] not in OPTIMIZER_NAMES:
        raise ConfigError(f"unknown optimizer {config['optimizer']!r}: choose from {', '.join(OPTIMIZER_NAMES)}")
    if not 0 <= config["dropout"] < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {config['dropout']}")
    if config["lr"] <= 0 or config["l2"] < 0 or config["hidden"] < 1 or config["batch_size"] < 1:
        raise ConfigError(f"invalid configuration {config}")


# ---------------------------------------------------------------------------- one trial
def train_trial(config: dict, data: dict, epochs: int, seed: int = 0, callbacks=()):
    """Train one configuration; returns ``(net, history, value)`` with value = last val accuracy."""
    from xpnet.nn.model import MLP
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer

    check_config(config)
    sizes = [data["Xtr"].shape[1], config["hidden"], len(data["class_names"])]
    net = MLP(sizes, dropout=config["dropout"], seed=seed)
    net.normalizer, net.class_names = data["normalizer"], list(data["class_names"])
    trainer = Trainer(net, get_optimizer(config["optimizer"], config["lr"]), data["Xtr"], data["ytr"],
                      batch_size=config["batch_size"], val=(data["Xv"], data["yv"]), l2=config["l2"], seed=seed,
                      callbacks=list(callbacks))
    history = trainer.run(epochs)
    return net, history, history.records[-1]["val_acc"]


class _Best:
    """Keeps ``best.json`` / ``best_model.npz`` in ``out`` for the best value seen (also by other workers)."""

    def __init__(self, out: Path, method: str):
        self.out, self.method = out, method

    def current(self) -> float:
        try:
            return float(json.loads((self.out / "best.json").read_text())["value"])
        except (OSError, ValueError, KeyError, TypeError):
            return -math.inf

    def offer(self, value, config, net, number, epochs, data) -> bool:
        from xpnet.fileio import atomic_write
        from xpnet.training.trainer import evaluate

        if value is None or not value > self.current():
            return False
        test = evaluate(net, data["Xte"], data["yte"])
        net.save(self.out / "best_model.npz")
        best = {"method": self.method, "trial": number, "value": value, "metric": "val_acc", "config": config,
                "epochs": epochs, "test_acc": test["accuracy"], "dataset": data["name"], "model": "best_model.npz"}
        atomic_write(self.out / "best.json", lambda fh: json.dump(best, fh, indent=1), mode="w")
        return True


# ---------------------------------------------------------------------------- searches
def run_tune(method: str, data: dict, out, trials: int = 20, epochs: int = 3, timeout: float | None = None,
             seed: int = 0, grid: dict | None = None, space: dict | None = None, storage: str | None = None,
             study_name: str | None = None, say=print, heartbeat: float | None = DEFAULT_HEARTBEAT) -> list[dict]:
    """Run a search; returns the trial rows (see ``TRIAL_FIELDS``), best first.

    With ``storage`` (an RDB URL: ``sqlite:///f.db``, ``postgresql://...``) and ``study_name``,
    any number of processes on any number of machines work on one study (random or bayes):
    ``trials`` is the study's total, and a worker silent for two ``heartbeat`` periods has its
    trial marked FAIL and retried by another."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if storage is not None and method == "grid":
        raise ConfigError("--storage works with --method random or bayes; for a grid across machines use "
                          "xpnet sweep --storage")
    if method == "bayes" or (method == "random" and storage is not None):
        rows = _run_bayes(data, out, trials, epochs, timeout, seed, space or DEFAULT_SPACE, storage, study_name, say,
                          method=method, heartbeat=heartbeat)
    elif method in ("grid", "random"):
        configs = grid_configs(grid) if method == "grid" else random_configs(trials, space, seed)
        rows = _run_list(method, configs, data, out, epochs, timeout, seed, say)
    else:
        raise ConfigError(f"unknown search method {method!r}: choose grid, random or bayes")
    rows = leaderboard(rows)
    write_trials(out, rows, method)
    return rows


def _run_list(method, configs, data, out, epochs, timeout, seed, say) -> list[dict]:
    best = _Best(out, method)
    rows, t0 = [], time.perf_counter()
    for number, config in enumerate(configs):
        if timeout is not None and time.perf_counter() - t0 > timeout:
            say(f"timeout after {time.perf_counter() - t0:.0f} s: {len(configs) - number} trial(s) not run")
            break
        start = time.perf_counter()
        net, history, value = train_trial(config, data, epochs, seed)
        row = dict(config, number=number, state="COMPLETE", value=value, epochs_run=len(history),
                   seconds=time.perf_counter() - start)
        rows.append(row)
        marker = " *best*" if best.offer(value, config, net, number, epochs, data) else ""
        say(f"trial {number + 1}/{len(configs)}: {describe(config)} → val {value * 100:.2f}% "
            f"({row['seconds']:.1f} s){marker}")
    return rows


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("--method bayes and --storage need Optuna: pip install 'xpnet[tune]'") from None
    return optuna




def storage_url(url: str) -> str:
    """A plain ``postgresql://`` URL with the PostgreSQL driver that is installed (psycopg 3 or
    psycopg2): SQLAlchemy's default for a bare ``postgresql://`` depends on its version."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"--storage {redact(url)!r} is not a database URL (e.g. sqlite:///study.db or "
                          "postgresql://user:password@host/db)")
    if scheme in ("postgresql", "postgres"):
        import importlib.util  # noqa: PLC0415

        for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"{dialect}://{rest}"
        raise ConfigError("a postgresql:// storage needs a PostgreSQL driver: pip install 'xpnet[tune]' (psycopg)")
    return url


def redact(url) -> str:
    """``url`` without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def open_storage(optuna, url: str | None, heartbeat: float | None = DEFAULT_HEARTBEAT, retry: bool = True):
    """Optuna's RDB storage for ``url`` with a heartbeat (``heartbeat`` seconds; 0/None: off) whose
    stale trials are marked FAIL and, with ``retry``, re-queued with the same parameters."""
    if url is None:
        return None
    import warnings  # noqa: PLC0415

    kwargs = {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat/retry API
    if heartbeat:
        interval = max(1, int(round(heartbeat)))
        kwargs.update(heartbeat_interval=interval, grace_period=2 * interval)
        if retry:
            import inspect  # noqa: PLC0415

            if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters:
                kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)
            else:  # Optuna < 4.6
                kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(MAX_RETRY)
    engine = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}
    last = None
    for attempt in range(5):  # workers starting together race to create the schema
        try:
            import warnings  # noqa: PLC0415

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
    raise ConfigError(f"cannot open the storage {redact(url)}: {redact(str(last).splitlines()[0]) if str(last) else type(last).__name__}")


def retried_from(optuna, trial):
    """The number of the trial that ``trial`` retries (None for a fresh one)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    import warnings  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.retried_trial_number(trial)


def seed_heartbeats(study, seen: set, grace) -> None:
    """Give every RUNNING trial older than ``grace`` seconds one heartbeat, once per worker.

    Optuna never fails a RUNNING trial that has no heartbeat at all: a worker killed between
    creating its trial and its heartbeat thread's first beat would leave the trial RUNNING
    forever. One beat recorded here makes such a trial go stale ``grace`` seconds later; for a
    live trial it only refreshes the beat its own worker keeps recording."""
    import datetime  # noqa: PLC0415

    if not grace:
        return
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING" and t._trial_id not in seen and t.datetime_start is not None:
            start = t.datetime_start.replace(tzinfo=None)
            if (now - start).total_seconds() > grace:
                seen.add(t._trial_id)
                study._storage.record_heartbeat(t._trial_id)


def _run_bayes(data, out, trials, epochs, timeout, seed, space, storage, study_name, say, method="bayes",
               heartbeat=DEFAULT_HEARTBEAT) -> list[dict]:
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best = _Best(out, method)
    # Workers sharing a storage must not draw the same start-up points: seed only single-process studies.
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed if storage is None else None)
        pruner = optuna.pruners.NopPruner()
    else:
        sampler = optuna.samplers.TPESampler(seed=seed if storage is None else None)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    rdb = open_storage(optuna, storage, heartbeat)
    study = _open_study(optuna, sampler, pruner, rdb, study_name, storage)
    seconds = {}

    def objective(trial):
        config = suggest_config(trial, space)
        start = time.perf_counter()
        again = retried_from(optuna, study._storage.get_trial(trial._trial_id))  # needs a FrozenTrial
        if again is not None:
            say(f"trial {trial.number}: retries trial {again} (its worker stopped sending heartbeats)")

        def report(record, trainer):
            trial.report(record["val_acc"], record["epoch"] - 1)
            if trial.should_prune():
                seconds[trial.number] = time.perf_counter() - start
                say(f"trial {trial.number}: {describe(config)} pruned after epoch {record['epoch']} "
                    f"(val {record['val_acc'] * 100:.2f}%)")
                raise optuna.TrialPruned()

        net, history, value = train_trial(config, data, epochs, seed, callbacks=[report])
        seconds[trial.number] = time.perf_counter() - start
        trial.set_user_attr("epochs_run", len(history))
        trial.set_user_attr("seconds", seconds[trial.number])
        marker = " *best*" if best.offer(value, config, net, trial.number, epochs, data) else ""
        say(f"trial {trial.number}: {describe(config)} → val {value * 100:.2f}% ({seconds[trial.number]:.1f} s){marker}")
        return value

    if rdb is None:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=())
    else:
        _work(optuna, study, objective, trials, timeout, heartbeat, say)
    rows = []
    for t in study.trials:
        config = dict(t.params)
        if set(config) != set(PARAMS):
            continue
        rows.append(dict(_plain(config), number=t.number, state=t.state.name, value=t.value,
                         epochs_run=t.user_attrs.get("epochs_run", len(t.intermediate_values)),
                         seconds=t.user_attrs.get("seconds", seconds.get(t.number)),
                         retry_of=retried_from(optuna, t)))
    return rows


def _work(optuna, study, objective, total, timeout, heartbeat, say) -> None:
    """One worker of a shared study: run trials until ``total`` trials of the study have finished.

    A worker starts a trial only when finished + running trials fall short of ``total`` or a
    retry is waiting; otherwise it waits (a running trial's worker may still die, and its
    retry needs a live worker). Stale trials are failed (and re-queued) by every worker."""
    import warnings  # noqa: PLC0415

    t0 = time.perf_counter()
    poll = min(1.0, heartbeat / 2) if heartbeat else 1.0
    grace = 2 * max(1, round(heartbeat)) if heartbeat else None
    seeded: set = set()
    while True:
        seed_heartbeats(study, seeded, grace)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state.name in _FINISHED for t in trials)
        running = sum(t.state.name == "RUNNING" for t in trials)
        waiting = sum(t.state.name == "WAITING" for t in trials)
        if done >= total:
            say(f"study {study.study_name}: {done} trial(s) finished (--trials {total}); this worker stops")
            return
        if timeout is not None and time.perf_counter() - t0 > timeout:
            say(f"timeout after {time.perf_counter() - t0:.0f} s: {total - done} trial(s) of the study not finished")
            return
        if waiting or done + running < total:
            study.optimize(objective, n_trials=1, catch=())
        elif not heartbeat:
            return  # nobody can tell a dead worker from a slow one: leave the running trials to their workers
        else:
            time.sleep(poll)


def _open_study(optuna, sampler, pruner, storage, study_name, url=None, attempts: int = 8):
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


# ---------------------------------------------------------------------------- output
def describe(config: dict) -> str:
    return (f"{config['optimizer']} lr {config['lr']:.3g}, {config['hidden']} hidden, batch {config['batch_size']}, "
            f"l2 {config['l2']:.3g}, dropout {config['dropout']:.2f}")


def leaderboard(rows: list[dict]) -> list[dict]:
    """Completed trials by value (best first), then the others."""
    done = sorted((r for r in rows if r.get("value") is not None and r.get("state") == "COMPLETE"),
                  key=lambda r: (-r["value"], r["number"]))
    rest = sorted((r for r in rows if r not in done), key=lambda r: r["number"])
    return done + rest


def leaderboard_table(rows: list[dict], top: int = 10) -> str:
    lines = ["| rank | trial | val acc | optimizer | lr | hidden | batch | L2 | dropout | s |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for rank, r in enumerate([r for r in rows if r.get("state") == "COMPLETE"][:top], 1):
        secs = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "–"
        lines.append(f"| {rank} | {r['number']} | {r['value'] * 100:.2f}% | {r['optimizer']} | {r['lr']:.3g} | "
                     f"{r['hidden']} | {r['batch_size']} | {r['l2']:.3g} | {r['dropout']:.2f} | {secs} |")
    return "\n".join(lines)


def write_trials(out: Path, rows: list[dict], method: str) -> None:
    from xpnet.fileio import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRIAL_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "trials.json", lambda fh: json.dump({"meta": {"kind": "tune", "method": method}, "trials": rows},
                                                             fh, indent=1), mode="w")
    atomic_write(out / "trials.csv", lambda fh: fh.write(buf.getvalue()), mode="w")
