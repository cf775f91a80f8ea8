"""Matplotlib figures for the analysis commands (Agg backend, written atomically).

Every function returns the written path, or None when matplotlib is missing (the
commands then still write their tables; see ``PLOT_HINT``) or there is nothing to draw.
"""

from __future__ import annotations

from pathlib import Path

from xpnet.io.plotting import PLOT_HINT, get_pyplot, save_figure  # noqa: F401 - PLOT_HINT re-exported for the commands


def accuracy_vs_hidden(series: dict, path, ylabel="test accuracy (%)") -> Path | None:
    """``series``: label → list of (x_label, mean, std) — accuracy with error bars."""
    plt = get_pyplot()
    if plt is None or not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xlabels = _ordered_x(series)
    for label, points in series.items():
        xs = [xlabels.index(p[0]) for p in points]
        ax.errorbar(xs, [p[1] * 100 for p in points], yerr=[p[2] * 100 for p in points], marker="o", capsize=4, label=label)
    ax.set_xticks(range(len(xlabels)))
    ax.set_xticklabels(xlabels)
    ax.set(xlabel="hidden layer sizes", ylabel=ylabel, title="Accuracy vs hidden size (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def time_vs_hidden(series: dict, path) -> Path | None:
    """``series``: label (device / implementation) → list of (x_label, seconds)."""
    plt = get_pyplot()
    if plt is None or not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xlabels = _ordered_x(series)
    for label, points in series.items():
        ax.plot([xlabels.index(p[0]) for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xticks(range(len(xlabels)))
    ax.set_xticklabels(xlabels)
    ax.set(xlabel="hidden layer sizes", ylabel="median seconds per epoch", title="Time per epoch vs hidden size", yscale="log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def speedup(labels, values, path, title="GPU speed-up over CPU") -> Path | None:
    plt = get_pyplot()
    if plt is None or not labels:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(labels)), values, color="tab:green")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}×", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="CPU time ÷ GPU time", title=title)
    return save_figure(fig, path)


def learning_curves(curves: dict, path) -> Path | None:
    """``curves``: config label → {"train": [...], "val": [...]} accuracies per epoch (mean over seeds)."""
    plt = get_pyplot()
    if plt is None or not curves:
        return None
    n = len(curves)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax, (label, c) in zip(axes.flat, curves.items()):
        epochs = range(1, len(c["train"]) + 1)
        ax.plot(epochs, [v * 100 for v in c["train"]], marker="o", ms=3, label="train")
        ax.plot(epochs, [v * 100 for v in c["val"]], marker="s", ms=3, label="val")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Learning curves: train vs validation accuracy (mean over seeds)", fontsize=10)
    return save_figure(fig, path)


def optimizer_curves(curves: dict, path, ylabel="validation accuracy (%)") -> Path | None:
    """``curves``: optimizer label → per-epoch values (accuracy fractions)."""
    plt = get_pyplot()
    if plt is None or not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), [v * 100 for v in values], marker="o", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title="Optimizers: validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def confusion_matrix(cm, class_names, path, title="Confusion matrix") -> Path | None:
    """Counts in every cell; colour is the row's fraction on a square-root scale, so the few
    errors off the diagonal show next to the large correct counts on it."""
    plt = get_pyplot()
    if plt is None:
        return None
    import numpy as np
    from matplotlib.colors import PowerNorm

    cm = np.asarray(cm)
    n = len(class_names)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 4.2 + 0.38 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(frac * 100, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=100))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    long_names = max((len(str(c)) for c in class_names), default=0) > 3
    ax.set_xticklabels(class_names, rotation=45 if long_names else 0, ha="right" if long_names else "center", fontsize=9)
    ax.set_yticklabels(class_names, fontsize=9)
    fontsize = 8 if n <= 10 else 6
    for i in range(n):
        for j in range(n):
            if cm[i, j] == 0 and i != j:
                continue
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=fontsize,
                    fontweight="bold" if i == j else "normal", color="white" if frac[i, j] > 0.45 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label("% of the true class (square-root scale)", fontsize=8)
    cbar.set_ticks([0, 1, 5, 20, 50, 100])
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- one training run
def confusion_counts(y_true, y_pred, n_classes: int):
    """The confusion matrix: rows true class, columns predicted (as ``xpnet evaluate``)."""
    import numpy as np

    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def misclassified(y_true, proba, limit: int = 40) -> list[dict]:
    """The wrong predictions, most confident first: ``{"index", "true", "pred", "p"}`` (at most ``limit``)."""
    import numpy as np

    y_true = np.asarray(y_true)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    conf = proba[wrong, pred[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:limit]
    return [{"index": int(i), "true": int(y_true[i]), "pred": int(pred[i]), "p": float(proba[i, pred[i]])} for i in order]


def weight_units(n_units: int, max_units: int = 64) -> list[int]:
    """Which first-layer units to draw: all of them up to ``max_units``, else evenly spaced ones."""
    import numpy as np

    if n_units <= max_units:
        return list(range(n_units))
    return sorted({int(i) for i in np.linspace(0, n_units - 1, max_units).round()})


def run_curves(records: list, path, title: str = "Learning curves") -> Path | None:
    """Loss, accuracy (train and validation) and the learning rate, per epoch."""
    plt = get_pyplot()
    if plt is None or not records:
        return None
    epochs = [r["epoch"] for r in records]
    has_val = any(r.get("val_acc") is not None for r in records)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ms = 4 if len(records) <= 30 else 0
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy (%)")):
        scale = 100 if key == "acc" else 1
        ax.plot(epochs, [r[f"train_{key}"] * scale for r in records], marker="o", ms=ms, label="train")
        if has_val:
            ax.plot(epochs, [(r.get(f"val_{key}") or float("nan")) * scale for r in records], marker="s", ms=ms,
                    label="validation")
        ax.set(xlabel="epoch", ylabel=label, title=label.split(" ")[0].capitalize())
    if has_val:
        best = min(records, key=lambda r: r["val_loss"] if r.get("val_loss") is not None else float("inf"))
        axes[0].axvline(best["epoch"], color="gray", ls=":", lw=1, label=f"lowest val loss (epoch {best['epoch']})")
        axes[1].axvline(best["epoch"], color="gray", ls=":", lw=1)
        accs = [r["train_acc"] for r in records] + [r["val_acc"] for r in records if r.get("val_acc") is not None]
        first = (records[0]["train_acc"], records[0].get("val_acc"))
        skip = [a for a in accs if a not in first] if len(records) > 5 else accs  # epoch 1 would squash the rest
        axes[1].set_ylim(max(0, min(skip) * 100 - 1), min(100, max(accs) * 100 + 0.5))
    lrs = [r.get("lr") for r in records]
    if any(v is not None for v in lrs):
        axes[2].plot(epochs, [v if v is not None else float("nan") for v in lrs], marker="o", ms=ms, color="tab:green")
        finite = [v for v in lrs if v]
        if finite and max(finite) / min(finite) > 50:
            axes[2].set_yscale("log")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate (last step of each epoch)")
    else:
        axes[2].text(0.5, 0.5, "no learning rate in the log", ha="center", va="center", transform=axes[2].transAxes)
        axes[2].set_axis_off()
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def first_layer_weights(W0, image_shape, path, units=None, class_names=None, W1=None,
                        title="What the first layer's units look for") -> Path | None:
    """Each chosen row of ``W0`` (one hidden unit's input weights) as an image: red pixels push the
    unit up, blue ones down, white ones do not matter (each tile on its own symmetric scale). With
    ``W1`` (one hidden layer), each tile names the class the unit votes for most."""
    plt = get_pyplot()
    if plt is None:
        return None
    import numpy as np

    W0 = np.asarray(W0)
    units = list(range(len(W0))) if units is None else list(units)
    n = len(units)
    cols = n if n <= 5 else 5 if n <= 10 else min(8, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    tile = 1.9 if n <= 10 else 1.25
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows + 0.7), squeeze=False)
    im = None
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, u in zip(axes.flat, units):
        img = W0[u].reshape(image_shape)
        lim = float(np.abs(img).max()) or 1.0
        im = ax.imshow(img, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        label = f"unit {u}"
        if W1 is not None and class_names is not None:
            c = int(np.argmax(np.asarray(W1)[:, u]))
            label += f" → {class_names[c]}"
        ax.set_title(label, fontsize=8 if n <= 10 else 6, pad=2)
    fig.subplots_adjust(left=0.02, right=0.9, bottom=0.02, top=0.82 if rows <= 2 else 0.93, wspace=0.12,
                        hspace=0.35 if n <= 10 else 0.45)
    if im is not None:
        cbar = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, ticks=[im.norm.vmin, 0, im.norm.vmax])
        cbar.ax.set_yticklabels(["−", "0", "+"])
        cbar.ax.tick_params(labelsize=8)
    if len(units) < len(W0):
        title += f" ({len(units)} of {len(W0)} units, evenly spaced)"
    fig.suptitle(title, fontsize=10, y=0.97 if rows <= 2 else 0.985)
    from xpnet.fileio import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def misclassified_grid(images, wrong: list, class_names, path,
                       title="Misclassified test images (true → predicted)") -> Path | None:
    """The images of ``wrong`` (from :func:`misclassified`), each titled true → predicted (p)."""
    plt = get_pyplot()
    if plt is None or not wrong:
        return None
    import numpy as np

    n = len(wrong)
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.62 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, w in zip(axes.flat, wrong):
        ax.imshow(np.asarray(images[w["index"]]), cmap="gray_r", interpolation="nearest")
        t, p = class_names[w["true"]], class_names[w["pred"]]
        ax.set_title(f"{t} → {p}\n{w['p'] * 100:.0f} % sure", fontsize=8, pad=2, color="firebrick")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def tune_trials(values, best_so_far, path) -> Path | None:
    """Objective per trial (dots) and the running best (line)."""
    plt = get_pyplot()
    if plt is None or not values:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [v[0] for v in values]
    ax.scatter(xs, [v[1] * 100 for v in values], s=14, label="trial")
    ax.step([b[0] for b in best_so_far], [b[1] * 100 for b in best_so_far], where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title="Tuning: validation accuracy per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _ordered_x(series: dict) -> list[str]:
    """x labels in numeric order of their layer sizes (``10`` < ``256`` < ``120-64``)."""
    labels = {p[0] for points in series.values() for p in points}

    def key(label):
        sizes = [int(s) for s in str(label).split("-") if s.isdigit()]
        return (len(sizes), sizes)

    return sorted(labels, key=key)
