"""``xpnet sweep``: train a grid of configurations and keep one row per run.

A run is one configuration (hidden shape, optimizer, learning rate, activation, init,
device, epochs, batch size, data) with one seed. Its id is a readable slug plus a short
hash of the whole configuration, so re-running a sweep into the same folder skips the
runs already there (a crashed or interrupted sweep resumes where it stopped). Every run
rewrites ``results.json``/``results.csv`` atomically and writes its per-epoch history to
``curves/<run_id>.json``; the model with the best test accuracy so far is kept as
``best_model.npz`` (for the report's confusion matrix).
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

import numpy as np

from xpnet.errors import ConfigError, DataError

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
BEST_MODEL = "best_model.npz"
KIND = "sweep"
VAL_FRACTION = 0.1
SPLIT_SEED = 0  # one validation split for every run, so runs differ only in their own seed

CSV_FIELDS = ["run_id", "hidden", "optimizer", "lr", "activation", "init", "device", "epochs", "batch_size", "seed",
              "dataset", "limit", "augment", "params", "final_val_acc", "best_val_acc", "best_epoch", "test_acc",
              "test_loss", "median_epoch_s", "total_s", "device_name"]


def hidden_label(hidden) -> str:
    return "-".join(str(int(h)) for h in hidden)


def run_id(config: dict) -> str:
    """A stable, readable id: ``h1024_adam_relu_he_cpu_s0-1a2b3c4d`` (hash over the whole config)."""
    key = json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    device = str(config["device"]).replace(":", "")
    return f"h{hidden_label(config['hidden'])}_{config['optimizer']}_{config['activation']}_{config['init']}_{device}_s{config['seed']}-{digest}"


def make_grid(shapes, optimizers, activations, inits, devices, repeats: int, epochs: int, batch_size: int,
              lr=None, dataset="fashion-mnist", limit=None, augment=False, seed: int = 0) -> list[dict]:
    """Every combination × ``repeats`` seeds (``seed, seed+1, ...``), in a stable order."""
    from xpnet.optim.optimizers import DEFAULT_LR, OPTIMIZERS

    for name in optimizers:
        if name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    configs = []
    for shape, opt, act, init, device, r in itertools.product(shapes, optimizers, activations, inits, devices, range(repeats)):
        configs.append({
            "hidden": [int(h) for h in shape], "optimizer": opt, "lr": float(lr if lr is not None else DEFAULT_LR[opt]),
            "activation": act, "init": init, "device": device, "epochs": int(epochs), "batch_size": int(batch_size),
            "seed": int(seed + r), "dataset": dataset, "limit": limit, "augment": bool(augment),
        })
    return configs


def prepare_data(dataset: str | None, data_dir=None, limit: int | None = None) -> dict:
    """Load, cut to ``limit`` training images, split off validation, normalise on the train part."""
    from xpnet.data import load_dataset
    from xpnet.data.preprocess import Normalizer, train_val_split

    ds = load_dataset(dataset if not data_dir else None, data_dir=data_dir)
    X, y = ds.X_train.reshape(len(ds.X_train), -1), ds.y_train
    if limit:
        if limit < 20:
            raise ConfigError(f"--limit {limit} is too small to split off a validation set (use >= 20)")
        X, y = X[:limit], y[:limit]
    Xtr, ytr, Xv, yv = train_val_split(X, y, VAL_FRACTION, seed=SPLIT_SEED)
    norm = Normalizer().fit(Xtr)
    return {
        "name": ds.name, "source": str(ds.source), "class_names": list(ds.class_names), "image_shape": ds.image_shape,
        "normalizer": norm, "Xtr": norm.transform(Xtr), "ytr": ytr, "Xv": norm.transform(Xv), "yv": yv,
        "Xte": norm.transform(ds.X_test.reshape(len(ds.X_test), -1)), "yte": ds.y_test,
        "data_dir": str(data_dir) if data_dir else None,
    }


def train_one(config: dict, data: dict, callbacks=()):
    """Train one configuration; returns ``(net, history, row)``."""
    from xpnet import backend
    from xpnet.nn.model import MLP
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.training.trainer import Trainer, evaluate

    t0 = time.perf_counter()
    sizes = [data["Xtr"].shape[1], *config["hidden"], len(data["class_names"])]
    net = MLP(sizes, activation=config["activation"], init=config["init"], dropout=config.get("dropout", 0.0),
              device=config["device"], seed=config["seed"])
    net.normalizer, net.class_names = data["normalizer"], list(data["class_names"])
    augment = None
    if config.get("augment"):
        from xpnet.data.augment import Augmenter

        augment = Augmenter(image_shape=data["image_shape"], seed=config["seed"])
    opt = get_optimizer(config["optimizer"], config["lr"])
    trainer = Trainer(net, opt, data["Xtr"], data["ytr"], batch_size=config["batch_size"], val=(data["Xv"], data["yv"]),
                      l2=config.get("l2", 0.0), seed=config["seed"], callbacks=list(callbacks), augment=augment)
    history = trainer.run(config["epochs"])
    scores = evaluate(net, data["Xte"], data["yte"])
    vals = [r["val_acc"] for r in history.records]
    best = int(np.argmax(vals))
    row = dict(config)
    row.update({
        "run_id": run_id(config), "hidden": hidden_label(config["hidden"]), "hidden_sizes": list(config["hidden"]),
        "params": net.n_params, "final_val_acc": vals[-1], "best_val_acc": vals[best], "best_epoch": best + 1,
        "test_acc": scores["accuracy"], "test_loss": scores["loss"],
        "median_epoch_s": statistics.median(r["epoch_s"] for r in history.records),
        "total_s": time.perf_counter() - t0, "device_name": backend.device_name(config["device"]),
    })
    return net, history, row


def load_results(out: Path) -> dict:
    """The sweep's ``results.json`` in ``out`` (an empty one when there is none yet)."""
    path = Path(out) / RESULTS_JSON
    if not path.exists():
        return {"meta": {"kind": KIND}, "results": []}
    try:
        data = json.loads(path.read_text())
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


def run_sweep(configs: list[dict], out, data_dir=None, say=print, storage: str | None = None,
              study_name: str | None = None, heartbeat: float | None = None) -> dict:
    """Train every config not already in ``out``; returns the results dict (``meta``, ``results``).

    ``say`` gets one progress line per run (``run``/``skip``) and a summary. With ``storage``
    (an RDB URL) and ``study_name``, any number of workers share the grid: each run is claimed
    in the database before it is trained, so every grid point × seed runs exactly once across
    all workers; each worker writes only its own runs to its own ``out``. A worker that stops
    sending heartbeats loses its claim and another worker trains that run again.
    """
    from xpnet import backend
    from xpnet.fileio import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves").mkdir(exist_ok=True)
    for device in sorted({c["device"] for c in configs}):
        backend.get_xp(device)  # unknown or unavailable device: fail before any training
    data_all = load_results(out)
    done = {r["run_id"] for r in data_all["results"]}
    todo = [c for c in configs if run_id(c) not in done]
    skipped = len(configs) - len(todo)
    datasets: dict = {}
    best_acc = max((r["test_acc"] for r in data_all["results"] if "test_acc" in r), default=-1.0)
    if not (out / BEST_MODEL).exists():
        best_acc = -1.0
    t_start = time.perf_counter()
    claims = _Claims(storage, study_name, heartbeat, say) if storage else None
    by_others = 0
    if claims is not None:
        data_all.setdefault("meta", {}).update(study=study_name, worker=claims.worker)
    queue = list(enumerate(configs, 1))
    while queue:
        i, config = queue.pop(0)
        rid = run_id(config)
        prefix = f"[{i}/{len(configs)}]"
        if rid in done:
            say(f"{prefix} skip {rid} (already in {out})")
            continue
        key = (config["dataset"], config["limit"])
        if claims is not None:
            state = claims.claim(rid)
            if state == "done":
                say(f"{prefix} skip {rid} (trained by another worker)")
                by_others += 1
                todo = [c for c in todo if run_id(c) != rid]
                continue
            if state == "busy":  # another worker trains it: come back to it (it may die)
                queue.append((i, config))
                if all(run_id(c) in claims.busy for _, c in queue):
                    time.sleep(claims.poll)
                continue
        if key not in datasets:
            datasets[key] = prepare_data(config["dataset"], data_dir, config["limit"])
        data = datasets[key]
        if claims is not None:
            net, history, row = claims.run(rid, lambda: train_one(config, data))
        else:
            net, history, row = train_one(config, data)
        atomic_write(out / "curves" / f"{rid}.json",
                     lambda fh: json.dump({"run_id": rid, "config": config, "records": history.records}, fh, indent=1), mode="w")
        data_all["results"].append(row)
        done.add(rid)
        meta = data_all.setdefault("meta", {})
        meta.update({"kind": KIND, "dataset": data["name"], "data_dir": data["data_dir"], "source": data["source"],
                     "class_names": data["class_names"], "n_train": int(len(data["Xtr"])), "n_val": int(len(data["Xv"])),
                     "n_test": int(len(data["Xte"])), "val_fraction": VAL_FRACTION})
        if row["test_acc"] > best_acc:
            best_acc = row["test_acc"]
            net.save(out / BEST_MODEL)
            meta["best_run"] = rid
        write_results(out, data_all)
        say(f"{prefix} run  {rid}: {row['hidden']} hidden, {row['optimizer']} lr {row['lr']:g}, {row['device']} · "
            f"val {row['final_val_acc'] * 100:.2f}% · test {row['test_acc'] * 100:.2f}% · "
            f"{row['median_epoch_s']:.2f} s/epoch · {row['total_s']:.1f} s")
    if not todo and data_all["results"] and not (out / RESULTS_CSV).exists():
        write_results(out, data_all)  # results.json was there but the CSV was lost
    others = f", {by_others} trained by other workers" if claims is not None else ""
    say(f"{len(todo)} run(s) trained, {skipped} skipped (already in {out}){others} in {time.perf_counter() - t_start:.1f} s; "
        f"results in {out / RESULTS_CSV}")
    return data_all


class _Claims:
    """Exactly-once runs across workers, on Optuna's RDB storage.

    A run is claimed by creating the study ``NAME:RUN_ID#k`` (study names are unique in the
    database, so exactly one worker's create succeeds) and trained inside that study's single
    trial, whose heartbeat tells the other workers it is alive. A claim whose trial went stale
    is marked FAIL and the run is claimed again as ``#k+1``; a COMPLETE trial means done."""

    MAX_ATTEMPTS = 4

    def __init__(self, storage, study_name, heartbeat, say):
        import os
        import socket

        from xpnet.experiments.tune import DEFAULT_HEARTBEAT, import_optuna, open_storage

        if not study_name:
            raise ConfigError("--storage needs --study-name (the sweep the workers share)")
        self.optuna = import_optuna()
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)
        heartbeat = DEFAULT_HEARTBEAT if heartbeat is None else heartbeat
        self.rdb = open_storage(self.optuna, storage, heartbeat, retry=False)
        self.name, self.say = study_name, say
        self.poll = min(1.0, heartbeat / 2) if heartbeat else 1.0
        self.grace = 2 * max(1, round(heartbeat)) if heartbeat else None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.busy: set = set()
        self.seeded: set = set()
        self.empty_since: dict = {}
        self.mine: dict = {}

    def _study(self, rid, k, create):
        name = f"{self.name}:{rid}#{k}"
        if create:
            return self.optuna.create_study(storage=self.rdb, study_name=name, direction="maximize")
        return self.optuna.load_study(storage=self.rdb, study_name=name)

    def claim(self, rid) -> str:
        """``"mine"`` (train it now), ``"done"`` (another worker finished it) or ``"busy"``."""
        DuplicatedStudyError = self.optuna.exceptions.DuplicatedStudyError
        for k in range(self.MAX_ATTEMPTS):
            try:
                self.mine[rid] = self._study(rid, k, create=True)
                self.busy.discard(rid)
                return "mine"
            except DuplicatedStudyError:
                pass
            study = self._study(rid, k, create=False)
            from xpnet.experiments.tune import seed_heartbeats

            seed_heartbeats(study, self.seeded, self.grace)  # a worker killed before its first beat
            self.optuna.storages.fail_stale_trials(study)
            states = {t.state.name for t in study.get_trials(deepcopy=False)}
            if "COMPLETE" in states:
                self.busy.discard(rid)
                return "done"
            if "RUNNING" in states or (not states and not self._empty_too_long(rid, k)):
                self.busy.add(rid)
                return "busy"
            if k + 1 < self.MAX_ATTEMPTS:
                self.say(f"run {rid}: attempt {k + 1} failed (its worker died or the run failed); claiming it again")
        raise ConfigError(f"run {rid} failed {self.MAX_ATTEMPTS} times in study {self.name!r}; giving up")

    def _empty_too_long(self, rid, k) -> bool:
        """A claim with no trial yet: its worker is between two calls, or died there."""
        if self.grace is None:
            return False
        first = self.empty_since.setdefault((rid, k), time.monotonic())
        return time.monotonic() - first > 3 * self.grace

    def run(self, rid, train):
        study, result = self.mine.pop(rid), {}

        def objective(trial):
            trial.set_user_attr("worker", self.worker)
            result["out"] = train()
            trial.set_user_attr("test_acc", result["out"][2]["test_acc"])
            return result["out"][2]["test_acc"]

        study.optimize(objective, n_trials=1, catch=())
        return result["out"]
