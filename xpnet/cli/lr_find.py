"""``xpnet lr-find``: the learning-rate range test (loss against an exponentially rising lr)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xpnet.cli.options import DATASET_CHOICES, RECIPES, HiddenSizes, flatten_hidden, positive_float, resolve_recipe


@click.command(context_settings={"show_default": True})
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist", help="Data set.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder with the four IDX files (overrides the data set lookup).")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=["1024"], help="Hidden layer widths: repeat or give a comma list (120,64).")
@click.option("--activation", type=click.Choice(["relu", "leaky_relu", "sigmoid", "tanh"]), default="relu")
@click.option("--init", "init", type=click.Choice(["he", "xavier", "normal"]), default="he")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="default", help="Where unset --optimizer/--batch-size/--dropout/--label-smoothing come from (as in xpnet train).")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "rmsprop", "adam", "adamw"]), default=None, help="[default: from --recipe (adam)]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: from --recipe (128)]")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, help="[default: from --recipe (0.1)]")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None, help="[default: from --recipe (0.1)]")
@click.option("--start-lr", type=float, default=1e-5, callback=positive_float, help="First learning rate.")
@click.option("--end-lr", type=float, default=10.0, callback=positive_float, help="Learning rate of the last step (if the loss has not exploded before).")
@click.option("--steps", type=click.IntRange(min=10), default=300, help="Mini-batches over which the lr rises exponentially.")
@click.option("--seed", type=int, default=0)
@click.option("--device", default="cpu", help="cpu, gpu or gpu:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("lr-find"), help="Folder for lr_find.png (loss vs lr) and lr_find.json.")
@click.option("--quiet", is_flag=True, help="Only the suggestion line.")
def lr_find(**opts):
    """The learning-rate range test: train a copy of the model while the lr rises exponentially
    from --start-lr towards --end-lr, stop when the loss explodes, plot loss against lr.

    \b
    Prints `suggested lr: X`: the lr at the minimum of the smoothed loss, divided by 10 (the
    largest lr a decade below where training turns unstable; fastai's lr_min). The steepest-
    descent lr is shown too. Use the suggestion as --lr (for a one-cycle schedule, the peak
    may go up to the minimum's lr ÷ 3).
    \b
    Example:
      xpnet lr-find --dataset mnist --data-dir ../shared/data/mnist --out runs/lr
    """
    from xpnet.data import load_dataset
    from xpnet.errors import ModelFileError
    from xpnet.training.lr_find import RULE_TEXT
    from xpnet.training.lr_find import lr_find as run_lr_find
    from xpnet.nn.model import MLP
    from xpnet.data.preprocess import Normalizer, train_val_split
    from xpnet.fileio import atomic_write

    say = (lambda *a, **k: None) if opts["quiet"] else click.echo
    opts = resolve_recipe(opts["recipe"], {**opts, "lr": None, "schedule": None, "warmup": None, "epochs": None,
                                           "weight_decay": None})
    out: Path = opts["out"]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot create {out}: {exc.strerror or exc}") from None
    ds = load_dataset(opts["dataset"] if not opts["data_dir"] else None, data_dir=opts["data_dir"], progress=not opts["quiet"])
    X = ds.X_train.reshape(len(ds.X_train), -1)
    Xtr, ytr, _, _ = train_val_split(X, ds.y_train, 0.1, seed=opts["seed"])  # the rows xpnet train trains on
    Xtr = Normalizer().fit(Xtr).transform(Xtr)
    hidden = flatten_hidden(opts["hidden"])
    net = MLP([X.shape[1], *hidden, ds.n_classes], activation=opts["activation"], init=opts["init"],
              dropout=opts["dropout"], label_smoothing=opts["label_smoothing"], device=opts["device"], seed=opts["seed"])
    say(f"{ds.name}: {len(Xtr):,} train rows · {net} · {opts['optimizer']} · batch {opts['batch_size']} · "
        f"lr {opts['start_lr']:g} → {opts['end_lr']:g} over {opts['steps']} steps")
    res = run_lr_find(net, Xtr, ytr, optimizer=opts["optimizer"], start_lr=opts["start_lr"], end_lr=opts["end_lr"],
                      steps=opts["steps"], batch_size=opts["batch_size"], seed=opts["seed"], progress=not opts["quiet"])
    res.config.update(dataset=ds.name, dropout=opts["dropout"], label_smoothing=opts["label_smoothing"])
    atomic_write(out / "lr_find.json", lambda fh: json.dump(res.to_dict(), fh, indent=1), mode="w")
    png = res.plot(out / "lr_find.png", title=f"LR range test: {ds.name}, {'-'.join(map(str, net.sizes))}, "
                                              f"{opts['optimizer']}, batch {opts['batch_size']}")
    stop = "the loss exploded" if res.stopped_early else "the last step was reached"
    say(f"{len(res.lrs)} steps ({stop} at lr {res.lrs[-1]:.3g}); smoothed loss lowest at lr {res.min_loss_lr:.3g}, "
        f"steepest at {res.steepest_lr:.3g}")
    say(f"wrote {out / 'lr_find.json'}" + (f" and {png}" if png else " (no plot: pip install 'xpnet[plot]')"))
    click.echo(f"suggested lr: {res.suggested_lr:.3g} ({RULE_TEXT})")
