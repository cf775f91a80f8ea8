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

from ..errors import ConfigError, DataError

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
    from ..optim import DEFAULT_LR, OPTIMIZERS

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
    from ..data import load_dataset
    from ..preprocess import Normalizer, train_val_split

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
    from .. import backend
    from ..model import MLP
    from ..optim import get_optimizer
    from ..train import Trainer, evaluate

    t0 = time.perf_counter()
    sizes = [data["Xtr"].shape[1], *config["hidden"], len(data["class_names"])]
    net = MLP(sizes, activation=config["activation"], init=config["init"], dropout=config.get("dropout", 0.0),
              device=config["device"], seed=config["seed"])
    net.normalizer, net.class_names = data["normalizer"], list(data["class_names"])
    augment = None
    if config.get("augment"):
        from ..augment import Augmenter

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
    from ..serialize import atomic_write

    atomic_write(out / RESULTS_JSON, lambda fh: json.dump(data, fh, indent=1), mode="w")
    atomic_write(out / RESULTS_CSV, lambda fh: fh.write(csv_text(data["results"])), mode="w")


def run_sweep(configs: list[dict], out, data_dir=None, say=print) -> dict:
    """Train every config not already in ``out``; returns the results dict (``meta``, ``results``).

    ``say`` gets one progress line per run (``run``/``skip``) and a summary.
    """
    from .. import backend
    from ..serialize import atomic_write

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
    for i, config in enumerate(configs, 1):
        rid = run_id(config)
        prefix = f"[{i}/{len(configs)}]"
        if rid in done:
            say(f"{prefix} skip {rid} (already in {out})")
            continue
        key = (config["dataset"], config["limit"])
        if key not in datasets:
            datasets[key] = prepare_data(config["dataset"], data_dir, config["limit"])
        data = datasets[key]
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
    say(f"{len(todo)} run(s) trained, {skipped} skipped (already in {out}) in {time.perf_counter() - t_start:.1f} s; "
        f"results in {out / RESULTS_CSV}")
    return data_all
