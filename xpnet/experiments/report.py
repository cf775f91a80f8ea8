"""``xpnet report``: sweep / bench / analyze / tune / training-run folders → ``report.md`` + self-contained ``report.html``.

A *run folder* (what ``xpnet train --plots DIR`` writes) holds ``metrics.jsonl`` (the metrics log,
:mod:`xpnet.io.runlog`) and ``model.npz``; a metrics file alone works too, its model found beside
it or where its ``test`` event says. Its section draws the learning curves, the first layer's
weights, the misclassified test images and the confusion matrix (``RUN_PICTURES``), and writes the
numbers behind them to ``pictures.json``.

The report is a list of blocks (headings, paragraphs, bullet lists, tables, figures)
rendered twice: as Markdown that links PNGs beside it, and as HTML with every image
embedded as base64. Each figure's caption is computed from the numbers it shows.
Without matplotlib the tables are still written and the report says how to get plots.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from xpnet.fileio import atomic_write
from xpnet.errors import ConfigError
from xpnet.experiments import plots

GROUP_FIELDS = ("optimizer", "activation", "init", "device", "lr", "augment", "batch_size", "epochs")


# ---------------------------------------------------------------------------- blocks
class Report:
    def __init__(self, out: Path):
        self.out = out
        self.blocks: list[tuple] = []
        self.missing_plots = False

    def heading(self, text, level=2):
        self.blocks.append(("h", level, text))

    def para(self, text):
        self.blocks.append(("p", text))

    def bullets(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        if rows:
            self.blocks.append(("table", list(header), [[str(c) for c in r] for r in rows]))

    def figure(self, path, caption):
        """Add a figure if the plot was written; None (no matplotlib / no data) adds nothing."""
        if path is None:
            self.missing_plots = True
            return
        self.blocks.append(("img", Path(path), caption))

    # ------------------------------------------------------------------ rendering
    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.out.resolve()).as_posix()
        except ValueError:
            return path.resolve().as_posix()

    def markdown(self) -> str:
        lines = []
        for b in self.blocks:
            if b[0] == "h":
                lines += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "ul":
                lines += [f"- {item}" for item in b[1]] + [""]
            elif b[0] == "table":
                lines.append("| " + " | ".join(b[1]) + " |")
                lines.append("|" + "|".join("---" for _ in b[1]) + "|")
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b[2]]
                lines.append("")
            elif b[0] == "img":
                lines += [f"![{b[2]}]({self._rel(b[1])})", "", f"*{b[2]}*", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        e = html.escape
        parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px}"
                 "th{background:#f3f3f3}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-style:italic;color:#444}"
                 "</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(b[2])}\">"
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
        parts.append("</body></html>\n")
        return "\n".join(parts)


# ---------------------------------------------------------------------------- helpers
def pct(v) -> str:
    return f"{v * 100:.1f} %"


def _size_key(label):
    sizes = [int(s) for s in str(label).split("-") if s.isdigit()]
    return (len(sizes), sizes)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def detect(folder: Path) -> list[str]:
    """What ``folder`` holds: any of ``sweep``, ``bench``, ``init``, ``tune``."""
    kinds = []
    res = folder / "results.json"
    if res.exists():
        data = _read_json(res)
        rows = data.get("results", []) if isinstance(data, dict) else []
        if rows and all("impl" in r for r in rows):
            kinds.append("bench")
        elif (isinstance(data, dict) and data.get("meta", {}).get("kind") == "sweep") or (rows and "run_id" in rows[0]):
            kinds.append("sweep")
    if (folder / "init_study.json").exists():
        kinds.append("init")
    if (folder / "trials.json").exists():
        kinds.append("tune")
    if not kinds and _metrics_in(folder) is not None:
        kinds.append("run")
    return kinds


def build_report(dirs, out=None, title: str = "xpnet report", say=print, data_dir=None) -> list[Path]:
    """Write ``report.md`` and ``report.html`` (plus PNGs) into ``out`` (default: the first folder,
    or a metrics file's folder); returns the paths written. ``data_dir``: the test set of run folders."""

    found = []
    for d in map(Path, dirs):
        if d.is_file() and d.suffix.lower() in (".jsonl", ".ndjson"):
            found.append(("run", d))
            continue
        if not d.is_dir():
            raise ConfigError(f"{d} is neither a folder nor a metrics log (.jsonl)")
        kinds = detect(d)
        if not kinds:
            raise ConfigError(f"{d} holds no sweep, bench, analyze, tune or training-run results "
                              "(looked for results.json, init_study.json, trials.json, metrics.jsonl)")
        found += [(k, d) for k in kinds]
    out = Path(out) if out is not None else (found[0][1] if found[0][1].is_dir() else found[0][1].parent)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    rep.heading(title, 1)
    rep.para("Sources: " + "; ".join(f"{k} results in {d}" for k, d in found) + ".")
    counts: dict = defaultdict(int)
    for kind, folder in _merge_sweep_workers(found):
        counts[kind] += 1
        prefix = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        if kind == "run":
            run_section(rep, folder, prefix, data_dir=data_dir)
            continue
        {"sweep": sweep_section, "bench": bench_section, "init": init_section, "tune": tune_section}[kind](rep, folder, prefix)
    md_path, html_path, figures = _write(rep, out, title, hint_at=2)
    say(f"report: {len(found)} section(s), {len(figures)} figure(s)")
    return [md_path, html_path, *figures]


def _write(rep, out: Path, title: str, hint_at: int):
    """report.md and report.html of ``rep`` in ``out`` (with the install hint at block ``hint_at``
    when figures were wanted but matplotlib is missing); returns their paths and the figures'."""
    if rep.missing_plots and plots.get_pyplot() is None:
        rep.blocks.insert(hint_at, ("p", f"No figures: {plots.PLOT_HINT}."))
    md_path = atomic_write(out / "report.md", lambda fh: fh.write(rep.markdown()), mode="w")
    html_path = atomic_write(out / "report.html", lambda fh: fh.write(rep.html(title)), mode="w")
    return md_path, html_path, [b[1] for b in rep.blocks if b[0] == "img"]


# ---------------------------------------------------------------------------- sweep
def _merge_sweep_workers(found):
    """The workers' folders of one distributed sweep (same ``meta.study``) become one entry: the whole grid."""
    merged, by_study = [], {}
    for kind, folder in found:
        study = kind == "sweep" and _read_json(folder / "results.json").get("meta", {}).get("study")
        if study and study in by_study:
            by_study[study].append(folder)
        elif study:
            by_study[study] = [folder]
            merged.append((kind, by_study[study]))
        else:
            merged.append((kind, folder))
    return merged


def _group_label(row, varying) -> str:
    parts = []
    for f in varying:
        v = row.get(f)
        parts.append(f"lr {v:g}" if f == "lr" else f"{f} {v}" if f in ("batch_size", "epochs") else
                     ("augment" if v else "no augment") if f == "augment" else str(v))
    return ", ".join(parts) or str(row.get("optimizer", ""))


def _mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def sweep_section(rep: Report, folder, prefix: str) -> None:
    """One sweep folder, or the list of the folders its workers wrote (each run once, by run_id)."""
    folders = folder if isinstance(folder, list) else [folder]
    rows, meta, where = [], {}, {}
    for f in folders:
        data = _read_json(f / "results.json")
        meta = meta or data.get("meta", {})
        for r in data.get("results", []):
            if r["run_id"] not in where:
                where[r["run_id"]] = f
                rows.append(r)
    rep.heading(f"Sweep ({', '.join(map(str, folders))})")
    if not rows:
        rep.para("The sweep has no finished runs yet.")
        return
    varying = [f for f in GROUP_FIELDS if len({json.dumps(r.get(f)) for r in rows}) > 1]
    constant = [f for f in GROUP_FIELDS if f not in varying and f in rows[0]]
    seeds = sorted({r["seed"] for r in rows})
    rep.para(f"{len(rows)} runs on {meta.get('dataset', '?')} ({meta.get('n_train', '?')} train / {meta.get('n_val', '?')} "
             f"val / {meta.get('n_test', '?')} test images), seeds {', '.join(map(str, seeds))}; fixed: "
             + ", ".join(f"{f} {rows[0][f]}" for f in constant) + f". Device: {rows[0].get('device_name', '?')}.")
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[_group_label(r, varying)][r["hidden"]].append(r)
    table = []
    acc_series, time_series = {}, {}
    for label, by_hidden in groups.items():
        acc_series[label], time_series[label] = [], []
        for hidden in sorted(by_hidden, key=_size_key):
            runs = by_hidden[hidden]
            m, s = _mean_std([r["test_acc"] for r in runs])
            t = statistics.median(r["median_epoch_s"] for r in runs)
            acc_series[label].append((hidden, m, s))
            time_series[label].append((hidden, t))
            table.append([label, hidden, runs[0]["params"], len(runs), f"{m * 100:.2f} ± {s * 100:.2f}",
                          f"{statistics.mean(r['best_val_acc'] for r in runs) * 100:.2f}", f"{t:.3f}",
                          f"{statistics.mean(r['total_s'] for r in runs):.1f}"])
    rep.table(["configuration", "hidden", "params", "seeds", "test acc % (mean ± std)", "best val acc %",
               "median epoch s", "run s"], table)

    # accuracy vs hidden size
    best_label = max(acc_series, key=lambda k: max(p[1] for p in acc_series[k]))
    pts = acc_series[best_label]
    n_seeds = max(len(v) for g in groups.values() for v in g.values())
    if len(pts) > 1:
        cap = (f"{pts[-1][0]} hidden: {pct(pts[-1][1])} vs {pts[0][0]} hidden: {pct(pts[0][1])} test accuracy "
               f"(mean of {n_seeds} seed{'s' if n_seeds > 1 else ''}, {best_label}; error bars: std over seeds)")
        top = max(pts, key=lambda p: p[1])
        if top[0] != pts[-1][0]:
            cap += f"; the best is {top[0]} hidden at {pct(top[1])}"
        cap += "."
    else:
        cap = f"{pts[0][0]} hidden: {pct(pts[0][1])} test accuracy (mean of {n_seeds} seeds, {best_label})."
    rep.figure(plots.accuracy_vs_hidden(acc_series, rep.out / f"{prefix}_accuracy.png"), cap)

    # time per epoch vs hidden size, per device
    by_device: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_device[r["device"]][r["hidden"]].append(r["median_epoch_s"])
    dev_series = {d: [(h, statistics.median(v)) for h, v in sorted(hs.items(), key=lambda kv: _size_key(kv[0]))]
                  for d, hs in by_device.items()}
    caps = [f"on {d} the median epoch takes {p[0][1]:.2f} s at {p[0][0]} hidden and {p[-1][1]:.2f} s at {p[-1][0]} hidden"
            for d, p in dev_series.items()]
    rep.figure(plots.time_vs_hidden(dev_series, rep.out / f"{prefix}_epoch_time.png"),
               "Time per epoch: " + "; ".join(caps) + f" (batch {rows[0].get('batch_size')}).")

    # speed-up when cpu and a gpu were both swept
    if "cpu" in dev_series and len(dev_series) > 1:
        cpu = dict(dev_series["cpu"])
        labels, values = [], []
        for d, pts_d in dev_series.items():
            if d == "cpu":
                continue
            for h, t in pts_d:
                if h in cpu and t > 0:
                    labels.append(f"{h}\n{d}")
                    values.append(cpu[h] / t)
        if values:
            i = int(np.argmax(values))
            rep.figure(plots.speedup(labels, values, rep.out / f"{prefix}_speedup.png"),
                       f"GPU vs CPU: up to {values[i]:.1f}× faster per epoch ({labels[i].replace(chr(10), ' on ')} hidden); "
                       f"lowest {min(values):.1f}×.")

    # learning curves per configuration (mean over seeds)
    curves = {}
    gaps = []
    for label, by_hidden in groups.items():
        for hidden in sorted(by_hidden, key=_size_key):
            recs = []
            for r in by_hidden[hidden]:
                path = where[r["run_id"]] / "curves" / f"{r['run_id']}.json"
                if path.exists():
                    recs.append(_read_json(path)["records"])
            if not recs:
                continue
            n = min(len(x) for x in recs)
            train = [statistics.mean(x[e]["train_acc"] for x in recs) for e in range(n)]
            val = [statistics.mean(x[e]["val_acc"] for x in recs) for e in range(n)]
            name = f"{hidden} hidden" + (f", {label}" if varying else "")
            curves[name] = {"train": train, "val": val}
            gaps.append((train[-1] - val[-1], name, train[-1], val[-1]))
    if curves:
        gap = max(gaps)
        rep.figure(plots.learning_curves(curves, rep.out / f"{prefix}_learning_curves.png"),
                   f"Learning curves: the largest train–val gap after the last epoch is {gap[1]} "
                   f"(train {pct(gap[2])} vs val {pct(gap[3])}).")

    # optimizer comparison
    optimizers = sorted({r["optimizer"] for r in rows})
    if len(optimizers) > 1:
        opt_curves = {}
        for opt in optimizers:
            recs = [_read_json(where[r["run_id"]] / "curves" / f"{r['run_id']}.json")["records"] for r in rows
                    if r["optimizer"] == opt and (where[r["run_id"]] / "curves" / f"{r['run_id']}.json").exists()]
            if recs:
                n = min(len(x) for x in recs)
                opt_curves[f"{opt} (lr {next(r['lr'] for r in rows if r['optimizer'] == opt):g})"] = [
                    statistics.mean(x[e]["val_acc"] for x in recs) for e in range(n)]
        if opt_curves:
            final = sorted(((v[-1], k) for k, v in opt_curves.items()), reverse=True)
            rep.figure(plots.optimizer_curves(opt_curves, rep.out / f"{prefix}_optimizers.png"),
                       f"After {len(next(iter(opt_curves.values())))} epochs (mean over all runs per optimizer): "
                       + ", ".join(f"{k} {pct(v)}" for v, k in final) + " validation accuracy.")

    best = max(rows, key=lambda r: r.get("test_acc") or 0.0)  # its worker kept best_model.npz
    confusion_section(rep, where[best["run_id"]], meta, rows, prefix)


def confusion_section(rep: Report, folder: Path, meta: dict, rows: list, prefix: str) -> None:
    model_path = folder / "best_model.npz"
    if not model_path.exists():
        return
    from xpnet.data import load_dataset
    from xpnet.errors import XpnetError
    from xpnet.io.npz import load

    try:
        net = load(model_path)
        data_dir = meta.get("data_dir")
        ds = load_dataset(meta.get("dataset") if not data_dir else None, data_dir=data_dir)
    except XpnetError as exc:
        rep.para(f"No confusion matrix: {exc}")
        return
    pred = net.predict(ds.X_test)
    k = ds.n_classes
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (ds.y_test, pred), 1)
    names = list(net.class_names or ds.class_names)
    acc = np.trace(cm) / cm.sum()
    off = cm.copy()
    np.fill_diagonal(off, 0)
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    best = next((r for r in rows if r["run_id"] == meta.get("best_run")), None)
    who = f"{best['hidden']} hidden, {best['optimizer']}, seed {best['seed']}" if best else "best run"
    lines = ["true \\ predicted," + ",".join(names)] + [names[a] + "," + ",".join(map(str, cm[a])) for a in range(k)]
    atomic_write(rep.out / f"{prefix}_confusion.csv", lambda fh: fh.write("\n".join(lines) + "\n"), mode="w")
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    worst = int(np.argmin(per_class))
    if off.max() > 0:
        detail = (f"the most frequent confusion is {names[i]} → {names[j]} ({int(off[i, j])} images); "
                  f"the hardest class is {names[worst]} ({pct(per_class[worst])} correct)")
    else:
        detail = "no test image is misclassified"
    rep.figure(plots.confusion_matrix(cm, names, rep.out / f"{prefix}_confusion.png", title=f"Best model ({who})"),
               f"Best model ({who}) on the {int(cm.sum())} test images: {pct(acc)} accuracy; {detail}.")


# ---------------------------------------------------------------------------- bench
def bench_section(rep: Report, folder: Path, prefix: str) -> None:
    from xpnet.experiments.bench.report import summarise

    data = _read_json(folder / "results.json")
    results, meta = data.get("results", []), data.get("meta", {})
    rep.heading(f"Benchmark ({folder})")
    rep.para(f"Data set {meta.get('dataset', '?')}, {meta.get('epochs', '?')} epochs (first excluded), CPU: {meta.get('cpu', '?')}.")
    table = summarise(results).split("\n")
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:] if line.startswith("|")]
    rep.table(header, body)
    rep.bullets([line[2:] for line in table if line.startswith("- ")])
    ok = [r for r in results if "median_epoch_s" in r]
    if not ok:
        return
    series: dict = defaultdict(list)
    for r in sorted(ok, key=lambda r: _size_key("-".join(map(str, r["hidden"])))):
        series[f"{r['impl']} {r['device']} b{r['batch_size']}"].append(("-".join(map(str, r["hidden"])), r["median_epoch_s"]))
    fastest = min(ok, key=lambda r: r["median_epoch_s"])
    slowest = max(ok, key=lambda r: r["median_epoch_s"])
    rep.figure(plots.time_vs_hidden(dict(series), rep.out / f"{prefix}_epoch_time.png"),
               f"Epoch time: from {fastest['median_epoch_s']:.3f} s ({fastest['impl']} {fastest['device']}, "
               f"{'-'.join(map(str, fastest['hidden']))} hidden) to {slowest['median_epoch_s']:.3f} s ({slowest['impl']} "
               f"{slowest['device']}, {'-'.join(map(str, slowest['hidden']))} hidden).")
    labels, values = [], []
    for r in ok:
        if r["impl"] == "xpnet" and r["device"] != "cpu":
            cpu = [o for o in ok if o["impl"] == "xpnet" and o["device"] == "cpu" and o["hidden"] == r["hidden"]
                   and o["batch_size"] == r["batch_size"]]
            if cpu:
                labels.append(f"{'-'.join(map(str, r['hidden']))}\nb{r['batch_size']}")
                values.append(cpu[0]["median_epoch_s"] / r["median_epoch_s"])
    if values:
        i = int(np.argmax(values))
        rep.figure(plots.speedup(labels, values, rep.out / f"{prefix}_speedup.png", title="xpnet GPU speed-up over xpnet CPU"),
                   f"xpnet on the GPU is up to {values[i]:.1f}× faster per epoch than on the CPU "
                   f"({labels[i].replace(chr(10), ' hidden, batch ').replace('batch b', 'batch ')}).")


# ---------------------------------------------------------------------------- init study
def _link_or_copy(rep: Report, src: Path, name: str) -> Path | None:
    if not src.exists():
        return None
    try:
        src.resolve().relative_to(rep.out.resolve())
        return src
    except ValueError:
        dst = rep.out / name
        shutil.copyfile(src, dst)
        return dst


def init_section(rep: Report, folder: Path, prefix: str) -> None:
    from xpnet.experiments.init_study import INIT_LABELS, series, summary_lines

    result = _read_json(folder / "init_study.json")
    cfg = result["config"]
    rep.heading(f"Init × activation study ({folder})")
    rep.para(f"Network {'-'.join(map(str, cfg['sizes']))} as initialised; one forward/backward pass on {cfg['n_samples']} "
             f"samples ({cfg['data']}). Dead units = fraction of a layer's units whose activation is exactly 0 on every "
             "sample; ‖dW‖ = Frobenius norm of the gradient of the weights into the layer.")
    rep.bullets(summary_lines(result))
    table = []
    for init in cfg["inits"]:
        for act in cfg["activations"]:
            std = series(result, init, act, "act_std")
            grad = series(result, init, act, "grad_norm", hidden_only=False)
            dead = series(result, init, act, "dead_fraction")
            table.append([INIT_LABELS[init], act, f"{std[0]:.3g}", f"{std[-1]:.3g}", f"{std[-1] / std[0]:.3g}" if std[0] else "–",
                          f"{max(dead) * 100:.1f}%", f"{grad[0]:.3g}", f"{grad[-1]:.3g}"])
    rep.table(["init", "activation", "std layer 1", f"std layer {cfg['depth']}", "ratio", "max dead", "‖dW‖ input",
               "‖dW‖ output"], table)

    def pick(init, act):
        return (init in cfg["inits"] and act in cfg["activations"]) and series(result, init, act, "act_std")

    parts = []
    for init, act, verb in (("he", "relu", "keeps"), ("normal", "tanh", "collapses")):
        s = pick(init, act)
        if s:
            parts.append(f"{INIT_LABELS[init]} + {act} {verb} the activation std ({s[0]:.3g} → {s[-1]:.3g} over {len(s)} layers)")
    acts_png = _link_or_copy(rep, folder / "init_activations.png", f"{prefix}_activations.png")
    rep.figure(acts_png, "Activations per layer: " + ("; ".join(parts) or "see the table") + ".")
    gparts = []
    for init, act in (("normal", "sigmoid"), ("he", "relu")):
        if pick(init, act):
            g = series(result, init, act, "grad_norm", hidden_only=False)
            gparts.append(f"{INIT_LABELS[init]} + {act}: ‖dW‖ {g[0]:.2g} at the input layer vs {g[-1]:.2g} at the output")
    rep.figure(_link_or_copy(rep, folder / "init_gradients.png", f"{prefix}_gradients.png"),
               "Weight gradients per layer: " + ("; ".join(gparts) or "see the table") + ".")
    rep.figure(_link_or_copy(rep, folder / "init_trends.png", f"{prefix}_trends.png"),
               "Activation std and gradient norm per layer (log scale): " + ("; ".join(parts[:1] + gparts[:1]) or "see the table") + ".")


# ---------------------------------------------------------------------------- tune
def tune_section(rep: Report, folder: Path, prefix: str) -> None:
    from xpnet.experiments.tune import describe, leaderboard

    data = _read_json(folder / "trials.json")
    rows = leaderboard(data.get("trials", []))
    method = data.get("meta", {}).get("method", "?")
    rep.heading(f"Hyperparameter search ({method}, {folder})")
    done = [r for r in rows if r.get("state") == "COMPLETE" and r.get("value") is not None]
    pruned = sum(r.get("state") == "PRUNED" for r in rows)
    rep.para(f"{len(rows)} trials ({len(done)} complete, {pruned} pruned); objective: validation accuracy after the last epoch.")
    rep.table(["rank", "trial", "val acc", "optimizer", "lr", "hidden", "batch", "L2", "dropout"],
              [[i, r["number"], f"{r['value'] * 100:.2f}%", r["optimizer"], f"{r['lr']:.3g}", r["hidden"], r["batch_size"],
                f"{r['l2']:.3g}", f"{r['dropout']:.2f}"] for i, r in enumerate(done[:10], 1)])
    best_path = folder / "best.json"
    if best_path.exists():
        best = _read_json(best_path)
        rep.para(f"Best (best.json): trial {best['trial']}, {describe(best['config'])}: val {pct(best['value'])}, "
                 f"test {pct(best['test_acc'])}.")
    if done:
        ordered = sorted(done, key=lambda r: r["number"])
        running, best_so_far = -1.0, []
        for r in ordered:
            running = max(running, r["value"])
            best_so_far.append((r["number"], running))
        top = done[0]
        rep.figure(plots.tune_trials([(r["number"], r["value"]) for r in ordered], best_so_far, rep.out / f"{prefix}_trials.png"),
                   f"Best of {len(done)} completed trials: trial {top['number']} at {pct(top['value'])} validation accuracy "
                   f"({describe(top)}); worst {pct(done[-1]['value'])}.")


# ---------------------------------------------------------------------------- one training run
RUN_PICTURES = ("curves", "weights", "misclassified", "confusion")
METRICS_NAME, MODEL_NAME = "metrics.jsonl", "model.npz"


def _metrics_in(folder: Path) -> Path | None:
    """A run folder's metrics log: ``metrics.jsonl``, else the one ``*.jsonl`` in it."""
    if (folder / METRICS_NAME).is_file():
        return folder / METRICS_NAME
    logs = sorted(folder.glob("*.jsonl"))
    return logs[0] if len(logs) == 1 else None


def _model_for(metrics: Path, events: list) -> Path | None:
    """The run's model: ``model.npz`` beside the log, else the file its ``test``/``start`` event names
    (as written, or by name beside the log)."""
    beside = metrics.parent / MODEL_NAME
    if beside.is_file():
        return beside
    for event in reversed(events):
        named = event.get("model") if event.get("event") == "test" else event.get("out")
        if isinstance(named, str) and named.endswith(".npz"):
            for cand in (Path(named), metrics.parent / Path(named).name):
                if cand.is_file():
                    return cand
    return None


def load_run(path, model=None, data_dir=None) -> dict:
    """A training run from its folder or metrics log: ``{"metrics", "events", "records", "config",
    "model_path", "net", "test", "notes"}``; ``test`` is ``(images, labels, class_names)`` of the
    data set's test split or None (``notes`` then says why)."""
    from xpnet.data import load_dataset
    from xpnet.errors import XpnetError
    from xpnet.io import runlog
    from xpnet.io.npz import load

    path = Path(path)
    metrics = path if path.is_file() else _metrics_in(path)
    if metrics is None:
        raise ConfigError(f"{path} holds no metrics log ({METRICS_NAME} or one *.jsonl file)")
    events = runlog.read(metrics)
    records = [{k: v for k, v in e.items() if k not in ("event", "time")} for e in events if e.get("event") == "epoch"]
    config = next((e["config"] for e in events if e.get("event") == "start" and isinstance(e.get("config"), dict)), {})
    notes = []
    model_path = Path(model) if model is not None else _model_for(metrics, events)
    net = None
    if model_path is None:
        notes.append(f"no model file beside {metrics} ({MODEL_NAME}) or named in it: no weights, errors or confusion matrix")
    else:
        net = load(model_path)
    test = None
    if net is not None:
        folder = data_dir or config.get("data_dir")
        name = config.get("dataset") or net.dataset
        try:
            ds = load_dataset(name if not folder else config.get("dataset"), data_dir=folder, download=False)
        except XpnetError as exc:
            notes.append(f"no test set ({exc}); give it with --data-dir")
        else:
            if ds.X_test is None:
                notes.append(f"{ds.name} has no test split")
            else:
                names = list(net.class_names or ds.class_names)
                test = (ds.X_test, ds.y_test, names)
    return {"metrics": metrics, "events": events, "records": records, "config": config, "model_path": model_path,
            "net": net, "test": test, "notes": notes}


def result_run(result) -> dict:
    """The run dict of :func:`load_run` for a :class:`~xpnet.training.recipe.RunResult` in memory
    (a notebook's run), its test images reloaded raw as the model file's users see them."""
    from xpnet.data import load_dataset

    cfg = result.config
    ds = load_dataset(cfg.dataset if not cfg.data_dir else None, data_dir=cfg.data_dir, download=False)
    names = list(result.net.class_names or ds.class_names)
    return {"metrics": Path("(in memory)"), "events": [], "records": list(result.history.records),
            "config": cfg.to_dict(), "model_path": None, "net": result.net,
            "test": (ds.X_test, ds.y_test, names) if ds.X_test is not None else None, "notes": []}


def run_pictures(run: dict, out, prefix: str = "") -> dict:
    """Draw a run's four figures into ``out`` and write the numbers behind them to
    ``{prefix}pictures.json``; returns ``{name: (path or None, caption)}`` in ``RUN_PICTURES`` order."""
    from xpnet import backend

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, net, test = run["records"], run["net"], run["test"]
    figs: dict = {}
    data: dict = {"metrics": run["metrics"].name, "model": run["model_path"].name if run["model_path"] else None}
    if records:
        last = records[-1]
        has_val = last.get("val_acc") is not None
        best = min(records, key=lambda r: r["val_loss"]) if has_val else last
        cap = (f"{len(records)} epochs: train accuracy {pct(last['train_acc'])}"
               + (f", validation {pct(last['val_acc'])} after the last epoch; lowest validation loss "
                  f"{best['val_loss']:.4f} at epoch {best['epoch']}" if has_val else "")
               + (f"; learning rate {records[0]['lr']:.3g} after epoch 1, {last['lr']:.3g} at the end"
                  if last.get("lr") is not None and records[0].get("lr") is not None else "") + ".")
        what = "-".join(map(str, net.sizes)) + " network" if net is not None else "the run"
        recipe = run["config"].get("recipe")
        figs["curves"] = (plots.run_curves(records, out / f"{prefix}learning_curves.png",
                                           title=f"Learning curves of {what}" + (f" ({recipe} recipe)" if recipe else "")),
                          cap)
        data["curves"] = {"epochs": len(records)}
    if net is not None:
        W0 = backend.to_numpy(net.W[0])
        shape = _image_shape(W0.shape[1], test)
        units = plots.weight_units(len(W0))
        names = test[2] if test is not None else net.class_names
        W1 = backend.to_numpy(net.W[1]) if len(net.W) == 2 else None
        if shape is not None:
            which = "all" if len(units) == len(W0) else f"{len(units)} evenly spaced of"
            cap = (f"The input weights of {which} the {len(W0)} first-layer units as {shape[0]}×{shape[1]} images: "
                   "red pixels raise the unit, blue ones lower it" + (", and each title names the class the unit's "
                   "output weights favour most" if W1 is not None and names else "") + ".")
            figs["weights"] = (plots.first_layer_weights(W0, shape, out / f"{prefix}weights.png", units=units,
                                                         class_names=names, W1=W1 if names else None), cap)
            data["weights"] = {"units": units, "image_shape": list(shape)}
    if net is not None and test is not None:
        X, y, names = test
        proba = net.predict_proba(X)
        pred = proba.argmax(axis=1)
        cm = plots.confusion_counts(y, pred, len(names))
        wrong = plots.misclassified(y, proba, limit=40)
        n_wrong = int(len(y) - np.trace(cm))
        figs["misclassified"] = (
            plots.misclassified_grid(X, wrong, names, out / f"{prefix}misclassified.png",
                                     title=f"Misclassified test images, true → predicted ({len(wrong)} of {n_wrong}, "
                                           "most confident first)"),
            f"{n_wrong:,} of {len(y):,} test images are misclassified; the {len(wrong)} shown are those the model was most "
            "sure about, each titled true → predicted class and the predicted probability." if wrong else
            "No test image is misclassified.")
        off = cm.copy()
        np.fill_diagonal(off, 0)
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
        worst = int(np.argmin(per_class))
        detail = (f"the most frequent confusion is {names[i]} → {names[j]} ({int(off[i, j])} images); the hardest class "
                  f"is {names[worst]} ({pct(per_class[worst])} correct)" if off.max() > 0 else "no errors")
        acc = float(np.trace(cm) / cm.sum())
        figs["confusion"] = (plots.confusion_matrix(cm, names, out / f"{prefix}confusion.png",
                                                    title=f"Confusion matrix: {acc * 100:.2f} % of {int(cm.sum()):,} test images"),
                             f"Test accuracy {acc * 100:.2f} % on {int(cm.sum()):,} images; {detail}.")
        data.update(confusion_matrix=cm.tolist(), class_names=list(names), test_accuracy=acc, n_test=int(len(y)),
                    misclassified=wrong, n_misclassified=n_wrong)
    data["notes"] = run["notes"]
    atomic_write(out / f"{prefix}pictures.json", lambda fh: json.dump(data, fh, indent=1), mode="w")
    return {name: figs[name] for name in RUN_PICTURES if name in figs}


def _image_shape(n_features: int, test) -> tuple | None:
    if test is not None and int(np.prod(test[0].shape[1:])) == n_features:
        return tuple(test[0].shape[1:3])
    side = int(round(n_features ** 0.5))
    return (side, side) if side * side == n_features else None


def run_section(rep: Report, path, prefix: str, data_dir=None, model=None) -> None:
    run = load_run(path, model=model, data_dir=data_dir)
    cfg = run["config"]
    where = run["metrics"]
    try:
        where = where.resolve().relative_to(rep.out.resolve())
    except (ValueError, OSError):
        pass
    rep.heading(f"Training run ({where.as_posix()})")
    net = run["net"]
    desc = [f"recipe {cfg['recipe']}" if cfg.get("recipe") else "",
            f"{cfg.get('optimizer')} lr {cfg['lr']:g}" if cfg.get("lr") else "",
            f"batch {cfg['batch_size']}" if cfg.get("batch_size") else "",
            f"data set {cfg.get('dataset') or (net.dataset if net is not None else '?')}"]
    test = next((e for e in reversed(run["events"]) if e.get("event") == "test"), None)
    rep.para((f"Network {'-'.join(map(str, net.sizes))} ({net.activation_name}); " if net is not None else "")
             + ", ".join(d for d in desc if d) + "."
             + (f" Test accuracy {pct(test['test_acc'])} (from the log)." if test and "test_acc" in test else ""))
    for note in run["notes"]:
        rep.para(f"Note: {note}.")
    prefix = "" if prefix == "run" else f"{prefix}_"
    for path_, caption in run_pictures(run, rep.out, prefix).values():
        rep.figure(path_, caption)


def write_run_report(folder, metrics=None, model=None, data_dir=None, title: str = "Pictures of a training run",
                     say=print) -> list[Path]:
    """What ``xpnet train --plots DIR`` calls: the run's pictures, ``report.md`` and ``report.html``
    in ``folder``, from its metrics log and model (by default those in ``folder``)."""

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    rep.heading(title, 1)
    run_section(rep, metrics or out, "run", data_dir=data_dir, model=model)
    md_path, html_path, figures = _write(rep, out, title, hint_at=1)
    say(f"pictures: {', '.join(str(p) for p in figures)} · report: {html_path}")
    return [md_path, html_path, *figures]
