"""``xpnet sweep``, ``xpnet analyze init``, ``xpnet tune`` and ``xpnet report`` (heavy imports inside).

``sweep``, ``tune`` and ``analyze`` share ``@run_options`` with ``xpnet train`` (``--config --dataset
--data-dir --recipe --seed --device``, same meanings and defaults): their runs are ``xpnet train``'s
run config with the searched values laid over it, trained by :mod:`xpnet.training.recipe`.
"""

from __future__ import annotations

from pathlib import Path

import click

from xpnet import choices
from xpnet.cli.options import HiddenSizes, build_config, comma_list, run_options


def _names(allowed, option):
    def callback(ctx, param, value):
        names = comma_list(ctx, param, value)
        if value is not None and not names:
            raise click.BadParameter("give at least one value", param_hint=option)
        for name in names:
            if name not in allowed:
                raise click.BadParameter(f"unknown value {name!r}: choose from {', '.join(allowed)}", param_hint=option)
        return names or None

    return callback


def _devices(value):
    devices = comma_list(None, None, value)
    for d in devices:
        if d != "cpu" and not (d == "gpu" or (d.startswith("gpu:") and d[4:].isdigit())):
            raise click.BadParameter(f"{d!r}: use cpu, gpu or gpu:N", param_hint="--device")
    return devices or None


def _check_storage(storage, study_name, heartbeat):
    if (study_name or heartbeat is not None) and not storage:
        raise click.BadParameter("--study-name/--heartbeat need --storage", param_hint="--storage")
    if storage:
        from xpnet.experiments.distributed import import_optuna, storage_url

        import_optuna()
        storage_url(storage)  # a bad URL or a missing driver: one line before the data is loaded
        if not study_name:
            raise click.BadParameter("--storage needs --study-name (the study the workers share)", param_hint="--study-name")


_STORAGE_HELP = ("Database shared by workers: sqlite:///study.db on one machine, postgresql://user:pw@host/db across "
                 "machines (docs/distributed.md).")
_HEARTBEAT_HELP = ("With --storage: seconds between a worker's heartbeats; a worker silent for two has its run "
                   "marked FAIL and retried by another. 0: off. [default: 10]")


# ---------------------------------------------------------------------------- sweep
@click.command(context_settings={"show_default": True})
@run_options
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=(), show_default="the run config's (1024)", help="One network's hidden layers (120,64); repeat to compare networks: --hidden 10 --hidden 256 --hidden 120,64.")
@click.option("--optimizer", "optimizers", default=None, callback=_names(choices.OPTIMIZERS, "--optimizer"), show_default="the recipe's (adam)", help="Comma list: " + ",".join(choices.OPTIMIZERS) + ".")
@click.option("--activation", "activations", default=None, callback=_names(choices.ACTIVATIONS, "--activation"), show_default="relu", help="Comma list: " + ",".join(choices.ACTIVATIONS) + ".")
@click.option("--init", "inits", default=None, callback=_names(choices.INITS, "--init"), show_default="he", help="Comma list: " + ",".join(choices.INITS) + ".")
@click.option("--epochs", type=click.IntRange(min=1), default=None, show_default="the recipe's (20)")
@click.option("--repeats", type=click.IntRange(min=1), default=1, help="Runs per configuration with seeds SEED, SEED+1, ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, show_default="the recipe's (128)")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, show_default="the recipe's", help="Learning rate (the peak with a schedule).")
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images (quick runs).")
@click.option("--augment/--no-augment", default=None, show_default="the recipe's", help="Random shifts/rotations of training images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder (runs already there are skipped); with --storage, this worker's own runs.")
@click.option("--storage", default=None, help=_STORAGE_HELP + " Each worker trains runs no other has started.")
@click.option("--study-name", default=None, help="Name of the shared sweep (with --storage).")
@click.option("--heartbeat", type=click.FloatRange(min=0), default=None, help=_HEARTBEAT_HELP)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Start no new run after this many seconds.")
def sweep(hidden, optimizers, activations, inits, epochs, repeats, batch_size, lr, limit, augment, out,
          storage, study_name, heartbeat, timeout, **opts):
    """Train every combination of the options (× repeats), each run as `xpnet train` would, and collect the results.

    \b
    Each run is `xpnet train` with the same options (the recipe, --config, the run's seed), so it
    gives the same weights. --device takes a comma list (cpu,gpu) to compare devices.
    Writes OUT/results.csv, OUT/results.json, OUT/curves/<run_id>.json and OUT/best_model.npz.
    Re-running into the same OUT skips the runs already there.
    \b
    Example:
      xpnet sweep --hidden 10 --hidden 256 --hidden 512 --hidden 1024 --epochs 5 --repeats 3 --out runs/sweep
      xpnet report runs/sweep
      # the same grid on several machines (docs/distributed.md):
      xpnet sweep --hidden 10 --hidden 1024 --repeats 3 --storage postgresql://xpnet:PW@db-host/xpnet --study-name g1 --out runs/w$HOSTNAME
    """
    from xpnet.experiments.sweep import make_grid, run_sweep

    _check_storage(storage, study_name, heartbeat)
    devices = _devices(opts.pop("device"))
    base = build_config(dict(opts, device=devices[0] if devices else None), resolve=False, epochs=epochs,
                        batch_size=batch_size, lr=lr, limit=limit, augment=augment)
    configs = make_grid(base, hidden, optimizers, activations, inits, devices, repeats)
    base = base.resolve()
    n = lambda axis: len(axis) if axis else 1  # noqa: E731
    click.echo(f"sweep: {len(configs)} run(s) = {n(hidden)} network(s) × {n(optimizers)} optimizer(s) × "
               f"{n(activations)} activation(s) × {n(inits)} init(s) × {n(devices)} device(s) × {repeats} seed(s); "
               f"{base.describe()}")
    run_sweep(configs, out, say=click.echo, storage=storage, study_name=study_name, heartbeat=heartbeat, timeout=timeout)


# ---------------------------------------------------------------------------- analyze
@click.group(context_settings={"show_default": True})
def analyze():
    """Studies of a network's internals."""


@analyze.command("init", context_settings={"show_default": True})
@run_options
@click.option("--depth", type=click.IntRange(min=1), default=5, help="Number of hidden layers.")
@click.option("--width", type=click.IntRange(min=1), default=256, help="Units per hidden layer.")
@click.option("--init", "inits", default="normal,xavier,he", callback=_names(choices.INITS, "--init"))
@click.option("--activation", "activations", default="sigmoid,tanh,relu,leaky_relu", callback=_names(choices.ACTIVATIONS, "--activation"))
@click.option("--samples", type=click.IntRange(min=2), default=1000, help="Training images in the batch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def analyze_init(depth, width, inits, activations, samples, out, **opts):
    """The vanishing-gradient experiment: activation/gradient statistics per layer for each init × activation.

    \b
    One forward and backward pass per configuration, no training: of the shared options, --recipe
    has no effect here (--config gives the data set, seed and device).
    Writes OUT/init_study.{json,csv,md} and, with matplotlib, OUT/init_activations.png,
    OUT/init_gradients.png and OUT/init_trends.png.
    """
    import time

    from xpnet.experiments import plots
    from xpnet.experiments.init_study import init_study, summary_lines, write_outputs

    t0 = time.perf_counter()
    cfg = build_config(opts)
    result = init_study(depth=depth, width=width, inits=[i for i in ("normal", "xavier", "he") if i in inits],
                        activations=list(activations), n_samples=samples, dataset=cfg.dataset if not cfg.data_dir else None,
                        data_dir=cfg.data_dir, seed=cfg.seed, device=cfg.device)
    written = write_outputs(result, out)
    for line in summary_lines(result):
        click.echo(line)
    if not any(p.suffix == ".png" for p in written):
        click.echo(plots.PLOT_HINT)
    click.echo(f"wrote {len(written)} files to {out} ({time.perf_counter() - t0:.1f} s)")


# ---------------------------------------------------------------------------- tune
def _values(kind):
    def callback(ctx, param, value):
        items = comma_list(ctx, param, value)
        if not items:
            return None
        try:
            return [kind(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma list of {kind.__name__} values") from None

    return callback


@click.command(context_settings={"show_default": True})
@run_options
@click.option("--method", type=click.Choice(["grid", "random", "bayes"]), default="random")
@click.option("--trials", type=click.IntRange(min=1), default=20, help="Trials for random/bayes (grid runs its whole grid).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Start no new trial after this many seconds.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, show_default="the recipe's (20)", help="Epochs of every trial.")
@click.option("--lr", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI (log scale) or one value.")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=(), help="One network's hidden layers (120,64); repeat for the networks to choose between: --hidden 128 --hidden 512 --hidden 120,64.")
@click.option("--batch-size", callback=_values(int), default=None, help="Batch sizes to try.")
@click.option("--l2", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI or one value.")
@click.option("--dropout", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI or one value.")
@click.option("--optimizer", callback=_names(choices.OPTIMIZERS, "--optimizer"), default=None, help="Optimizers to try (comma list).")
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images.")
@click.option("--storage", default=None, help=_STORAGE_HELP + " --trials is then the study's total.")
@click.option("--study-name", default=None, help="Study name; workers giving the same --storage and --study-name join one study.")
@click.option("--heartbeat", type=click.FloatRange(min=0), default=None, help=_HEARTBEAT_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="This worker's folder (trials.json/csv, best.json, best.toml, best_model.npz).")
def tune(method, trials, timeout, epochs, lr, hidden, batch_size, l2, dropout, optimizer, limit, storage, study_name,
         heartbeat, out, **opts):
    """Search learning rate, network, batch size, L2, dropout and optimizer.

    \b
    Every trial is `xpnet train` with the run options (--recipe, --config, --seed...) and the
    trial's values laid over them; what is not searched keeps the recipe's value (schedule, label
    smoothing...). OUT/best.toml is the best trial's run config: `xpnet train --config OUT/best.toml`.
    Default grid (8 configs): lr 1e-3,3e-3 × hidden 128,512 × dropout 0,0.2 (adam, batch 128, L2 0).
    Default random/bayes space: lr 1e-4..0.3 (log), hidden 64..1024, batch 32..256,
    L2 1e-5..1 (log), dropout 0..0.5, optimizer sgd/momentum/rmsprop/adam.
    \b
    Examples:
      xpnet tune --method random --trials 20 --epochs 3 --limit 10000 --out runs/tune
      xpnet tune --method grid --hidden 128 --hidden 512 --hidden 120,64 --lr 1e-3,3e-3 --epochs 3 --out runs/grid
      xpnet tune --method bayes --storage sqlite:///study.db --study-name s --trials 10 --out runs/tune
      # on every machine (docs/distributed.md): one study of 100 trials in all
      xpnet tune --method bayes --storage postgresql://xpnet:PW@db-host/xpnet --study-name s1 --trials 100 --out runs/w$HOSTNAME
    """
    from xpnet.experiments.distributed import DEFAULT_HEARTBEAT, import_optuna
    from xpnet.experiments.tune import build_space, leaderboard_table, run_tune
    from xpnet.training.recipe import prepare_split

    _check_storage(storage, study_name, heartbeat)
    if method == "bayes":
        import_optuna()
    given = {"lr": lr, "hidden": list(hidden) or None, "batch_size": batch_size, "l2": l2, "dropout": dropout,
             "optimizer": optimizer}
    space = build_space(given) if method != "grid" else None
    base = build_config(opts, epochs=epochs, limit=limit)
    split = prepare_split(base)
    click.echo(f"tune ({method}): {split.name}, {len(split.X_train):,} train / {len(split.X_val):,} val, "
               f"{base.epochs} epoch(s) per trial; {base.describe()}")
    rows = run_tune(method, base, split, out, trials=trials, timeout=timeout, grid=given, space=space,
                    storage=storage, study_name=study_name, say=click.echo,
                    heartbeat=DEFAULT_HEARTBEAT if heartbeat is None else heartbeat)
    click.echo("\nLeaderboard (top 10 by validation accuracy):")
    click.echo(leaderboard_table(rows))
    click.echo(f"best configuration: {out / 'best.toml'} (xpnet train --config) · model: {out / 'best_model.npz'}")


# ---------------------------------------------------------------------------- report
@click.command(context_settings={"show_default": True})
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: the first DIR, or a metrics log's folder].")
@click.option("--title", default="xpnet report")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Training runs: the folder of the test set's IDX files, if not the one their log names.")
def report(dirs, out, title, data_dir):
    """Assemble sweep / bench / analyze / tune folders and training runs into report.md and a
    self-contained report.html.

    
    A training run is a folder with metrics.jsonl and model.npz (what `xpnet train --plots DIR`
    writes) or a metrics log (`xpnet train --metrics FILE`, its model beside it or where the log says):
    its learning curves, first-layer weights, misclassified test images and confusion matrix.
      xpnet train --hidden 10 --epochs 5 --plots runs/h10
      xpnet report runs/h10            # or: xpnet report run.jsonl
    """
    from xpnet.experiments.report import build_report

    for d in dirs:
        if not d.exists():
            raise click.BadParameter(f"{d} does not exist", param_hint="DIR")
    paths = build_report(list(dirs), out, title=title, say=click.echo, data_dir=data_dir)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")
