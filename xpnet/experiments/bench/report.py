"""Benchmark tables and files: Markdown on stdout, JSON/CSV/Markdown/PNG in ``--out``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path


def _key(r):
    return ("-".join(map(str, r["hidden"])), r["batch_size"])


def _xpnet_time(results, r, device=None):
    for other in results:
        if other["impl"] == "xpnet" and _key(other) == _key(r) and other["device"] == (device or r["device"]) and "median_epoch_s" in other:
            return other["median_epoch_s"]
    return None


def summarise(results: list[dict]) -> str:
    """A Markdown table plus ratio lines (xpnet time ÷ peer time; < 1 means xpnet is faster)."""
    lines = ["| hidden | batch | device | implementation | median epoch s | samples/s | test acc | xpnet ÷ this |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        hidden, batch = _key(r)
        if "median_epoch_s" not in r:
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {hidden} | {batch} | {r['device']} | {r['impl']} | – | – | – | {why} |")
            continue
        ref = _xpnet_time(results, r)
        ratio = f"{ref / r['median_epoch_s']:.2f}×" if ref and r["impl"] != "xpnet" else ""
        lines.append(f"| {hidden} | {batch} | {r['device']} | {r['impl']} | {r['median_epoch_s']:.3f} | "
                     f"{r['samples_per_s']:,.0f} | {r['test_acc'] * 100:.2f}% | {ratio} |")
    notes = []
    for r in results:
        if r["impl"] == "xpnet" or "median_epoch_s" not in r:
            continue
        ref = _xpnet_time(results, r)
        if ref:
            xp_acc = next(o["test_acc"] for o in results if o["impl"] == "xpnet" and _key(o) == _key(r)
                          and o["device"] == r["device"] and "test_acc" in o)
            notes.append(f"- {_key(r)[0]} batch {_key(r)[1]} {r['device']}: xpnet takes {ref / r['median_epoch_s']:.2f}× "
                         f"the time of {r['impl']} ({ref:.3f} s vs {r['median_epoch_s']:.3f} s); accuracy "
                         f"{(xp_acc - r['test_acc']) * 100:+.2f} points")
    for r in results:
        if r["impl"] == "xpnet" and r["device"] != "cpu" and "median_epoch_s" in r:
            cpu = _xpnet_time(results, r, device="cpu")
            if cpu:
                notes.append(f"- {_key(r)[0]} batch {_key(r)[1]}: GPU speed-up over xpnet's CPU backend "
                             f"{cpu / r['median_epoch_s']:.1f}×")
    return "\n".join(lines + ([""] + notes if notes else []))


def _csv_text(results) -> str:
    fields = ["impl", "device", "device_name", "hidden", "batch_size", "epochs", "median_epoch_s", "samples_per_s",
              "test_acc", "skipped", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow(dict(r, hidden="-".join(map(str, r["hidden"]))))
    return buf.getvalue()


def _versions() -> dict:
    """Versions of xpnet and every peer library present, so a results folder says what it measured."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("xpnet", "numpy", "numba", "torch", "scikit-learn", "cupy-cuda13x", "cupy-cuda12x"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def write_outputs(results, table: str, out: Path, meta: dict) -> list[Path]:
    from xpnet import backend
    from xpnet.fileio import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, cpu=backend.device_name("cpu"), versions=_versions())
    written = [
        atomic_write(out / "results.json", lambda fh: json.dump({"meta": meta, "results": results}, fh, indent=1), mode="w"),
        atomic_write(out / "results.csv", lambda fh: fh.write(_csv_text(results)), mode="w"),
        atomic_write(out / "results.md", lambda fh: fh.write(table + "\n"), mode="w"),
    ]
    plot = plot_results(results, out / "bench.png")
    if plot:
        written.append(plot)
    return written


def plot_results(results, path: Path) -> Path | None:
    """Epoch time per implementation for each shape (log scale); None without matplotlib."""
    from xpnet.io.plotting import get_pyplot, save_figure

    plt = get_pyplot()
    rows = [r for r in results if "median_epoch_s" in r]
    if plt is None or not rows:
        return None
    groups = sorted({(_key(r), r["device"]) for r in rows}, key=lambda g: (g[0][1], g[1], g[0][0]))
    impls = sorted({r["impl"] for r in rows}, key=lambda i: (i != "xpnet", i))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 4))
    width = 0.8 / len(impls)
    for j, impl in enumerate(impls):
        values = []
        for (key, device) in groups:
            match = [r["median_epoch_s"] for r in rows if r["impl"] == impl and _key(r) == key and r["device"] == device]
            values.append(match[0] if match else 0)
        ax.bar([i + j * width for i in range(len(groups))], values, width, label=impl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{k[0]}\nb{k[1]} {d}" for k, d in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median epoch seconds (log)")
    ax.set_title("Epoch time per implementation (lower is faster)")
    ax.legend()
    return save_figure(fig, path, dpi=110)
