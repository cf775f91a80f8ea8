"""``xpnet train``: data → normalise → model → optimiser → epochs → test accuracy → files."""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from pathlib import Path

import click

from xpnet.cli.options import DATASET_CHOICES, RECIPES, SCHEDULE_CHOICES, HiddenSizes, describe_recipe, flatten_hidden, positive_float, resolve_recipe



@click.command(context_settings={"show_default": True})
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist", help="Data set to train on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder with the four IDX files (overrides the data set lookup).")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=["1024"], help="Hidden layer widths: repeat or give a comma list (120,64).")
@click.option("--activation", type=click.Choice(["relu", "leaky_relu", "sigmoid", "tanh"]), default="relu")
@click.option("--init", "init", type=click.Choice(["he", "xavier", "normal"]), default="he", help="Weight init: He √(2/n), Xavier √(1/n), normal×0.01.")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="default", help="Where the options below that you leave unset come from: 'default' = " + describe_recipe("default") + "; 'plain' = " + describe_recipe("plain") + " (the notes' baseline).")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "rmsprop", "adam", "adamw"]), default=None, show_default="adam")
@click.option("--lr", type=float, default=None, callback=positive_float, show_default="2e-3 for adam/adamw, plain recipe 1e-3; rmsprop 1e-3; sgd/momentum 0.1", help="Learning rate; the peak with a schedule.")
@click.option("--schedule", type=click.Choice(SCHEDULE_CHOICES), default=None, show_default="onecycle; plain recipe: constant", help="Learning-rate schedule, updated per step: onecycle warms up to --lr and anneals to lr/250,000 (PyTorch's OneCycleLR); cosine anneals to 0; step divides by 10 after each third; exponential decays to 1 %.")
@click.option("--warmup", type=click.FloatRange(min=0), default=None, show_default="onecycle: 30 % of the run; others: none", help="Linear warm-up EPOCHS before the schedule (onecycle: epochs to the peak).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128)
@click.option("--epochs", type=click.IntRange(min=1), default=None, show_default="20")
@click.option("--l2", type=click.FloatRange(min=0), default=0.0, help="L2 strength λ (penalty λ/2m·ΣW²).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, show_default="0.01", help="AdamW's decoupled weight decay (all parameters, as torch.optim.AdamW).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="0.1; plain recipe: 0", help="Dropout rate on hidden layers.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="0.1; plain recipe: 0", help="Softmax cross-entropy against (1-ε)·one-hot + ε/K.")
@click.option("--early-stopping", "patience", type=click.IntRange(min=1), default=None, help="Stop after PATIENCE epochs without val-loss improvement; keep the best weights.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, help="Fraction of the training set held out for validation (stratified).")
@click.option("--augment", is_flag=True, help="Random shifts (±2 px), rotations (±10°), scale (±10 %) and stroke thickness (±1 px per side) of training images.")
@click.option("--seed", type=int, default=0)
@click.option("--device", default="cpu", help="cpu, gpu or gpu:N.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32")
@click.option("--graph/--no-graph", default=True, help="On GPU: replay each step as a CUDA graph (falls back to eager when the configuration or CuPy does not allow it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("model.npz"), help="Where to save the trained model.")
@click.option("--metrics", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write one JSON line per epoch (+ a final test line) here.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, help="Save a resumable checkpoint every N epochs.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Checkpoint file [default: OUT with .ckpt.npz].")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Continue from a checkpoint (its settings win over the options above, except --epochs).")
@click.option("--quiet", is_flag=True, help="Only the final line.")
def train(**opts):
    """Train an MLP and report test accuracy.

    Without tuning flags this is the default recipe, chosen by measurement (docs/recipe.md):
    Adam with a one-cycle schedule peaking at 2e-3, batch 128, dropout 0.1, label smoothing
    0.1, 20 epochs (784-1024-10: MNIST 98.7 %, Fashion-MNIST 90.4 % test on average over
    seeds 0-2). --recipe plain is the notes' baseline (Adam 1e-3 constant, batch 128, no
    regularisation); any flag overrides the recipe.

    \b
    Examples:
      xpnet train --dataset mnist --data-dir ../shared/data/mnist     # the default recipe
      xpnet train --recipe plain --hidden 1024 --epochs 20             # the notes' baseline
      xpnet train --hidden 10 --epochs 5                 # the notes' "10 hidden neurons"
      xpnet train --optimizer adamw --weight-decay 0.05 --schedule cosine --warmup 1
      xpnet train --hidden 120,64 --optimizer momentum --lr 0.05 --device gpu
    Ctrl-C stops after the current batch and saves a checkpoint to resume from.
    """
    from xpnet import backend
    from xpnet.data import load_dataset
    from xpnet.nn.model import MLP
    from xpnet.data.preprocess import Normalizer, train_val_split
    from xpnet.io.npz import load_checkpoint, save_checkpoint
    from xpnet.training.trainer import EarlyStopping, Trainer, evaluate

    from xpnet.fileio import check_writable

    say = (lambda *a, **k: None) if opts["quiet"] else click.echo
    out: Path = opts["out"]
    check_writable(out)  # before training, not after an hour of it
    if opts["metrics"]:
        check_writable(opts["metrics"])
    checkpoint_path = opts["checkpoint_path"] or out.with_name(out.name.removesuffix(".npz") + ".ckpt.npz")
    state = None
    if opts["resume"]:
        net, state, run = load_checkpoint(opts["resume"], device=opts["device"])
        epochs = opts["epochs"]
        opts.update({k: v for k, v in run.items() if k not in ("epochs", "device", "out", "metrics", "quiet", "resume", "checkpoint_path")})
        opts["epochs"] = epochs if epochs is not None else run.get("epochs")
        opts["hidden"] = (tuple(run.get("hidden", net.sizes[1:-1])),)
        opts.setdefault("recipe", None)
        if "recipe" not in run:  # a checkpoint from before recipes: its options were the plain ones
            opts["recipe"] = "plain"
    opts = resolve_recipe(opts["recipe"], opts)
    hidden = flatten_hidden(opts["hidden"])
    opts["hidden"] = hidden

    t0 = time.perf_counter()
    ds = load_dataset(opts["dataset"] if not opts["data_dir"] else None, data_dir=opts["data_dir"], progress=not opts["quiet"])
    X, y = ds.X_train.reshape(len(ds.X_train), -1), ds.y_train
    Xtr, ytr, Xv, yv = train_val_split(X, y, opts["val_split"], seed=opts["seed"])
    normalizer = Normalizer().fit(Xtr)
    dtype = opts["dtype"]
    Xtr, Xv = normalizer.transform(Xtr, dtype), normalizer.transform(Xv, dtype)
    Xte = normalizer.transform(ds.X_test.reshape(len(ds.X_test), -1), dtype)

    if state is None:
        net = MLP([X.shape[1], *hidden, ds.n_classes], activation=opts["activation"], init=opts["init"],
                  dropout=opts["dropout"], label_smoothing=opts["label_smoothing"], device=opts["device"], dtype=dtype,
                  seed=opts["seed"])
    elif net.sizes[0] != X.shape[1] or net.sizes[-1] != ds.n_classes:
        from xpnet.errors import ModelFileError

        raise ModelFileError(f"checkpoint {opts['resume']} is for {net.sizes[0]} inputs/{net.sizes[-1]} classes, "
                             f"the data has {X.shape[1]}/{ds.n_classes}")
    net.normalizer, net.class_names = normalizer, list(ds.class_names)
    opt = _make_optimizer(opts, len(Xtr))
    early = EarlyStopping(patience=opts["patience"]) if opts["patience"] else None
    run_config = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}
    run_config["hidden"] = list(hidden)
    run_config["schedule_config"] = opt.schedule.config() if opt.schedule is not None else None  # --resume: exactly this

    say(f"{ds.name}: {len(Xtr):,} train / {len(Xv):,} val / {len(Xte):,} test from {ds.source} "
        f"({time.perf_counter() - t0:.1f}s)")
    say(f"{net} · {opt} · batch {opts['batch_size']} · {backend.device_name(net.device)}")
    extras = [f"dropout {opts['dropout']:g}" if opts["dropout"] else "", f"label smoothing {opts['label_smoothing']:g}"
              if opts["label_smoothing"] else ""]
    say(f"recipe {opts['recipe']}: {opts['epochs']} epochs" + "".join(f" · {e}" for e in extras if e))

    metrics_lines: list[str] = []
    callbacks = [_print_epoch(say, opts["epochs"])]
    if opts["metrics"]:
        callbacks.append(_write_metrics(opts["metrics"], metrics_lines))
    if opts["checkpoint_every"]:
        every = opts["checkpoint_every"]
        callbacks.append(lambda rec, tr: rec["epoch"] % every == 0 and save_checkpoint(checkpoint_path, tr, run_config))
    augment = None
    if opts["augment"]:
        from xpnet.data.augment import Augmenter

        augment = Augmenter(image_shape=ds.image_shape, seed=opts["seed"])
    trainer_cls = Trainer
    if net.device.is_gpu and opts.get("graph", True):
        from xpnet.training.graph import make_trainer as trainer_cls  # GraphTrainer where supported, else Trainer
    trainer = trainer_cls(net, opt, Xtr, ytr, batch_size=opts["batch_size"], val=(Xv, yv), l2=opts["l2"],
                          early_stopping=early, seed=opts["seed"], callbacks=callbacks, progress=not opts["quiet"],
                          augment=augment)
    if state is not None:
        trainer.load_state_dict(state)
        say(f"resumed from {opts['resume']} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
    if net.device.is_gpu:
        reason = getattr(trainer, "graph_reason", "disabled (--no-graph)")
        say(f"GPU loop: {'eager, ' + reason if reason else 'one CUDA graph replayed per batch'}")
    with warnings.catch_warnings():  # a failed capture is reported below, in one line
        warnings.filterwarnings("ignore", message="CUDA-graph training step failed", category=RuntimeWarning)
        history = trainer.run(opts["epochs"], handle_sigint=True)
    if getattr(trainer, "fallback_reason", None):
        say(f"CUDA graph failed ({trainer.fallback_reason}); the run went on with the eager loop")

    if history.interrupted:
        save_checkpoint(checkpoint_path, trainer, run_config)
        click.echo(f"interrupted in epoch {trainer.epoch + 1}: checkpoint saved to {checkpoint_path}\n"
                   f"resume with: xpnet train --resume {checkpoint_path} --epochs {opts['epochs']}", err=True)
        sys.exit(130)
    if history.stopped_early:
        say(f"early stopping after epoch {len(history)}; restored the best epoch ({history.best_epoch})")
    scores = evaluate(net, Xte, ds.y_test)
    net.save(out)
    epoch_s = [r["epoch_s"] for r in history.records]
    median_epoch = sorted(epoch_s)[len(epoch_s) // 2] if epoch_s else float("nan")
    if opts["metrics"]:
        final = {"event": "test", "test_loss": scores["loss"], "test_acc": scores["accuracy"],
                 "median_epoch_s": median_epoch, "config": run_config, "device": backend.device_name(net.device),
                 "versions": _versions(), "model": str(out)}
        metrics_lines.append(json.dumps(final))
        _flush_metrics(opts["metrics"], metrics_lines)
    click.echo(f"test accuracy {scores['accuracy'] * 100:.2f}% (loss {scores['loss']:.4f}) · "
               f"median epoch {median_epoch:.2f}s · model saved to {out}")


def _make_optimizer(opts: dict, n_train: int):
    """The optimizer of ``opts`` with its schedule over ``epochs × batches`` steps (or, resuming, the saved one)."""
    import math

    from xpnet.errors import ConfigError
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.optim.schedules import build_schedule, from_config

    name = opts["optimizer"]
    n_batches = math.ceil(n_train / min(opts["batch_size"], n_train))
    if opts.get("schedule_config") is not None:
        schedule = from_config(opts["schedule_config"])
    else:
        warmup = None if opts["warmup"] is None else round(opts["warmup"] * n_batches)
        schedule = build_schedule(opts["schedule"], opts["epochs"] * n_batches, warmup)
    kwargs = {"schedule": schedule}
    if name == "adamw":
        kwargs["weight_decay"] = 0.01 if opts["weight_decay"] is None else opts["weight_decay"]
    elif opts["weight_decay"]:
        raise ConfigError("--weight-decay is AdamW's decoupled decay: add --optimizer adamw (or use --l2)")
    return get_optimizer(name, opts["lr"], **kwargs)


def _print_epoch(say, epochs):
    def callback(rec, trainer):
        val = f" · val loss {rec['val_loss']:.4f} acc {rec['val_acc'] * 100:.2f}%" if rec["val_loss"] is not None else ""
        say(f"epoch {rec['epoch']:>3}/{epochs} · train loss {rec['train_loss']:.4f} acc {rec['train_acc'] * 100:.2f}%"
            f"{val} · {rec['epoch_s']:.2f}s ({rec['samples_per_s']:,.0f} samples/s)")

    return callback


def _write_metrics(path, lines):
    def callback(rec, trainer):
        lines.append(json.dumps(rec))
        _flush_metrics(path, lines)

    return callback


def _flush_metrics(path, lines):
    from xpnet.fileio import atomic_write

    atomic_write(path, lambda fh: fh.write("\n".join(lines) + "\n"), mode="w")


def _versions() -> dict:
    import numpy

    from xpnet import __version__, backend

    versions = {"xpnet": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    gpu = backend.gpu_info()
    if gpu:
        versions["cupy"] = gpu.get("cupy")
    return versions
