"""``xpnet lr-find``: the learning-rate range test (loss against an exponentially rising lr)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from xpnet import choices
from xpnet.cli.options import HiddenSizes, build_config, positive_float, run_options


@click.command(context_settings={"show_default": True})
@run_options
@click.option("--hidden", type=HiddenSizes(), default=None, show_default="1024", help="Hidden layer widths of the network, e.g. 1024 or 120,64.")
@click.option("--activation", type=click.Choice(choices.ACTIVATIONS), default=None, show_default="relu")
@click.option("--init", "init", type=click.Choice(choices.INITS), default=None, show_default="he")
@click.option("--optimizer", type=click.Choice(choices.OPTIMIZERS), default=None, show_default="from --recipe (adam)")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, show_default="from --recipe (128)")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="from --recipe (0.1)")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="from --recipe (0.1)")
@click.option("--start-lr", type=float, default=1e-5, callback=positive_float, help="First learning rate.")
@click.option("--end-lr", type=float, default=10.0, callback=positive_float, help="Learning rate of the last step (if the loss has not exploded before).")
@click.option("--steps", type=click.IntRange(min=10), default=300, help="Mini-batches over which the lr rises exponentially.")
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
      xpnet lr-find --dataset mnist --data-dir DIR --out runs/lr
    """
    from xpnet.errors import ModelFileError
    from xpnet.fileio import atomic_write
    from xpnet.training.lr_find import RULE_TEXT
    from xpnet.training.lr_find import lr_find as run_lr_find
    from xpnet.training.recipe import prepare_split

    say = (lambda *a, **k: None) if opts["quiet"] else click.echo
    cfg = build_config(opts)  # the network, data split and batch `xpnet train` would use
    out: Path = opts["out"]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot create {out}: {exc.strerror or exc}") from None
    split = prepare_split(cfg, progress=not opts["quiet"])
    net = cfg.build_net(split.n_features, split.n_classes)
    say(f"{split.name}: {len(split.X_train):,} train rows · {net} · {cfg.optimizer} · batch {cfg.batch_size} · "
        f"lr {opts['start_lr']:g} → {opts['end_lr']:g} over {opts['steps']} steps")
    res = run_lr_find(net, split.X_train, split.y_train, optimizer=cfg.optimizer, start_lr=opts["start_lr"],
                      end_lr=opts["end_lr"], steps=opts["steps"], batch_size=cfg.batch_size, seed=cfg.seed,
                      progress=not opts["quiet"])
    res.config.update(dataset=split.name, dropout=cfg.dropout, label_smoothing=cfg.label_smoothing)
    atomic_write(out / "lr_find.json", lambda fh: json.dump(res.to_dict(), fh, indent=1), mode="w")
    png = res.plot(out / "lr_find.png", title=f"LR range test: {split.name}, {'-'.join(map(str, net.sizes))}, "
                                              f"{cfg.optimizer}, batch {cfg.batch_size}")
    stop = "the loss exploded" if res.stopped_early else "the last step was reached"
    say(f"{len(res.lrs)} steps ({stop} at lr {res.lrs[-1]:.3g}); smoothed loss lowest at lr {res.min_loss_lr:.3g}, "
        f"steepest at {res.steepest_lr:.3g}")
    say(f"wrote {out / 'lr_find.json'}" + (f" and {png}" if png else " (no plot: pip install 'xpnet[plot]')"))
    click.echo(f"suggested lr: {res.suggested_lr:.3g} ({RULE_TEXT})")
