"""Benchmark tables and files: Markdown on stdout, JSON/CSV/Markdown/PNG in ``--out``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from xpnet.experiments.bench.peak import in_slow_phase


def _key(r):
    return ("-".join(map(str, r["hidden"])), r["batch_size"])


def _busy(r) -> int:
    return int(r.get("busy", 0))


def _with_busy(r) -> str:
    return f" with {_busy(r)} busy program{'s' if _busy(r) > 1 else ''}" if _busy(r) else ""


def _find(results, impl, r, device=None, busy=None):
    """The row of ``impl`` for ``r``'s network, batch size, device and load (or the given ones)."""
    for other in results:
        if (other["impl"] == impl and _key(other) == _key(r) and other["device"] == (device or r["device"])
                and _busy(other) == (_busy(r) if busy is None else busy) and "median_epoch_s" in other):
            return other
    return None


def _xpnet_time(results, r, device=None):
    row = _find(results, "xpnet", r, device)
    return row["median_epoch_s"] if row else None


def summarise(results: list[dict], best_look: float | None = None) -> str:
    """A Markdown table plus ratio lines (xpnet time ÷ peer time; < 1 means xpnet is faster).

    ``busy`` is the number of other busy programs during the case; GFLOP/s counts the step's
    GEMMs only (``workloads.step_flops``), and % of peak is against ``pct_peak``'s measured GEMM
    peak of all cores when the row has one. ``best_look``: the two-core probe's highest look of the
    bench, what a row's slow phase is judged against (:func:`~xpnet.experiments.bench.peak.in_slow_phase`,
    as the bench judged its retakes); without it, the highest ``two_cores`` of the rows."""
    lines = ["| hidden | batch | device | busy | implementation | median epoch s | samples/s | GFLOP/s | % of peak | "
             "test acc | xpnet ÷ this |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        hidden, batch = _key(r)
        if "median_epoch_s" not in r:
            why = r.get("skipped") or r.get("error", "")
            lines.append(f"| {hidden} | {batch} | {r['device']} | {_busy(r)} | {r['impl']} | – | – | – | – | – | {why} |")
            continue
        ref = _xpnet_time(results, r)
        ratio = f"{ref / r['median_epoch_s']:.2f}×" if ref and r["impl"] != "xpnet" else ""
        gflops = f"{r['gflops']:.1f}" if r.get("gflops") else "–"
        pct = f"{r['pct_peak']:.1f}%" if r.get("pct_peak") else "–"  # a target's 75 % must not read 74.8 as 75
        lines.append(f"| {hidden} | {batch} | {r['device']} | {_busy(r)} | {r['impl']} | {r['median_epoch_s']:.3f} | "
                     f"{r['samples_per_s']:,.0f} | {gflops} | {pct} | {r['test_acc'] * 100:.2f}% | {ratio} |")
    notes = []
    for r in results:
        if r["impl"] == "xpnet" or "median_epoch_s" not in r:
            continue
        mine = _find(results, "xpnet", r)
        if mine:
            ref = mine["median_epoch_s"]
            notes.append(f"- {_key(r)[0]} batch {_key(r)[1]} {r['device']}{_with_busy(r)}: xpnet takes {ref / r['median_epoch_s']:.2f}× "
                         f"the time of {r['impl']} ({ref:.3f} s vs {r['median_epoch_s']:.3f} s); accuracy "
                         f"{(mine['test_acc'] - r['test_acc']) * 100:+.2f} points")
    for r in results:
        if r["impl"] == "xpnet" and _busy(r) and "median_epoch_s" in r:
            single = _find(results, "xpnet-1thread", r, busy=0)
            if single:
                notes.append(f"- {_key(r)[0]} batch {_key(r)[1]} {r['device']}: with {_busy(r)} busy program"
                             f"{'s' if _busy(r) > 1 else ''} xpnet takes {r['median_epoch_s'] / single['median_epoch_s']:.2f}× "
                             f"its own single-threaded epoch on the otherwise idle machine ({r['median_epoch_s']:.3f} s vs "
                             f"{single['median_epoch_s']:.3f} s)")
    for r in results:
        if r.get("slow_takes"):
            aside = ", ".join(_set_aside(s) for s in r["slow_takes"])
            notes.append(f"- {_key(r)[0]} batch {_key(r)[1]} {r['device']}{_with_busy(r)}: {r['impl']}: "
                         f"{len(r['slow_takes'])} take{'s' if len(r['slow_takes']) > 1 else ''} set aside ({aside}): the "
                         f"probe read a slow phase of the machine, the run was taken again and the fastest take counts")
    best = best_look or max((r["two_cores"] for r in results if r.get("two_cores")), default=None)
    for r in results:
        if in_slow_phase(r, best) and "median_epoch_s" in r:
            notes.append(f"- {_key(r)[0]} batch {_key(r)[1]} {r['device']}{_with_busy(r)}: {r['impl']} ran in a slow phase of the "
                         f"machine: around one of its runs two BLAS threads ran a small GEMM only "
                         f"{r['two_cores']:.2f}× as fast as one (the best look of the bench: {best:.2f}×)")
    for r in results:
        if r["impl"] == "xpnet" and r["device"] != "cpu" and "median_epoch_s" in r:
            cpu = _xpnet_time(results, r, device="cpu")
            if cpu:
                notes.append(f"- {_key(r)[0]} batch {_key(r)[1]}: GPU speed-up over xpnet's CPU backend "
                             f"{cpu / r['median_epoch_s']:.1f}×")
    return "\n".join(lines + ([""] + notes if notes else []))


def _set_aside(take: dict) -> str:
    """A take set aside, in a note: its median epoch and the probe's look."""
    if not take.get("median_epoch_s"):
        return "an error"
    return f"{take['median_epoch_s']:.3f} s" + (f" at {take['two_cores']:.2f}×" if take.get("two_cores") else "")


def add_peak(results: list[dict], peaks: dict) -> None:
    """``pct_peak`` on every CPU row with GFLOP/s: achieved ÷ the best GEMM rate measured at any
    thread count (on a shared machine two threads can measure below one: the lower would flatter)."""
    if not peaks:
        return
    top = max(peaks.values())
    for r in results:
        if r.get("gflops") and r["device"] == "cpu":
            r["pct_peak"] = 100.0 * r["gflops"] / top


def _csv_text(results) -> str:
    fields = ["impl", "device", "device_name", "hidden", "batch_size", "busy", "epochs", "median_epoch_s", "samples_per_s",
              "gflops", "pct_peak", "test_acc", "blas_cores", "gathered_ahead", "two_cores", "retaken", "load_before",
              "load_after", "skipped", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow(dict(r, hidden="-".join(map(str, r["hidden"])), retaken=len(r.get("slow_takes", ())) or None))
    return buf.getvalue()


def _versions() -> dict:
    """Versions of xpnet and every peer library present, so a results folder says what it measured."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("xpnet", "numpy", "numba", "threadpoolctl", "torch", "jax", "jaxlib", "scikit-learn", "cupy-cuda13x",
                    "cupy-cuda12x"):
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
    groups = sorted({(_key(r), r["device"], _busy(r)) for r in rows}, key=lambda g: (g[0][1], g[1], g[2], g[0][0]))
    impls = sorted({r["impl"] for r in rows}, key=lambda i: (i != "xpnet", i))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 4))
    width = 0.8 / len(impls)
    for j, impl in enumerate(impls):
        values = []
        for (key, device, busy) in groups:
            match = [r["median_epoch_s"] for r in rows if r["impl"] == impl and _key(r) == key and r["device"] == device
                     and _busy(r) == busy]
            values.append(match[0] if match else 0)
        ax.bar([i + j * width for i in range(len(groups))], values, width, label=impl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{k[0]}\nb{k[1]} {d}" + (f"\n{b} busy" if b else "") for k, d, b in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median epoch seconds (log)")
    ax.set_title("Epoch time per implementation (lower is faster)")
    ax.legend()
    return save_figure(fig, path, dpi=110)
