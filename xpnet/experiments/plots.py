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
    plt = get_pyplot()
    if plt is None:
        return None
    import numpy as np

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cm, cmap="Blues")
    n = len(class_names)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
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
