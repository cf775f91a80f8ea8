"""Matplotlib on the Agg backend, and atomic PNG writes: the one helper bench and analysis share.

A leaf module (imports nothing of xpnet's but the atomic writer), so any command can plot
without an import cycle; matplotlib itself is optional and imported on first use.
"""

from __future__ import annotations

from pathlib import Path

from xpnet.compat import hint

PLOT_HINT = hint("matplotlib", "plots")


def get_pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Lay out, write atomically as PNG, close."""
    from xpnet.fileio import atomic_write

    plt = get_pyplot()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    plt.close(fig)
    return Path(path)
