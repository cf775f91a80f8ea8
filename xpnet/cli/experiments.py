"""``xpnet sweep``, ``xpnet analyze init``, ``xpnet tune`` and ``xpnet report`` (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import click

from xpnet.cli.options import DATASET_CHOICES, HiddenSizes, comma_list

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
INITS = ("he", "xavier", "normal")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")


def _names(allowed, option):
    def callback(ctx, param, value):
        names = comma_list(ctx, param, value)
        if not names:
            raise click.BadParameter("give at least one value", param_hint=option)
        for name in names:
            if name not in allowed:
                raise click.BadParameter(f"unknown value {name!r}: choose from {', '.join(allowed)}", param_hint=option)
        return names

    return callback


def _devices(ctx, param, value):
    devices = comma_list(ctx, param, value)
    for d in devices:
        if d != "cpu" and not (d == "gpu" or (d.startswith("gpu:") and d[4:].isdigit())):
            raise click.BadParameter(f"{d!r}: use cpu, gpu or gpu:N", param_hint="--device")
    if not devices:
        raise click.BadParameter("give at least one device", param_hint="--device")
    return devices


def _dataset_label(dataset, data_dir):
    return f"dir:{Path(data_dir).resolve().name}" if data_dir else dataset


# ---------------------------------------------------------------------------- sweep
@click.command(context_settings={"show_default": True})
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=["10", "256", "512", "1024"], help="One network's hidden layers (120,64); repeat to compare networks: --hidden 10 --hidden 256 --hidden 120,64.")
@click.option("--optimizer", "optimizers", default="adam", callback=_names(OPTIMIZERS, "--optimizer"), help="Comma list: sgd,momentum,rmsprop,adam.")
@click.option("--activation", "activations", default="relu", callback=_names(ACTIVATIONS, "--activation"), help="Comma list: relu,leaky_relu,sigmoid,tanh.")
@click.option("--init", "inits", default="he", callback=_names(INITS, "--init"), help="Comma list: he,xavier,normal.")
@click.option("--device", "devices", default="cpu", callback=_devices, help="Comma list: cpu,gpu.")
@click.option("--epochs", type=click.IntRange(min=1), default=5)
@click.option("--repeats", type=click.IntRange(min=1), default=1, help="Runs per configuration with seeds SEED, SEED+1, ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=128)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate [default: 1e-3 for adam/rmsprop, 0.1 for sgd/momentum].")
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder with the four IDX files (instead of --dataset).")
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images (quick runs).")
@click.option("--augment", is_flag=True, help="Random shifts/rotations of training images.")
@click.option("--seed", type=int, default=0, help="First seed.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Results folder (runs already there are skipped); with --storage, this worker's own runs.")
@click.option("--storage", default=None, help="Database shared by workers: sqlite:///sweep.db on one machine, postgresql://user:pw@host/db across machines. Each run is trained exactly once by one of them.")
@click.option("--study-name", default=None, help="Name of the shared sweep (with --storage).")
@click.option("--heartbeat", type=click.FloatRange(min=0), default=None, help="With --storage: seconds between heartbeats; a worker silent for two loses its run to another. 0: off. [default: 10]")
def sweep(hidden, optimizers, activations, inits, devices, epochs, repeats, batch_size, lr, dataset, data_dir, limit, augment, seed, out,
          storage, study_name, heartbeat):
    """Train every combination of the options (× repeats) and collect the results.

    \b
    Writes OUT/results.csv, OUT/results.json, OUT/curves/<run_id>.json and OUT/best_model.npz.
    Re-running into the same OUT skips the runs already there.
    \b
    Example:
      xpnet sweep --hidden 10 --hidden 256 --hidden 512 --hidden 1024 --epochs 5 --repeats 3 --out runs/sweep
      xpnet report runs/sweep
      # the same grid on several machines, each run once (docs/distributed.md):
      xpnet sweep --hidden 10 --hidden 1024 --repeats 3 --storage postgresql://xpnet:PW@db-host/xpnet --study-name g1 --out runs/w$HOSTNAME
    """
    from xpnet.experiments.sweep import make_grid, run_sweep

    if (study_name or heartbeat is not None) and not storage:
        raise click.BadParameter("--study-name/--heartbeat need --storage", param_hint="--storage")
    if storage:
        from xpnet.experiments.tune import import_optuna, storage_url

        import_optuna()
        storage_url(storage)
        if not study_name:
            raise click.BadParameter("--storage needs --study-name (the sweep the workers share)", param_hint="--study-name")

    configs = make_grid(hidden, optimizers, activations, inits, devices, repeats, epochs, batch_size, lr=lr,
                        dataset=_dataset_label(dataset, data_dir), limit=limit, augment=augment, seed=seed)
    click.echo(f"sweep: {len(configs)} run(s) = {len(hidden)} shape(s) × {len(optimizers)} optimizer(s) × "
               f"{len(activations)} activation(s) × {len(inits)} init(s) × {len(devices)} device(s) × {repeats} seed(s)")
    run_sweep(configs, out, data_dir=data_dir, say=click.echo, storage=storage, study_name=study_name, heartbeat=heartbeat)


# ---------------------------------------------------------------------------- analyze
@click.group(context_settings={"show_default": True})
def analyze():
    """Studies of a network's internals."""


@analyze.command("init", context_settings={"show_default": True})
@click.option("--depth", type=click.IntRange(min=1), default=5, help="Number of hidden layers.")
@click.option("--width", type=click.IntRange(min=1), default=256, help="Units per hidden layer.")
@click.option("--init", "inits", default="normal,xavier,he", callback=_names(INITS, "--init"))
@click.option("--activation", "activations", default="sigmoid,tanh,relu,leaky_relu", callback=_names(ACTIVATIONS, "--activation"))
@click.option("--samples", type=click.IntRange(min=2), default=1000, help="Training images in the batch.")
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def analyze_init(depth, width, inits, activations, samples, dataset, data_dir, seed, out):
    """The vanishing-gradient experiment: activation/gradient statistics per layer for each init × activation.

    \b
    Writes OUT/init_study.{json,csv,md} and, with matplotlib, OUT/init_activations.png,
    OUT/init_gradients.png and OUT/init_trends.png.
    """
    import time

    from xpnet.experiments import plots
    from xpnet.experiments.init_study import init_study, summary_lines, write_outputs

    t0 = time.perf_counter()
    result = init_study(depth=depth, width=width, inits=[i for i in ("normal", "xavier", "he") if i in inits],
                        activations=list(activations), n_samples=samples, dataset=dataset if not data_dir else None,
                        data_dir=data_dir, seed=seed)
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
@click.option("--method", type=click.Choice(["grid", "random", "bayes"]), default="random")
@click.option("--trials", type=click.IntRange(min=1), default=20, help="Trials for random/bayes (grid runs its whole grid).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Start no new trial after this many seconds.")
@click.option("--epochs", type=click.IntRange(min=1), default=3)
@click.option("--lr", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI (log scale) or one value.")
@click.option("--hidden", callback=_values(int), default=None, help="Hidden sizes to try (one layer).")
@click.option("--batch-size", callback=_values(int), default=None, help="Batch sizes to try.")
@click.option("--l2", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI or one value.")
@click.option("--dropout", callback=_values(float), default=None, help="grid: values; random/bayes: LO,HI or one value.")
@click.option("--optimizer", callback=_values(str), default=None, help="Optimizers to try.")
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="fashion-mnist")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images.")
@click.option("--seed", type=int, default=0)
@click.option("--storage", default=None, help="Database shared by workers (random/bayes): sqlite:///study.db on one machine, postgresql://user:pw@host/db across machines. --trials is then the study's total.")
@click.option("--study-name", default=None, help="Study name; workers giving the same --storage and --study-name join one study.")
@click.option("--heartbeat", type=click.FloatRange(min=0), default=None, help="With --storage: seconds between a worker's heartbeats; a worker silent for two has its trial marked FAIL and retried. 0: off. [default: 10]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="This worker's folder (trials.json/csv, best.json, best_model.npz).")
def tune(method, trials, timeout, epochs, lr, hidden, batch_size, l2, dropout, optimizer, dataset, data_dir, limit, seed,
         storage, study_name, heartbeat, out):
    """Search learning rate, hidden size, batch size, L2, dropout and optimizer.

    \b
    Default grid (8 configs): lr 1e-3,3e-3 × hidden 128,512 × dropout 0,0.2 (adam, batch 128, L2 0).
    Default random/bayes space: lr 1e-4..0.3 (log), hidden 64..1024, batch 32..256,
    L2 1e-5..1 (log), dropout 0..0.5, optimizer sgd/momentum/rmsprop/adam.
    \b
    Examples:
      xpnet tune --method random --trials 20 --epochs 3 --limit 10000 --out runs/tune
      xpnet tune --method bayes --storage sqlite:///study.db --study-name s --trials 10 --out runs/tune
      # on every machine (docs/distributed.md): one study of 100 trials in all
      xpnet tune --method bayes --storage postgresql://xpnet:PW@db-host/xpnet --study-name s1 --trials 100 --out runs/w$HOSTNAME
    """
    from xpnet.experiments.sweep import prepare_data
    from xpnet.experiments.tune import DEFAULT_HEARTBEAT, build_space, import_optuna, leaderboard_table, run_tune, storage_url

    if method == "grid" and (storage or study_name):
        raise click.BadParameter("--storage/--study-name apply to --method random or bayes "
                                 "(a grid across machines: xpnet sweep --storage)", param_hint="--storage")
    if study_name and not storage:
        raise click.BadParameter("--study-name needs --storage", param_hint="--study-name")
    if heartbeat is not None and not storage:
        raise click.BadParameter("--heartbeat needs --storage", param_hint="--heartbeat")
    if method == "bayes" or storage:
        import_optuna()
    if storage:
        storage_url(storage)  # a bad URL or a missing driver: one line before the data is loaded
        if not study_name:
            raise click.BadParameter("--storage needs --study-name (the study the workers share)", param_hint="--study-name")
    given = {"lr": lr, "hidden": hidden, "batch_size": batch_size, "l2": l2, "dropout": dropout, "optimizer": optimizer}
    for name in optimizer or ():
        if name not in OPTIMIZERS:
            raise click.BadParameter(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}", param_hint="--optimizer")
    space = build_space(given) if method != "grid" else None
    data = prepare_data(dataset if not data_dir else None, data_dir, limit)
    click.echo(f"tune ({method}): {data['name']}, {len(data['Xtr']):,} train / {len(data['Xv']):,} val, {epochs} epoch(s) per trial")
    rows = run_tune(method, data, out, trials=trials, epochs=epochs, timeout=timeout, seed=seed, grid=given,
                    space=space, storage=storage, study_name=study_name, say=click.echo,
                    heartbeat=DEFAULT_HEARTBEAT if heartbeat is None else heartbeat)
    click.echo("\nLeaderboard (top 10 by validation accuracy):")
    click.echo(leaderboard_table(rows))
    click.echo(f"best configuration: {out / 'best.json'} · model: {out / 'best_model.npz'}")


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
