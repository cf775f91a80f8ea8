"""``xpnet train``: options → one :class:`~xpnet.training.recipe.RunConfig` → ``recipe`` builds and trains it → files."""

from __future__ import annotations

import platform
import sys
import warnings
from pathlib import Path

import click

from xpnet import choices
from xpnet.cli.options import RUN_FIELDS, HiddenSizes, build_config, positive_float, run_options

# What the resuming command may change in the checkpoint's run config (given as flags).
NOT_FROM_CHECKPOINT = ("epochs", "device")


@click.command(context_settings={"show_default": True})
@run_options
@click.option("--hidden", type=HiddenSizes(), default=None, show_default="1024", help="Hidden layer widths of the network: 1024, or 120,64 for two layers.")
@click.option("--activation", type=click.Choice(choices.ACTIVATIONS), default=None, show_default="relu")
@click.option("--init", "init", type=click.Choice(choices.INITS), default=None, show_default="he", help="Weight init: He √(2/n), Xavier √(1/n), normal×0.01.")
@click.option("--optimizer", type=click.Choice(choices.OPTIMIZERS), default=None, show_default="adam")
@click.option("--lr", type=float, default=None, callback=positive_float, show_default="2e-3 for adam/adamw, plain recipe 1e-3; rmsprop 1e-3; sgd/momentum 0.1", help="Learning rate; the peak with a schedule.")
@click.option("--schedule", type=click.Choice(choices.SCHEDULES), default=None, show_default="onecycle; plain recipe: constant", help="Learning-rate schedule, updated per step: onecycle warms up to --lr and anneals to lr/250,000 (PyTorch's OneCycleLR); cosine anneals to 0; step divides by 10 after each third; exponential decays to 1 %.")
@click.option("--warmup", type=click.FloatRange(min=0), default=None, show_default="onecycle: 30 % of the run; others: none", help="Linear warm-up EPOCHS before the schedule (onecycle: epochs to the peak).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, show_default="128")
@click.option("--epochs", type=click.IntRange(min=1), default=None, show_default="20")
@click.option("--l2", type=click.FloatRange(min=0), default=None, show_default="0", help="L2 strength λ (penalty λ/2m·ΣW²).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, show_default="0.01", help="AdamW's decoupled weight decay (all parameters, as torch.optim.AdamW).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="0.1; plain recipe: 0", help="Dropout rate on hidden layers.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None, show_default="0.1; plain recipe: 0", help="Softmax cross-entropy against (1-ε)·one-hot + ε/K.")
@click.option("--early-stopping", "patience", type=click.IntRange(min=1), default=None, help="Stop after PATIENCE epochs without val-loss improvement; keep the best weights.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, show_default="0.1", help="Fraction of the training set held out for validation (stratified).")
@click.option("--augment/--no-augment", default=None, show_default="handwriting recipe: on; others: off", help="Random shifts (±2 px), rotations (±10°), scale (±10 %) and stroke thickness (±1 px per side) of training images.")
@click.option("--dtype", type=click.Choice(choices.DTYPES), default=None, show_default="float32")
@click.option("--graph/--no-graph", default=None, show_default="graph", help="On GPU: replay each step as a CUDA graph (falls back to eager when the configuration or CuPy does not allow it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, show_default="model.npz", help="Where to save the trained model.")
@click.option("--metrics", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Metrics log: one JSON line per event (start with the config, each epoch, test). `--config` on it replays the run.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, help="Save a resumable checkpoint every N epochs.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Checkpoint file [default: OUT with .ckpt.npz].")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Continue from a checkpoint: its run config, --out and --metrics win over the options above, except --epochs and --device.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path), default=None, help="Draw the run's pictures (learning curves, first-layer weights, misclassified test images, confusion matrix) and report.html into DIR; --out and --metrics default to DIR/model.npz and DIR/metrics.jsonl (`xpnet report DIR` redraws them).")
@click.option("--print-config", is_flag=True, help="Print the resolved run config as TOML (a file for --config) and exit.")
@click.option("--quiet", is_flag=True, help="Only the final line.")
def train(**opts):
    """Train an MLP and report test accuracy.

    Without tuning flags this is the default recipe, chosen by measurement (docs/recipe.md):
    Adam with a one-cycle schedule peaking at 2e-3, batch 128, dropout 0.1, label smoothing
    0.1, 20 epochs. --recipe plain is the notes' baseline (Adam 1e-3 constant, batch 128, no
    regularisation); any flag overrides the recipe, and --config FILE sets many at once.

    \b
    Examples:
      xpnet train --dataset mnist --data-dir DIR          # the default recipe
      xpnet train --recipe plain --hidden 1024 --epochs 20 # the notes' baseline
      xpnet train --hidden 10 --epochs 5                   # the notes' "10 hidden neurons"
      xpnet train --optimizer adamw --weight-decay 0.05 --schedule cosine --warmup 1
      xpnet train --hidden 120,64 --optimizer momentum --lr 0.05 --device gpu
      xpnet train --print-config > run.toml; xpnet train --config run.toml --seed 1
    Ctrl-C stops after the current batch and saves a checkpoint to resume from.
    """
    from xpnet import backend
    from xpnet.errors import ModelFileError
    from xpnet.fileio import check_writable
    from xpnet.io.npz import load_checkpoint, save_checkpoint
    from xpnet.io.runlog import RunLog
    from xpnet.training.recipe import RunConfig, make_run_trainer, prepare_split
    from xpnet.training.trainer import evaluate

    say = (lambda *a, **k: None) if opts["quiet"] else click.echo
    net = state = None
    outputs = {}
    if opts["resume"]:
        net, state, saved = load_checkpoint(opts["resume"], device=opts["device"] or "cpu")
        outputs = saved.pop("outputs", {}) if isinstance(saved.get("outputs"), dict) else {}
        saved = {k: v for k, v in saved.items() if k in RUN_FIELDS}
        if "recipe" not in saved:  # a checkpoint from before recipes: its options were the plain ones
            saved["recipe"] = "plain"
        given = {k: opts[k] for k in NOT_FROM_CHECKPOINT if opts.get(k) is not None}
        cfg = RunConfig.from_dict(saved).replace(**given).resolve()
    else:
        cfg = build_config(opts)
    if opts["print_config"]:
        click.echo(cfg.to_toml(), nl=False)
        return
    plots = opts["plots"]
    out = Path(opts["out"] or outputs.get("out") or (plots / "model.npz" if plots else "model.npz"))
    metrics = opts["metrics"] or (Path(outputs["metrics"]) if outputs.get("metrics") else None) or \
        (plots / "metrics.jsonl" if plots else None)
    if plots:
        _make_folder(plots)
    check_writable(out)  # before training, not after an hour of it
    if metrics:
        check_writable(metrics)
    checkpoint_path = opts["checkpoint_path"] or out.with_name(out.name.removesuffix(".npz") + ".ckpt.npz")
    run_dict = dict(cfg.to_dict(), outputs={"out": str(out), "metrics": str(metrics) if metrics else None})

    split = prepare_split(cfg, progress=not opts["quiet"])
    if net is not None and (net.sizes[0] != split.n_features or net.sizes[-1] != split.n_classes):
        raise ModelFileError(f"checkpoint {opts['resume']} is for {net.sizes[0]} inputs/{net.sizes[-1]} classes, "
                             f"the data has {split.n_features}/{split.n_classes}")
    log = RunLog(metrics, append=state is not None, keep_epochs=state["epoch"] if state else None) if metrics else None
    callbacks = [_print_epoch(say, cfg.epochs)]
    if log is not None:
        callbacks.append(log.epoch_callback)
    if opts["checkpoint_every"]:
        every = opts["checkpoint_every"]
        callbacks.append(lambda rec, tr: rec["epoch"] % every == 0 and save_checkpoint(
            checkpoint_path, tr, dict(run_dict, schedule_config=_schedule_config(tr.opt))))
    trainer = make_run_trainer(cfg, split, net=net, callbacks=callbacks, progress=not opts["quiet"])
    net, opt = trainer.net, trainer.opt
    run_dict["schedule_config"] = _schedule_config(opt)  # --resume continues exactly this schedule

    say(split.summary())
    say(f"{net} · {opt} · batch {cfg.batch_size} · {backend.device_name(net.device)}")
    say(cfg.describe())
    if state is not None:
        trainer.load_state_dict(state)
        say(f"resumed from {opts['resume']} at epoch {trainer.epoch + 1}, batch {trainer.batch}")
    elif opts.get("config_path") and Path(opts["config_path"]).suffix.lower() in (".jsonl", ".ndjson"):
        from xpnet.io.runlog import read, recorded_blas_cores

        trainer.blas_cores = recorded_blas_cores(read(opts["config_path"]))  # a replay rounds like the run it repeats
    if log is not None:
        if state is None:
            log.write("start", lr=opt.lr_at(1), config=dict(cfg.to_dict(), schedule_config=run_dict["schedule_config"]), model=repr(net), optimizer=repr(opt),
                      device=backend.device_name(net.device), versions=_versions(), out=str(out))
        else:
            log.write("resume", lr=opt.lr_at(opt.t + 1), checkpoint=str(opts["resume"]), epoch=trainer.epoch,
                      batch=trainer.batch)
    if net.device.is_gpu:
        reason = getattr(trainer, "graph_reason", "disabled (--no-graph)")
        say(f"GPU loop: {'eager, ' + reason if reason else 'one CUDA graph replayed per batch'}")
    with warnings.catch_warnings():  # a failed capture is reported below, in one line
        warnings.filterwarnings("ignore", message="CUDA-graph training step failed", category=RuntimeWarning)
        history = trainer.run(cfg.epochs, handle_sigint=True)
    if getattr(trainer, "fallback_reason", None):
        say(f"CUDA graph failed ({trainer.fallback_reason}); the run went on with the eager loop")

    if history.interrupted:
        save_checkpoint(checkpoint_path, trainer, run_dict)
        click.echo(f"interrupted in epoch {trainer.epoch + 1}: checkpoint saved to {checkpoint_path}\n"
                   f"resume with: xpnet train --resume {checkpoint_path} --epochs {cfg.epochs}", err=True)
        sys.exit(130)
    if history.stopped_early:
        say(f"early stopping after epoch {len(history)}; restored the best epoch ({history.best_epoch})")
    scores = evaluate(net, split.X_test, split.y_test)
    net.save(out)
    epoch_s = [r["epoch_s"] for r in history.records]
    median_epoch = sorted(epoch_s)[len(epoch_s) // 2] if epoch_s else float("nan")
    if log is not None:
        log.write("test", lr=opt.lr_at(max(opt.t, 1)), test_loss=scores["loss"], test_acc=scores["accuracy"], median_epoch_s=median_epoch,
                  model=str(out))
    click.echo(f"test accuracy {scores['accuracy'] * 100:.2f}% (loss {scores['loss']:.4f}) · "
               f"median epoch {median_epoch:.2f}s · model saved to {out}")
    if plots:
        from xpnet.experiments.report import write_run_report

        write_run_report(plots, metrics=metrics, model=out, data_dir=cfg.data_dir, say=click.echo)


def _make_folder(folder: Path) -> None:
    from xpnet.errors import OutputError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None


def _schedule_config(opt):
    return opt.schedule.config() if opt.schedule is not None else None


def _print_epoch(say, epochs):
    def callback(rec, trainer):
        val = f" · val loss {rec['val_loss']:.4f} acc {rec['val_acc'] * 100:.2f}%" if rec["val_loss"] is not None else ""
        say(f"epoch {rec['epoch']:>3}/{epochs} · train loss {rec['train_loss']:.4f} acc {rec['train_acc'] * 100:.2f}%"
            f"{val} · {rec['epoch_s']:.2f}s ({rec['samples_per_s']:,.0f} samples/s)")

    return callback


def _versions() -> dict:
    import numpy

    from xpnet import __version__, backend

    versions = {"xpnet": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    gpu = backend.gpu_info()
    if gpu:
        versions["cupy"] = gpu.get("cupy")
    return versions

