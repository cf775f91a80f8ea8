"""The notes' vanishing-gradient experiment: how weight init and activation shape a deep net's signals.

A deep net (default 784-[256]×5-10) is built for every init × activation; one forward
and one backward pass on a real, normalised batch give, per hidden layer ``l``:

- ``act_mean``, ``act_std``: mean and standard deviation of the activations ``H_l``;
- ``dead_fraction``: the fraction of the layer's units whose activation is exactly 0 on
  *every* sample of the batch (a "dead" unit passes no signal and gets no gradient);
- ``grad_norm``: the Frobenius norm ‖dW_l‖ of the gradient of the weights *into* that layer
  (the last entry, ``layer = depth + 1``, is the output layer's ‖dW‖; it has no activation).

No training happens: this is the network as initialised, which is what the notes study.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from xpnet.errors import ConfigError
from xpnet.io.plotting import get_pyplot, save_figure

INITS = ("normal", "xavier", "he")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
INIT_LABELS = {"normal": "normal×0.01", "xavier": "Xavier", "he": "He"}
HIST_BINS = 40
FIELDS = ["init", "activation", "layer", "units", "act_mean", "act_std", "dead_fraction", "grad_norm"]


def load_batch(n_samples: int = 1000, dataset: str | None = "fashion-mnist", data_dir=None):
    """The first ``n_samples`` training images, flattened and normalised, and their labels."""
    from xpnet.data import load_dataset
    from xpnet.data.preprocess import Normalizer

    ds = load_dataset(dataset if not data_dir else None, data_dir=data_dir)
    n = min(int(n_samples), len(ds.X_train))
    X = ds.X_train[:n].reshape(n, -1)
    return Normalizer().fit(X).transform(X), ds.y_train[:n], ds.name


def init_study(X=None, y=None, depth: int = 5, width: int = 256, inits=INITS, activations=ACTIVATIONS,
               n_samples: int = 1000, dataset: str | None = "fashion-mnist", data_dir=None, n_classes=None,
               seed: int = 0, keep_values: bool = False, device="cpu") -> dict:
    """Run the study; returns ``{"config": ..., "rows": [...], "hist": {...}}``.

    ``rows`` has one dict per (init, activation, layer) with the fields in ``FIELDS``.
    ``hist[f"{init}/{activation}"]`` holds per-layer histograms (``act``/``grad``: lists of
    ``{"counts", "edges"}``) for the plots. Pass ``X`` (normalised, (m, n_in)) and ``y`` to
    use your own batch; otherwise the first ``n_samples`` training images of ``dataset``.
    ``keep_values=True`` adds the raw activation/gradient arrays under ``values``.
    """
    from xpnet import backend
    from xpnet.nn.model import MLP

    if int(depth) < 1 or int(width) < 1:
        raise ConfigError(f"depth and width must be >= 1, got depth {depth}, width {width}")
    for name in inits:
        if name not in INITS:
            raise ConfigError(f"unknown init {name!r}: choose from {', '.join(INITS)}")
    for name in activations:
        if name not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {name!r}: choose from {', '.join(ACTIVATIONS)}")
    source = "given batch"
    if X is None:
        X, y, source = load_batch(n_samples, dataset, data_dir)
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    y = np.asarray(y, dtype=np.int64)
    n_classes = int(n_classes or max(int(y.max()) + 1, 2))
    sizes = [X.shape[1], *([int(width)] * int(depth)), n_classes]
    rows, hist, values = [], {}, {}
    for init in inits:
        for act in activations:
            net = MLP(sizes, activation=act, init=init, seed=seed, device=device)
            net.loss_and_grad(net.xp.asarray(X), net.xp.asarray(y))
            bufs, _ = net._cache
            H = [np.array(backend.to_numpy(h), copy=True) for h in bufs["H"]]
            dW = [np.array(backend.to_numpy(g), copy=True) for g in net.grads[0::2]]
            key = f"{init}/{act}"
            hist[key] = {"act": [], "grad": []}
            for l in range(net.n_layers):
                row = {"init": init, "activation": act, "layer": l + 1, "units": sizes[l + 1],
                       "act_mean": None, "act_std": None, "dead_fraction": None,
                       "grad_norm": float(np.linalg.norm(dW[l]))}
                if l < len(H):
                    h = H[l]
                    row.update(act_mean=float(h.mean()), act_std=float(h.std()),
                               dead_fraction=float(np.mean(np.all(h == 0, axis=0))))
                    hist[key]["act"].append(_histogram(h))
                hist[key]["grad"].append(_histogram(dW[l]))
                rows.append(row)
            if keep_values:
                values[key] = {"act": H, "grad": dW}
    result = {"config": {"sizes": sizes, "depth": int(depth), "width": int(width), "inits": list(inits),
                         "activations": list(activations), "n_samples": int(len(X)), "data": source, "seed": int(seed)},
              "rows": rows, "hist": hist}
    if keep_values:
        result["values"] = values
    return result


def _histogram(a) -> dict:
    a = np.asarray(a, dtype=np.float64).ravel()
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        lo, hi = lo - 1e-12, hi + 1e-12
    counts, edges = np.histogram(a, bins=HIST_BINS, range=(lo, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def series(result: dict, init: str, activation: str, field: str, hidden_only: bool = True) -> list[float]:
    """One column of the table for one configuration, in layer order."""
    rows = [r for r in result["rows"] if r["init"] == init and r["activation"] == activation]
    if hidden_only:
        rows = [r for r in rows if r["act_std"] is not None]
    return [r[field] for r in sorted(rows, key=lambda r: r["layer"])]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def markdown_table(result: dict) -> str:
    lines = ["| init | activation | layer | units | act mean | act std | dead units | ‖dW‖ |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        dead = "–" if r["dead_fraction"] is None else f"{r['dead_fraction'] * 100:.1f}%"
        layer = f"{r['layer']}" if r["act_std"] is not None else f"{r['layer']} (out)"
        lines.append(f"| {INIT_LABELS[r['init']]} | {r['activation']} | {layer} | {r['units']} | {_fmt(r['act_mean'])} | "
                     f"{_fmt(r['act_std'])} | {dead} | {_fmt(r['grad_norm'])} |")
    return "\n".join(lines)


def summary_lines(result: dict) -> list[str]:
    """One sentence per configuration: activation std and ‖dW‖ from the first to the last layer."""
    out = []
    for init in result["config"]["inits"]:
        for act in result["config"]["activations"]:
            std = series(result, init, act, "act_std")
            grad = series(result, init, act, "grad_norm", hidden_only=False)
            dead = series(result, init, act, "dead_fraction")
            text = (f"{INIT_LABELS[init]} + {act}: activation std {_fmt(std[0])} → {_fmt(std[-1])} "
                    f"(layer 1 → {len(std)}), ‖dW‖ {_fmt(grad[0])} (input layer) vs {_fmt(grad[-1])} (output layer)")
            if act == "relu" and max(dead) > 0:
                text += f", up to {max(dead) * 100:.0f}% dead units"
            out.append(text)
    return out


def write_outputs(result: dict, out) -> list[Path]:
    """``init_study.json``, ``init_study.csv``, ``init_study.md`` and (with matplotlib) the PNG grids."""
    from xpnet.fileio import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(result["rows"])
    plain = {k: v for k, v in result.items() if k != "values"}
    md = ("# Init × activation study\n\n"
          f"Network {'-'.join(map(str, result['config']['sizes']))}, one forward/backward pass on "
          f"{result['config']['n_samples']} samples ({result['config']['data']}). Dead units: fraction of a layer's "
          "units whose activation is exactly 0 on every sample. ‖dW‖: Frobenius norm of the gradient of the weights "
          "into the layer.\n\n" + "\n".join(f"- {s}" for s in summary_lines(result)) + "\n\n" + markdown_table(result) + "\n")
    written = [
        atomic_write(out / "init_study.json", lambda fh: json.dump(plain, fh, indent=1), mode="w"),
        atomic_write(out / "init_study.csv", lambda fh: fh.write(buf.getvalue()), mode="w"),
        atomic_write(out / "init_study.md", lambda fh: fh.write(md), mode="w"),
    ]
    for path in (plot_histograms(result, "act", out / "init_activations.png"),
                 plot_histograms(result, "grad", out / "init_gradients.png"),
                 plot_trends(result, out / "init_trends.png")):
        if path:
            written.append(path)
    return written


# ---------------------------------------------------------------------------- figures
def plot_histograms(result: dict, which: str, path) -> Path | None:
    """Grid (rows: inits, columns: activations); each panel overlays the per-layer histograms."""
    plt = get_pyplot()
    if plt is None:
        return None
    inits, acts = result["config"]["inits"], result["config"]["activations"]
    fig, axes = plt.subplots(len(inits), len(acts), figsize=(3.2 * len(acts), 2.5 * len(inits)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for i, init in enumerate(inits):
        for j, act in enumerate(acts):
            ax = axes[i][j]
            layers = result["hist"][f"{init}/{act}"][which]
            for l, h in enumerate(layers):
                edges, counts = h["edges"], h["counts"]
                total = max(sum(counts), 1)
                ax.stairs([c / total for c in counts], edges, color=cmap(l / max(len(layers) - 1, 1)),
                          label=f"layer {l + 1}" + (" (out)" if which == "grad" and l == len(layers) - 1 else ""))
            ax.set_title(f"{INIT_LABELS[init]} + {act}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
    what = "hidden activations H_l" if which == "act" else "weight gradients dW_l"
    fig.suptitle(f"Per-layer histograms of {what} (fraction of values; x-range per panel)", fontsize=11)
    return save_figure(fig, path)


def plot_trends(result: dict, path) -> Path | None:
    """Activation std and ‖dW‖ per layer (log scale) for every init + activation."""
    plt = get_pyplot()
    if plt is None:
        return None
    inits, acts = result["config"]["inits"], result["config"]["activations"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"normal": ":", "xavier": "--", "he": "-"}
    colors = dict(zip(acts, plt.get_cmap("tab10").colors))
    markers = {"sigmoid": "o", "tanh": "s", "relu": "D", "leaky_relu": "x"}
    for init in inits:
        for act in acts:
            label = f"{INIT_LABELS[init]} + {act}"
            std = series(result, init, act, "act_std")
            grad = series(result, init, act, "grad_norm", hidden_only=False)
            # relu and leaky_relu nearly coincide: draw relu wide underneath so both stay visible
            style = {"marker": markers.get(act, "o"), "ms": 4, "color": colors[act], "label": label,
                     "lw": 3.5 if act == "relu" else 1.3, "alpha": 0.55 if act == "relu" else 1.0}
            axes[0].plot(range(1, len(std) + 1), [max(s, 1e-30) for s in std], styles[init], **style)
            axes[1].plot(range(1, len(grad) + 1), [max(g, 1e-30) for g in grad], styles[init], **style)
    axes[0].set(yscale="log", xlabel="hidden layer", ylabel="std of activations", title="Activation std per layer")
    axes[1].set(yscale="log", xlabel="layer (last = output)", ylabel="‖dW‖ (Frobenius)", title="Weight-gradient norm per layer")
    for ax in axes:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[1].legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- sweep / bench
