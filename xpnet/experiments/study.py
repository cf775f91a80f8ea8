"""``xpnet study``: the course notes' study in one command, written up as a Markdown report.

Five parts, each a figure whose caption states its numbers (``OUT/README.md``):

1. **hidden**: hidden layer of 10 / 256 / 512 / 1024 units × seeds, the default recipe
   (test accuracy mean ± std, validation curves);
2. **optimizers**: SGD, momentum, RMSProp, Adam, each at the notes' learning rate, constant,
   no regularisation (validation accuracy per epoch, one seed);
3. **batch**: batch (the whole training split), mini-batch (128) and stochastic (1, on a
   subset) gradient descent with the same optimizer and lr, each for the same wall-time
   budget: validation accuracy against training seconds;
4. **recipes**: the plain recipe (Adam 1e-3 constant, batch 128, no regularisation) against
   the default recipe at the largest hidden size, per seed, with test accuracy per epoch;
5. **init**: the init × activation study (``xpnet analyze init``) on a batch of this data.

Everything trains in this process on one split (seed 0, 10 % validation, as ``xpnet sweep``);
timings are training time only (no evaluation) and depend on the machine's load.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click
import numpy as np

from xpnet.cli.options import DATASET_CHOICES, HiddenSizes, comma_list
from xpnet.training.recipe import RECIPES

PARTS = ("hidden", "optimizers", "batch", "recipes", "init")
OPTIMIZER_LRS = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 1e-3, "adam": 1e-3}  # the notes' (xpnet's) defaults


# ---------------------------------------------------------------------------- training
def train_run(data: dict, hidden, recipe: dict, seed: int, optimizer: str | None = None, lr: float | None = None,
              batch_size: int | None = None, epochs: int | None = None, budget_s: float | None = None,
              rows: slice | None = None, test_every_epoch: bool = False) -> dict:
    """One run; returns its per-epoch records (train/val, cumulative training seconds, test) and final test."""
    from xpnet.nn.model import MLP
    from xpnet.optim.optimizers import get_optimizer
    from xpnet.optim.schedules import build_schedule
    from xpnet.training.trainer import Trainer, evaluate

    Xtr, ytr = data["Xtr"], data["ytr"]
    if rows is not None:
        Xtr, ytr = Xtr[rows], ytr[rows]
    optimizer = optimizer or recipe["optimizer"]
    bs = min(batch_size or recipe["batch_size"], len(Xtr))
    epochs = epochs or recipe["epochs"]
    lr = lr if lr is not None else (recipe["lr"] if optimizer in ("adam", "adamw") and recipe["lr"] else
                                    OPTIMIZER_LRS.get(optimizer, 1e-3))
    n_batches = -(-len(Xtr) // bs)
    schedule = build_schedule(recipe["schedule"], epochs * n_batches, None)
    net = MLP([Xtr.shape[1], *hidden, len(data["class_names"])], dropout=recipe["dropout"],
              label_smoothing=recipe["label_smoothing"], seed=seed)
    opt = get_optimizer(optimizer, lr, schedule=schedule)
    clock = [0.0]

    def callback(rec, trainer):
        clock[0] += rec["epoch_s"]
        rec["time_s"] = clock[0]
        if test_every_epoch:
            rec["test_acc"] = evaluate(net, data["Xte"], data["yte"])["accuracy"]
        if budget_s is not None and clock[0] >= budget_s:
            trainer.stop_requested = True

    t0 = time.perf_counter()
    trainer = Trainer(net, opt, Xtr, ytr, batch_size=bs, val=(data["Xv"], data["yv"]), seed=seed, callbacks=[callback])
    history = trainer.run(epochs)
    test = evaluate(net, data["Xte"], data["yte"])
    return {"hidden": list(hidden), "seed": seed, "optimizer": optimizer, "lr": lr, "batch_size": bs,
            "epochs": len(history), "max_epochs": epochs, "schedule": recipe["schedule"], "dropout": recipe["dropout"],
            "label_smoothing": recipe["label_smoothing"], "n_train": int(len(Xtr)), "records": history.records,
            "test_acc": test["accuracy"], "test_loss": test["loss"], "train_s": clock[0],
            "wall_s": time.perf_counter() - t0, "params": net.n_params}


def _mean_std(values):
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _curve_mean(runs, key):
    n = min(len(r["records"]) for r in runs)
    return [statistics.mean(r["records"][i][key] for r in runs) for i in range(n)]


def _pct(x):
    return f"{x * 100:.2f} %"


# ---------------------------------------------------------------------------- parts
def part_hidden(data, hiddens, seeds, epochs, say):
    runs = []
    for h in hiddens:
        for seed in seeds:
            r = train_run(data, h, RECIPES["default"], seed, epochs=epochs, test_every_epoch=h == hiddens[-1])
            runs.append(r)
            say(f"  hidden {'-'.join(map(str, h))} seed {seed}: test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    return runs


def part_optimizers(data, hidden, epochs, seed, say):
    runs = []
    for name, lr in OPTIMIZER_LRS.items():
        r = train_run(data, hidden, RECIPES["plain"], seed, optimizer=name, lr=lr, epochs=epochs)
        runs.append(r)
        say(f"  {name} lr {lr:g}: val {_pct(r['records'][-1]['val_acc'])}, test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    return runs


def part_batch(data, hidden, budget_s, subset, seed, say):
    n = len(data["Xtr"])
    # (label, batch size, rows, most epochs): the caps only bound the trainer's per-step lr table
    variants = [("batch", n, None, 1000), ("mini-batch", 128, None, 100), ("stochastic", 1, slice(0, min(subset, n)), 40)]
    runs = []
    for label, bs, rows, cap in variants:
        r = train_run(data, hidden, RECIPES["plain"], seed, batch_size=bs, epochs=cap, budget_s=budget_s, rows=rows)
        r["label"] = label
        runs.append(r)
        say(f"  {label} (batch {r['batch_size']:,}, {r['n_train']:,} rows): {r['epochs']} epochs in {r['train_s']:.1f} s, "
            f"val {_pct(r['records'][-1]['val_acc'])}")
    return runs


def part_recipes(data, hidden, seeds, epochs, default_runs, say):
    plain = []
    for seed in seeds:
        r = train_run(data, hidden, RECIPES["plain"], seed, epochs=epochs, test_every_epoch=True)
        plain.append(r)
        say(f"  plain hidden {'-'.join(map(str, hidden))} seed {seed}: test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    default = [r for r in default_runs if r["hidden"] == list(hidden)]
    if len(default) < len(seeds):
        default = []
        for seed in seeds:
            default.append(train_run(data, hidden, RECIPES["default"], seed, epochs=epochs, test_every_epoch=True))
    return {"plain": plain, "default": default}


# ---------------------------------------------------------------------------- figures
def _plt():
    from xpnet.io.plotting import get_pyplot

    return get_pyplot()


def fig_batch(runs, path):
    plt = _plt()
    if plt is None:
        return None
    from xpnet.io.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in runs:
        ax.plot([0] + [e["time_s"] for e in r["records"]], [None] + [e["val_acc"] * 100 for e in r["records"]],
                marker="o", ms=3, label=f"{r['label']} (batch {r['batch_size']:,})")
    ax.set(xlabel="training seconds", ylabel="validation accuracy (%)",
           title="Batch vs mini-batch vs stochastic gradient descent")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def fig_recipes(recipes, path):
    plt = _plt()
    if plt is None:
        return None
    from xpnet.io.plotting import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for name, color in (("plain", "tab:gray"), ("default", "tab:blue")):
        for i, r in enumerate(recipes[name]):
            ep = range(1, len(r["records"]) + 1)
            kw = {"color": color, "alpha": 0.8, "lw": 1.2, "label": f"{name} recipe" if i == 0 else None}
            axes[0].plot(ep, [e["test_acc"] * 100 for e in r["records"]], **kw)
            axes[1].plot(ep, [e["val_loss"] for e in r["records"]], **kw)
    axes[0].set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy per epoch (each line a seed)")
    axes[1].set(xlabel="epoch", ylabel="validation loss", title="Validation loss per epoch")
    lo = min(e["test_acc"] for rs in recipes.values() for r in rs for e in r["records"][min(2, len(r["records"]) - 1):]) * 100
    axes[0].set_ylim(lo - 0.2, None)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- report
def write_report(results: dict, out: Path) -> list[Path]:
    """README.md (the report) + results.json + the figures into ``out``."""
    from xpnet.fileio import atomic_write
    from xpnet.experiments import plots

    out.mkdir(parents=True, exist_ok=True)
    meta = results["meta"]
    written, sections = [], []
    name = meta["dataset"]
    sections.append(
        f"# The notes' study on {name}\n\n"
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['device']}); "
        f"**{meta['total_s'] / 60:.1f} minutes** in all ({', '.join(f'{k} {v:.0f} s' for k, v in meta['part_s'].items())}). "
        f"Data: {meta['n_train']:,} training / {meta['n_val']:,} validation (10 %, stratified, seed 0) / "
        f"{meta['n_test']:,} test images from {meta['source']}. Training times are training only and depend on the "
        "machine's load" + (" (a 2-core machine shared with other jobs)" if meta.get("shared") else "") + ".\n")
    rd = RECIPES["default"]
    default_txt = (f"Adam peak {rd['lr']:g} with a one-cycle schedule, batch {rd['batch_size']}, dropout {rd['dropout']:g}, "
                   f"label smoothing {rd['label_smoothing']:g}")

    if "hidden" in results:
        runs = results["hidden"]
        labels = list(dict.fromkeys("-".join(map(str, r["hidden"])) for r in runs))
        stats = {lab: _mean_std(r["test_acc"] for r in runs if "-".join(map(str, r["hidden"])) == lab) for lab in labels}
        series = {"default recipe": [(lab, *stats[lab]) for lab in labels]}
        p = plots.accuracy_vs_hidden(series, out / "hidden.png")
        curves = {}
        for lab in labels:
            rs = [r for r in runs if "-".join(map(str, r["hidden"])) == lab]
            curves[f"hidden {lab}"] = {"train": _curve_mean(rs, "train_acc"), "val": _curve_mean(rs, "val_acc")}
        p2 = plots.learning_curves(curves, out / "hidden_curves.png")
        written += [x for x in (p, p2) if x]
        epochs = runs[0]["epochs"]
        seeds = sorted({r["seed"] for r in runs})
        caption = "; ".join(f"{lab} units: **{_pct(m)} ± {s * 100:.2f}**" for lab, (m, s) in stats.items())
        table = ["| hidden | params | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | s/epoch (median) |",
                 "|---|---:|" + "---:|" * len(seeds) + "---:|---:|"]
        for lab in labels:
            rs = sorted((r for r in runs if "-".join(map(str, r["hidden"])) == lab), key=lambda r: r["seed"])
            med = statistics.median(e["epoch_s"] for r in rs for e in r["records"])
            table.append(f"| {lab} | {rs[0]['params']:,} | " + " | ".join(_pct(r["test_acc"]) for r in rs) +
                         f" | {_pct(stats[lab][0])} ± {stats[lab][1] * 100:.2f} | {med:.2f} |")
        sections.append(
            f"## 1. Hidden layer size\n\nOne hidden layer of each size, the default recipe ({default_txt}), {epochs} epochs, "
            f"seeds {', '.join(map(str, seeds))}.\n\n![accuracy vs hidden size](hidden.png)\n\n"
            f"*Test accuracy, mean ± std over {len(seeds)} seeds: {caption}.*\n\n" + "\n".join(table) + "\n\n"
            "![learning curves](hidden_curves.png)\n\n*Train (with dropout active) and validation accuracy per epoch, "
            "mean over seeds: " + "; ".join(f"{k}: val {_pct(c['val'][-1])} after epoch {len(c['val'])}, train "
                                           f"{_pct(c['train'][-1])}" for k, c in curves.items()) + ".*\n")

    if "optimizers" in results:
        runs = results["optimizers"]
        curves = {f"{r['optimizer']} (lr {r['lr']:g})": [e["val_acc"] for e in r["records"]] for r in runs}
        p = plots.optimizer_curves(curves, out / "optimizers.png")
        written += [p] if p else []
        h = "-".join(map(str, runs[0]["hidden"]))
        caption = "; ".join(f"{r['optimizer']}: {_pct(r['records'][0]['val_acc'])} after epoch 1, "
                            f"{_pct(r['records'][-1]['val_acc'])} after epoch {r['epochs']} (test {_pct(r['test_acc'])})"
                            for r in runs)
        sections.append(
            f"## 2. Optimizers\n\nHidden {h}, batch {runs[0]['batch_size']}, {runs[0]['epochs']} epochs, seed "
            f"{runs[0]['seed']}, constant learning rate at each optimizer's usual value (SGD and momentum 0.1, RMSProp "
            "and Adam 1e-3), no regularisation.\n\n![optimizers](optimizers.png)\n\n"
            f"*Validation accuracy per epoch: {caption}.*\n")

    if "batch" in results:
        runs = results["batch"]
        p = fig_batch(runs, out / "batch.png")
        written += [p] if p else []
        caption = "; ".join(
            f"{r['label']} (batch {r['batch_size']:,} of {r['n_train']:,} rows): {r['epochs']} epoch(s) = "
            f"{r['epochs'] * -(-r['n_train'] // r['batch_size']):,} steps in {r['train_s']:.1f} s, val "
            f"{_pct(r['records'][-1]['val_acc'])}" for r in runs)
        sub = runs[-1]["n_train"]
        sections.append(
            f"## 3. Batch, mini-batch and stochastic gradient descent\n\nHidden {'-'.join(map(str, runs[0]['hidden']))}, "
            f"Adam {runs[0]['lr']:g} constant, no regularisation, each trained until a budget of "
            f"{meta['batch_budget_s']:g} s of training time was spent (checked after each epoch). Stochastic gradient "
            f"descent (batch 1) runs on the first {sub:,} training rows so that an epoch is short enough to plot; "
            "batch gradient descent takes one step per epoch over the whole training split.\n\n"
            f"![batch sizes](batch.png)\n\n*Validation accuracy against training seconds: {caption}.*\n")

    if "recipes" in results:
        rec = results["recipes"]
        p = fig_recipes(rec, out / "recipes.png")
        written += [p] if p else []
        lines = ["| recipe | seed | test (last epoch) | best epoch's test | last − best | val loss min → last |",
                 "|---|---:|---:|---:|---:|---|"]
        summary = []
        for name in ("plain", "default"):
            accs = []
            for r in rec[name]:
                tests = [e["test_acc"] for e in r["records"]]
                vl = [e["val_loss"] for e in r["records"]]
                accs.append(r["test_acc"])
                lines.append(f"| {name} | {r['seed']} | {_pct(r['test_acc'])} | {_pct(max(tests))} (epoch "
                             f"{int(np.argmax(tests)) + 1}) | {(tests[-1] - max(tests)) * 100:+.2f} | {min(vl):.4f} "
                             f"(epoch {int(np.argmin(vl)) + 1}) → {vl[-1]:.4f} |")
            m, s = _mean_std(accs)
            summary.append(f"{name}: {_pct(m)} ± {s * 100:.2f} ({', '.join(_pct(a) for a in accs)})")
        rp = RECIPES["plain"]
        sections.append(
            f"## 4. Plain vs default recipe\n\nHidden {'-'.join(map(str, rec['plain'][0]['hidden']))}, "
            f"{rec['plain'][0]['epochs']} epochs. Plain: Adam {rp['lr'] or 1e-3:g} constant, batch {rp['batch_size']}, no "
            f"regularisation (the notes' baseline). Default: {default_txt}.\n\n![recipes](recipes.png)\n\n"
            f"*Test accuracy, mean ± std over seeds — {'; '.join(summary)}.*\n\n" + "\n".join(lines) + "\n")

    if "init" in results:
        init = results["init"]
        sections.append(
            f"## 5. Initialisation × activation\n\nNetwork {'-'.join(map(str, init['config']['sizes']))}, one forward "
            f"and backward pass on {init['config']['n_samples']} training images, no training "
            "(`xpnet analyze init`; full table in [init/init_study.md](init/init_study.md)).\n\n"
            "![init trends](init/init_trends.png)\n\n*Activation std and weight-gradient norm per layer: "
            + "; ".join(init["summary"]) + ".*\n\n![activation histograms](init/init_activations.png)\n")

    text = "\n".join(sections)
    written.append(atomic_write(out / "README.md", lambda fh: fh.write(text), mode="w"))
    slim = {k: v for k, v in results.items() if k != "init"}
    if "init" in results:
        slim["init"] = {"config": results["init"]["config"], "summary": results["init"]["summary"]}
    written.append(atomic_write(out / "results.json", lambda fh: json.dump(slim, fh, indent=1), mode="w"))
    return written


def run_study(dataset, data_dir, out, parts=PARTS, hiddens=((10,), (256,), (512,), (1024,)), seeds=(0, 1, 2),
              epochs=None, optimizer_epochs=10, optimizer_hidden=None, batch_hidden=(256,), batch_budget_s=15.0,
              stochastic_rows=6000, limit=None, command="xpnet study", say=print) -> dict:
    """Run the chosen parts and write the report into ``out``; returns the results dict."""
    import datetime
    import os

    from xpnet import backend
    from xpnet.experiments.sweep import prepare_data

    t_start = time.perf_counter()
    data = prepare_data(dataset, data_dir, limit)
    hiddens = [tuple(h) for h in hiddens]
    results: dict = {}
    part_s: dict = {}
    def meta():
        return {
            "dataset": data["name"], "source": data["source"], "n_train": int(len(data["Xtr"])),
            "n_val": int(len(data["Xv"])), "n_test": int(len(data["Xte"])), "seeds": list(seeds), "command": command,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "device": backend.device_name("cpu"),
            "total_s": time.perf_counter() - t_start, "part_s": dict(part_s), "batch_budget_s": batch_budget_s,
            "shared": os.getloadavg()[0] > (os.cpu_count() or 1) * 0.75, "load_avg": os.getloadavg()[0], "limit": limit,
            "complete": len(part_s) == len(parts),
        }

    for part in parts:
        t0 = time.perf_counter()
        say(f"[{part}]")
        if part == "hidden":
            results["hidden"] = part_hidden(data, hiddens, list(seeds), epochs, say)
        elif part == "optimizers":
            results["optimizers"] = part_optimizers(data, tuple(optimizer_hidden or hiddens[-1]), optimizer_epochs,
                                                    seeds[0], say)
        elif part == "batch":
            results["batch"] = part_batch(data, tuple(batch_hidden), batch_budget_s, stochastic_rows, seeds[0], say)
        elif part == "recipes":
            results["recipes"] = part_recipes(data, hiddens[-1], list(seeds), epochs, results.get("hidden", []), say)
        elif part == "init":
            from xpnet.experiments.init_study import init_study, summary_lines, write_outputs

            res = init_study(X=data["Xtr"][:1000], y=data["ytr"][:1000], n_classes=len(data["class_names"]))
            res["config"]["data"] = f"first 1000 training rows of {data['name']}"
            write_outputs(res, Path(out) / "init")
            res["summary"] = summary_lines(res)
            results["init"] = res
            for line in res["summary"]:
                say(f"  {line}")
        part_s[part] = time.perf_counter() - t0
        results["meta"] = meta()
        write_report(results, Path(out))  # after every part: a crash later loses nothing done so far
    return results


@click.command(context_settings={"show_default": True})
@click.option("--dataset", type=click.Choice(DATASET_CHOICES), default="mnist")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder with the four IDX files (instead of looking --dataset up).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/study"), help="Report folder: README.md, results.json, figures.")
@click.option("--parts", default=",".join(PARTS), callback=comma_list, help="Comma list of parts: " + ", ".join(PARTS) + ".")
@click.option("--hidden", type=HiddenSizes(), multiple=True, default=["10", "256", "512", "1024"], help="Networks of part 1, repeated (--hidden 10 --hidden 1024); the last is used by parts 2 and 4.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="Seeds 0..N-1 (parts 1 and 4).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs of parts 1 and 4 [default: the recipe's 20].")
@click.option("--optimizer-epochs", type=click.IntRange(min=1), default=10, help="Epochs of part 2.")
@click.option("--batch-hidden", type=HiddenSizes(), default="256", help="Hidden layers of part 3's network.")
@click.option("--batch-budget", type=click.FloatRange(min=0, min_open=True), default=15.0, help="Training seconds per variant in part 3.")
@click.option("--stochastic-rows", type=click.IntRange(min=10), default=6000, help="Training rows for batch size 1 in part 3.")
@click.option("--limit", type=click.IntRange(min=20), default=None, help="Use only the first N training images (quick runs).")
def study(dataset, data_dir, out, parts, hidden, seeds, epochs, optimizer_epochs, batch_hidden, batch_budget,
          stochastic_rows, limit):
    """The course notes' study: hidden sizes, optimizers, batch sizes, plain vs default recipe, init.

    \b
    Writes OUT/README.md (the report: each figure's caption states its numbers), OUT/results.json
    and the figures. 44 minutes for MNIST on a loaded 2-core machine (2026-11-24):
      xpnet study --dataset mnist --data-dir ../shared/data/mnist --out docs/study
    """
    from xpnet.errors import ConfigError

    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ConfigError(f"unknown part {bad[0] if bad else ''!r}: choose from {', '.join(PARTS)}")
    import sys

    command = "xpnet " + " ".join(sys.argv[1:]) if sys.argv and "study" in sys.argv else "xpnet study"
    t0 = time.perf_counter()
    run_study(dataset if not data_dir else None, data_dir, out, parts=parts, hiddens=hidden, seeds=tuple(range(seeds)),
              epochs=epochs, optimizer_epochs=optimizer_epochs, batch_hidden=batch_hidden, batch_budget_s=batch_budget,
              stochastic_rows=stochastic_rows, limit=limit, command=command, say=click.echo)
    click.echo(f"wrote {out / 'README.md'} ({(time.perf_counter() - t0) / 60:.1f} min)")
