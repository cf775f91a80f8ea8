"""``xpnet tune``: hyperparameter search by grid, random sampling or Optuna (TPE + median pruning).

Searched: learning rate (log scale), the network (one label per network: ``"512"``, ``"120-64"``),
batch size, L2 strength, dropout and optimizer. A trial is the command's run config (recipe,
``--config``, seed, epochs) with the trial's values laid over it, trained by
:func:`xpnet.training.recipe.run` on a split prepared once: what is not searched keeps the recipe's
value, and the best trial's config (``best.toml``) retrains to the same weights with ``xpnet train``.
The objective is the validation accuracy after the last epoch (higher is better). ``grid``
enumerates the Cartesian product of ``DEFAULT_GRID`` (or of the values given); ``random`` draws
``trials`` configurations inside ``DEFAULT_SPACE`` (or the bounds given) from a seeded generator;
``bayes`` lets Optuna's TPE sampler choose and its MedianPruner stop trials whose per-epoch
validation accuracy is below the median of earlier trials at the same epoch. With ``storage``
(``sqlite:///study.db`` on one machine, ``postgresql://user:pw@host/db`` across machines) and a
``study_name`` any number of workers work on one study (:mod:`xpnet.experiments.distributed`;
a grid is then Optuna's ``GridSampler``); see docs/distributed.md.

Outputs in ``out``: ``trials.json``/``trials.csv`` (every trial of this process, or of the
whole study), ``best.json`` (best configuration and score), ``best.toml`` (its run config) and
``best_model.npz`` (its trained network).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np

from xpnet import choices
from xpnet.errors import ConfigError
from xpnet.experiments.distributed import DEFAULT_HEARTBEAT

PARAMS = ("lr", "hidden", "batch_size", "l2", "dropout", "optimizer")
# The default space's optimizers: every one but AdamW (give --optimizer adamw to search it).
OPTIMIZER_NAMES = tuple(name for name in choices.OPTIMIZERS if name != "adamw")

# A network is a label: "512" is one hidden layer of 512, "120-64" two layers (Optuna's categorical
# values must be strings or numbers, and the label reads the same in trials.csv).
# grid: 2 × 2 × 1 × 1 × 2 × 1 = 8 configurations
DEFAULT_GRID = {
    "lr": [1e-3, 3e-3],
    "hidden": ["128", "512"],
    "batch_size": [128],
    "l2": [0.0],
    "dropout": [0.0, 0.2],
    "optimizer": ["adam"],
}
# random / bayes: ("log", lo, hi) log-uniform, ("float", lo, hi) uniform, ("choice", [...])
DEFAULT_SPACE = {
    "lr": ("log", 1e-4, 0.3),
    "hidden": ("choice", ["64", "128", "256", "512", "1024"]),
    "batch_size": ("choice", [32, 64, 128, 256]),
    "l2": ("log", 1e-5, 1.0),
    "dropout": ("float", 0.0, 0.5),
    "optimizer": ("choice", list(OPTIMIZER_NAMES)),
}
FINISHED = ("COMPLETE", "PRUNED")
TRIAL_FIELDS = ["number", "state", "value", *PARAMS, "epochs_run", "seconds", "retry_of"]


def network_label(hidden) -> str:
    """``(120, 64)`` or ``"120,64"`` → ``"120-64"``; ``512`` → ``"512"``."""
    from xpnet.training.recipe import _hidden_tuple

    if isinstance(hidden, str):
        hidden = hidden.replace("-", ",")
    return "-".join(str(h) for h in _hidden_tuple(hidden))


# ---------------------------------------------------------------------------- search spaces
def build_space(overrides: dict | None = None) -> dict:
    """``DEFAULT_SPACE`` with user values: 1 value pins a parameter; 2 numbers are (lo, hi) for
    lr/l2/dropout; any values are the choices for hidden/batch_size/optimizer."""
    space = dict(DEFAULT_SPACE)
    for name, values in (overrides or {}).items():
        if not values:
            continue
        values = list(values) if name != "hidden" else [network_label(v) for v in values]
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
    full["hidden"] = [network_label(h) for h in full["hidden"]]
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
        if k == "hidden":
            out[k] = network_label(v)
        elif k == "batch_size":
            out[k] = int(v)
        elif k == "optimizer":
            out[k] = str(v)
        else:
            out[k] = float(v)
    return out


def trial_config(base, config: dict):
    """The run config of one trial: ``base`` (the command's run config) with the trial's values."""
    return base.replace(lr=config["lr"], hidden=network_label(config["hidden"]).replace("-", ","),
                        batch_size=config["batch_size"], l2=config["l2"], dropout=config["dropout"],
                        optimizer=config["optimizer"]).resolve()


# ---------------------------------------------------------------------------- one trial
def train_trial(config: dict, base, split, callbacks=()):
    """Train one configuration through the recipe; returns ``(net, history, value, cfg)`` with value =
    the last epoch's validation accuracy."""
    from xpnet.training.recipe import run

    cfg = trial_config(base, config)
    result = run(cfg, split=split, callbacks=callbacks, evaluate_test=False)
    return result.net, result.history, result.history.records[-1]["val_acc"], cfg


class _Best:
    """Keeps ``best.json``, ``best.toml`` (its run config) and ``best_model.npz`` in ``out`` for the best
    value seen (also by other workers)."""

    def __init__(self, out: Path, method: str):
        self.out, self.method = out, method

    def current(self) -> float:
        try:
            return float(json.loads((self.out / "best.json").read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError, TypeError):
            return -math.inf

    def offer(self, value, config, net, number, cfg, split) -> bool:
        from xpnet.fileio import atomic_write
        from xpnet.training.trainer import evaluate

        if value is None or not value > self.current():
            return False
        test = evaluate(net, split.X_test, split.y_test) if split.X_test is not None else {"accuracy": None}
        net.save(self.out / "best_model.npz")
        best = {"method": self.method, "trial": number, "value": value, "metric": "val_acc", "config": config,
                "epochs": cfg.epochs, "test_acc": test["accuracy"], "dataset": split.name, "model": "best_model.npz",
                "run_config": cfg.to_dict()}
        atomic_write(self.out / "best.toml", lambda fh: fh.write(cfg.to_toml()), mode="w")
        atomic_write(self.out / "best.json", lambda fh: json.dump(best, fh, indent=1), mode="w")
        return True


# ---------------------------------------------------------------------------- searches
def run_tune(method: str, base, split, out, trials: int = 20, timeout: float | None = None,
             grid: dict | None = None, space: dict | None = None, storage: str | None = None,
             study_name: str | None = None, say=print, heartbeat: float | None = DEFAULT_HEARTBEAT) -> list[dict]:
    """Run a search over ``base`` (the command's resolved :class:`RunConfig`) on ``split`` (prepared
    once, with ``base``'s seed); returns the trial rows (see ``TRIAL_FIELDS``), best first.

    With ``storage`` (an RDB URL: ``sqlite:///f.db``, ``postgresql://...``) and ``study_name``,
    any number of processes on any number of machines work on one study: ``trials`` is the study's
    total (a grid: the grid, through Optuna's ``GridSampler``), and a worker silent for two
    ``heartbeat`` periods has its trial marked FAIL and retried by another."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if method not in ("grid", "random", "bayes"):
        raise ConfigError(f"unknown search method {method!r}: choose grid, random or bayes")
    seed = base.seed
    if method == "bayes" or storage is not None:
        if method == "grid":
            configs = grid_configs(grid)
            space = {name: ("choice", sorted({c[name] for c in configs}, key=str)) for name in PARAMS}
            trials = len(configs)
        rows = _run_study(base, split, out, trials, timeout, space or DEFAULT_SPACE, storage, study_name, say,
                          method=method, heartbeat=heartbeat)
    else:
        configs = grid_configs(grid) if method == "grid" else random_configs(trials, space, seed)
        rows = _run_list(method, configs, base, split, out, timeout, say)
    rows = leaderboard(rows)
    write_trials(out, rows, method)
    return rows


def _run_list(method, configs, base, split, out, timeout, say) -> list[dict]:
    best = _Best(out, method)
    rows, t0 = [], time.perf_counter()
    for number, config in enumerate(configs):
        if timeout is not None and time.perf_counter() - t0 > timeout:
            say(f"timeout after {time.perf_counter() - t0:.0f} s: {len(configs) - number} trial(s) not run")
            break
        start = time.perf_counter()
        net, history, value, cfg = train_trial(config, base, split)
        row = dict(config, number=number, state="COMPLETE", value=value, epochs_run=len(history),
                   seconds=time.perf_counter() - start)
        rows.append(row)
        marker = " *best*" if best.offer(value, config, net, number, cfg, split) else ""
        say(f"trial {number + 1}/{len(configs)}: {describe(config)} → val {value * 100:.2f}% "
            f"({row['seconds']:.1f} s){marker}")
    return rows


def _run_study(base, split, out, trials, timeout, space, storage, study_name, say, method="bayes",
               heartbeat=DEFAULT_HEARTBEAT) -> list[dict]:
    """An Optuna study: TPE + median pruning (bayes), random or a grid, in memory or shared in ``storage``."""
    from xpnet.experiments import distributed

    optuna = distributed.import_optuna()
    best = _Best(out, method)
    # Workers sharing a storage must not draw the same points: seed only single-process studies.
    seed = base.seed if storage is None else None
    pruner = optuna.pruners.NopPruner()
    if method == "grid":
        sampler = optuna.samplers.GridSampler({name: list(space[name][1]) for name in PARAMS}, seed=seed)
    elif method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    rdb = distributed.open_storage(optuna, storage, heartbeat)
    study = distributed.open_study(optuna, sampler, pruner, rdb, study_name, storage)
    seconds = {}

    def objective(trial):
        config = suggest_config(trial, space)
        start = time.perf_counter()
        if rdb is not None:
            again = distributed.retried_from(optuna, distributed.frozen(study, trial))
            if again is not None:
                say(f"trial {trial.number}: retries trial {again} (its worker stopped sending heartbeats)")

        def report(record, trainer):
            trial.report(record["val_acc"], record["epoch"] - 1)
            if trial.should_prune():
                seconds[trial.number] = time.perf_counter() - start
                say(f"trial {trial.number}: {describe(config)} pruned after epoch {record['epoch']} "
                    f"(val {record['val_acc'] * 100:.2f}%)")
                raise optuna.TrialPruned()

        net, history, value, cfg = train_trial(config, base, split, callbacks=[report])
        seconds[trial.number] = time.perf_counter() - start
        trial.set_user_attr("epochs_run", len(history))
        trial.set_user_attr("seconds", seconds[trial.number])
        marker = " *best*" if best.offer(value, config, net, trial.number, cfg, split) else ""
        say(f"trial {trial.number}: {describe(config)} → val {value * 100:.2f}% ({seconds[trial.number]:.1f} s){marker}")
        return value

    if rdb is None:
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=())
    else:
        distributed.work(optuna, study, objective, distributed.count_plan(trials), timeout, heartbeat, say)
    rows = []
    for t in study.trials:
        config = dict(t.params)
        if set(config) != set(PARAMS):
            continue
        rows.append(dict(_plain(config), number=t.number, state=t.state.name, value=t.value,
                         epochs_run=t.user_attrs.get("epochs_run", len(t.intermediate_values)),
                         seconds=t.user_attrs.get("seconds", seconds.get(t.number)),
                         retry_of=distributed.retried_from(optuna, t)))
    return rows


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
