"""``xpnet sweep``: train a grid of run configurations and keep one row per run.

A run is one :class:`~xpnet.training.recipe.RunConfig` (the command's config with one hidden
shape, optimizer, activation, init, device and seed of the grid) trained by
:func:`xpnet.training.recipe.run`, exactly as ``xpnet train`` with the same options would train it:
the same split (the run's seed), recipe, schedule and loop (the CUDA-graph loop on a GPU), so
the same weights. Its id is a readable slug plus a short hash of the whole configuration, so
re-running a sweep into the same folder skips the runs already there (a crashed or interrupted
sweep resumes where it stopped). Every run rewrites ``results.json``/``results.csv`` atomically
and writes its per-epoch history to ``curves/<run_id>.json``; the model with the best test
accuracy so far is kept as ``best_model.npz`` (for the report's confusion matrix).

With ``storage`` the workers share one Optuna study over the grid (:mod:`xpnet.experiments.distributed`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import statistics
import time
from pathlib import Path

from xpnet.errors import ConfigError, DataError

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
BEST_MODEL = "best_model.npz"
KIND = "sweep"

CSV_FIELDS = ["run_id", "hidden", "recipe", "optimizer", "lr", "schedule", "activation", "init", "device", "epochs",
              "batch_size", "dropout", "label_smoothing", "l2", "seed", "dataset", "limit", "augment", "params",
              "final_val_acc", "best_val_acc", "best_epoch", "test_acc", "test_loss", "median_epoch_s", "total_s",
              "device_name"]
GRID_KEYS = ("hidden", "optimizer", "activation", "init", "device", "seed")  # what a sweep varies


def hidden_label(hidden) -> str:
    return "-".join(str(int(h)) for h in hidden)


def dataset_label(cfg) -> str:
    """The data set as every worker names it: its name, or ``dir:<folder name>`` (paths differ between machines)."""
    return f"dir:{Path(cfg.data_dir).resolve().name}" if cfg.data_dir else str(cfg.dataset)


def run_key(cfg) -> dict:
    """The resolved config as the run id hashes it (the data folder by name, not path)."""
    key = cfg.to_dict()
    key["data_dir"] = None
    key["dataset"] = dataset_label(cfg)
    return key


def run_id(cfg) -> str:
    """A stable, readable id: ``h1024_adam_relu_he_cpu_s0-1a2b3c4d`` (hash over the whole resolved config)."""
    key = json.dumps(run_key(cfg), sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    device = str(cfg.device).replace(":", "")
    return f"h{hidden_label(cfg.hidden)}_{cfg.optimizer}_{cfg.activation}_{cfg.init}_{device}_s{cfg.seed}-{digest}"


def make_grid(base, hidden=None, optimizers=None, activations=None, inits=None, devices=None,
              repeats: int = 1) -> list:
    """Every combination × ``repeats`` seeds (``base.seed, base.seed+1, ...``) as resolved
    :class:`RunConfig` s, in a stable order, seed by seed (the split depends on the seed: one is
    prepared at a time, and an interrupted sweep has whole comparisons); an axis left None is the
    base config's value."""
    from xpnet.training.recipe import RunConfig

    base = base if isinstance(base, RunConfig) else RunConfig.from_dict(dict(base))
    axes = [list(hidden or [base.hidden]), list(optimizers or [base.optimizer]), list(activations or [base.activation]),
            list(inits or [base.init]), list(devices or [base.device])]
    configs = []
    for r, shape, opt, act, init, device in itertools.product(range(int(repeats)), *axes):
        configs.append(base.replace(hidden=tuple(int(h) for h in shape), optimizer=opt, activation=act, init=init,
                                    device=device, seed=int(base.seed) + r).resolve())
    return configs


class _Splits:
    """The prepared data of a run: the data set loaded once, split as ``xpnet train`` splits it (by the
    run's seed); the last split is kept (the grid runs seed by seed), so memory holds one."""

    def __init__(self):
        self.datasets: dict = {}
        self.last = (None, None)

    def get(self, cfg):
        from xpnet.data import load_dataset
        from xpnet.training.recipe import prepare_split

        ds_key = (cfg.dataset, cfg.data_dir)
        key = (ds_key, cfg.limit, cfg.val_split, cfg.seed, cfg.dtype)
        if self.last[0] != key:
            if ds_key not in self.datasets:
                self.datasets[ds_key] = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
            self.last = (None, None)  # free the old split before making the new one
            self.last = (key, prepare_split(cfg, dataset=self.datasets[ds_key]))
        return self.last[1]


def train_one(cfg, split, callbacks=()):
    """Train one configuration through the recipe; returns ``(net, history, row)``."""
    from xpnet import backend
    from xpnet.training.recipe import run

    t0 = time.perf_counter()
    result = run(cfg, split=split, callbacks=callbacks)
    net, history, scores = result.net, result.history, result.scores
    vals = [r["val_acc"] for r in history.records]
    best = max(range(len(vals)), key=lambda i: (vals[i], -i))
    row = {k: v for k, v in run_key(cfg).items() if k in CSV_FIELDS or k in ("val_split", "warmup", "weight_decay")}
    row.update({
        "run_id": run_id(cfg), "hidden": hidden_label(cfg.hidden), "hidden_sizes": list(cfg.hidden),
        "lr": float(result.trainer.opt.lr), "params": net.n_params, "final_val_acc": vals[-1],
        "best_val_acc": vals[best], "best_epoch": best + 1, "test_acc": scores["accuracy"], "test_loss": scores["loss"],
        "median_epoch_s": statistics.median(r["epoch_s"] for r in history.records),
        "total_s": time.perf_counter() - t0, "device_name": backend.device_name(cfg.device),
        "config": cfg.to_dict(),
    })
    return net, history, row


def load_results(out: Path) -> dict:
    """The sweep's ``results.json`` in ``out`` (an empty one when there is none yet)."""
    path = Path(out) / RESULTS_JSON
    if not path.exists():
        return {"meta": {"kind": KIND}, "results": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise DataError(f"{path} is not a sweep results file")
    if data.get("meta", {}).get("kind") not in (None, KIND) or any("impl" in r for r in data["results"]):
        raise ConfigError(f"{path} holds results of another command (not a sweep); use an empty --out folder")
    return data


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buf.getvalue()


def write_results(out: Path, data: dict) -> None:
    from xpnet.fileio import atomic_write

    atomic_write(out / RESULTS_JSON, lambda fh: json.dump(data, fh, indent=1), mode="w")
    atomic_write(out / RESULTS_CSV, lambda fh: fh.write(csv_text(data["results"])), mode="w")


def run_sweep(configs: list, out, say=print, storage: str | None = None, study_name: str | None = None,
              heartbeat: float | None = None, timeout: float | None = None) -> dict:
    """Train every config (resolved :class:`RunConfig` s) not already in ``out``; returns the results
    dict (``meta``, ``results``).

    ``say`` gets one progress line per run (``run``/``skip``) and a summary. With ``storage`` (an RDB
    URL) and ``study_name``, any number of workers share the grid as one Optuna study whose
    ``GridSampler`` hands each worker a run no other worker has started; each worker writes only its
    own runs to its own ``out``. A run is trained *at least* once: a worker that stops sending
    heartbeats has its run retried by another, and two workers asking at the same instant can draw
    the same run (both rows are kept, with the same ``run_id``; ``xpnet report`` counts it once).
    """
    from xpnet import backend

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves").mkdir(exist_ok=True)
    for device in sorted({c.device for c in configs}):
        backend.get_xp(device)  # unknown or unavailable device: fail before any training
    state = _State(out, say)
    ids = [run_id(c) for c in configs]
    if len(set(ids)) != len(ids):
        raise ConfigError("the sweep's grid lists a configuration twice")
    t_start = time.perf_counter()
    if storage:
        trained, by_others = _run_shared(dict(zip(ids, configs)), state, storage, study_name, heartbeat, timeout, say)
        others = f", {by_others} trained by other workers"
    else:
        trained, others = 0, ""
        for i, (rid, cfg) in enumerate(zip(ids, configs), 1):
            if rid in state.done:
                say(f"[{i}/{len(configs)}] skip {rid} (already in {out})")
                continue
            if timeout is not None and time.perf_counter() - t_start > timeout:
                say(f"timeout after {time.perf_counter() - t_start:.0f} s: {len(configs) - i + 1} run(s) not started")
                break
            state.train(rid, cfg, f"[{i}/{len(configs)}]")
            trained += 1
    if state.data["results"] and not (out / RESULTS_CSV).exists():
        write_results(out, state.data)  # results.json was there but the CSV was lost
    skipped = sum(rid in state.done_before for rid in ids)
    say(f"{trained} run(s) trained, {skipped} skipped (already in {out}){others} in {time.perf_counter() - t_start:.1f} s; "
        f"results in {out / RESULTS_CSV}")
    return state.data


class _State:
    """One worker's results folder: the rows, the curves, the best model."""

    def __init__(self, out: Path, say):
        self.out, self.say = out, say
        self.data = load_results(out)
        self.done = {r["run_id"] for r in self.data["results"]}
        self.done_before = set(self.done)
        self.best_acc = max((r["test_acc"] for r in self.data["results"] if "test_acc" in r), default=-1.0)
        if not (out / BEST_MODEL).exists():
            self.best_acc = -1.0
        self.splits = _Splits()

    def train(self, rid, cfg, prefix):
        from xpnet.fileio import atomic_write

        split = self.splits.get(cfg)
        net, history, row = train_one(cfg, split)
        atomic_write(self.out / "curves" / f"{rid}.json", lambda fh: json.dump(
            {"run_id": rid, "config": cfg.to_dict(), "records": history.records}, fh, indent=1), mode="w")
        self.data["results"].append(row)
        self.done.add(rid)
        meta = self.data.setdefault("meta", {})
        meta.update({"kind": KIND, "dataset": split.name, "data_dir": cfg.data_dir, "source": split.source,
                     "class_names": list(split.class_names), "n_train": int(len(split.X_train)),
                     "n_val": int(len(split.X_val)), "n_test": int(len(split.X_test)), "val_fraction": cfg.val_split})
        if row["test_acc"] > self.best_acc:
            self.best_acc = row["test_acc"]
            net.save(self.out / BEST_MODEL)
            meta["best_run"] = rid
        write_results(self.out, self.data)
        self.say(f"{prefix} run  {rid}: {row['hidden']} hidden, {row['optimizer']} lr {row['lr']:g}, {row['device']} · "
                 f"val {row['final_val_acc'] * 100:.2f}% · test {row['test_acc'] * 100:.2f}% · "
                 f"{row['median_epoch_s']:.2f} s/epoch · {row['total_s']:.1f} s")
        return row


def _run_shared(by_id: dict, state: _State, storage, study_name, heartbeat, timeout, say):
    """The grid as one Optuna study (``GridSampler`` over the run ids) shared by every worker."""
    from xpnet.experiments import distributed

    if not study_name:
        raise ConfigError("--storage needs --study-name (the sweep the workers share)")
    optuna = distributed.import_optuna()
    heartbeat = distributed.DEFAULT_HEARTBEAT if heartbeat is None else heartbeat
    rdb = distributed.open_storage(optuna, storage, heartbeat)
    ids = list(by_id)
    sampler = optuna.samplers.GridSampler({"run_id": ids})  # unseeded: workers draw different open runs
    study = distributed.open_study(optuna, sampler, optuna.pruners.NopPruner(), rdb, study_name, storage)
    worker = distributed.worker_id()
    state.data.setdefault("meta", {}).update(study=study_name, worker=worker)
    trained = []

    def complete_elsewhere(rid, number):
        return any(t.state.name == "COMPLETE" and t.params.get("run_id") == rid and t.number != number
                   for t in study.get_trials(deepcopy=False))

    def objective(trial):
        rid = trial.suggest_categorical("run_id", ids)
        prefix = f"[{ids.index(rid) + 1}/{len(ids)}]"
        again = distributed.retried_from(optuna, distributed.frozen(study, trial))
        if again is not None:
            say(f"{prefix} run {rid}: retries trial {again} (its worker stopped sending heartbeats)")
        if rid in state.done:  # trained into this --out before (a resumed worker): the study learns its result
            trial.set_user_attr("from_folder", True)
            return next(r["test_acc"] for r in state.data["results"] if r["run_id"] == rid)
        if complete_elsewhere(rid, trial.number):  # a retry or a draw racing a finished run
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned()
        trial.set_user_attr("worker", worker)
        row = state.train(rid, by_id[rid], prefix)
        trained.append(rid)
        return row["test_acc"]

    distributed.work(optuna, study, objective, distributed.grid_plan(ids), timeout, heartbeat, say)
    complete = {t.params.get("run_id") for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    by_others = 0
    for i, rid in enumerate(ids, 1):
        if rid in complete and rid not in state.done:
            say(f"[{i}/{len(ids)}] skip {rid} (trained by another worker)")
            by_others += 1
        elif rid in state.done_before:
            say(f"[{i}/{len(ids)}] skip {rid} (already in {state.out})")
    return len(trained), by_others
