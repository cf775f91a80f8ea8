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

import dataclasses
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from xpnet.backend import load_average
from xpnet.errors import ConfigError
from xpnet.training.recipe import RECIPE_KEYS, RECIPES, RunConfig, Split, make_run_trainer, prepare_split

PARTS = ("hidden", "optimizers", "batch", "recipes", "init")
OPTIMIZER_LRS = {"sgd": 0.1, "momentum": 0.1, "rmsprop": 1e-3, "adam": 1e-3}  # the notes' (xpnet's) defaults


# The full study's settings (the command's defaults); a run that differs says so in its report.
FULL = {"hidden": [[10], [256], [512], [1024]], "seeds": 3, "epochs": 20, "optimizer_epochs": 10,
        "optimizer_hidden": [[1024]], "batch_hidden": [[256]], "batch_budget_s": 60.0, "batch_points": 120,
        "stochastic_rows": None, "limit": None}
FULL_LABELS = {"hidden": "networks of part 1", "seeds": "seeds", "epochs": "epochs of parts 1 and 4",
               "optimizer_epochs": "epochs of part 2", "optimizer_hidden": "network of part 2",
               "batch_hidden": "network of part 3", "batch_budget_s": "seconds per method in part 3",
               "batch_points": "samples per method in part 3", "stochastic_rows": "rows for batch 1 in part 3",
               "limit": "training images"}


def _setting(value) -> str:
    if value is None:
        return "all"
    if isinstance(value, list):
        return " / ".join("-".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- training
class StepSampler:
    """A Trainer step callback: validation accuracy every ``every`` steps against training seconds
    (evaluation time excluded), and a stop once ``budget_s`` seconds of training are spent.

    ``every`` is fixed once the first ``budget_s / points`` seconds are trained, from the median
    step time over them (the first step, which may carry one-off compilation, left out): the steps
    that fill ``budget_s / points`` seconds, at least 1, so each method gets about ``points``
    samples at regular step intervals (fewer if the machine slows down later)."""

    def __init__(self, budget_s: float, points: int = 120):
        self.budget_s, self.points = float(budget_s), int(points)
        self.every: int | None = None
        self.samples: list[dict] = []
        self.train_s = 0.0
        self._durations: list[float] = []
        self._mark = None

    def sample(self, trainer) -> None:
        from xpnet.training.trainer import evaluate

        scores = evaluate(trainer.net, *trainer.val)
        step = trainer.opt.t
        self.samples.append({"step": step, "time_s": self.train_s, "epochs": step * trainer.batch_size /
                             trainer.X.shape[0], "val_acc": scores["accuracy"], "val_loss": scores["loss"]})

    def start(self, trainer) -> None:
        """The untrained network's point (time 0), then the clock starts."""
        self.sample(trainer)
        self._mark = time.perf_counter()

    def __call__(self, trainer) -> None:
        from xpnet import backend

        backend.synchronize(trainer.net.xp)
        dt = time.perf_counter() - self._mark
        self.train_s += dt
        step = trainer.opt.t
        done = self.train_s >= self.budget_s
        if self.every is None:
            self._durations.append(dt)
            n = len(self._durations)
            if (n >= 2 and self.train_s >= self.budget_s / self.points) or done:
                per_step = statistics.median(self._durations[1:] or self._durations)
                self.every = max(1, round(self.budget_s / self.points / per_step))
        if (self.every is not None and step % self.every == 0) or done:
            self.sample(trainer)
        if done:
            trainer.stop_requested = True
        self._mark = time.perf_counter()


def train_run(split: Split, cfg: RunConfig, *, budget_s: float | None = None, points: int = 120,
              test_every_epoch: bool = False) -> dict:
    """One run of a resolved config through the recipe's trainer; returns its per-epoch records
    (train/val, cumulative training seconds, test), the final test scores and, with ``budget_s``,
    the validation samples taken within epochs until the budget is spent."""
    from xpnet.training.trainer import evaluate

    clock = [0.0]

    def callback(rec, trainer):
        clock[0] += rec["epoch_s"]
        rec["time_s"] = clock[0]
        if test_every_epoch:
            rec["test_acc"] = evaluate(trainer.net, split.X_test, split.y_test)["accuracy"]

    t0 = time.perf_counter()
    trainer = make_run_trainer(cfg, split, callbacks=[callback])
    sampler = None
    if budget_s is not None:
        sampler = StepSampler(budget_s, points)
        trainer.step_callbacks.append(sampler)
        sampler.start(trainer)
    history = trainer.run(cfg.epochs)
    net = trainer.net
    test = evaluate(net, split.X_test, split.y_test)
    out = {"hidden": list(cfg.hidden), "seed": cfg.seed, "optimizer": cfg.optimizer, "lr": trainer.opt.lr,
           "batch_size": trainer.batch_size, "epochs": len(history), "max_epochs": cfg.epochs,
           "schedule": cfg.schedule, "dropout": cfg.dropout, "label_smoothing": cfg.label_smoothing,
           "recipe": cfg.recipe, "n_train": int(len(split.X_train)), "records": history.records,
           "test_acc": test["accuracy"], "test_loss": test["loss"], "train_s": clock[0],
           "wall_s": time.perf_counter() - t0, "params": net.n_params}
    if sampler is not None:
        out.update(samples=sampler.samples, sample_every=sampler.every, steps=trainer.opt.t, train_s=sampler.train_s)
    return out


def _mean_std(values):
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _curve_mean(runs, key):
    n = min(len(r["records"]) for r in runs)
    return [statistics.mean(r["records"][i][key] for r in runs) for i in range(n)]


def _pct(x):
    return f"{x * 100:.2f} %"


# ---------------------------------------------------------------------------- parts
def _cfg(base: RunConfig, hidden, seed, recipe=None, **fields) -> RunConfig:
    """The study's run: ``base`` (data, activation, init, dtype, device) with this network and recipe;
    every recipe field not set here comes from ``recipe`` (the base's own recipe fields are dropped)."""
    base = dataclasses.replace(base, **{key: None for key in RECIPE_KEYS})
    return base.replace(hidden=tuple(hidden), seed=seed, recipe=recipe or base.recipe, **fields).resolve()


def part_hidden(split, base, hiddens, seeds, epochs, say):
    runs = []
    for h in hiddens:
        for seed in seeds:
            r = train_run(split, _cfg(base, h, seed, epochs=epochs), test_every_epoch=h == hiddens[-1])
            runs.append(r)
            say(f"  hidden {'-'.join(map(str, h))} seed {seed}: test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    return runs


def part_optimizers(split, base, hidden, epochs, seed, say):
    runs = []
    for name, lr in OPTIMIZER_LRS.items():
        r = train_run(split, _cfg(base, hidden, seed, "plain", optimizer=name, lr=lr, epochs=epochs))
        runs.append(r)
        say(f"  {name} lr {lr:g}: val {_pct(r['records'][-1]['val_acc'])}, test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    return runs


def part_batch(split, base, hidden, budget_s, points, subset, seed, say):
    n = len(split.X_train)
    # (label, batch size, training rows, most epochs): the budget stops each run; the epoch caps
    # only bound the per-step lr table
    variants = [("batch", n, n, 100_000), ("mini-batch", 128, n, 1000), ("stochastic", 1, min(subset or n, n), 100)]
    runs = []
    for label, bs, rows, cap in variants:
        part = split if rows == n else dataclasses.replace(split, X_train=split.X_train[:rows], y_train=split.y_train[:rows])
        r = train_run(part, _cfg(base, hidden, seed, "plain", batch_size=bs, epochs=cap), budget_s=budget_s,
                      points=points)
        r["label"] = label
        runs.append(r)
        say(f"  {label} (batch {r['batch_size']:,}, {r['n_train']:,} rows): {r['steps']:,} steps "
            f"({r['samples'][-1]['epochs']:.2f} epochs) in {r['train_s']:.1f} s, val {_pct(r['samples'][-1]['val_acc'])}")
    return runs


def part_recipes(split, base, hidden, seeds, epochs, default_runs, say):
    plain = []
    for seed in seeds:
        r = train_run(split, _cfg(base, hidden, seed, "plain", epochs=epochs), test_every_epoch=True)
        plain.append(r)
        say(f"  plain hidden {'-'.join(map(str, hidden))} seed {seed}: test {_pct(r['test_acc'])} ({r['wall_s']:.0f} s)")
    default = [r for r in default_runs if r["hidden"] == list(hidden)]
    if len(default) < len(seeds):
        default = [train_run(split, _cfg(base, hidden, seed, epochs=epochs), test_every_epoch=True) for seed in seeds]
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

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in runs:
        s = r["samples"]
        k = r["sample_every"]
        label = f"{r['label']} (batch {r['batch_size']:,}, sampled every {k:,} step{'s' if k != 1 else ''})"
        for ax, key in zip(axes, ("time_s", "epochs")):
            ax.plot([e[key] for e in s], [e["val_acc"] * 100 for e in s], marker="o", ms=2.5, lw=1.3, label=label)
    axes[0].set(xlabel="training seconds", ylabel="validation accuracy (%)", title="Against training time")
    axes[1].set(xlabel="epochs (training images seen / training set)", title="Against data seen")
    axes[1].set_xscale("symlog", linthresh=0.01)
    lo = min(e["val_acc"] for r in runs for e in r["samples"][1:] or r["samples"]) * 100
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_ylim(max(0.0, min(lo - 2, 90)), 100)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Batch vs mini-batch vs stochastic gradient descent: validation accuracy within epochs")
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
    n = max(len(r["records"]) for rs in recipes.values() for r in rs)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if n <= 20:
            ax.set_xticks(range(1, n + 1))
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
        "machine's load" + (f" (a {os.cpu_count()}-core machine shared with other jobs: load average "
                            f"{meta['load_avg']:.0f} when the study ended)" if meta.get("shared") else "") + ".\n")
    if meta.get("kept"):
        sections.append(f"Parts kept from an earlier run into this folder (`--keep`): {', '.join(meta['kept'])}.\n")
    if meta.get("note"):
        sections.append(meta["note"] + "\n")
    reduced = [f"{FULL_LABELS[k]}: {_setting(v)} (full study: {_setting(FULL[k])})"
               for k, v in meta.get("settings", {}).items() if k in FULL and v != FULL[k]]
    if reduced:
        sections.append("**Reduced settings** (flags given to this run, the full study's defaults in parentheses): "
                        + "; ".join(reduced) + ".\n")
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
            f"{r['label']} (batch {r['batch_size']:,} of {r['n_train']:,} rows): {r['steps']:,} steps "
            f"({r['samples'][-1]['epochs']:.2f} epochs) in {r['train_s']:.1f} s, sampled every {r['sample_every']:,} "
            f"step(s) ({len(r['samples']) - 1} points), val {_pct(r['samples'][-1]['val_acc'])} at the end, best "
            f"{_pct(max(e['val_acc'] for e in r['samples']))}" for r in runs)
        sub = runs[-1]["n_train"]
        rows_txt = ("" if sub == runs[0]["n_train"] else
                    f" Stochastic gradient descent (batch 1) runs on the first {sub:,} training rows.")
        sections.append(
            f"## 3. Batch, mini-batch and stochastic gradient descent\n\nHidden {'-'.join(map(str, runs[0]['hidden']))}, "
            f"Adam {runs[0]['lr']:g} constant, no regularisation, each trained for a budget of "
            f"{meta['batch_budget_s']:g} s of training time. Validation accuracy is measured within epochs, every k "
            "steps, with k fixed per method from its first steps so that it would get about "
            f"{meta.get('batch_points', 120)} points at that speed (more or fewer where the machine's load changed "
            "later); the clock counts training only (evaluation excluded). Batch "
            "gradient descent takes one step per epoch over the whole training split." + rows_txt + "\n\n"
            f"![batch sizes](batch.png)\n\n*Validation accuracy against training seconds (left) and against "
            f"epochs of data seen (right, log scale past 0.01): {caption}.*\n")

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


def portable_path(path) -> str:
    """A path fit for committed files: relative when under the working folder, ``$XPNET_DATA/…``
    under the data cache, else ``DIR`` (one machine's absolute paths stay out of docs)."""
    from xpnet.data.datasets import cache_dir

    p = Path(path).expanduser().resolve()
    for root, prefix in ((Path(cache_dir()).resolve(), "$XPNET_DATA/"), (Path.cwd().resolve(), "")):
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue
        return prefix + (rel.as_posix() if str(rel) != "." else "") or "."
    return "DIR"


def portable_command(argv) -> str:
    """``xpnet`` and the arguments, each path-valued option's value made portable."""
    args, out = list(argv), ["xpnet"]
    path_options = {"--data-dir", "--out", "--config"}
    for i, arg in enumerate(args):
        if i and args[i - 1] in path_options:
            arg = portable_path(arg)
        elif "=" in arg and arg.split("=", 1)[0] in path_options:
            key, value = arg.split("=", 1)
            arg = f"{key}={portable_path(value)}"
        out.append(arg)
    return " ".join(out)


def run_study(base: RunConfig, out, parts=PARTS, hiddens=((10,), (256,), (512,), (1024,)), n_seeds=3, epochs=None,
              optimizer_epochs=10, optimizer_hidden=None, batch_hidden=(256,), batch_budget_s=60.0, batch_points=120,
              stochastic_rows=None, command="xpnet study", keep=False, note=None, say=print) -> dict:
    """Run the chosen parts and write the report into ``out``; returns the results dict.

    ``base`` gives the data (dataset, data_dir, limit, val_split), the network's activation, init
    and dtype, the recipe of part 1, the first seed (also the split's) and the device; the parts set
    the rest. Every run goes through :func:`xpnet.training.recipe.make_run_trainer` on one split.
    ``keep``: start from ``out/results.json`` and keep the parts not rerun (part 4 then reuses a
    kept part 1's runs); ``note``: a sentence for the report's header (how the study was run)."""
    from xpnet import backend

    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ConfigError(f"unknown part {bad[0] if bad else ''!r}: choose from {', '.join(PARTS)}")
    t_start = time.perf_counter()
    base = base.resolve()
    split = prepare_split(base)
    seeds = [base.seed + i for i in range(int(n_seeds))]
    hiddens = [tuple(h) for h in hiddens]
    results: dict = {}
    part_s: dict = {}
    if keep and (Path(out) / "results.json").is_file():
        previous = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
        results = {k: previous[k] for k in PARTS if k in previous and k not in parts}
        part_s = {k: v for k, v in previous.get("meta", {}).get("part_s", {}).items() if k in results}
    kept = list(results)
    source = portable_path(base.data_dir) if base.data_dir else (
        split.source if not os.path.isabs(split.source) else portable_path(split.source))
    if source == "DIR":
        source = "a folder of IDX files (`--data-dir DIR`)"

    settings = {"hidden": [list(h) for h in hiddens], "seeds": int(n_seeds),
                "epochs": epochs or RECIPES[base.recipe]["epochs"], "optimizer_epochs": optimizer_epochs,
                "optimizer_hidden": [list(optimizer_hidden or hiddens[-1])], "batch_hidden": [list(batch_hidden)],
                "batch_budget_s": float(batch_budget_s), "batch_points": batch_points,
                "stochastic_rows": stochastic_rows, "limit": base.limit}

    def meta():
        return {"settings": settings,
            "dataset": split.name, "source": source, "n_train": int(len(split.X_train)),
            "n_val": int(len(split.X_val)), "n_test": int(len(split.X_test)), "seeds": seeds, "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": backend.device_name(base.device), "total_s": time.perf_counter() - t_start + sum(part_s[k] for k in kept),
            "part_s": dict(part_s), "batch_budget_s": batch_budget_s, "batch_points": batch_points,
            "shared": (load_average() or 0.0) > (os.cpu_count() or 1) * 0.75, "load_avg": load_average(),
            "limit": base.limit, "complete": set(parts) <= set(part_s), "kept": kept, "note": note,
        }

    for part in parts:
        t0 = time.perf_counter()
        say(f"[{part}]")
        if part == "hidden":
            results["hidden"] = part_hidden(split, base, hiddens, seeds, epochs, say)
        elif part == "optimizers":
            results["optimizers"] = part_optimizers(split, base, tuple(optimizer_hidden or hiddens[-1]),
                                                    optimizer_epochs, seeds[0], say)
        elif part == "batch":
            results["batch"] = part_batch(split, base, tuple(batch_hidden), batch_budget_s, batch_points,
                                          stochastic_rows, seeds[0], say)
        elif part == "recipes":
            results["recipes"] = part_recipes(split, base, hiddens[-1], seeds, epochs, results.get("hidden", []), say)
        elif part == "init":
            from xpnet.experiments.init_study import init_study, summary_lines, write_outputs

            res = init_study(X=split.X_train[:1000], y=split.y_train[:1000], n_classes=split.n_classes, seed=base.seed)
            res["config"]["data"] = f"first 1000 training rows of {split.name}"
            write_outputs(res, Path(out) / "init")
            res["summary"] = summary_lines(res)
            results["init"] = res
            for line in res["summary"]:
                say(f"  {line}")
        part_s[part] = time.perf_counter() - t0
        results["meta"] = meta()
        write_report(results, Path(out))  # after every part: a crash later loses nothing done so far
    return results
